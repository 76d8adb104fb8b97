"""The plugin surface: hooks documented and exercised, outside distributions loaded the
way users install them, allow/deny lists."""

from __future__ import annotations

import inspect
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helios.daemon import hookspecs
from helios.daemon.plugins import PluginManager

from tests.helpers import copy, feed, make_config, make_daemon

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "tests" / "plugins" / "helios-example"
HOOKS = [
    name
    for name, f in inspect.getmembers(hookspecs, inspect.isfunction)
    if hasattr(f, "helios_spec")
]


def test_there_are_hooks_for_every_plugin_kind_and_observer():
    assert sorted(HOOKS) == sorted(
        [
            "register_sources",
            "register_index_backends",
            "register_detectors",
            "register_mcdm_methods",
            "register_weighting_methods",
            "register_actions",
            "on_outcome",
            "on_anomaly",
            "on_action_result",
        ]
    )


@pytest.fixture(scope="module")
def example_site(tmp_path_factory) -> Path:
    """pip-install the example plugin distribution into its own folder."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(EXAMPLE),
        ],
        check=True,
        capture_output=True,
    )
    return target


@pytest.fixture
def example_loaded(example_site, monkeypatch):
    monkeypatch.syspath_prepend(str(example_site))
    import importlib

    importlib.invalidate_caches()
    import helios_example

    helios_example.seen_outcomes.clear()
    yield helios_example
    sys.modules.pop("helios_example", None)


def test_every_hook_is_exercised_by_the_example_distribution(example_loaded):
    manager = PluginManager()
    manager.load_entry_points(allow=["*"])
    registry = manager.collect()
    example = next(p for p in manager.plugins if p.name == "example")
    assert (example.distribution, example.version, example.builtin) == (
        "helios-example",
        "0.3.1",
        False,
    )
    assert sorted(example.hooks) == sorted(HOOKS)
    assert registry.sources["example_source"].plugin == "example"
    assert registry.actions["example_page"].plugin == "example"
    assert registry.detectors["example_threshold"].plugin == "example"
    assert registry.mcdm_methods["example_first"].factory([[1], [2]], [1.0], [1]) == [1.0, 0.0]
    assert registry.weighting_methods["example_equal"].factory([[1, 2]]) == [0.5, 0.5]
    assert registry.index_backends["memory"].plugin == "memory_index"
    assert registry.index_backends["example_null"].plugin == "example"
    manager.on_anomaly("a")
    manager.on_action_result("r")
    assert example_loaded.seen_anomalies == ["a"] and example_loaded.seen_results == ["r"]


OUTSIDE = '[plugins]\nallow = ["*"]\n'


async def test_the_result_hook_sees_a_finished_execution(example_loaded):
    import asyncio

    daemon = make_daemon(make_config(OUTSIDE))
    _, x = await daemon.services.operator.trigger(
        "example_page", "aws", {"who": "bob"}, False, "test", force=True
    )
    for _ in range(100):
        if example_loaded.seen_results:
            break
        await asyncio.sleep(0.01)
    assert example_loaded.seen_results[-1] is x
    assert x.status == "succeeded" and x.result == "paged bob"


async def test_observers_see_every_outcome(example_loaded):
    daemon = make_daemon(make_config(OUTSIDE))
    await feed(daemon, copy("o1", "aws"), copy("o1", "gcp"), copy("o1", "azure"))
    assert [(o.kind.name, o.event_id) for o in example_loaded.seen_outcomes] == [("COMPLETE", "o1")]


def test_allow_and_deny_lists_and_the_environment(example_loaded):
    default = PluginManager()
    default.load_entry_points()  # built-ins only: an installed package is not trusted
    assert "example" not in {p.name for p in default.plugins}
    assert "name it in plugins.allow" in default.skipped["example"]
    assert "simulator" in {p.name for p in default.plugins}
    denied = PluginManager()
    denied.load_entry_points(deny=["example"])
    assert "example" not in {p.name for p in denied.plugins}
    assert denied.skipped["example"] == "denied by plugins.deny"
    allowed = PluginManager()
    allowed.load_entry_points(allow=["example", "memory_index"])
    assert {p.name for p in allowed.plugins} == {"example", "memory_index"}
    from_env = PluginManager()
    from_env.load_entry_points(allow=["example"], environ={"HELIOS_PLUGINS": "simulator"})
    assert {p.name for p in from_env.plugins} == {"simulator"}


def test_heliosd_lists_and_runs_a_source_from_an_installed_distribution(example_site, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(example_site), HELIOS_PLUGINS="*")
    heliosd = shutil.which("heliosd", path=os.path.dirname(sys.executable))
    listed = subprocess.run(
        [heliosd, "plugins", "--json"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    plugins = {p["name"]: p for p in json.loads(listed.stdout)}
    assert plugins["example"]["version"] == "0.3.1"
    assert "sources:example_source" in plugins["example"]["provides"]
    assert "actions:example_page" in plugins["example"]["provides"]
    assert plugins["simulator"]["builtin"]

    from tests.conftest import start_daemon_process, stop_daemon_process

    os.environ["PYTHONPATH"] = str(example_site)
    try:
        daemon = start_daemon_process(
            tmp_path,
            """
[plugins]
allow = ["*"]

[sources.inputs.fixed]
plugin = "example_source"
count = 25
prefix = "ext"
""",
        )
    finally:
        del os.environ["PYTHONPATH"]
    try:
        helios = shutil.which("helios", path=os.path.dirname(sys.executable))
        for _ in range(50):
            out = subprocess.run(
                [helios, "--address", daemon.address, "--json", "status"],
                capture_output=True,
                text=True,
            )
            stats = json.loads(out.stdout) if out.returncode == 0 else {}
            if stats.get("outcomes", {}).get("COMPLETE") == "25":
                break
            import time

            time.sleep(0.2)
        assert stats["outcomes"]["COMPLETE"] == "25", out.stdout + out.stderr
        got = subprocess.run(
            [helios, "--address", daemon.address, "events", "get", "ext-7"],
            capture_output=True,
            text=True,
        )
        assert "status COMPLETE" in got.stdout
        # The outside action runs in heliosd like a built-in one.
        ran = subprocess.run(
            [
                helios,
                "--address",
                daemon.address,
                "--json",
                "actions",
                "trigger",
                "example_page",
                "aws",
                "--param",
                "who=alice",
                "--by",
                "test",
                "--force",
            ],
            capture_output=True,
            text=True,
        )
        assert ran.returncode == 0, ran.stderr
        execution = json.loads(ran.stdout)["execution"]
        assert execution["action"] == "example_page" and execution["plan"] == "page alice about aws"
        listed = subprocess.run(
            [helios, "--address", daemon.address, "--json", "actions", "list"],
            capture_output=True,
            text=True,
        )
        actions = {a["name"]: a for a in json.loads(listed.stdout)["actions"]}
        assert actions["example_page"]["plugin"] == "example"
    finally:
        stop_daemon_process(daemon)


def test_an_outside_action_or_source_missing_a_declared_member_fails_at_build_naming_it():
    from helios.daemon.app import Daemon
    from helios.daemon.config import ConfigError
    from helios.daemon.plugins import Registered, load

    from tests.helpers import make_config

    class OldAction:  # written before policy_defaults and follows_up were declared
        name = "old"
        issue_kinds = ("*",)
        description = "an action of the old contract"

        def __init__(self, options):
            from helios.daemon.types import Criteria

            self.defaults = Criteria(1.0, 0.0, 0.5, 1.0)

    config = make_config()
    manager, registry = load()
    registry.actions["old"] = Registered("old", OldAction, "outside")
    with pytest.raises(ConfigError, match="'old' of plugin 'outside' lacks policy_defaults"):
        Daemon.build(config, manager, registry)

    class OldSource:  # start, stop, pause, resume only
        def __init__(self, context, options):
            pass

        async def start(self): ...
        async def stop(self): ...
        def pause(self, source): ...
        def resume(self, source): ...

    config = make_config('[sources.inputs.old]\nplugin = "old_source"\n')
    manager, registry = load()
    registry.sources["old_source"] = Registered("old_source", OldSource, "outside")
    with pytest.raises(ConfigError, match="lacks delivers, replays, replay"):
        Daemon.build(config, manager, registry)

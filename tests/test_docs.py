"""The docs stay true: every hook, config key, RPC and CLI command is documented where a
user looks for it, every link resolves, and every command a page names exists."""

from __future__ import annotations

import argparse
import inspect
import re
from pathlib import Path

import pytest
from helios.control.cli import build_parser as helios_parser
from helios.control.heliosd import build_parser as heliosd_parser
from helios.daemon import config as config_mod
from helios.daemon import hookspecs
from helios.v1 import helios_pb2 as pb
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
HOOKS = [
    name
    for name, f in inspect.getmembers(hookspecs, inspect.isfunction)
    if f.__module__ == hookspecs.__name__
]


def page(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def commands(parser: argparse.ArgumentParser, prefix: str) -> list[str]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.append(f"{prefix} {name}")
                found += commands(sub, f"{prefix} {name}")
    return found


def config_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every key as the reference writes it: `daemon.data_dir`, `routes[].sources`,
    `sources.inputs.<name>.plugin`."""
    keys = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        origin = getattr(annotation, "__origin__", None)
        models = [
            kind
            for kind in (*getattr(annotation, "__args__", ()), annotation)
            if isinstance(kind, type) and issubclass(kind, BaseModel)
        ]
        if not models:
            keys.append(prefix + name)
        for kind in models:
            nested = {list: f"{name}[].", dict: f"{name}.<name>."}.get(origin, f"{name}.")
            keys += config_keys(kind, prefix + nested)
    return keys


def test_the_readme_is_a_landing_page_that_links_every_doc():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert readme.count("\n") < 120, "README.md is a landing page; the guide goes in docs/"
    assert readme.index("./scripts/demo.sh") < readme.index("##"), "the two commands come first"
    assert "./scripts/test.sh" in readme[: readme.index("##")]
    for doc in PAGES:
        assert f"(docs/{doc.name})" in readme, f"README.md does not link docs/{doc.name}"


@pytest.mark.parametrize("path", [ROOT / "README.md", *PAGES], ids=lambda p: p.name)
def test_every_relative_link_and_named_file_exists(path: Path):
    text = path.read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text):
        assert (path.parent / target).exists(), f"{path.name} links {target}, which is not there"
    for named in re.findall(
        r"`((?:benchmarks|scripts|tests|daemon|control|ui|plugins|ml)/[\w./-]+)", text
    ):
        assert (ROOT / named.rstrip(".")).exists(), f"{path.name} names {named}, which is not there"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented_with_its_signature(hook):
    spec = getattr(hookspecs, hook)
    assert spec.__doc__ and spec.__doc__.strip(), f"{hook} has no docstring"
    params = ", ".join(inspect.signature(spec).parameters)
    assert f"{hook}({params})" in page("plugins.md"), f"plugins.md lacks {hook}({params})"


def test_the_documented_sample_config_is_the_one_heliosd_prints():
    assert config_mod.SAMPLE.strip() in page("configuration.md")


@pytest.mark.parametrize("key", config_keys(config_mod.Config))
def test_every_config_key_is_documented(key: str):
    section, _, name = key.rpartition(".")
    text = page("configuration.md")
    documented = (
        f"`{key}`" in text
        or (f"[{section}]" in text and re.search(rf"^{re.escape(name)} = ", text, re.M))
        or (not section and (f"[{name}]" in text or f"[[{name}]]" in text))
    )
    assert documented, f"configuration.md does not document {key}"


RPCS = [
    f"{service.name}.{method.name}"
    for service in pb.DESCRIPTOR.services_by_name.values()
    for method in service.methods
]


@pytest.mark.parametrize("rpc", RPCS)
def test_every_rpc_is_documented(rpc: str):
    service, method = rpc.split(".")
    text = page("api.md")
    assert rpc in text or (f"`{method}`" in text and service in text), f"api.md lacks {rpc}"


@pytest.mark.parametrize("command", commands(helios_parser(), "helios"))
def test_every_helios_command_is_documented(command: str):
    assert command in page("cli.md"), f"cli.md does not show `{command}`"


@pytest.mark.parametrize("command", commands(heliosd_parser(), "heliosd"))
def test_every_heliosd_command_is_documented(command: str):
    assert command in page("running.md"), f"running.md does not show `{command}`"

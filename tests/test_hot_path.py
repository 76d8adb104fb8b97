"""The ingest hot path: compiled with mypyc at install when it can be, and never stale."""

from __future__ import annotations

import hashlib
import importlib.machinery
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import helios.daemon
import helios.daemon.reconciler
from helios.daemon import choose_hot_path

HOT = ("helios.daemon.model", "helios.daemon.reconciler")


def _package(tmp_path: Path) -> Path:
    for name in HOT:
        (tmp_path / f"{name.rsplit('.', 1)[1]}.py").write_text(f"# {name}\n")
    digests = {
        name: hashlib.sha256((tmp_path / f"{name.rsplit('.', 1)[1]}.py").read_bytes()).hexdigest()
        for name in HOT
    }
    (tmp_path / "_compiled.json").write_text(json.dumps(digests))
    return tmp_path


def test_compiled_when_every_extension_matches_its_source(tmp_path):
    package = _package(tmp_path)
    mode, reason, files = choose_hot_path(package, {}, dict.fromkeys(HOT, True))
    assert (mode, reason, files) == ("compiled", "mypyc", {})


def test_an_edited_source_runs_as_python_all_or_none(tmp_path):
    package = _package(tmp_path)
    (package / "reconciler.py").write_text("# edited after the install\n")
    mode, reason, files = choose_hot_path(package, {}, dict.fromkeys(HOT, True))
    assert mode == "python"
    assert "helios.daemon.reconciler changed since the install compiled it" in reason
    # Both modules switch, not only the edited one: compiled code shares classes.
    assert files == {name: str(package / f"{name.rsplit('.', 1)[1]}.py") for name in HOT}


def test_missing_extension_or_manifest_or_the_switch_means_python(tmp_path):
    package = _package(tmp_path)
    mode, reason, _ = choose_hot_path(package, {}, {HOT[0]: True})
    assert (mode, reason) == (
        "python",
        "the extensions were not built (a compiler error at install?)",
    )
    mode, reason, _ = choose_hot_path(
        package, {"HELIOS_PURE_PYTHON": "1"}, dict.fromkeys(HOT, True)
    )
    assert (mode, reason) == ("python", "HELIOS_PURE_PYTHON=1")
    (package / "_compiled.json").unlink()
    mode, reason, files = choose_hot_path(package, {}, dict.fromkeys(HOT, True))
    assert mode == "python" and files == {}
    assert reason.startswith("not compiled at install")


def _can_compile() -> bool:
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    headers = Path(sysconfig.get_paths()["include"], "Python.h")
    return bool(shutil.which(compiler)) and headers.exists()


def test_the_install_compiled_the_hot_path_where_it_could():
    if os.environ.get("HELIOS_PURE_PYTHON") == "1":
        assert helios.daemon.HOT_PATH == "python"
        assert helios.daemon.reconciler.__spec__.origin.endswith("reconciler.py")
        return
    if not _can_compile():
        assert helios.daemon.HOT_PATH == "python"
        return
    assert helios.daemon.HOT_PATH == "compiled", helios.daemon.HOT_PATH_REASON
    loader = helios.daemon.reconciler.__spec__.loader
    assert isinstance(loader, importlib.machinery.ExtensionFileLoader)


def test_the_switch_imports_the_python_sources_in_a_fresh_process():
    code = (
        "import helios.daemon as d, helios.daemon.reconciler as r, helios.daemon.model as m;"
        "name = lambda mod: mod.__spec__.origin.rsplit('/', 1)[1];"
        "print(d.HOT_PATH, name(r), name(m))"
    )
    env = {**os.environ, "HELIOS_PURE_PYTHON": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["python", "reconciler.py", "model.py"]


def test_a_switch_value_other_than_1_or_0_is_named_and_ignored(tmp_path):
    package = _package(tmp_path)
    env = {"HELIOS_PURE_PYTHON": "yes"}
    mode, reason, _ = choose_hot_path(package, env, dict.fromkeys(HOT, True))
    assert mode == "compiled"
    assert reason == "mypyc; HELIOS_PURE_PYTHON='yes' ignored: 1 or 0"

"""heliosd: the HELIOS daemon."""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from types import ModuleType

try:
    __version__ = version("helios")
except PackageNotFoundError:  # pragma: no cover - running from a tree that was never installed
    __version__ = "0.0.0"


class _PythonSources(importlib.abc.MetaPathFinder):
    """Import the named modules from their .py files even where an extension sits beside."""

    def __init__(self, files: Mapping[str, str]) -> None:
        self.files = dict(files)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        file = self.files.get(fullname)
        return None if file is None else importlib.util.spec_from_file_location(fullname, file)


def choose_hot_path(
    package_dir: Path, env: Mapping[str, str], is_compiled: Mapping[str, bool]
) -> tuple[str, str, dict[str, str]]:
    """Which build of the ingest hot path to run: ("compiled" | "python", why, and the .py
    files to import instead of the extensions when it is "python").

    setup.py compiles the hot modules with mypyc when it can and records each source's
    SHA-256 in `_compiled.json`. The extensions run only if every one of them was built
    and no source changed since: compiled modules use each other's classes directly, so
    it is all or none."""
    manifest = package_dir / "_compiled.json"
    if not manifest.exists():
        return "python", "not compiled at install (no C compiler, or HELIOS_COMPILE=0)", {}
    built: dict[str, str] = json.loads(manifest.read_text())
    files = {name: str(package_dir / f"{name.rsplit('.', 1)[1]}.py") for name in built}
    changed = [
        name
        for name, digest in built.items()
        if hashlib.sha256(Path(files[name]).read_bytes()).hexdigest() != digest
    ]
    switch = env.get("HELIOS_PURE_PYTHON", "")
    if switch == "1":
        return "python", "HELIOS_PURE_PYTHON=1", files
    ignored = "" if switch in ("", "0") else f"; HELIOS_PURE_PYTHON={switch!r} ignored: 1 or 0"
    if not all(is_compiled.get(name, False) for name in built):
        return "python", "the extensions were not built (a compiler error at install?)", files
    if changed:
        return (
            "python",
            f"{', '.join(sorted(changed))} changed since the install compiled it; "
            "re-run scripts/setup.sh to compile again",
            files,
        )
    return "compiled", "mypyc" + ignored, {}


def _installed_extensions(package_dir: Path) -> dict[str, bool]:
    found = {}
    for path in package_dir.glob("*.so"):
        found[f"{__name__}.{path.name.split('.', 1)[0]}"] = True
    return found


HOT_PATH, HOT_PATH_REASON, _files = choose_hot_path(
    Path(__file__).parent, os.environ, _installed_extensions(Path(__file__).parent)
)
if _files:
    sys.meta_path.insert(0, _PythonSources(_files))

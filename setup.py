"""Build hook: compile the ingest hot path with mypyc when it can.

The modules in HOT are plain, type-checked Python. When mypyc and a C compiler with
Python's headers are present they are also built as C extensions, which CPython imports
in preference to the .py files; otherwise, or with HELIOS_COMPILE=0, HELIOS runs them as
Python. Either way the source is the same and the tests run against what was installed.

mypyc names modules by their path, and this repository maps `helios.daemon` to
`daemon/`, so the sources are staged under build/mypyc-src/helios/ first.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import sysconfig
from pathlib import Path

from setuptools import setup

HOT = ["daemon/model.py", "daemon/metrics.py", "daemon/ingest.py", "daemon/reconciler.py"]
STAGE = Path("build/mypyc-src")


def _why_not() -> str | None:
    if os.environ.get("HELIOS_COMPILE", "1") == "0":
        return "HELIOS_COMPILE=0"
    try:
        import mypyc.build  # noqa: F401
    except ImportError:
        return "mypyc is not installed"
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if not shutil.which(compiler):
        return f"no C compiler ({compiler})"
    include = sysconfig.get_paths()["include"]
    if not Path(include, "Python.h").exists():
        return f"no Python headers ({include}/Python.h; Debian: python3-dev)"
    return None


def _stage() -> list[str]:
    """Copy the package sources under STAGE/helios/<package>/ and return the HOT paths."""
    shutil.rmtree(STAGE, ignore_errors=True)
    for package in ("daemon", "control", "plugins", "ui", "ml"):
        shutil.copytree(package, STAGE / "helios" / package, ignore=shutil.ignore_patterns("tests"))
    shutil.copytree("proto/helios/v1", STAGE / "helios" / "v1")
    # Not the project's mypy settings: they load the pydantic plugin, absent from a build.
    (STAGE / "mypy.ini").write_text("[mypy]\n")
    return [str(STAGE / "helios" / path) for path in HOT]


BUILDS = {"build", "build_ext", "bdist_wheel", "editable_wheel", "install", "develop"}


def ext_modules() -> list[object]:
    if not BUILDS.intersection(sys.argv[1:]):
        return []  # metadata only (egg_info, dist_info): nothing to compile
    Path("daemon", "_compiled.json").unlink(missing_ok=True)
    why = _why_not()
    if why is not None:
        print(f"helios: hot path not compiled ({why}); running it as Python", file=sys.stderr)
        return []
    from mypyc.build import mypycify

    paths = _stage()
    os.environ["MYPYPATH"] = str(STAGE)
    try:
        extensions = mypycify(
            [
                "--config-file",
                str(STAGE / "mypy.ini"),
                "--explicit-package-bases",
                "--ignore-missing-imports",
                "--follow-imports=silent",  # other modules: their types, not their errors
                *paths,
            ],
            opt_level="3",
            target_dir="build/mypyc",
        )
    except BaseException as exc:  # mypyc reports type errors by exiting
        print(f"helios: mypyc failed ({exc!r}); running the hot path as Python", file=sys.stderr)
        return []
    for extension in extensions:
        extension.optional = True  # a compiler error leaves the Python modules in charge
    # What was compiled, by content: helios.daemon runs the .py files instead of
    # extensions built from other sources (an edit since the last install).
    digests = {
        "helios." + path.removesuffix(".py").replace("/", "."): hashlib.sha256(
            Path(path).read_bytes()
        ).hexdigest()
        for path in HOT
    }
    Path("daemon", "_compiled.json").write_text(json.dumps(digests, indent=1) + "\n")
    return list(extensions)


setup(ext_modules=ext_modules())

"""Generate the Python modules for proto/helios/v1/helios.proto (run after editing it)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from grpc_tools import protoc  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parent.parent


def generate(out_dir: Path) -> None:
    """Write helios_pb2.py, helios_pb2_grpc.py and their .pyi stubs under out_dir/helios/v1."""
    proto_include = Path(protoc.__file__).parent / "_proto"
    (out_dir / "helios" / "v1").mkdir(parents=True, exist_ok=True)
    bindir = os.path.dirname(sys.executable)
    plugins = []
    for name in ("protoc-gen-mypy", "protoc-gen-mypy_grpc"):
        found = shutil.which(name, path=bindir) or shutil.which(name)
        if not found:
            raise SystemExit(f"{name} not found: pip install mypy-protobuf")
        plugins.append(f"--plugin={name}={found}")
    args = [
        "protoc",
        *plugins,
        f"-I{ROOT / 'proto'}",
        f"-I{proto_include}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        str(ROOT / "proto" / "helios" / "v1" / "helios.proto"),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "proto"
    generate(target)

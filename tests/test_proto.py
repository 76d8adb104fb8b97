"""The committed generated modules match proto/helios/v1/helios.proto."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_generated_stubs_are_up_to_date(tmp_path):
    spec = importlib.util.spec_from_file_location("gen_proto", ROOT / "scripts" / "gen_proto.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.generate(tmp_path)
    names = ["helios_pb2.py", "helios_pb2.pyi", "helios_pb2_grpc.py", "helios_pb2_grpc.pyi"]
    for name in names:
        fresh = (tmp_path / "helios" / "v1" / name).read_text()
        committed = (ROOT / "proto" / "helios" / "v1" / name).read_text()
        assert fresh == committed, f"{name} is stale: run python scripts/gen_proto.py"

"""The house rules, checked: check-config writes nothing, the front-ends call the service
layer only, the client stays thin, one way into the queue, one atomic writer, the
proto's enums mirror the domain's, and long modules say why."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from enum import StrEnum
from pathlib import Path

import pytest
from helios.daemon import domain
from helios.v1 import helios_pb2 as pb

from tests.helpers import make_config, make_daemon

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("daemon", "control", "plugins", "ui", "ml")
FRONT_ENDS = [
    ROOT / "control" / name for name in ("server.py", "handlers.py", "convert.py", "deliveries.py")
] + sorted((ROOT / "ui").glob("*.py"))
# heliosd's entry point assembles the daemon and its front-ends: it imports the Daemon,
# and then touches nothing of it but services, start() and stop().
ENTRY_POINT = ROOT / "control" / "heliosd.py"
THIN_CLIENT = [
    ROOT / "control" / name
    for name in (
        "cli.py",
        "common.py",
        "events_cli.py",
        "detection_cli.py",
        "heal_cli.py",
        "inputs_cli.py",
    )
]
# What a front-end may import from the daemon: the service layer, its read models'
# shapes, errors, and the domain's plain data types. Not the parts behind them.
FRONT_END_IMPORTS = {
    "helios.daemon",
    "helios.daemon.services",
    "helios.daemon.readmodels",
    "helios.daemon.views",
    "helios.daemon.errors",
    "helios.daemon.domain",
    "helios.daemon.model",
    "helios.daemon.audit",
    "helios.daemon.detection",
    "helios.daemon.jobs",
    "helios.daemon.metrics",
    "helios.daemon.types",
    "helios.daemon.config",
    "helios.daemon.plugins",
    "helios.daemon.identity",
    "helios.daemon.auditlog",
    "helios.daemon.webhooks",  # the service side of webhook deliveries and dead letters
    "helios.daemon.deadletters",
    "helios.daemon.inputs",
    "helios.daemon.logs",  # heliosd sets up logging before it builds the daemon
    "helios.daemon.telemetry",  # W3C trace context from gRPC metadata and webhook headers
    "helios.daemon.slo",  # SloView
    "helios.daemon.observe",  # services.observe: SLOs and cost
    "helios.daemon.tenants",  # a tenant's key, its events' keys
}
# The Daemon's parts: a front-end that names one of these reaches past the service layer.
INTERNALS = {
    "loop",
    "pipeline",
    "reconciler",
    "runtime",
    "detection",
    "planner",
    "executor",
    "verifier",
    "policy",
    "audit",
    "entries",
}


def sources(*folders: str) -> list[Path]:
    return [
        p
        for folder in folders
        for p in sorted((ROOT / folder).rglob("*.py"))
        if "_pb2" not in p.name and "build" not in p.parts
    ]


def imports_of(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(directory)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    } | {str(p.relative_to(directory)) + "/": (b"", 0) for p in directory.rglob("*") if p.is_dir()}


async def test_check_config_leaves_every_file_of_the_data_directory_byte_identical(tmp_path):
    data = tmp_path / "data"
    text = f"""
[daemon]
grpc_address = "127.0.0.1:0"
console_address = ""
data_dir = "{data}"
[detectors]
enabled = ["ewma"]
[[routes]]
event_type = "*"
"""
    (tmp_path / "helios.toml").write_text(text)
    # A daemon that has run: audit trail, policy, replay record, detector state.
    config = make_config('[detectors]\nenabled = ["ewma"]', DAEMON__DATA_DIR=f'"{data}"')
    daemon = make_daemon(config)
    await daemon.start()
    _d, x = await daemon.services.operator.trigger("notify", "aws", {}, False, "test", force=True)
    for _ in range(100):
        if x.status != "running":
            break
        await daemon.advance(0.1)
    daemon.runtime.mark_replayed("aws", ["e1", "e2"])
    daemon.detection.save()
    await daemon.stop()
    # As kill -9 during an execution leaves it: the next start marks it interrupted.
    policy = json.loads((data / "decisions" / "policy.json").read_text())
    policy["running"] = {x.id: "notify"}
    (data / "decisions" / "policy.json").write_text(json.dumps(policy))
    before = snapshot(data)
    for name in ("audit.jsonl", "policy.json", "replayed.log"):
        assert f"decisions/{name}" in before, sorted(before)
    assert "detectors/ewma.json" in before
    heliosd = Path(sys.executable).with_name("heliosd")
    done = subprocess.run(
        [str(heliosd), "-c", str(tmp_path / "helios.toml"), "check-config"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "OK" in done.stdout
    assert snapshot(data) == before
    # A data directory that does not exist yet is not created either.
    fresh = tmp_path / "never"
    (tmp_path / "fresh.toml").write_text(text.replace(str(data), str(fresh)))
    done = subprocess.run(
        [str(heliosd), "-c", str(tmp_path / "fresh.toml"), "check-config"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and not fresh.exists()


@pytest.mark.parametrize("path", FRONT_ENDS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_a_front_end_imports_the_service_layer_not_the_parts_behind_it(path: Path):
    daemon_imports = {m for m in imports_of(path) if m.startswith("helios.daemon")}
    assert daemon_imports <= FRONT_END_IMPORTS, daemon_imports - FRONT_END_IMPORTS


@pytest.mark.parametrize(
    "path", [*FRONT_ENDS, ENTRY_POINT], ids=lambda p: f"{p.parent.name}/{p.name}"
)
def test_a_front_end_reads_no_internal_or_private_state(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    reached = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        owner = node.value.id if isinstance(node.value, ast.Name) else ""
        private = node.attr.startswith("_") and not node.attr.startswith("__")
        if private and owner not in ("self", "cls"):
            reached.append(f"line {node.lineno}: {owner or '...'}.{node.attr}")
        if node.attr in INTERNALS and owner not in ("self", "args"):
            reached.append(f"line {node.lineno}: {owner or '...'}.{node.attr}")
    assert not reached, reached


@pytest.mark.parametrize(
    "path", sources("control", "ui", "plugins", "ml"), ids=lambda p: f"{p.parent.name}/{p.name}"
)
def test_no_module_outside_the_daemon_reads_another_objects_private_state(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    private = [
        f"line {node.lineno}: .{node.attr}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
        and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
    ]
    assert not private, private


def test_the_thin_client_loads_neither_the_daemon_nor_its_libraries():
    for path in THIN_CLIENT:
        assert not {m for m in imports_of(path) if m.startswith("helios.daemon")}, path
        assert "helios.control.cli" not in imports_of(path) or path.name == "cli.py", path
    probe = (
        "import sys, helios.control.cli\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('numpy', 'pydantic', 'nicegui', 'onnxruntime') or m.startswith('helios.daemon'))\n"
        "print(heavy)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]"


def test_admission_is_the_only_way_into_the_queue():
    callers = [
        str(p.relative_to(ROOT))
        for p in sources(*PACKAGES)
        if p.name != "pipeline.py"  # where the queue is
        and (".enqueue_reserved(" in (text := p.read_text(encoding="utf-8")) or ".reserve(" in text)
    ]
    assert callers == ["daemon/admission.py"]


def test_state_files_are_replaced_in_one_place():
    writers = [
        str(p.relative_to(ROOT))
        for p in sources(*PACKAGES)
        if "os.replace(" in p.read_text(encoding="utf-8")
    ]
    assert writers == ["daemon/files.py"]


@pytest.mark.parametrize(
    ("ours", "theirs", "prefix"),
    [
        (domain.IssueKind, pb.IssueKind, "ISSUE_KIND"),
        (domain.DecisionStatus, pb.DecisionStatus, "DECISION_STATUS"),
        (domain.ExecutionStatus, pb.ExecutionStatus, "EXECUTION_STATUS"),
        (domain.Verification, pb.VerificationStatus, "VERIFICATION_STATUS"),
        (domain.AutomationMode, pb.AutomationMode, "AUTOMATION_MODE"),
        (domain.BreakerState, pb.BreakerState, "BREAKER_STATE"),
    ],
)
def test_every_domain_status_is_mirrored_by_a_proto_enum(ours: type[StrEnum], theirs, prefix):
    named = {m.name for m in ours if m.value}  # "" is the proto's UNSPECIFIED
    proto = {n.removeprefix(prefix + "_") for n in theirs.keys()}  # noqa: SIM118 - not a dict
    proto.discard("UNSPECIFIED")
    assert named == proto


def test_no_module_is_long_without_a_reason_at_its_top():
    long = []
    for path in sources(*PACKAGES):
        text = path.read_text(encoding="utf-8")
        if text.count("\n") > 400 and "Long because" not in text[:1500]:
            long.append(f"{path.relative_to(ROOT)}: {text.count(os.linesep)} lines")
    assert not long, long

"""Builders shared by the tests: configs, in-process daemons, copies."""

from __future__ import annotations

import atexit
import shutil
import socket
import tempfile
from typing import Any

import orjson
from helios.daemon import config as config_mod
from helios.daemon.app import Daemon
from helios.daemon.clock import Clock, ManualClock
from helios.daemon.config import Config
from helios.daemon.model import CopyIn
from helios.daemon.plugins import load

SOURCES = ["aws", "gcp", "azure"]
# Every data directory the tests make lives under one root, removed when the run ends:
# a daemon's Bloom filters alone are 50 MB, and a thousand runs filled a disk.
TEST_ROOT = tempfile.mkdtemp(prefix="helios-tests-")
atexit.register(shutil.rmtree, TEST_ROOT, True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def make_config(text: str = "", **env: str) -> Config:
    """A config from TOML text on top of test defaults (no console, no inputs)."""
    base = f"""
[daemon]
grpc_address = "127.0.0.1:0"
console_address = ""
data_dir = "{tempfile.mkdtemp(prefix="helios-test-", dir=TEST_ROOT)}"
[reconcile]
window_seconds = 10.0
grace_seconds = 2.0
[index]
backend = "memory"
"""
    if "[security]" not in text:  # the suite's daemons are local: no credentials asked
        base = '[security]\nauth = "none"\n' + base

    return config_mod.parse(base + text, "test.toml", {f"HELIOS_{k}": v for k, v in env.items()})


def make_daemon(config: Config | None = None, clock: Clock | None = None) -> Daemon:
    config = config or make_config()
    manager, registry = load(config.plugins.allow, config.plugins.deny)
    return Daemon(config, manager, registry, clock or ManualClock())


def copy(
    event_id: str,
    source: str,
    payload: Any = None,
    event_type: str = "order.created",
    produced_at: float = 0.0,
) -> CopyIn:
    body = {"id": event_id, "amount": 10} if payload is None else payload
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return (event_id, source, event_type, produced_at, raw)


async def feed(daemon: Daemon, *copies: CopyIn) -> None:
    """Validate and reconcile copies now, at the daemon clock's time."""
    good, result = daemon.pipeline.check(copies)
    assert not result.rejections, result.rejections
    await daemon.pipeline.process(good)


def kinds(daemon: Daemon, event_id: str) -> list[str]:
    record = daemon.reconciler.open.get(event_id)
    if record is None:
        record = daemon.index.records[event_id]  # type: ignore[attr-defined]
    return [o.kind.name for o in record.outcomes]

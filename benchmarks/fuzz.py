"""Fuzz every RPC of a real heliosd (security.auth = "keys") for SECONDS (default 60):
random bytes and random well-formed requests, with no, garbage or real credentials of
every role. Prints the status codes seen; exits 1 if any call ended in UNKNOWN or
INTERNAL or heliosd stopped serving.

    .venv/bin/python benchmarks/fuzz.py [SECONDS]
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from helios.daemon.identity import KeyStore  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402

from tests.conftest import start_daemon_process, stop_daemon_process  # noqa: E402
from tests.fuzz_calls import BAD, call, invoke  # noqa: E402


def main() -> int:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 60.0
    tmp = Path(tempfile.mkdtemp(prefix="helios-fuzz-"))
    store = KeyStore(tmp / "data" / "keys.json")
    keys = [store.create(f"fuzz-{r}", r)[1] for r in ("viewer", "ingester", "operator", "admin")]
    daemon = start_daemon_process(tmp, '[security]\nauth = "keys"\n')
    channel = grpc.insecure_channel(daemon.address)
    codes: Counter[str] = Counter()
    bad: list[str] = []
    end = time.monotonic() + seconds

    @settings(
        max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), database=None
    )
    @given(call(keys))
    def one(sent: tuple) -> None:
        if time.monotonic() > end:
            return
        service, method, body, auth = sent
        code = invoke(channel, service, method, body, auth)
        codes[code.name] += 1
        if code in BAD:
            bad.append(f"{method.name} {code.name} {body[:60]!r}")

    try:
        while time.monotonic() < end:
            one()  # 200 examples a round, new ones each round
    finally:
        alive = daemon.proc.poll() is None
        channel.close()
        stop_daemon_process(daemon)
    total = sum(codes.values())
    print(f"{total:,} calls in {seconds:g} s over every RPC; heliosd alive: {alive}")
    for name, n in codes.most_common():
        print(f"  {name:<20}{n:>8,}")
    print(f"UNKNOWN or INTERNAL: {len(bad)}")
    for line in bad[:10]:
        print("  " + line)
    return 0 if alive and not bad else 1


if __name__ == "__main__":
    sys.exit(main())

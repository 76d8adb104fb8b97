"""What watchers cost ingest, side by side in one run: `helios bench --events EVENTS` at
full speed against one heliosd (minimal config) with no watcher, then with WATCHERS
WatchOutcomes streams of every outcome open. The watching clients read their streams as
raw bytes (no decoding), in another process, so what is measured is heliosd's side.

    .venv/bin/python benchmarks/watchers.py [EVENTS] [WATCHERS]   (default 150000, 50)
"""

from __future__ import annotations

import sys
import tempfile
import threading
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.bench_run import MINIMAL, bench  # noqa: E402
from tests.conftest import start_daemon_process, stop_daemon_process  # noqa: E402

CONFIG = MINIMAL


def watch(address: str, stop: threading.Event, received: list[int]) -> None:
    with grpc.insecure_channel(address) as channel:
        method = channel.unary_stream(
            "/helios.v1.QueryService/WatchOutcomes",
            request_serializer=None,
            response_deserializer=None,
        )
        stream = method(b"")
        try:
            for message in stream:
                received[0] += len(message)
                if stop.is_set():
                    break
        except grpc.RpcError:
            pass
        stream.cancel()


def main() -> None:
    events = int(sys.argv[1]) if len(sys.argv) > 1 else 150_000
    watchers = int(sys.argv[2]) if len(sys.argv) > 2 else 50
    work = Path(tempfile.mkdtemp(prefix="helios-watchers-"))
    daemon = start_daemon_process(work, CONFIG)
    try:
        alone = bench(daemon.address, events)
        stop = threading.Event()
        received = [[0] for _ in range(watchers)]
        threads = [
            threading.Thread(target=watch, args=(daemon.address, stop, r), daemon=True)
            for r in received
        ]
        for t in threads:
            t.start()
        watched = bench(daemon.address, events)
        stop.set()
        total = sum(r[0] for r in received)
        print(f"no watcher:          {alone:,.0f} copies/s")
        print(f"{watchers} watchers of all:  {watched:,.0f} copies/s ({watched / alone:.2f} of it)")
        print(f"bytes streamed to the watchers: {total:,}")
    finally:
        stop_daemon_process(daemon)


if __name__ == "__main__":
    main()

"""GetEvent latency over gRPC against a heliosd holding EVENTS events in its index: the
events are admitted in process, then a gRPC server answers LOOKUPS GetEvent calls for
random known ids (and a few unknown ones, NOT_FOUND), one at a time; prints p50/p99.

    .venv/bin/python benchmarks/get_event.py [EVENTS] [LOOKUPS] [BACKEND]
    (defaults: 200,000 events, 5,000 lookups, sqlite; BACKEND redis starts a
    redis-server on a free port, appendonly off)
"""

from __future__ import annotations

import asyncio
import random
import socket
import subprocess
import sys
import tempfile
import time

import grpc
import orjson
from helios.control.server import GrpcServer
from helios.daemon.app import Daemon
from helios.daemon.clock import ManualClock
from helios.daemon.config import parse
from helios.v1 import helios_pb2 as pb
from helios.v1 import helios_pb2_grpc as pb_grpc


async def main(events: int, lookups: int, backend: str) -> None:
    data = tempfile.mkdtemp(prefix="helios-get-")
    options = "{}"
    redis = None
    if backend == "redis":
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        redis = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""],
            stdout=subprocess.DEVNULL,
            cwd=data,
        )
        time.sleep(0.5)
        options = f'{{ url = "redis://127.0.0.1:{port}/0" }}'
    config = parse(
        f'[daemon]\nconsole_address = ""\ndata_dir = "{data}"\n'
        '[security]\nauth = "none"\n'  # loopback only: latency, not the credential check
        f'[index]\nbackend = "{backend}"\noptions = {options}\n'
    )
    daemon = Daemon.build(config, clock=ManualClock())
    server = GrpcServer(daemon.services, "127.0.0.1:0", config.ingest)
    await daemon.start()
    await server.start()
    payload = orjson.dumps({"amount": 1})
    for start in range(0, events, 1000):
        ids = range(start, min(events, start + 1000))
        batch = [(f"e{i}", s, "order.created", 0.0, payload) for i in ids for s in ("aws", "gcp")]
        await daemon.admission.admit(batch)
    rng = random.Random(3)
    times = []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        query = pb_grpc.QueryServiceStub(channel)
        for n in range(lookups):
            event_id = f"e{rng.randrange(events)}" if n % 50 else "no-such-event"
            t0 = time.perf_counter()
            try:
                await query.GetEvent(pb.GetEventRequest(event_id=event_id))
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.NOT_FOUND
            times.append((time.perf_counter() - t0) * 1000)
    await server.stop(0)
    await daemon.stop()
    if redis is not None:
        redis.terminate()
    times.sort()
    print(
        f"GetEvent over gRPC, {events:,} events held ({backend}), {lookups:,} lookups: "
        f"p50 {times[len(times) // 2]:.3f} ms, p99 {times[int(len(times) * 0.99)]:.3f} ms"
    )


if __name__ == "__main__":
    asyncio.run(
        main(
            int(sys.argv[1]) if len(sys.argv) > 1 else 200_000,
            int(sys.argv[2]) if len(sys.argv) > 2 else 5_000,
            sys.argv[3] if len(sys.argv) > 3 else "sqlite",
        )
    )

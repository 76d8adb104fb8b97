"""What counting a request's repeated field on its bytes costs (control/wire.py), next to
parsing: for a normal 500-event batch (paid on every Publish over 20 KB) and for a
batch of 8 million empty events (refused after reading 10,001 tags instead of being
parsed).

    .venv/bin/python benchmarks/wire.py
"""

from __future__ import annotations

import resource
import time

from helios.control.wire import Cap, check_caps
from helios.daemon.errors import RequestError
from helios.v1 import helios_pb2 as pb


def each(fn: object, repeat: int) -> float:
    call = fn  # type: ignore[assignment]
    start = time.perf_counter()
    for _ in range(repeat):
        call()  # type: ignore[operator]
    return (time.perf_counter() - start) / repeat


def main() -> None:
    caps = (Cap("events", 1, 10_000),)
    batch = pb.PublishRequest(
        events=[
            pb.Event(
                event_id=f"evt-{i:012d}",
                source="aws",
                event_type="order.created",
                payload=b'{"order": 1234, "amount": 12.5, "currency": "EUR"}',
            )
            for i in range(500)
        ]
    ).SerializeToString()
    scan = each(lambda: check_caps(batch, caps), 2000)
    parse = each(lambda: pb.PublishRequest.FromString(batch), 2000)
    print(
        f"500-event batch ({len(batch)} bytes): count {scan * 1e6:.0f} us "
        f"({scan / 500 * 1e6:.3f} us a copy), parse {parse * 1e6:.0f} us"
    )

    million = b"\x0a\x00" * 8_000_000  # 16 MB: a quarter of max_message_bytes

    def refuse() -> None:
        try:
            check_caps(million, caps)
        except RequestError:
            return
        raise AssertionError("not refused")

    refused = each(refuse, 20)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    parsed = pb.PublishRequest.FromString(million)
    parsed_in = time.perf_counter() - start
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    print(
        f"{len(parsed.events):,} empty events ({len(million):,} bytes): refused unread in "
        f"{refused * 1e3:.2f} ms; parsing them takes {parsed_in * 1e3:.0f} ms "
        f"and {grown / 1024:.0f} MB"
    )


if __name__ == "__main__":
    main()

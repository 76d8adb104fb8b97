"""A bounded fuzz of every RPC of a real heliosd with security.auth = "keys": random
bytes and random well-formed requests, with no credentials, garbage ones or real keys
of every role. None may end in UNKNOWN or INTERNAL, and heliosd must still serve after.
benchmarks/fuzz.py runs the same for 60 s. tests/fuzz_calls.py (the generator and the caller)
is a helper, not a test: what it produces is checked here."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import grpc
import pytest
from helios.daemon.identity import KeyStore
from helios.v1 import helios_pb2 as pb
from helios.v1 import helios_pb2_grpc as pb_grpc
from hypothesis import HealthCheck, given, settings

from tests.conftest import start_daemon_process, stop_daemon_process
from tests.fuzz_calls import BAD, call, invoke

SECURE = """
[security]
auth = "keys"
[actions.options]
exec = { command = ["/bin/true"] }
"""


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory):
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    store = KeyStore(tmp / "data" / "keys.json")
    keys = [
        store.create(f"fuzz-{role}", role)[1]
        for role in ("viewer", "ingester", "operator", "admin")
    ]
    daemon = start_daemon_process(tmp, SECURE)
    channel = grpc.insecure_channel(daemon.address)
    yield daemon, channel, keys
    channel.close()
    stop_daemon_process(daemon)


CODES: Counter[str] = Counter()


def test_no_rpc_ends_in_unknown_or_internal_whatever_it_is_sent(fuzzed):
    daemon, channel, keys = fuzzed

    @settings(
        max_examples=400,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    @given(call(keys))
    def one(sent):
        service, method, body, auth = sent
        code = invoke(channel, service, method, body, auth)
        CODES[code.name] += 1
        assert code not in BAD, (method.name, body[:80], auth, code)

    one()
    # Still serving, and the refusals were counted rather than crashing anything.
    stats = pb_grpc.QueryServiceStub(channel).GetStats(
        pb.GetStatsRequest(), metadata=[("authorization", f"Bearer {keys[0]}")], timeout=10
    )
    assert sum(stats.errors.values()) > 0
    assert CODES["UNAUTHENTICATED"] > 0 and CODES["OK"] + CODES["INVALID_ARGUMENT"] > 0
    assert daemon.proc.poll() is None


def test_the_generator_reaches_every_rpc_with_requests_it_can_parse():
    """A fuzzer that never produced a well-formed request for some RPC, or only garbage,
    would test nothing there: every RPC gets well-formed requests of its own type."""
    from google.protobuf.message import DecodeError
    from hypothesis import find

    from tests.fuzz_calls import METHODS, message

    for service, method in METHODS:
        cls = getattr(pb, method.input_type.name)

        def parses_with_a_field_set(m, cls=cls) -> bool:
            try:
                parsed = cls.FromString(m.SerializeToString())
            except DecodeError:
                return False
            return bool(parsed.ListFields()) or not cls.DESCRIPTOR.fields

        found = find(
            message(method.input_type),
            parses_with_a_field_set,
            settings=settings(max_examples=200, database=None),
        )
        assert isinstance(found, cls), (service.name, method.name)

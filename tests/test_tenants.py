"""Tenants: a key scoped to a tenant publishes and reads that tenant's events only; the
same event_id in two tenants is two events; nothing deployment-wide is open to it; a
deployment-wide key sees every tenant, named; ids cannot be forged into another
tenant's namespace, through the API or an input; a tenant's copy quota is shared by its
keys; the durable index keeps tenants apart across a restart."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from helios.v1 import helios_pb2 as pb
from helios.v1 import helios_pb2_grpc as pb_grpc

from tests.test_grpc import event
from tests.test_security import Secure, bearer

SOURCES = ("aws", "gcp", "azure")


def copies(event_id: str, tenant: str = "", payload: bytes = b'{"a": 1}') -> list[pb.Event]:
    out = []
    for source in SOURCES:
        e = event(event_id, source, payload)
        e.tenant = tenant
        out.append(e)
    return out


async def settle(secure: Secure) -> None:
    for _ in range(50):
        if not secure.daemon.pipeline.queued:
            break
        await asyncio.sleep(0.01)
    await secure.daemon.pipeline.drain()


async def refused(call, code: grpc.StatusCode) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == code, caught.value.details()
    return caught.value.details() or ""


async def test_tenants_cannot_read_each_others_events(tmp_path):
    async with Secure(tmp_path) as s:
        blue = s.keys.create("blue-app", "admin", tenant="blue")[1]
        red = s.keys.create("red-app", "admin", tenant="red")[1]
        admin = s.key("admin")
        async with s.channel() as channel:
            ingest = pb_grpc.IngestServiceStub(channel)
            query = pb_grpc.QueryServiceStub(channel)
            # the same event id in two tenants, with payloads that differ: two events
            await ingest.Publish(pb.PublishRequest(events=copies("o-1")), metadata=bearer(blue))
            await ingest.Publish(
                pb.PublishRequest(events=copies("o-1", payload=b'{"a": 2}')), metadata=bearer(red)
            )
            await settle(s)
            mine = await query.GetEvent(pb.GetEventRequest(event_id="o-1"), metadata=bearer(blue))
            assert mine.event.tenant == "blue" and mine.event.event_id == "o-1"
            assert mine.event.status == pb.EVENT_STATUS_COMPLETE  # no INCONSISTENT across them
            # blue may not look into red, by name or by a crafted id
            await refused(
                query.GetEvent(
                    pb.GetEventRequest(event_id="o-1", tenant="red"), metadata=bearer(blue)
                ),
                grpc.StatusCode.PERMISSION_DENIED,
            )
            await refused(
                query.GetEvent(pb.GetEventRequest(event_id="red\x1fo-1"), metadata=bearer(blue)),
                grpc.StatusCode.NOT_FOUND,
            )
            listed = await query.ListOutcomes(pb.ListOutcomesRequest(), metadata=bearer(blue))
            assert {(o.tenant, o.event_id) for o in listed.outcomes} == {("blue", "o-1")}
            await refused(
                query.ListOutcomes(
                    pb.ListOutcomesRequest(filter="tenant=red"), metadata=bearer(blue)
                ),
                grpc.StatusCode.PERMISSION_DENIED,
            )
            watch = query.WatchOutcomes(pb.WatchOutcomesRequest(), metadata=bearer(blue))
            await ingest.Publish(pb.PublishRequest(events=copies("o-2")), metadata=bearer(red))
            await ingest.Publish(pb.PublishRequest(events=copies("o-3")), metadata=bearer(blue))
            seen = await asyncio.wait_for(watch.read(), 10)
            assert [(o.tenant, o.event_id) for o in seen.outcomes] == [("blue", "o-3")]
            watch.cancel()
            # a deployment-wide key sees both, named, and may pick one
            both = await query.ListOutcomes(pb.ListOutcomesRequest(), metadata=bearer(admin))
            assert {(o.tenant, o.event_id) for o in both.outcomes} == {
                ("blue", "o-1"),
                ("red", "o-1"),
                ("red", "o-2"),
                ("blue", "o-3"),
            }
            red_only = await query.ListOutcomes(
                pb.ListOutcomesRequest(filter="tenant=red"), metadata=bearer(admin)
            )
            assert {o.tenant for o in red_only.outcomes} == {"red"}
            got = await query.GetEvent(
                pb.GetEventRequest(event_id="o-1", tenant="red"), metadata=bearer(admin)
            )
            assert got.event.tenant == "red"


async def test_a_tenant_key_is_refused_what_shows_or_changes_the_deployment(tmp_path):
    async with Secure(tmp_path) as s:
        blue = s.keys.create("blue-app", "admin", tenant="blue")[1]
        async with s.channel() as channel:
            query = pb_grpc.QueryServiceStub(channel)
            control = pb_grpc.ControlServiceStub(channel)
            keys = pb_grpc.KeysServiceStub(channel)
            for call in (
                query.GetStats(pb.GetStatsRequest(), metadata=bearer(blue)),
                query.ListExecutions(pb.ListExecutionsRequest(), metadata=bearer(blue)),
                query.ListAnomalies(pb.ListAnomaliesRequest(), metadata=bearer(blue)),
                control.PauseSource(pb.PauseSourceRequest(source="aws"), metadata=bearer(blue)),
                keys.ListKeys(pb.ListKeysRequest(), metadata=bearer(blue)),
            ):
                why = await refused(call, grpc.StatusCode.PERMISSION_DENIED)
                assert "scoped to tenant 'blue'" in why
            # publishing into another tenant, by name, is refused whole
            ingest = pb_grpc.IngestServiceStub(channel)
            why = await refused(
                ingest.Publish(pb.PublishRequest(events=copies("x", "red")), metadata=bearer(blue)),
                grpc.StatusCode.PERMISSION_DENIED,
            )
            assert "may not act in 'red'" in why
            assert not s.daemon.reconciler.open


async def test_an_id_cannot_be_forged_into_a_tenants_namespace(tmp_path):
    async with Secure(tmp_path) as s:
        admin = s.key("admin")
        ingester = s.key("ingester")
        async with s.channel() as channel:
            ingest = pb_grpc.IngestServiceStub(channel)
            # through the API, a deployment-wide key naming no tenant: a separator in the
            # id is refused per copy, named and counted
            reply = await ingest.Publish(
                pb.PublishRequest(events=[*copies("ok"), event("blue\x1fx", "aws")]),
                metadata=bearer(ingester),
            )
            assert reply.accepted == 3
            [bad] = reply.rejections
            assert (
                bad.field == "event_id" and "U+001F" in bad.reason and bad.event_id == "blue\x1fx"
            )
        # through an input (webhooks, Kafka, the simulator): never a tenant's key
        result = await s.daemon.admission.admit([("blue\x1fx", "aws", "t", 0.0, b"{}")])
        assert result.accepted == 0 and result.rejections[0].code == "event_id_invalid"
        assert s.daemon.pipeline.rejections["event_id_invalid"] == 2
        assert admin  # a deployment-wide admin may name any tenant (tested above)


async def test_a_tenants_copy_quota_is_shared_by_its_keys(tmp_path):
    async with Secure(tmp_path, 'copy_limits = { "tenant:blue" = 4.0 }\n') as s:
        one = s.keys.create("blue-1", "ingester", tenant="blue")[1]
        two = s.keys.create("blue-2", "ingester", tenant="blue")[1]
        red = s.keys.create("red-1", "ingester", tenant="red")[1]
        async with s.channel() as channel:
            ingest = pb_grpc.IngestServiceStub(channel)
            await ingest.Publish(pb.PublishRequest(events=copies("a")), metadata=bearer(one))
            why = await refused(
                ingest.Publish(pb.PublishRequest(events=copies("b")), metadata=bearer(two)),
                grpc.StatusCode.RESOURCE_EXHAUSTED,
            )
            assert "retry in" in why
            await ingest.Publish(pb.PublishRequest(events=copies("c")), metadata=bearer(red))


async def test_the_durable_index_keeps_tenants_apart_across_a_restart(tmp_path):
    blue = red = ""
    for round_ in range(2):  # the same data directory: a sqlite index, a restart between
        s = Secure(tmp_path, "", index="sqlite")
        if round_ == 0:
            blue = s.keys.create("blue-app", "admin", tenant="blue")[1]
            red = s.keys.create("red-app", "admin", tenant="red")[1]
        async with s, s.channel() as channel:
            ingest = pb_grpc.IngestServiceStub(channel)
            query = pb_grpc.QueryServiceStub(channel)
            if round_ == 0:
                await ingest.Publish(pb.PublishRequest(events=copies("d-1")), metadata=bearer(blue))
                await settle(s)
                continue
            got = await query.GetEvent(pb.GetEventRequest(event_id="d-1"), metadata=bearer(blue))
            assert got.event.tenant == "blue" and got.event.status == pb.EVENT_STATUS_COMPLETE
            await refused(
                query.GetEvent(pb.GetEventRequest(event_id="d-1"), metadata=bearer(red)),
                grpc.StatusCode.NOT_FOUND,
            )


async def test_an_inputs_copies_are_its_tenants_and_are_healed_in_it():
    from helios.daemon.clock import ManualClock
    from helios.daemon.identity import Identity, acting_as

    from tests.helpers import make_config, make_daemon

    config = make_config(
        """
[sources.inputs.simulator]
plugin = "simulator"
tenant = "shop-eu"
rate_per_second = 10.0
seed = 3
tick_seconds = 0.5
drop_probability = 0.2
"""
    )
    clock = ManualClock()
    daemon = make_daemon(config, clock)
    await daemon.start()
    try:
        await daemon.advance(40.0)
        keys = list(daemon.reconciler.open) + [o.event_id for o in daemon.reconciler.outcomes]
        reads = daemon.services.reads
        shop = Identity("shop-app", "viewer", frozenset({"read"}), "test", "shop-eu")
        other = Identity("other-app", "viewer", frozenset({"read"}), "test", "other")
        with acting_as(shop):
            mine, _ = await reads.outcomes("", 1000, "")
        with acting_as(other):
            theirs, _ = await reads.outcomes("", 1000, "")
        missing = await daemon.runtime.missing_copies("aws", 0.0, 100)
    finally:
        await daemon.stop()
    assert mine and not theirs
    assert all(o.event_id.startswith("shop-eu\x1f") for o in mine)
    assert all(k.startswith("shop-eu\x1f") for k in keys)
    # a replay of the tenant's missing copies goes back through the input unchanged
    assert missing and all(c[0].startswith("shop-eu\x1f") for c in missing)
    from helios.daemon.config import ConfigError

    with pytest.raises(ConfigError, match=r"sources\.inputs\.x\.tenant"):
        make_config('[sources.inputs.x]\nplugin = "simulator"\ntenant = "Bad Tenant"\n')


async def test_a_route_can_be_one_tenants():
    from helios.daemon.clock import ManualClock

    from tests.helpers import copy, kinds, make_config, make_daemon

    config = make_config(
        """
[[routes]]
event_type = "order.*"
sources = ["aws"]
tenants = ["solo"]
[[routes]]
event_type = "order.*"
sources = ["aws", "gcp"]
"""
    )
    daemon = make_daemon(config, ManualClock())
    await daemon.start()
    try:
        # tenant "solo" expects aws alone: complete at once; everyone else needs gcp too
        batch = [copy("solo\x1fo-1", "aws"), copy("o-1", "aws"), copy("big\x1fo-1", "aws")]
        good, result = daemon.pipeline.check(batch, scoped=True)  # as the API scopes them
        assert not result.rejections
        await daemon.pipeline.process(good, 0.0)
        assert kinds(daemon, "solo\x1fo-1") == ["COMPLETE"]
        assert kinds(daemon, "o-1") == [] and kinds(daemon, "big\x1fo-1") == []
        text = (await daemon.services.observe.prometheus()).decode()
        assert 'route="order.*",source="*"' in text
    finally:
        await daemon.stop()


@pytest.mark.parametrize("backend", ["memory", "sqlite", "redis"])
async def test_a_tenants_records_and_outcomes_leave_at_its_own_retention(
    backend, tmp_path, request
):
    from helios.daemon.query import OutcomeQuery

    from tests.helpers import copy, make_config, make_daemon

    env = {
        "INDEX__BACKEND": f'"{backend}"',
        "INDEX__TTL_SECONDS": "3600.0",
        "INDEX__TENANT_TTL_SECONDS": "{ brief = 60.0 }",
        "DAEMON__DATA_DIR": f'"{tmp_path}"',
    }
    redis = request.getfixturevalue("redis_server") if backend == "redis" else None
    if redis is not None:
        env["INDEX__OPTIONS"] = f'{{ url = "{redis.url}" }}'
    daemon = make_daemon(make_config(**env))
    await daemon.start()
    try:
        keys = ["brief\x1fe1", "long\x1fe1", "e1"]
        copies = [copy(k, s) for k in keys for s in ("aws", "gcp", "azure")]
        assert (await daemon.admission.admit(copies, scoped=True)).accepted == 9
        await daemon.pipeline.drain()
        assert all([await daemon.runtime.get_event(k) for k in keys])
        storage = daemon.services.reads.storage().details  # status, GetStats, the console
        assert storage["retention"] == "3600 s; tenant brief: 60 s"
        if redis is not None:  # the store forgets it itself: the key's own TTL
            assert 0 < int(redis.cli("TTL", "helios:{brief\x1fe1}").split()[0]) <= 60
            assert int(redis.cli("TTL", "helios:{long\x1fe1}").split()[0]) > 3000
        await daemon.advance(90.0, step=5.0)  # past brief's 60 s, well within the 3600 s
        now = daemon.clock.now()
        await daemon.index.expire(now, now)  # what the index-ttl job does every 10 s
        assert await daemon.runtime.get_event("brief\x1fe1") is None
        assert await daemon.runtime.get_event("long\x1fe1") is not None
        assert await daemon.runtime.get_event("e1") is not None
        page, _ = await daemon.services.reads.outcomes("", 100, "")
        assert sorted(o.event_id for o in page) == ["e1", "long\x1fe1"]
        everything, _ = await daemon.index.list_outcomes(OutcomeQuery(), 100, None)
        assert len(everything) == 3  # still in the log, never shown: see the docs
        if backend != "redis":  # gone from the index itself, by its expiry
            assert "brief\x1fe1" not in await daemon.index.get_many(keys)
        now = daemon.clock.now()
    finally:
        await daemon.stop()
    if backend == "memory":
        return
    # A restart on the same store (its segments, or Redis, may still hold brief's bytes)
    # does not bring it back.
    from helios.daemon.clock import ManualClock

    again = make_daemon(make_config(**env), ManualClock(now))
    await again.start()
    try:
        assert await again.runtime.get_event("brief\x1fe1") is None
        assert await again.runtime.get_event("long\x1fe1") is not None
        page, _ = await again.services.reads.outcomes("", 100, "")
        assert sorted(o.event_id for o in page) == ["e1", "long\x1fe1"]
    finally:
        await again.stop()


def test_a_tenants_retention_must_be_a_tenant_and_within_the_index_ttl():
    from helios.daemon.config import ConfigError

    from tests.helpers import make_config

    with pytest.raises(ConfigError, match=r"at most ttl_seconds"):
        make_config(INDEX__TTL_SECONDS="60.0", INDEX__TENANT_TTL_SECONDS="{ a = 61.0 }")
    with pytest.raises(ConfigError, match=r"'Bad' is not a tenant"):
        make_config(INDEX__TENANT_TTL_SECONDS="{ Bad = 6.0 }")
    with pytest.raises(ConfigError, match=r"tenant_ttl_seconds"):
        make_config(INDEX__TENANT_TTL_SECONDS="{ a = inf }")


TENANT_LOSES_AWS = """
[sources.inputs.simulator]
plugin = "simulator"
rate_per_second = 100.0
seed = 5
tick_seconds = 0.5

[sources.inputs.blue]
plugin = "simulator"
tenant = "blue"
rate_per_second = 1.0
seed = 7
tick_seconds = 0.5
scenarios = [ { source = "aws", kind = "drop", probability = 0.5, duration_minutes = 60.0 } ]

[decision]
automation = "auto"

[slo]
min_events = 20
"""


async def test_a_tenants_own_loss_is_detected_decided_and_healed_in_that_tenant():
    """blue is 1% of the traffic and loses half its aws copies: the deployment's aws
    objective barely moves (0.5% missed: no burn alert), blue's burns. The anomaly, the
    decision and the replay are blue's, and only blue's copies are replayed."""
    from tests.test_heal import run
    from tests.test_heal_api import healing

    async for h in healing(config=TENANT_LOSES_AWS):  # 60 s run already
        daemon, clock = h.daemon, h.clock
        await run(daemon, clock, 30)
        slo = [a for a in daemon.detection.anomalies if a.detector == "slo"]
        assert slo, "blue's burning aws objective raised nothing"
        assert {(str(a.diagnosis), a.diagnosis.tenant) for a in slo} == {
            ("missing_events(aws) in tenant blue", "blue")
        }  # and nothing for the deployment's aws, which is not burning
        views = {v.scope: v for v in daemon.services.observe.slos()}
        assert views["tenant:blue/aws"].firing and not views["source:aws"].firing
        assert views["tenant:blue"].ratio < 0.8
        decided = [d for d in daemon.loop.audit.decisions.values() if d.anomaly_id == slo[0].id]
        assert decided and decided[0].chosen == "replay_missing"
        assert decided[0].diagnosis.tenant == "blue"
        await run(daemon, clock, 10)
        replayed = list(daemon.runtime.replayed["aws"])
        assert replayed and all(k.startswith("blue\x1f") for k in replayed)
        executions = [x for x in daemon.loop.audit.executions.values()]
        assert any("of tenant blue" in x.plan for x in executions)
        # what the API says of it
        from helios.control.convert import diagnosis_pb

        assert diagnosis_pb(decided[0].diagnosis).tenant == "blue"
        # blue reads its own decisions, red none of them; naming another tenant is refused
        from helios.daemon.errors import RequestError
        from helios.daemon.identity import Identity, acting_as

        reads = daemon.services.reads
        blue = Identity("blue-app", "viewer", frozenset({"read"}), "test", "blue")
        red = Identity("red-app", "viewer", frozenset({"read"}), "test", "red")
        with acting_as(blue):
            own, _ = reads.decisions("", 100, "")
            assert own and all(d.diagnosis.tenant == "blue" for d in own)
            assert reads.decision(decided[0].id).id == decided[0].id
            with pytest.raises(RequestError, match="tenant 'blue'"):
                reads.decisions("tenant=red", 100, "")
        with acting_as(red):
            assert reads.decisions("", 100, "")[0] == []
            with pytest.raises(RequestError, match="no decision"):
                reads.decision(decided[0].id)
        everything, _ = reads.decisions("", 100, "")  # the deployment's operators: all
        assert len(everything) >= len(own)
        assert reads.decisions("tenant=blue", 100, "")[0] == own
        code, out = await h.cli("decisions", "list", "--tenant", "blue")
        assert code == 0 and "missing_events(aws) in tenant blue" in out, out
        code, out = await h.cli("slo")
        assert code == 0 and "tenant:blue/aws" in out


async def test_an_operator_replays_one_tenants_missing_copies():
    from helios.daemon.clock import ManualClock

    from tests.helpers import make_config, make_daemon
    from tests.test_heal import run

    config = TENANT_LOSES_AWS.replace('automation = "auto"', 'automation = "observe"')
    config = config.replace(
        "rate_per_second = 100.0",
        "rate_per_second = 10.0\n"
        + (
            'scenarios = [ { source = "aws", kind = "drop", probability = 0.5, '
            "duration_minutes = 60.0 } ]"
        ),
    )
    clock = ManualClock()
    daemon = make_daemon(make_config(config), clock)
    await daemon.start()
    try:
        await run(daemon, clock, 40)
        operator = daemon.services.operator
        d, x = await operator.trigger(
            "replay_missing", "aws", {"tenant": "blue"}, False, "olga", force=True
        )
        assert str(d.diagnosis) == "manual(aws) in tenant blue"
        assert "of tenant blue" in x.plan
        await run(daemon, clock, 2)  # the execution runs as a task
        replayed = list(daemon.runtime.replayed["aws"])
        assert replayed and all(k.startswith("blue\x1f") for k in replayed)
        from helios.daemon.errors import RequestError

        with pytest.raises(RequestError, match="tenant"):
            await operator.trigger("replay_missing", "aws", {"tenant": "No Such"}, True, "olga")
    finally:
        await daemon.stop()

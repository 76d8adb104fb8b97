"""The runtime recovery actions act through (the `Runtime` protocol of
helios.daemon.types): sources and their inputs, breakers, failover, throttles,
quarantine, notifications and the durable record of replayed copies.

It is built with the daemon and touches no file until `open()`."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from pathlib import Path

from helios.daemon.clock import Clock
from helios.daemon.errors import ErrorCode, RequestError
from helios.daemon.files import write_atomic, write_json
from helios.daemon.model import CopyIn, EventRecord, OutcomeKind
from helios.daemon.pipeline import Pipeline
from helios.daemon.query import OutcomeQuery
from helios.daemon.reconciler import Reconciler
from helios.daemon.safety import Breaker, Breakers
from helios.daemon.tenants import past_retention, unscoped
from helios.daemon.types import IndexBackend, Source

log = logging.getLogger("helios.runtime")
REPLAYED_KEPT = 500_000  # replayed copies remembered per source
QUARANTINE_KEPT = 100_000


class UnknownSource(RequestError):
    """A source name that is not in sources.names."""

    def __init__(self, source: str, known: Sequence[str]) -> None:
        super().__init__(
            "source", f"unknown source {source!r}; known: {', '.join(known)}", ErrorCode.NOT_FOUND
        )


class ActionRuntime:
    def __init__(
        self,
        sources: Sequence[str],
        clock: Clock,
        pipeline: Pipeline,
        reconciler: Reconciler,
        index: IndexBackend,
        inputs: Mapping[str, Source],
        breakers: Breakers,
        data_dir: str,
        tenant_ttl: Mapping[str, float] | None = None,
        input_tenants: Mapping[str, str] | None = None,
    ) -> None:
        self.sources = list(sources)
        self.input_tenants = dict(input_tenants or {})  # input -> the tenant of its copies
        self.tenant_ttl = dict(tenant_ttl or {})  # index.tenant_ttl_seconds
        self.clock = clock
        self.pipeline = pipeline
        self.reconciler = reconciler
        self.index = index
        self.inputs = inputs
        self.breakers = breakers
        self.failed_over: set[str] = set()
        self.quarantined: OrderedDict[str, str] = OrderedDict()
        self.notifications: deque[tuple[float, str, str]] = deque(maxlen=500)
        self._replayed_path = Path(data_dir) / "decisions" / "replayed.log"
        self._state_path = Path(data_dir) / "decisions" / "operator.json"
        self.state_note = ""  # why the saved operator state was not restored
        # Replayed copies by source, oldest first (a dict as an ordered set), bounded: a
        # copy older than the index TTL cannot be replayed anyway.
        self.replayed: dict[str, dict[str, None]] = {s: {} for s in self.sources}
        self._replayed_lines = 0

    def open(self) -> None:
        """Read the operator state and the record of replayed copies back (start-up)."""
        self._load_state()
        try:
            with self._replayed_path.open(encoding="utf-8") as handle:
                for line in handle:
                    self._replayed_lines += 1
                    source, _, event_id = line.rstrip("\n").partition("\t")
                    if source in self.replayed and event_id:
                        self.replayed[source][event_id] = None
        except FileNotFoundError:
            return
        self._trim_replayed()

    # ---- operator state: survives restarts ------------------------------------------------
    def _save_state(self) -> None:
        """Forced breakers, pauses, throttles, failover and quarantine, durably: a
        breaker opened for maintenance stays open after a restart."""
        forced = {
            s: {"state": b.state.value, "reason": b.reason, "since": b.since, "trips": b.trips}
            for s, b in self.breakers.breakers.items()
            if b.forced
        }
        write_json(
            self._state_path,
            {
                "paused": sorted(self.pipeline.paused),
                "throttles": {s: b[0] for s, b in self.pipeline.throttles.items()},
                "failed_over": sorted(self.failed_over),
                "breakers": forced,
                "quarantined": list(self.quarantined.items()),
            },
        )

    def _load_state(self) -> None:
        path = self._state_path
        if not path.exists():
            return
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            known = set(self.sources)
            paused = [s for s in data.get("paused", []) if s in known]
            throttles = {
                s: float(r) for s, r in data.get("throttles", {}).items() if s in known | {"all"}
            }
            failed = {s for s in data.get("failed_over", []) if s in known}
            breakers = {s: b for s, b in data.get("breakers", {}).items() if s in known}
            quarantined = [(str(e), str(r)) for e, r in data.get("quarantined", [])]
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            self.state_note = f"{path} not restored ({exc}); operator state starts clean"
            log.warning("%s", self.state_note)
            return
        now = self.clock.now()
        for source in paused:
            self.pause_source(source, save=False)
        for source, rate in throttles.items():
            self.pipeline.set_throttle(source, rate)
        self.failed_over = failed
        self.reconciler.set_excluded(failed)
        for source, b in breakers.items():
            breaker = self.breakers.set(source, str(b.get("state")), str(b.get("reason")), now)
            breaker.since, breaker.trips = float(b.get("since", now)), int(b.get("trips", 0))
        self.quarantined.update(quarantined)

    def check_source(self, source: str) -> None:
        if source not in self.sources:
            raise UnknownSource(source, self.sources)

    # ---- reading -------------------------------------------------------------------
    async def get_event(self, event_id: str) -> EventRecord | None:
        """The record of an event, from its open window or the index."""
        record = self.reconciler.open.get(event_id)
        if record is not None:
            return record
        found = (await self.index.get_many([event_id])).get(event_id)
        ttls, now = self.tenant_ttl, self.clock.now()
        if found is not None and ttls and past_retention(event_id, found.first_seen, ttls, now):
            return None  # past its tenant's retention: not shown, whatever a store still has
        return found

    def breaker(self, source: str) -> Breaker:
        self.check_source(source)
        return self.breakers.breakers[source]

    def breaker_state(self, source: str) -> str:
        return self.breakers.state(source)

    # ---- source inputs ---------------------------------------------------------------
    def source_inputs(self, source: str) -> list[str]:
        return [name for name, inst in self.inputs.items() if inst.delivers(source)]

    def _replayer(self, source: str, tenant: str = "") -> Source | None:
        """An input that can publish through `source`: for a tenant's copies, that
        tenant's own input when there is one (its copies come back as the tenant's)."""
        if source in self.failed_over:
            return None
        found = [
            (self.input_tenants.get(name, "") == tenant, instance)
            for name, instance in self.inputs.items()
            if instance.delivers(source) and instance.replays(source)
        ]
        return max(found, key=lambda f: f[0])[1] if found else None

    def can_replay(self, source: str) -> bool:
        return self._replayer(source) is not None

    async def replay(self, source: str, copies: Sequence[CopyIn]) -> int:
        by_tenant: dict[str, list[CopyIn]] = {}
        for c in copies:
            by_tenant.setdefault(unscoped(c[0])[0], []).append(c)
        sent = 0
        for tenant, some in by_tenant.items():
            instance = self._replayer(source, tenant)
            if instance is None:
                raise RuntimeError(f"no source input can publish through {source}")
            sent += await instance.replay(source, some)
        return sent

    async def restart_source(self, source: str) -> list[str]:
        restarted = []
        for name in self.source_inputs(source):
            instance = self.inputs[name]
            await instance.stop()
            await instance.start()
            restarted.append(name)
        return restarted

    def pause_source(self, source: str, save: bool = True) -> None:
        self.check_source(source)
        self.pipeline.paused.add(source)
        for instance in self.inputs.values():
            instance.pause(source)
        if save:
            self._save_state()

    def resume_source(self, source: str) -> None:
        self.check_source(source)
        self.pipeline.paused.discard(source)
        for instance in self.inputs.values():
            instance.resume(source)
        self._save_state()

    # ---- the record of replayed copies ---------------------------------------------------
    def _trim_replayed(self) -> None:
        """Keep the newest REPLAYED_KEPT per source; rewrite the log when it has grown
        to twice what is kept."""
        for done in self.replayed.values():
            extra = len(done) - REPLAYED_KEPT
            if extra > 0:
                for event_id in list(itertools.islice(done, extra)):
                    del done[event_id]
        kept = sum(len(d) for d in self.replayed.values())
        if self._replayed_lines > 2 * kept + 10_000:
            write_atomic(
                self._replayed_path,
                "".join(f"{s}\t{e}\n" for s, done in self.replayed.items() for e in done),
            )
            self._replayed_lines = kept

    def mark_replayed(self, source: str, event_ids: Sequence[str]) -> None:
        """Remember replayed copies (durably) so that none is replayed twice."""
        done = self.replayed[source]
        for event_id in event_ids:
            done[event_id] = None
        self._replayed_path.parent.mkdir(parents=True, exist_ok=True)
        with self._replayed_path.open("a", encoding="utf-8") as handle:
            handle.writelines(f"{source}\t{e}\n" for e in event_ids)
        self._replayed_lines += len(event_ids)
        self._trim_replayed()

    async def _outcome_ids(
        self, kind: OutcomeKind, source: str, since: float, limit: int, tenant: str | None = None
    ) -> list[str]:
        query = OutcomeQuery(
            kinds=frozenset({kind}), sources=frozenset({source}), since=since, tenant=tenant
        )
        ids: list[str] = []
        seen: set[str] = set()
        before: int | None = None
        while len(ids) < limit:
            page, before = await self.index.list_outcomes(query, 1000, before)
            for outcome in page:
                if outcome.event_id not in seen:
                    seen.add(outcome.event_id)
                    ids.append(outcome.event_id)
            if before is None:
                break
            # A page of an in-memory index never suspends: let the event loop serve
            # ingest and the console between pages (a replay's plan may scan millions).
            await asyncio.sleep(0)
        return ids

    async def missing_copies(
        self, source: str, since: float, limit: int, tenant: str = ""
    ) -> list[CopyIn]:
        """Stored copies of events MISSING from `source` since `since`, not replayed
        before, oldest first; with `tenant`, of that tenant's events only."""
        bit = 1 << self.sources.index(source)
        done = self.replayed[source]
        ids = [
            e
            for e in await self._outcome_ids(
                OutcomeKind.MISSING, source, since, 10 * limit + 1000, tenant or None
            )
            if e not in done
        ]
        records = await self.index.get_many(ids)
        copies: list[CopyIn] = []
        for event_id in reversed(ids):  # oldest first
            rec = records.get(event_id) or self.reconciler.open.get(event_id)
            if rec is None or not rec.missing & bit or not rec.payload:
                continue
            produced = next((c[1] for c in rec.copies if c is not None), rec.first_seen)
            copies.append((event_id, source, rec.event_type, produced, rec.payload))
            if len(copies) >= limit:
                break
        return copies

    async def inconsistent_events(self, source: str, since: float, limit: int) -> list[str]:
        return await self._outcome_ids(OutcomeKind.INCONSISTENT, source, since, limit)

    # ---- operator state ------------------------------------------------------------------
    def set_failover(self, source: str, failed: bool) -> None:
        self.check_source(source)
        (self.failed_over.add if failed else self.failed_over.discard)(source)
        self.reconciler.set_excluded(self.failed_over)
        self._save_state()
        self.notify("warning", f"{source} {'failed over' if failed else 'restored'}")

    def set_breaker(self, source: str, state: str, reason: str) -> None:
        self.check_source(source)
        try:
            b = self.breakers.set(source, state, reason, self.clock.now())
        except ValueError as exc:
            raise RequestError("state", str(exc)) from None
        self._save_state()
        self.notify("warning", f"breaker of {source} set to {state}: {reason} (now {b.state})")

    def set_throttle(self, source: str, per_second: float | None) -> None:
        self.pipeline.set_throttle(source, per_second)
        self._save_state()

    def quarantine(self, event_ids: Sequence[str], reason: str) -> int:
        added = 0
        for event_id in event_ids:
            if event_id not in self.quarantined:
                added += 1
            self.quarantined[event_id] = reason
        while len(self.quarantined) > QUARANTINE_KEPT:
            self.quarantined.popitem(last=False)
        if added:
            self._save_state()
        return added

    def notify(self, level: str, message: str) -> None:
        self.notifications.append((self.clock.now(), level, message))
        log.warning("%s", message) if level != "info" else log.info("%s", message)

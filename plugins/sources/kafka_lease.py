"""A member's lease on its partitions: fencing without the broker's help.

The group takes a member's partitions away when it has not heard a heartbeat for
`session_timeout_ms`, but the member learns of it only at its next heartbeat or poll.
A member frozen longer than that (a stopped VM, a long pause) wakes up still holding
windows the group gave to another member, which has adopted and decided them: its own
sweep would decide them a second time. Kafka offers no fencing short of transactions
(which the test broker lacks), so the member fences itself: its lease runs from the
moment it sent the last heartbeat the group answered (or was given its partitions) for
most of a session timeout, and while the lease has run out it decides nothing (the
window sweep waits) and admits nothing it polled (the batch is read again later). The
group either answers the next heartbeat (the lease is back) or tells the member to
rejoin (its windows go back undecided, helios.plugins.sources.kafka).

The lease is measured on this process's monotonic clock, which a freeze stops with
everything else, and it ends before the group's own timer can: the group's session
starts no earlier than the heartbeat was sent.
"""

from __future__ import annotations

import logging
import time
from typing import Any

log = logging.getLogger("helios.kafka")
SHARE = 0.8  # of the session timeout a lease lasts


class Lease:
    def __init__(self, session_timeout_ms: int) -> None:
        self.seconds = SHARE * session_timeout_ms / 1000
        self.since = time.monotonic()
        self.held = 0  # sweeps and polls held while it had run out
        self._said = False

    def renew(self, sent_at: float | None = None) -> None:
        self.since = time.monotonic() if sent_at is None else sent_at
        if self._said:
            log.warning("Kafka: the group answered again; the lease is back")
            self._said = False

    def left(self) -> float:
        """Seconds the lease still runs (negative: run out), without counting a hold."""
        return self.seconds - (time.monotonic() - self.since)

    def valid(self) -> bool:
        if time.monotonic() - self.since < self.seconds:
            return True
        self.held += 1
        if not self._said:
            log.warning(
                "Kafka: no heartbeat answered for %.1f s (lease %.1f s): deciding nothing "
                "until the group says which partitions this member holds",
                time.monotonic() - self.since,
                self.seconds,
            )
            self._said = True
        return False

    def watch(self, consumer: Any) -> bool:
        """Renew on every heartbeat the group answers. aiokafka has no public hook for
        it: its coordinator's heartbeat call is wrapped, and if that changes the lease
        is renewed by assignments only (and says so)."""
        coordinator: Any = getattr(consumer, "_coordinator", None)
        beat = getattr(coordinator, "_do_heartbeat", None)
        if coordinator is None or beat is None:
            log.warning("Kafka: cannot follow heartbeats; the lease renews at assignments")
            return False

        async def heartbeat() -> Any:
            sent = time.monotonic()
            answered = await beat()
            if answered:
                self.renew(sent)
            return answered

        setattr(coordinator, "_do_heartbeat", heartbeat)  # noqa: B010
        return True

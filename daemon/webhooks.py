"""Webhook deliveries, the service side: the routes source plugins serve on the
console's HTTP server (`/ingest/...`), what each input received and refused, and the
dead-letter store the refused deliveries go to.

The HTTP front-end (helios.ui.webhooks) reads the body within the route's limit and
calls `deliver`; everything a refusal means (count it by input and reason, keep it in
the dead-letter store) happens here, once, whatever refused it.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from helios.daemon.deadletters import DeadLetter, DeadLetters, redact
from helios.daemon.errors import ErrorCode, RequestError

log = logging.getLogger("helios.webhooks")
DEFAULT_MAX_BODY = 1 << 20


@dataclass
class WebRequest:
    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    peer: str = ""
    replay: bool = False  # a dead letter sent again by an operator
    verified: bool = False  # replayed and had passed its input's check before


@dataclass
class WebReply:
    status: int
    body: dict[str, Any]
    headers: list[tuple[str, str]] = field(default_factory=list)
    error: str = ""  # the vocabulary's code when refused
    verified: bool = False  # the delivery passed its input's authenticity check
    copies: int = 0

    def encoded(self) -> bytes:
        return orjson.dumps(self.body)


def refusal(status: int, code: str, detail: str, **extra: Any) -> WebReply:
    headers = [("retry-after", str(extra.pop("retry_after")))] if "retry_after" in extra else []
    return WebReply(status, {"error": code, "detail": detail, **extra}, headers, code)


WebHandler = Callable[[WebRequest], Awaitable[WebReply]]


@dataclass
class Route:
    input: str
    handler: WebHandler
    max_body: int
    secret_headers: frozenset[str] = frozenset()


class InputStats:
    """What one input received: deliveries, copies, refusals by reason, the last one."""

    def __init__(self) -> None:
        self.deliveries = 0
        self.copies = 0
        self.errors: Counter[str] = Counter()
        self.last_delivery = 0.0  # wall time
        self.last_error = 0.0
        self._seconds: deque[list[int]] = deque(maxlen=61)  # [second, deliveries]

    def delivered(self, copies: int, deliveries: int = 1) -> None:
        now = time.time()
        self.deliveries += deliveries
        self.copies += copies
        self.last_delivery = now
        second = int(now)
        if self._seconds and self._seconds[-1][0] == second:
            self._seconds[-1][1] += deliveries
        else:
            self._seconds.append([second, deliveries])

    def refused(self, reason: str) -> None:
        self.errors[reason] += 1
        self.last_error = time.time()

    def rate(self) -> float:
        """Deliveries per second over the last minute."""
        since = int(time.time()) - 60
        return sum(n for s, n in self._seconds if s > since) / 60.0


class Webhooks:
    def __init__(self, deadletters: DeadLetters, max_in_flight: int = 256) -> None:
        # Deliveries being read or handled at once: bodies held are at most
        # max_in_flight x the largest max_body; beyond, 503 before reading.
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        self.routes: dict[str, Route] = {}
        self.deadletters = deadletters
        self.stats: dict[str, InputStats] = {}
        self.unrouted: Counter[str] = Counter()  # refusals before any input: by reason

    def stats_of(self, input_name: str) -> InputStats:
        return self.stats.setdefault(input_name, InputStats())

    def serve(
        self,
        input_name: str,
        path: str,
        handler: WebHandler,
        max_body: int = DEFAULT_MAX_BODY,
        secret_headers: frozenset[str] = frozenset(),
    ) -> None:
        """A source plugin's route (SourceContext.serve). Raises ValueError for a path
        that is not under /ingest/ or is served already."""
        if not path.startswith("/ingest/") or "?" in path:
            raise ValueError(f"webhook path {path!r} must start with /ingest/")
        taken = self.routes.get(path)
        if taken is not None and taken.input != input_name:
            raise ValueError(f"webhook path {path} is served by input {taken.input!r} already")
        self.routes[path] = Route(input_name, handler, max_body, secret_headers)
        self.stats_of(input_name)

    def route(self, path: str) -> Route | None:
        return self.routes.get(path.rstrip("/") or path)

    async def deliver(self, request: WebRequest, route: Route | None = None) -> WebReply:
        """Hand a delivery to its input (`route`, when the caller looked it up already)."""
        route = route or self.route(request.path)
        if route is None:
            reply = refusal(404, "unknown_input", f"no webhook input serves {request.path}")
            return await self.refused(None, request, reply)
        if request.method != "POST" and not (
            request.method == "OPTIONS" and "webhook-request-origin" in request.headers
        ):
            reply = refusal(405, "method_not_allowed", f"{request.method}: deliveries are POSTs")
            reply.headers.append(("allow", "POST, OPTIONS"))
            return await self.refused(route, request, reply)
        try:
            reply = await route.handler(request)
        except Exception as exc:  # a plugin's defect: a 500 would make the cloud retry
            log.exception("webhook input %s failed on a delivery", route.input)
            reply = refusal(503, "internal", f"input {route.input} failed: {type(exc).__name__}")
            reply.headers.append(("retry-after", "5"))
        if reply.error:
            return await self.refused(route, request, reply)
        if reply.copies or request.method == "POST":
            self.stats_of(route.input).delivered(reply.copies)
        return reply

    async def refused(self, route: Route | None, request: WebRequest, reply: WebReply) -> WebReply:
        """Count a refusal and keep the delivery as a dead letter (not for pushback:
        429/503 are the cloud's to retry, nothing is wrong with the delivery)."""
        if route is None:
            self.unrouted[reply.error] += 1
        else:
            self.stats_of(route.input).refused(reply.error)
        if reply.status in (429, 503) or request.replay:
            return reply
        headers, query = redact(
            request.headers, request.query, route.secret_headers if route else frozenset()
        )
        letter = await self.deadletters.add(
            DeadLetter(
                0,
                time.time(),
                route.input if route else "",
                reply.error,
                reply.status,
                str(reply.body.get("detail", ""))[:2000],
                request.method,
                request.path,
                query,
                headers,
                request.body,
                reply.verified,
            )
        )
        reply.body["dead_letter"] = letter.id
        return reply

    async def dead_letter(
        self, input_name: str, reason: str, detail: str, body: bytes, where: str
    ) -> DeadLetter:
        """A pull input's refused message (SQS, Pub/Sub): counted and kept like a
        refused delivery. `where` names its origin (the queue); it is not replayable here
        (the queue's own redrive is)."""
        self.stats_of(input_name).refused(reason)
        return await self.deadletters.add(
            DeadLetter(
                0,
                time.time(),
                input_name,
                reason,
                0,
                detail[:2000],
                "PULL",
                where,
                "",
                {},
                body,
                True,
            )
        )

    async def replay(self, letter_id: int) -> tuple[DeadLetter, WebReply]:
        """Send a dead letter through its input again (after a fix). Accepted: it leaves
        the store; refused again: it stays with the new reason."""
        letter = self.deadletters.get(letter_id)
        if letter is None:
            raise RequestError(
                "id",
                f"no dead letter {letter_id} (pushed out, replayed, or never kept)",
                ErrorCode.NOT_FOUND,
            )
        if letter.method == "PULL":
            raise RequestError(
                "id",
                f"dead letter {letter_id} came from {letter.path}: replay it with the queue's "
                "own redrive (docs/webhooks.md)",
                ErrorCode.PRECONDITION,
            )
        request = WebRequest(
            letter.method,
            letter.path,
            letter.query,
            dict(letter.headers),
            letter.body,
            "replay",
            replay=True,
            verified=letter.verified,
        )
        reply = await self.deliver(request)
        letter.attempts += 1
        if not reply.error:
            letter.replayed.append(f"accepted {reply.copies} copies")
            await self.deadletters.remove(letter.id)
        else:
            letter.replayed.append(f"{reply.status} {reply.error}")
            letter.reason, letter.status = reply.error, reply.status
            letter.detail = str(reply.body.get("detail", ""))[:2000]
            await self.deadletters.update(letter)
        return letter, reply

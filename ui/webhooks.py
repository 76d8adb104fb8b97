"""The HTTP side of webhook deliveries (`/ingest/...` on the console's server): read the
body within the route's limit, undo gzip within the same limit, and hand the delivery
to the service layer (helios.daemon.webhooks), which verifies, parses, admits, counts
and keeps refusals as dead letters.

A body over the limit is refused from its Content-Length, or while it is read, before
the whole of it is held; a gzip body is inflated at most to the limit (a gzip bomb is a
413 like any other oversize body). Raw ASGI, not a FastAPI route: this path carries
every delivery, and each layer costs (benchmarks/webhooks.py)."""

from __future__ import annotations

import zlib
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from helios.daemon.telemetry import continued
from helios.daemon.webhooks import Route, Webhooks, WebReply, WebRequest, refusal

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
UNROUTED_LIMIT = 64 * 1024  # a path no input serves: read at most this much


async def _read(receive: Receive, limit: int) -> bytes | None:
    """The body, or None as soon as it grows past `limit`."""
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        parts.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(parts)


def _inflate(body: bytes, encoding: str, limit: int) -> bytes | WebReply:
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "x-gzip", "deflate"):
        return refusal(415, "unsupported_content_encoding", f"Content-Encoding {encoding!r}")
    inflater = zlib.decompressobj(wbits=47 if encoding != "deflate" else 15)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        return refusal(400, "invalid_encoding", f"the body is not valid {encoding}: {exc}")
    if len(out) > limit or inflater.unconsumed_tail:
        return refusal(413, "payload_too_large", f"the body inflates past {limit} bytes")
    if not inflater.eof:
        return refusal(400, "invalid_encoding", f"the {encoding} body is truncated")
    return out


async def serve(webhooks: Webhooks, scope: Scope, receive: Receive, send: Send) -> None:
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope.get("headers", []):
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    path = scope.get("path", "")
    route: Route | None = webhooks.route(path)
    limit = route.max_body if route is not None else UNROUTED_LIMIT
    client = scope.get("client") or ("", 0)
    request = WebRequest(
        scope.get("method", ""),
        path,
        scope.get("query_string", b"").decode("latin-1"),
        headers,
        b"",
        f"{client[0]}:{client[1]}",
    )
    if webhooks.in_flight >= webhooks.max_in_flight:  # bounded memory: refused unread
        busy = refusal(
            503,
            "overloaded",
            f"{webhooks.in_flight} deliveries are being handled (ingest.max_webhook_deliveries)",
            retry_after=1,
        )
        reply = await webhooks.refused(route, request, busy) if route is not None else busy
    else:
        webhooks.in_flight += 1  # from before the body is read until it is let go
        try:
            with continued(headers.items()):  # a producer's W3C trace goes on in HELIOS
                reply = await _take(webhooks, route, request, receive, limit)
        finally:
            webhooks.in_flight -= 1
    encoded = reply.encoded()
    out = [(b"content-type", b"application/json"), (b"content-length", str(len(encoded)).encode())]
    out += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers]
    await send({"type": "http.response.start", "status": reply.status, "headers": out})
    await send({"type": "http.response.body", "body": encoded})


async def _take(
    webhooks: Webhooks, route: Route | None, request: WebRequest, receive: Receive, limit: int
) -> WebReply:
    """Read, inflate and hand over one delivery; a refusal before the handler is counted
    and kept like any other."""
    headers = request.headers
    early: WebReply | None = None
    declared = headers.get("content-length", "")
    if declared and (not declared.isdigit() or int(declared) > limit):
        early = refusal(
            413 if declared.isdigit() else 400,
            "payload_too_large" if declared.isdigit() else "invalid_content_length",
            f"Content-Length {declared[:20]}; this input takes at most {limit} bytes",
        )
    else:
        body = await _read(receive, limit)
        if body is None:
            early = refusal(413, "payload_too_large", f"the body is over {limit} bytes")
        else:
            inflated = _inflate(body, headers.get("content-encoding", "").strip().lower(), limit)
            if isinstance(inflated, WebReply):
                early = inflated
                request.body = body
            else:
                request.body = inflated
    if early is not None and route is not None:
        return await webhooks.refused(route, request, early)
    return await webhooks.deliver(request, route)  # the route found once per request

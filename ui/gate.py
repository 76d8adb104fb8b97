"""The console's door: every HTTP request and websocket (NiceGUI's socket.io included)
passes here first.

- Host must be one the console answers to (its own bind address, loopback names, and
  security.console_hosts): a DNS-rebinding page on another name gets 421.
- Origin, when a browser sends one, must be such a host too: no other site can drive the
  console with the operator's cookie (403).
- With security.auth = "keys", a session is needed: /login takes an API key (the same keys
  as gRPC), checks it and sets an HttpOnly, SameSite=Strict cookie. The key is checked
  again on every request, so a revoked key logs its sessions out at once. With
  security.oidc_client_id, /login/oidc signs in through the identity provider instead
  (helios.ui.oidc_login: authorization code with PKCE); that session lasts until the ID
  token expires. /metrics also
  takes `Authorization: Bearer <key>` (read permission) for Prometheus.
- /ingest/... is the clouds' webhook deliveries: no session and no Host check (each
  input verifies its cloud's signature, token or key: helios.ui.webhooks).

The identity is put in the ASGI scope's state for the pages, which gate their actions by
permission and record the identity as who acted.
"""

from __future__ import annotations

import html
import secrets
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from helios.daemon.auditlog import AuditLog, from_peer
from helios.daemon.identity import ANONYMOUS, Guard, Identity, acting_as
from helios.daemon.webhooks import Webhooks
from helios.ui import webhooks
from helios.ui.oidc_login import OidcLogin

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

COOKIE = "helios_session"
SESSION_SECONDS = 8 * 3600
PUBLIC = ("/login", "/logout", "/favicon.ico", "/login/oidc", "/oidc/callback")
TENANT_PAGE = "/tenant"  # a tenant's console (helios.ui.tenant): its events only
INGEST = "/ingest/"  # webhook deliveries (helios.ui.webhooks)
STATIC = "/_nicegui/"  # scripts and styles; the socket.io channel (/_nicegui_ws) is not public
LOGIN = """<!doctype html><html><head><meta charset="utf-8"><title>HELIOS - sign in</title>
<style>body{{font-family:sans-serif;background:#0f172a;color:#e2e8f0;display:flex;
justify-content:center;margin-top:12vh}}form{{background:#1e293b;padding:2em;border-radius:8px;
width:26em}}input{{width:100%;padding:.6em;margin:.6em 0;box-sizing:border-box}}
button{{padding:.6em 1.4em}}.e{{color:#f87171}}</style></head><body>
<form method="post" action="/login"><h2>HELIOS console</h2>
<p>Sign in with an API key (<code>helios keys create</code>, or <code>heliosd keys create</code>
on the host).</p><p class="e">{error}</p>
<input type="hidden" name="next" value="{next}">
<input type="password" name="api_key" placeholder="helios_..." autofocus autocomplete="off">
<button type="submit">Sign in</button>{provider}</form></body></html>"""
PROVIDER = """<p>or <a class="helios-oidc" style="color:#93c5fd" href="/login/oidc?next={next}">sign
in with your identity provider</a></p>"""
SIGNED_IN = """<!doctype html><html><head><meta charset="utf-8">
<meta http-equiv="refresh" content="0;url={next}"><title>HELIOS</title></head>
<body><a href="{next}">signed in: continue</a></body></html>"""


class Gate:
    def __init__(
        self,
        app: ASGIApp,
        guard: Guard,
        hosts: set[str],
        auditlog: AuditLog | None = None,
        webhooks: Webhooks | None = None,
        oidc_login: OidcLogin | None = None,
    ) -> None:
        self.app = app
        self.oidc_login = oidc_login
        self.webhooks = webhooks
        self.guard = guard
        self.auditlog = auditlog
        self.hosts = {h.lower() for h in hosts}
        # token -> (the API key, re-checked on every request, or the identity an ID token
        # proved, until that token expires; expiry)
        self.sessions: dict[str, tuple[str | Identity, float]] = {}
        self.refused: dict[str, int] = {}

    # ---- checks ----------------------------------------------------------------------
    def _host_ok(self, value: str) -> bool:
        host = value.strip().lower()
        if host.startswith("["):
            host = host[1 : host.find("]")]
        else:
            host = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
        return host in self.hosts

    def identity(self, headers: dict[bytes, bytes], path: str) -> Identity | None:
        if self.guard.open:
            return ANONYMOUS
        token = _cookie(headers.get(b"cookie", b"").decode("latin-1"), COOKIE)
        session = self.sessions.get(token) if token else None
        if session is not None:
            key, expires = session
            if expires > time.time():
                found = key if isinstance(key, Identity) else self.guard.identify_key(key)
                if isinstance(found, Identity):
                    return found
            self.sessions.pop(token or "", None)
        if path == "/metrics":
            scheme, _, value = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
            if scheme.lower() == "bearer":
                found = self.guard.identify_key(value.strip())
                if isinstance(found, Identity):
                    return found
        return None

    # ---- ASGI ------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        if kind == "http" and path.startswith(INGEST) and self.webhooks is not None:
            # Clouds' deliveries: no session, no browser; each input checks its own
            # credentials (signature, token, key), whatever Host the cloud was given.
            await webhooks.serve(self.webhooks, scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        if not self._host_ok(headers.get(b"host", b"").decode("latin-1")):
            await self._refuse(scope, send, 421, "this console does not answer to that Host")
            return
        origin = headers.get(b"origin")
        if origin is not None and not self._host_ok(urlsplit(origin.decode("latin-1")).netloc):
            await self._refuse(scope, send, 403, "cross-origin requests are refused")
            return
        if kind == "http" and path == "/login":
            await self._login(scope, receive, send, headers)
            return
        if kind == "http" and path in ("/login/oidc", "/oidc/callback") and self.oidc_login:
            await self._oidc(scope, send, path, self.oidc_login)
            return
        if kind == "http" and path == "/logout":
            token = _cookie(headers.get(b"cookie", b"").decode("latin-1"), COOKIE)
            session = self.sessions.pop(token or "", None)
            if session is not None and self.auditlog is not None:
                key = session[0]
                found = key if isinstance(key, Identity) else self.guard.identify_key(key)
                who = found.name if isinstance(found, Identity) else "(expired session)"
                with from_peer(_peer(scope)):
                    self.auditlog.record("logout", "console", who=who)
            await _respond(send, 303, b"", [(b"location", b"/login"), _clear()])
            return
        identity = self.identity(headers, path)
        if identity is None and not path.startswith(STATIC) and path not in PUBLIC:
            page = path != "/metrics" and not path.startswith("/_nicegui")
            if kind == "http" and scope.get("method") == "GET" and page:
                target = quote(path, safe="/")
                await _respond(send, 303, b"", [(b"location", f"/login?next={target}".encode())])
            else:
                await self._refuse(scope, send, 401, "sign in (an API key) first")
            return
        if identity is not None and identity.tenant and not _tenants(path):
            # A tenant's console is its own page; the rest shows the whole deployment.
            if kind == "http" and scope.get("method") == "GET" and path != "/metrics":
                await _respond(send, 303, b"", [(b"location", TENANT_PAGE.encode())])
            else:
                await self._refuse(scope, send, 403, str(_deployment_wide(identity)))
            return
        if path == "/metrics" and identity is not None and not identity.may("read"):
            await self._refuse(scope, send, 403, f"{identity.name} may not read metrics")
            return
        scope.setdefault("state", {})["helios_identity"] = identity or ANONYMOUS
        await self.app(scope, receive, send)

    async def _refuse(self, scope: Scope, send: Send, status: int, why: str) -> None:
        self.refused[str(status)] = self.refused.get(str(status), 0) + 1
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": why})
            return
        await _respond(send, status, why.encode(), [(b"content-type", b"text/plain")])

    async def _login(
        self, scope: Scope, receive: Receive, send: Send, headers: dict[bytes, bytes]
    ) -> None:
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if scope.get("method") != "POST":
            page = self._page("", _safe_next(query.get("next", ["/"])[0]))
            await _respond(send, 200, page.encode(), [(b"content-type", b"text/html")])
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if len(body) > 16_384:
                await _respond(send, 413, b"login form too large", [])
                return
            if not message.get("more_body"):
                break
        form = parse_qs(body.decode("utf-8", "replace"))
        key = form.get("api_key", [""])[0].strip()
        target = _safe_next(form.get("next", ["/"])[0])
        found = self.guard.identify_key(key) if key else "no API key given"
        if self.auditlog is not None:
            with from_peer(_peer(scope)):
                if isinstance(found, Identity):
                    with acting_as(found):
                        self.auditlog.record("login", "console")
                else:
                    self.auditlog.record(
                        "login", "console", f"refused: {found}", who="(unauthenticated)"
                    )
        if not isinstance(found, Identity):
            self.refused["login"] = self.refused.get("login", 0) + 1
            page = self._page(str(found), target)
            await _respond(send, 401, page.encode(), [(b"content-type", b"text/html")])
            return
        cookie = self._session(scope, key, time.time() + SESSION_SECONDS)
        await _respond(send, 303, b"", [(b"location", target.encode()), cookie])

    def _page(self, error: str, target: str) -> str:
        provider = PROVIDER.format(next=quote(target, safe="/")) if self.oidc_login else ""
        return LOGIN.format(error=html.escape(error), next=html.escape(target), provider=provider)

    def _session(
        self, scope: Scope, credential: str | Identity, until: float
    ) -> tuple[bytes, bytes]:
        """A new session; its cookie header."""
        token = secrets.token_urlsafe(32)
        now = time.time()
        self.sessions = {t: s for t, s in self.sessions.items() if s[1] > now}
        self.sessions[token] = (credential, until)
        secure = "; Secure" if scope.get("scheme") == "https" else ""
        return (
            b"set-cookie",
            f"{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/{secure}".encode(),
        )

    async def _oidc(self, scope: Scope, send: Send, path: str, login: OidcLogin) -> None:
        query = {k: v[0] for k, v in parse_qs(scope.get("query_string", b"").decode()).items()}
        if path == "/login/oidc":
            location = login.start(_safe_next(query.get("next", "/")))
            await _respond(send, 303, b"", [(b"location", location.encode())])
            return
        found = await login.finish(query)
        with from_peer(_peer(scope)):
            if isinstance(found, str):
                self.refused["login"] = self.refused.get("login", 0) + 1
                if self.auditlog is not None:
                    self.auditlog.record(
                        "login", "console (oidc)", f"refused: {found}", who="(unauthenticated)"
                    )
                page = self._page(found, "/")
                await _respond(send, 401, page.encode(), [(b"content-type", b"text/html")])
                return
            if self.auditlog is not None:
                with acting_as(found.identity):
                    self.auditlog.record("login", "console (oidc)")
        cookie = self._session(
            scope, found.identity, min(found.expires, time.time() + SESSION_SECONDS)
        )
        # A page, not a redirect: the provider's redirect was a cross-site navigation, and
        # a SameSite=Strict cookie rides only on the same-site one this page starts.
        page = SIGNED_IN.format(next=html.escape(found.next))
        await _respond(send, 200, page.encode(), [(b"content-type", b"text/html"), cookie])


def _deployment_wide(found: Identity | str) -> Identity | str:
    """Every page but the tenant's own shows or acts on the whole deployment: a tenant's
    key may not."""
    if isinstance(found, Identity) and found.tenant:
        return (
            f"{found.name} is scoped to tenant {found.tenant!r}: it sees its own events on "
            f"{TENANT_PAGE}, and nothing of the deployment as a whole"
        )
    return found


def _tenants(path: str) -> bool:
    """What a tenant's session may reach: its page, and NiceGUI's scripts and socket."""
    return path == TENANT_PAGE or path.startswith("/_nicegui")


def _peer(scope: Scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else ""


def _safe_next(value: str) -> str:
    """Only a path of this console, never another site (an open redirect)."""
    if not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


def _cookie(header: str, name: str) -> str | None:
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return None


def _clear() -> tuple[bytes, bytes]:
    return (b"set-cookie", f"{COOKIE}=; Max-Age=0; Path=/; HttpOnly; SameSite=Strict".encode())


async def _respond(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


NOBODY = Identity("nobody", "none", frozenset(), "no session")


def who(request: Any) -> Identity:
    """The identity the gate found for a page's request (no permission at all if the
    request did not come through the gate)."""
    state = request.scope.get("state") or {}
    identity = state.get("helios_identity")
    return identity if isinstance(identity, Identity) else NOBODY

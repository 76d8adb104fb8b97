"""Who is calling, and what they may do: API keys (hashed at rest, scoped to a role,
expiring, revocable, rotatable), roles made of permissions, and the caller of the
request being served (a context variable the audit trail reads).

A key is `helios_<id>_<secret>`: the id names it in lists and logs, the whole string is
the credential. The store keeps only the SHA-256 of the whole string (a key is 32 random
bytes: a fast hash is enough, as for GitHub or Stripe tokens; a slow password hash
protects low-entropy secrets, which these are not). Keys live in `<data_dir>/keys.json`,
written atomically and fsynced under a lock, so `heliosd keys create` on the host and
`helios keys create` through a running daemon can both change it; the daemon re-reads it
when it changes.
"""

from __future__ import annotations

import contextlib
import contextvars
import fcntl
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from helios.daemon.errors import ErrorCode, RequestError
from helios.daemon.files import write_atomic

if TYPE_CHECKING:
    from helios.daemon.oidc import Oidc

# What a role may do. `read`: every query and watch, the console's pages, /metrics;
# `ingest`: Publish and PublishStream (and webhooks); `operate`: pause, breakers, modes,
# weights, approve, reject, trigger; `admin`: keys, and triggers forced past `observe`.
PERMISSIONS = ("read", "ingest", "operate", "admin")
ROLES: dict[str, frozenset[str]] = {
    "viewer": frozenset({"read"}),
    "ingester": frozenset({"ingest"}),
    "operator": frozenset({"read", "operate"}),
    "admin": frozenset(PERMISSIONS),
}
log = logging.getLogger("helios.identity")
PREFIX = "helios_"
NAME = re.compile(r"[A-Za-z0-9_.@-]{1,100}")


@dataclass(frozen=True)
class Identity:
    """An authenticated caller: the name the audit trail records, its role, and how it
    proved who it is (an API key's id, a client certificate, the local demo)."""

    name: str
    role: str
    permissions: frozenset[str]
    via: str
    tenant: str = ""  # the one tenant it may publish and read; "" = deployment-wide

    def may(self, permission: str) -> bool:
        return permission in self.permissions


ANONYMOUS = Identity("anonymous", "admin", frozenset(PERMISSIONS), "security.auth = none")
_CALLER: contextvars.ContextVar[Identity | None] = contextvars.ContextVar(
    "helios_caller", default=None
)


def caller() -> Identity | None:
    """The identity of the request being served, if any."""
    return _CALLER.get()


@contextlib.contextmanager
def acting_as(identity: Identity) -> Iterator[None]:
    token = _CALLER.set(identity)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):  # a generator resumed in another context
            _CALLER.reset(token)


def roles_from(custom: Mapping[str, list[str]]) -> dict[str, frozenset[str]]:
    """The built-in roles and the configured ones (security.roles)."""
    roles = dict(ROLES)
    for name, permissions in custom.items():
        unknown = sorted(set(permissions) - set(PERMISSIONS))
        if unknown:
            raise ValueError(
                f"security.roles.{name}: unknown permissions {unknown}; "
                f"known: {', '.join(PERMISSIONS)}"
            )
        roles[name] = frozenset(permissions)
    return roles


@dataclass
class ApiKey:
    id: str
    name: str
    role: str
    sha256: str
    created: float
    expires: float | None = None
    revoked: float | None = None
    rotated_to: str = ""
    tenant: str = ""

    def state(self, now: float) -> str:
        if self.revoked is not None and self.revoked <= now:
            return "revoked"
        if self.expires is not None and self.expires <= now:
            return "expired"
        return "active"


@dataclass
class KeyStore:
    path: Path
    roles: dict[str, frozenset[str]] = field(default_factory=lambda: dict(ROLES))
    _keys: dict[str, ApiKey] = field(default_factory=dict)
    _stamp: tuple[float, int] | None = None
    _checked: float = 0.0

    # ---- the file --------------------------------------------------------------------
    def _read(self) -> dict[str, ApiKey]:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            return {k["id"]: ApiKey(**k) for k in raw.get("keys", [])}
        except FileNotFoundError:
            return {}
        except (ValueError, TypeError, KeyError) as exc:
            raise RequestError(
                "keys", f"{self.path} is not a HELIOS key file ({exc})", ErrorCode.PRECONDITION
            ) from None

    def refresh(self, force: bool = False, throttle: bool = True) -> None:
        """Re-read the file if it changed (checked at most once a second unless
        `throttle` is off; always with `force`)."""
        now = time.monotonic()
        if throttle and not force and now - self._checked < 1.0:
            return
        self._checked = now
        try:
            st = self.path.stat()
            stamp: tuple[float, int] | None = (st.st_mtime, st.st_size)
        except FileNotFoundError:
            stamp = None
        if stamp != self._stamp or force:
            try:
                self._keys = self._read()
            except (RequestError, OSError) as exc:
                # A damaged file must not take every call down: keep the keys read last
                # (none, at start) until it is fixed, and say so once per change.
                log.error("API keys not re-read: %s; the previous keys stay in force", exc)
            self._stamp = stamp

    @contextlib.contextmanager
    def _changing(self) -> Iterator[dict[str, ApiKey]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            keys = self._read()
            yield keys
            body = json.dumps({"keys": [asdict(k) for k in keys.values()]}, indent=2)
            write_atomic(self.path, body + "\n")
            os.chmod(self.path, 0o600)
        self.refresh(force=True)

    # ---- changes -----------------------------------------------------------------------
    def create(
        self, name: str, role: str, expires_in: float | None = None, tenant: str = ""
    ) -> tuple[ApiKey, str]:
        """A new key; the secret is returned once and never stored."""
        if (
            not name
            or len(name) > 100
            or not name.replace("-", "")
            .replace("_", "")
            .replace(".", "")
            .replace("@", "")
            .isalnum()
        ):
            raise RequestError("name", "a key name is 1-100 letters, digits, -, _, . or @")
        if role not in self.roles:
            raise RequestError("role", f"unknown role {role!r}; roles: {', '.join(self.roles)}")
        if expires_in is not None and not (0 < expires_in < 10 * 365 * 86400):
            raise RequestError("expires_in_seconds", "must be > 0 and under ten years")
        from helios.daemon.tenants import check_tenant  # tenants reads the caller: here

        check_tenant(tenant)
        key_id = secrets.token_hex(4)
        secret = f"{PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        now = time.time()
        key = ApiKey(
            key_id,
            name,
            role,
            _digest(secret),
            now,
            None if expires_in is None else now + expires_in,
            tenant=tenant,
        )
        with self._changing() as keys:
            keys[key_id] = key
        return key, secret

    def revoke(self, key_id: str, after: float = 0.0) -> ApiKey:
        """Revoke now, or `after` seconds from now (a rotation's grace)."""
        with self._changing() as keys:
            key = keys.get(key_id)
            if key is None:
                raise RequestError("id", f"no key {key_id!r}", ErrorCode.NOT_FOUND)
            if key.revoked is None:
                key.revoked = time.time() + after
        return key

    def rotate(self, key_id: str, grace: float = 0.0) -> tuple[ApiKey, str]:
        """A new secret for the same name and role; the old one stops after `grace`."""
        self.refresh(force=True)
        old = self._keys.get(key_id)
        if old is None:
            raise RequestError("id", f"no key {key_id!r}", ErrorCode.NOT_FOUND)
        left = None if old.expires is None else max(1.0, old.expires - time.time())
        new, secret = self.create(old.name, old.role, left, old.tenant)
        with self._changing() as keys:
            keys[key_id].rotated_to = new.id
            if keys[key_id].revoked is None:
                keys[key_id].revoked = time.time() + grace
        return new, secret

    def list(self) -> list[ApiKey]:
        self.refresh(force=True)
        return sorted(self._keys.values(), key=lambda k: k.created)

    # ---- checking ----------------------------------------------------------------------
    def verify(self, secret: str) -> Identity | str:
        """The identity a presented key proves, or why it proves none (never the
        secret in the reason)."""
        self.refresh()
        if not secret.startswith(PREFIX) or secret.count("_") < 2:
            return "not a HELIOS API key"
        key_id = secret[len(PREFIX) :].split("_", 1)[0]
        key = self._keys.get(key_id)
        if key is None:  # made a moment ago by `heliosd keys create`? one stat to know
            self.refresh(throttle=False)
            key = self._keys.get(key_id)
        if key is None or not hmac.compare_digest(key.sha256, _digest(secret)):
            return "unknown API key"
        state = key.state(time.time())
        if state != "active":
            return f"API key {key_id} is {state}"
        permissions = self.roles.get(key.role)
        if permissions is None:
            return f"API key {key_id} has role {key.role!r}, which is no longer configured"
        return Identity(key.name, key.role, permissions, f"api key {key_id}", key.tenant)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class Guard:
    """Decides who a caller is, from what the front door saw: a presented API key or
    OIDC token, or the common name of a verified client certificate."""

    def __init__(
        self,
        auth: str,
        keys_file: Path,
        custom_roles: Mapping[str, list[str]],
        client_roles: Mapping[str, str],
        rate_limits: Mapping[str, float] | None = None,
        copy_limits: Mapping[str, float] | None = None,
        oidc: Oidc | None = None,  # helios.daemon.oidc
    ) -> None:
        self.auth = auth
        self.oidc = oidc
        self.limits = RateLimits(rate_limits or {}, copy_limits or {})
        self.roles = roles_from(custom_roles)
        unknown = sorted({r for r in client_roles.values() if r not in self.roles})
        if unknown:
            raise ValueError(f"security.client_roles: unknown roles {unknown}")
        self.client_roles = dict(client_roles)
        self.keys = KeyStore(keys_file, self.roles)

    @property
    def open(self) -> bool:
        """No identity is asked (security.auth = none: the local demo)."""
        return self.auth == "none"

    def identify(self, api_key: str | None, certificate_cn: str | None) -> Identity | str:
        """The caller's identity, or why there is none (never echoing a secret)."""
        if self.auth == "none":
            return ANONYMOUS
        if api_key:
            token = api_key.strip()
            if self.oidc is not None and token.count(".") == 2 and not token.startswith(PREFIX):
                return self.oidc.verify(token, self.roles)
            return self.keys.verify(token)
        if certificate_cn:
            role = self.client_roles.get(certificate_cn)
            if role is None:
                return f"client certificate {certificate_cn!r} has no role (security.client_roles)"
            return Identity(certificate_cn, role, self.roles[role], "client certificate")
        return (
            "no credentials: send an API key or OIDC token (metadata authorization: Bearer "
            "...) or a client certificate"
        )

    def slow_down(self, kind: str, n: float = 1.0) -> None:
        """Raise RESOURCE_EXHAUSTED (with the wait) if the caller is over its limit."""
        identity = caller()
        if identity is None:
            return
        wait = self.limits.take(identity, kind, n)
        if wait is not None:
            unit = "copies" if kind == "copies" else "requests"
            raise RequestError(
                "identity",
                f"{identity.name} is over its {unit} per second "
                f"(security.{'copy' if kind == 'copies' else 'rate'}_limits): "
                f"retry in {wait:.2f} s",
                ErrorCode.EXHAUSTED,
            )

    def identify_key(self, secret: str) -> Identity | str:
        """An API key or an OIDC token, as the console's sign-in takes it."""
        if not secret:
            return "no API key or token given"
        return self.identify(secret, None) if not self.open else ANONYMOUS

    def claimed(self, claimed: str, peer: str) -> str:
        """The name an audit entry records: the authenticated identity; on an open
        daemon, what the caller claims, marked as unverified."""
        identity = caller()
        if identity is None or identity is ANONYMOUS:
            return f"{claimed or 'anonymous'} (unverified, {peer}; security.auth = none)"
        return identity.name


class RateLimits:
    """Token buckets per identity: requests per second (every RPC) and copies per second
    (Publish, PublishStream), each looked up by the identity's name, then its tenant
    (`tenant:NAME`, a quota its keys share), then its role. An
    identity with neither is not limited. A call over its bucket is refused with the
    seconds to wait; a batch larger than a full bucket passes and leaves a debt."""

    def __init__(self, requests: Mapping[str, float], copies: Mapping[str, float]) -> None:
        for section, limits in (("rate_limits", requests), ("copy_limits", copies)):
            bad = {k: v for k, v in limits.items() if not (v > 0 and v < float("inf"))}
            if bad:
                raise ValueError(f"security.{section}: limits must be finite numbers > 0: {bad}")
        self.limits = {"requests": dict(requests), "copies": dict(copies)}
        self.buckets: dict[tuple[str, str], list[float]] = {}  # -> [tokens, last refill]
        self.refused: dict[str, int] = {}

    def take(self, identity: Identity, kind: str, n: float = 1.0) -> float | None:
        """None when allowed, else the seconds to wait before retrying."""
        limits = self.limits[kind]
        # By name, then the tenant's (one bucket all its keys share), then the role.
        tenant = f"tenant:{identity.tenant}" if identity.tenant else ""
        rate = limits.get(identity.name) or (tenant and limits.get(tenant)) or None
        owner = tenant if rate is not None and identity.name not in limits else identity.name
        rate = rate or limits.get(identity.role)
        if rate is None:
            return None
        now = time.monotonic()
        key = (owner, kind)
        bucket = self.buckets.get(key)
        if bucket is None:
            bucket = self.buckets[key] = [rate, now]
        tokens = min(rate, bucket[0] + (now - bucket[1]) * rate)
        bucket[1] = now
        if n > tokens and not (tokens >= rate and n > rate):
            bucket[0] = tokens
            self.refused[kind] = self.refused.get(kind, 0) + 1
            return (n - tokens) / rate
        bucket[0] = tokens - n
        return None

"""Is this delivery really from the cloud it claims? One check per webhook input
(docs/webhooks.md, "Authenticity"):

- `signature` (SNS): the message's RSA signature (SignatureVersion 1: SHA1, 2: SHA256)
  against the signing certificate, fetched only from an allow-listed URL
  (https://sns.<region>.amazonaws.com/...pem by default) and cached;
- `oidc` (Pub/Sub push): the bearer JWT's signature against Google's keys (or a
  configured JWKS file), issuer, audience, expiry and the service account's email;
- `key` (Event Grid): the shared secret in the `code` query parameter or the
  `aeg-sas-key` header, or a SAS token in `aeg-sas-token`;
- `bearer` (CloudEvents, any input): `Authorization: Bearer <secret>`;
- `header` (EventBridge API destinations' API-key auth, any input): a named header's value;
- `none`: nothing checked (a warning at start).

Secrets come from the environment or a file (`secret_env`, `secret_file`), never from
helios.toml itself. Each check answers None (verified) or an EnvelopeError (401 when
credentials are missing, 403 when they are wrong).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote

import httpx
from helios.daemon.oidc import decode_jwt
from helios.plugins.sources.envelopes import EnvelopeError

log = logging.getLogger("helios.webhook")

SNS_CERT_URL = r"^https://sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/[^?#]+\.pem$"
SNS_SUBSCRIBE_URL = r"^https://sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/"
GOOGLE_JWKS = "https://www.googleapis.com/oauth2/v3/certs"
GOOGLE_ISSUERS = ["https://accounts.google.com", "accounts.google.com"]
MODES = ("signature", "oidc", "key", "bearer", "header", "none")
DEFAULT_MODE = {
    "eventbridge": "header",
    "sns": "signature",
    "pubsub": "oidc",
    "eventgrid": "key",
    "cloudevents": "bearer",
}
# Which modes fit which envelope (bearer and header fit any).
FITS = {
    "signature": ("sns",),
    "oidc": ("pubsub",),
    "key": ("eventgrid",),
}
# The fields SNS signs, in order, by message type (AWS: "Verifying the signatures of
# Amazon SNS messages"); Subject only when present.
_SNS_SIGNED = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
}
_SNS_SIGNED["UnsubscribeConfirmation"] = _SNS_SIGNED["SubscriptionConfirmation"]


def _denied(detail: str) -> EnvelopeError:
    return EnvelopeError("forbidden", detail, 403)


def _missing(detail: str) -> EnvelopeError:
    return EnvelopeError("unauthenticated", detail, 401)


def read_secret(env: str, file: str, what: str) -> str:
    """The secret named by `secret_env` or `secret_file`; ValueError when neither gives one."""
    if env:
        value = os.environ.get(env, "")
        if not value:
            raise ValueError(f"{what}: environment variable {env} is not set or empty")
        return value
    if file:
        try:
            value = Path(file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ValueError(f"{what}: cannot read secret_file {file}: {exc}") from None
        if not value:
            raise ValueError(f"{what}: secret_file {file} is empty")
        return value
    raise ValueError(
        f"{what}: needs secret_env or secret_file (the secret is never in helios.toml)"
    )


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


@dataclass
class Verifier:
    mode: str
    secret: str = ""
    header: str = "x-api-key"  # the `header` mode's header name
    audience: str = ""  # oidc
    emails: tuple[str, ...] = ()  # oidc: the push subscription's service account(s)
    jwks_file: str = ""
    jwks_url: str = GOOGLE_JWKS
    issuers: tuple[str, ...] = tuple(GOOGLE_ISSUERS)
    cert_url: str = SNS_CERT_URL
    topics: tuple[str, ...] = ()  # sns: TopicArns accepted (empty: any)
    leeway: float = 60.0
    client: httpx.AsyncClient | None = None
    _certs: dict[str, Any] = field(default_factory=dict)
    _keys: dict[str, Any] = field(default_factory=dict)
    _keys_at: float = 0.0
    key_error: str = ""  # why the last refresh of the token keys failed

    async def check(
        self, headers: Mapping[str, str], query: str, document: dict[str, Any] | None
    ) -> EnvelopeError | None:
        mode = self.mode
        if mode == "none":
            return None
        if mode == "bearer":
            scheme, _, token = headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                return _missing("Authorization: Bearer <token> is required")
            return None if _same(token.strip(), self.secret) else _denied("wrong bearer token")
        if mode == "header":
            value = headers.get(self.header.lower(), "")
            if not value:
                return _missing(f"header {self.header} is required")
            return None if _same(value, self.secret) else _denied(f"wrong {self.header}")
        if mode == "key":
            return self._eventgrid(headers, query)
        if mode == "oidc":
            return await self._oidc(headers)
        if mode == "signature":
            if document is None:
                return _missing("no signed SNS message")
            return await self.sns(document)
        return _denied(f"unknown verification mode {mode!r}")

    # ---- Event Grid ------------------------------------------------------------------
    def _eventgrid(self, headers: Mapping[str, str], query: str) -> EnvelopeError | None:
        code = parse_qs(query).get("code", [""])[0]
        key = headers.get("aeg-sas-key", "")
        token = headers.get("aeg-sas-token", "")
        if code or key:
            return None if _same(code or key, self.secret) else _denied("wrong shared secret")
        if token:
            return self._sas(token)
        return _missing("a shared secret (?code= or aeg-sas-key) or aeg-sas-token is required")

    def _sas(self, token: str) -> EnvelopeError | None:
        """aeg-sas-token: r=<resource>&e=<expiry>&s=<base64 HMAC-SHA256 of "r=..&e=..">."""
        unsigned, _, signature = token.rpartition("&s=")
        parts = parse_qs(unsigned)
        if not unsigned or "r" not in parts or "e" not in parts:
            return _denied("malformed aeg-sas-token")
        try:
            key = base64.b64decode(self.secret, validate=True)
        except (binascii.Error, ValueError):
            key = self.secret.encode()
        expected = base64.b64encode(hmac.new(key, unsigned.encode(), hashlib.sha256).digest())
        if not hmac.compare_digest(expected, unquote(signature).encode()):
            return _denied("aeg-sas-token signature does not match the key")
        expiry = parts["e"][0]
        for fmt in ("%m/%d/%Y %I:%M:%S %p", "%Y-%m-%dT%H:%M:%SZ"):
            try:
                at = datetime.strptime(expiry, fmt).replace(tzinfo=UTC).timestamp()
            except ValueError:
                continue
            return None if at > time.time() else _denied("aeg-sas-token expired")
        return _denied(f"aeg-sas-token expiry {expiry!r} is not a date")

    # ---- Pub/Sub push ----------------------------------------------------------------
    async def _oidc(self, headers: Mapping[str, str]) -> EnvelopeError | None:
        import jwt

        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return _missing("Authorization: Bearer <Google-signed token> is required")
        token = token.strip()
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            return _denied(f"invalid token: {exc}")
        algorithm = header.get("alg", "")
        if algorithm not in ("RS256", "ES256"):
            return _denied(f"token algorithm {algorithm!r} is not accepted")
        key = await self._key(str(header.get("kid") or ""))
        if key is None:
            return _denied("token signed by a key that is not Google's (or the JWKS's)")
        claims = decode_jwt(token, key, algorithm, self.audience, list(self.issuers), self.leeway)
        if isinstance(claims, str):
            return _denied(claims)
        email = claims.get("email")
        if self.emails and (email not in self.emails or claims.get("email_verified") is False):
            return _denied(f"token for {email!r}, not the push service account")
        return None

    async def _key(self, kid: str) -> Any:
        import jwt

        stale = time.monotonic() - self._keys_at > (3600.0 if kid in self._keys else 60.0)
        if stale or not self._keys:
            try:
                if self.jwks_file:
                    text = Path(self.jwks_file).read_text(encoding="utf-8")
                else:
                    assert self.client is not None
                    reply = await self.client.get(self.jwks_url)
                    reply.raise_for_status()
                    text = reply.text
                found = jwt.PyJWKSet.from_json(text)
                self._keys = {k.key_id or "": k.key for k in found.keys}
                self._keys_at = time.monotonic()
            except (OSError, ValueError, httpx.HTTPError, jwt.PyJWTError) as exc:
                # The keys we had stay in use; a token by an unknown key is refused (403).
                self.key_error = f"{self.jwks_file or self.jwks_url}: {exc}"
                log.warning("Pub/Sub push keys not refreshed from %s", self.key_error)
        if kid in self._keys:
            return self._keys[kid]
        return next(iter(self._keys.values())) if len(self._keys) == 1 and not kid else None

    # ---- SNS -------------------------------------------------------------------------
    async def sns(self, message: dict[str, Any]) -> EnvelopeError | None:
        from cryptography import x509
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding, rsa

        kind = message.get("Type")
        version = str(message.get("SignatureVersion", ""))
        url = message.get("SigningCertURL") or message.get("SigningCertUrl") or ""
        signature = message.get("Signature", "")
        if not signature or not url:
            return _missing("the SNS message is not signed (Signature, SigningCertURL)")
        if version not in ("1", "2"):
            return _denied(f"SignatureVersion {version!r} is not 1 or 2")
        if kind not in _SNS_SIGNED:
            return _denied(f"SNS message type {kind!r} is not signed")
        if self.topics and message.get("TopicArn") not in self.topics:
            return _denied(f"topic {message.get('TopicArn')!r} is not an accepted topic")
        if not isinstance(url, str) or not re.match(self.cert_url, url):
            return _denied(f"SigningCertURL {url!r} is not an allow-listed SNS certificate URL")
        text = "".join(
            f"{name}\n{message[name]}\n"
            for name in _SNS_SIGNED[kind]
            if name in message and (name != "Subject" or message[name] is not None)
        ).encode()
        certificate = self._certs.get(url)
        if certificate is None:
            try:
                assert self.client is not None
                reply = await self.client.get(url)
                reply.raise_for_status()
                certificate = x509.load_pem_x509_certificate(reply.content)
            except (httpx.HTTPError, ValueError) as exc:
                return _denied(f"cannot fetch the signing certificate {url}: {exc}")
            if len(self._certs) > 32:
                self._certs.clear()
            self._certs[url] = certificate
        key = certificate.public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            return _denied("the signing certificate has no RSA key")
        digest = hashes.SHA1() if version == "1" else hashes.SHA256()
        try:
            key.verify(base64.b64decode(signature), text, padding.PKCS1v15(), digest)
        except (InvalidSignature, binascii.Error, ValueError):
            return _denied("the SNS signature does not verify")
        return None

"""The console's sign-in through an OIDC provider: the authorization-code flow with PKCE
(docs/security.md, "The console").

`/login/oidc` sends the browser to the provider with a fresh `state`, `nonce` and PKCE
challenge; the provider sends it back to `/oidc/callback` with a code, which heliosd
exchanges at the token endpoint (with the PKCE verifier, and the client secret if one is
configured) for an ID token. The token must be signed by a key of the provider's JWKS,
for this issuer and this client, unexpired, carry the nonce sent, and name a HELIOS role;
the session then lasts until the token expires (8 hours at most). A state that is
unknown, used twice or older than 10 minutes is refused."""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from urllib.parse import urlencode

from helios.daemon.config import SecurityConfig
from helios.daemon.identity import Guard, Identity

PENDING_SECONDS = 600.0
PENDING_KEPT = 1000


@dataclass(frozen=True)
class Pending:
    nonce: str
    pkce: str  # the PKCE verifier
    next: str
    expires: float


@dataclass(frozen=True)
class SignedIn:
    identity: Identity
    next: str
    expires: float  # the ID token's expiry


class OidcLogin:
    def __init__(self, security: SecurityConfig, guard: Guard) -> None:
        self.client_id = security.oidc_client_id
        env = security.oidc_client_secret_env
        self.secret = os.environ.get(env, "") if env else ""
        self.authorize_url = security.oidc_authorization_endpoint
        self.token_url = security.oidc_token_endpoint
        self.redirect_url = security.oidc_redirect_url
        self.issuer = security.oidc_issuer
        self.guard = guard
        self.pending: OrderedDict[str, Pending] = OrderedDict()

    def start(self, next_path: str) -> str:
        """Where to send the browser: the provider's authorization endpoint."""
        now = time.time()
        while self.pending and (
            len(self.pending) >= PENDING_KEPT or next(iter(self.pending.values())).expires < now
        ):
            self.pending.popitem(last=False)
        state, nonce = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        verifier = secrets.token_urlsafe(48)
        self.pending[state] = Pending(nonce, verifier, next_path, now + PENDING_SECONDS)
        query = urlencode(
            {
                "response_type": "code",
                "client_id": self.client_id,
                "redirect_uri": self.redirect_url,
                "scope": "openid profile email",
                "state": state,
                "nonce": nonce,
                "code_challenge": challenge(verifier),
                "code_challenge_method": "S256",
            }
        )
        return f"{self.authorize_url}{'&' if '?' in self.authorize_url else '?'}{query}"

    async def finish(self, query: dict[str, str]) -> SignedIn | str:
        """The callback: the identity the provider vouches for, or why not."""
        state = query.get("state", "")
        pending = self.pending.pop(state, None)
        if pending is None or pending.expires < time.time():
            return "this sign-in is unknown, used already or expired: start again"
        if query.get("error"):
            detail = query.get("error_description", "")[:200]
            return f"the identity provider refused: {query['error'][:100]} {detail}".strip()
        code = query.get("code", "")
        if not code:
            return "the identity provider sent no code"
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.redirect_url,
            "client_id": self.client_id,
            "code_verifier": pending.pkce,
        }
        if self.secret:
            form["client_secret"] = self.secret
        import httpx

        try:
            async with httpx.AsyncClient(timeout=10.0, follow_redirects=False) as client:
                response = await client.post(self.token_url, data=form)
        except httpx.HTTPError as exc:
            return f"the token endpoint could not be reached: {type(exc).__name__}"
        if response.status_code != 200:
            return f"the token endpoint answered {response.status_code}"
        try:
            token = str(response.json()["id_token"])
        except (ValueError, KeyError, TypeError):
            return "the token endpoint's answer has no id_token"
        oidc = self.guard.oidc
        if oidc is None:  # config validation makes this unreachable
            return "OIDC is not configured"
        found = oidc.verify(token, self.guard.roles, audience=self.client_id, nonce=pending.nonce)
        if not isinstance(found, Identity):
            return found
        return SignedIn(found, pending.next, _expiry(token))


def challenge(verifier: str) -> str:
    """The PKCE S256 challenge of a verifier."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _expiry(token: str) -> float:
    import jwt

    claims = jwt.decode(token, options={"verify_signature": False})  # verified already
    return float(claims.get("exp", 0.0))

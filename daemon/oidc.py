"""OIDC bearer tokens: who a caller is, from a JWT its identity provider signed
(docs/security.md, "OIDC bearer tokens")."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from helios.daemon.config import SecurityConfig
from helios.daemon.identity import Guard, Identity
from helios.daemon.tenants import TENANT


@dataclass
class Oidc:
    """OIDC bearer tokens: a JWT signed by a key of the provider's JWKS (RS256, PS256 or
    ES256 only: never `none`, never a shared-secret algorithm), with this issuer, this
    audience, unexpired (exp, nbf, iat within `leeway`), naming a role in `role_claim`."""

    issuer: str
    audience: str
    jwks_file: Path
    role_claim: str = "helios_role"
    name_claim: str = "sub"
    leeway: float = 60.0
    tenant_claim: str = "helios_tenant"
    _keys: dict[str, object] = field(default_factory=dict)
    _stamp: float | None = None

    ALGORITHMS = ("RS256", "PS256", "ES256")

    def _jwks(self) -> dict[str, object]:
        import jwt

        try:
            stamp = self.jwks_file.stat().st_mtime
        except OSError:
            return self._keys
        if stamp != self._stamp:
            try:
                found = jwt.PyJWKSet.from_json(self.jwks_file.read_text(encoding="utf-8"))
                self._keys = {k.key_id or "": k.key for k in found.keys}
            except (OSError, ValueError, jwt.PyJWTError):
                return self._keys  # keep the keys we had
            self._stamp = stamp
        return self._keys

    def verify(
        self,
        token: str,
        roles: Mapping[str, frozenset[str]],
        audience: str = "",
        nonce: str | None = None,
    ) -> Identity | str:
        """The identity a token proves, or why it proves none. `audience` defaults to
        the API's (`oidc_audience`); the console's sign-in checks an ID token against
        its client id and the `nonce` it sent."""
        import jwt

        try:
            header = jwt.get_unverified_header(token)
            algorithm = header.get("alg", "")
            if algorithm not in self.ALGORITHMS:
                return f"token algorithm {algorithm!r} is not accepted (RS256, PS256, ES256)"
            keys = self._jwks()
            key = keys.get(header.get("kid") or "") or (
                next(iter(keys.values())) if len(keys) == 1 else None
            )
            if key is None:
                return "token signed by a key that is not in the provider's JWKS"
            claims = decode_jwt(
                token, key, algorithm, audience or self.audience, self.issuer, self.leeway
            )
        except jwt.PyJWTError as exc:
            return f"invalid token: {exc}"
        if isinstance(claims, str):
            return claims
        if nonce is not None and claims.get("nonce") != nonce:
            return "the ID token's nonce is not the one this sign-in sent (a replayed token?)"
        role = str(claims.get(self.role_claim, ""))
        permissions = roles.get(role)
        if permissions is None:
            return f"token names no HELIOS role in {self.role_claim!r}"
        name = str(claims.get(self.name_claim) or claims.get("sub") or "?")
        tenant = str(claims.get(self.tenant_claim) or "")
        if tenant and not TENANT.fullmatch(tenant):
            return f"token names a tenant that is not one ({self.tenant_claim!r})"
        return Identity(name, role, permissions, f"oidc {self.issuer}", tenant)


def decode_jwt(
    token: str, key: object, algorithm: str, audience: str, issuer: str | list[str], leeway: float
) -> dict[str, object] | str:
    """The claims of a JWT whose signature, audience, issuer and times hold, or why not
    (webhooks' Pub/Sub push tokens use it too)."""
    import jwt

    try:
        claims: dict[str, object] = jwt.decode(
            token,
            key,  # type: ignore[arg-type]
            algorithms=[algorithm],
            audience=audience,
            issuer=issuer,
            leeway=leeway,
            options={"require": ["exp", "iss", "aud"]},
        )
    except jwt.ExpiredSignatureError:
        return "token expired"
    except jwt.InvalidAudienceError:
        return "token is for another audience"
    except jwt.InvalidIssuerError:
        return "token from another issuer"
    except jwt.PyJWTError as exc:
        return f"invalid token: {exc}"
    return claims


def guard_from(security: SecurityConfig, data_dir: str) -> Guard:
    """The Guard of `[security]`: API keys (default <data_dir>/keys.json), roles,
    client certificates, rate limits, and OIDC when an issuer is set. ValueError when
    the settings do not hold together."""
    return Guard(
        security.auth,
        Path(security.keys_file or Path(data_dir) / "keys.json"),
        security.roles,
        security.client_roles,
        security.rate_limits,
        security.copy_limits,
        Oidc(
            security.oidc_issuer,
            security.oidc_audience,
            Path(security.oidc_jwks_file),
            security.oidc_role_claim,
            security.oidc_name_claim,
            security.oidc_leeway_seconds,
            security.oidc_tenant_claim,
        )
        if security.oidc_issuer
        else None,
    )

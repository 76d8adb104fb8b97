"""Locally made credentials of the clouds, for the webhook tests: an SNS signing
certificate and signed messages (SignatureVersion 1 and 2, signed the way AWS documents
it), Google-style OIDC tokens with their JWKS, and an Event Grid SAS token; plus a
small HTTP server that serves the certificate and records SubscribeURL visits."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import http.server
import json
import threading
import time
from typing import Any
from urllib.parse import quote

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

SNS_FIELDS = {
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


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def certificate(key: rsa.RSAPrivateKey, name: str = "sns.us-east-1.amazonaws.com") -> bytes:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def sign_sns(message: dict[str, Any], key: rsa.RSAPrivateKey, version: str = "2") -> dict[str, Any]:
    """The message with SignatureVersion and Signature set (AWS: "Verifying the
    signatures of Amazon SNS messages")."""
    message = dict(message, SignatureVersion=version)
    text = "".join(
        f"{name}\n{message[name]}\n"
        for name in SNS_FIELDS[
            message["Type"] if message["Type"] == "Notification" else "SubscriptionConfirmation"
        ]
        if name in message
    ).encode()
    digest = hashes.SHA1() if version == "1" else hashes.SHA256()
    signature = key.sign(text, padding.PKCS1v15(), digest)
    key.public_key().verify(signature, text, padding.PKCS1v15(), digest)  # raises if not
    assert text.startswith(b"Message\n"), "SNS signs the Message field first"
    message["Signature"] = base64.b64encode(signature).decode()
    return message


def jwks(key: rsa.RSAPrivateKey, kid: str) -> str:
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    return json.dumps({"keys": [dict(public, kid=kid, alg="RS256", use="sig")]})


def google_token(key: rsa.RSAPrivateKey, kid: str, audience: str, email: str, **claims: Any) -> str:
    now = int(time.time())
    body = {
        "iss": "https://accounts.google.com",
        "aud": audience,
        "email": email,
        "email_verified": True,
        "sub": "1234567890",
        "iat": now,
        "exp": now + 3600,
        **claims,
    }
    token = jwt.encode(body, key, algorithm="RS256", headers={"kid": kid})
    claims = jwt.decode(  # expired ones too: some tests make them on purpose
        token,
        key.public_key(),
        algorithms=["RS256"],
        audience=audience,
        options={"verify_exp": False},
    )
    assert claims["email"] == email and jwt.get_unverified_header(token)["kid"] == kid
    return token


def sas_token(resource: str, key_b64: str, expires: dt.datetime) -> str:
    expiry = expires.strftime("%m/%d/%Y %I:%M:%S %p")
    unsigned = f"r={quote(resource, safe='')}&e={quote(expiry, safe='')}"
    signature = base64.b64encode(
        hmac.new(base64.b64decode(key_b64), unsigned.encode(), hashlib.sha256).digest()
    ).decode()
    token = f"{unsigned}&s={quote(signature, safe='')}"
    assert token.count("&") == 2 and token.startswith("r="), token
    return token


class CertServer:
    """Serves /cert.pem and records every other GET (SubscribeURL visits)."""

    def __init__(self, pem: bytes) -> None:
        self.visits: list[str] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.endswith(".pem"):
                    payload = pem
                else:
                    owner.visits.append(self.path)
                    payload = b"<ConfirmSubscriptionResponse/>"
                self.send_response(200)
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        assert self.server.server_address[0] == "127.0.0.1"  # loopback only
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()

"""The console's sign-in through an OIDC provider (authorization code with PKCE), against
a real heliosd and a small identity provider run here (its own RSA key and JWKS): the
browser's round trip signs in with the provider's name and role; a forged or replayed
state, a wrong PKCE verifier, a token for another client, a nonce not sent, an expired
token and a token naming no role are each refused, nothing served, the refusal audited."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import jwt
import pytest
from helios.ui.oidc_login import challenge

from tests.cloudkeys import jwks, rsa_key
from tests.conftest import DaemonProcess, start_daemon_process, stop_daemon_process
from tests.helpers import free_port
from tests.test_console import browser as browser
from tests.test_console import text_of, wait_for

CLIENT, SECRET = "helios-console", "s3cret-of-the-console"


class Provider:
    """The identity provider: /authorize sends the browser straight back with a code (the
    user "signs in" as `user`), /token trades a code for an ID token after checking the
    client, its secret, the redirect URI and the PKCE verifier."""

    def __init__(self) -> None:
        self.key = rsa_key()
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.user: dict[str, Any] = {"sub": "u-7", "email": "ana@example.com", "role": "operator"}
        self.codes: dict[str, dict[str, str]] = {}
        self.claims: dict[str, Any] = {}  # changes to the next ID token (tests of refusal)
        self.token_requests: list[dict[str, str]] = []
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                q = {k: v[0] for k, v in parse_qs(url.query).items()}
                if url.path != "/authorize":
                    self.send_response(404)
                    self.end_headers()
                    return
                code = f"code-{len(provider.codes)}"
                provider.codes[code] = q
                back = f"{q['redirect_uri']}?{urlencode({'code': code, 'state': q['state']})}"
                self.send_response(302)
                self.send_header("Location", back)
                self.end_headers()

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"])).decode()
                form = {k: v[0] for k, v in parse_qs(body).items()}
                provider.token_requests.append(form)
                asked = provider.codes.pop(form.get("code", ""), None)
                ok = (
                    asked is not None
                    and form.get("client_id") == CLIENT
                    and form.get("client_secret") == SECRET
                    and form.get("redirect_uri") == asked["redirect_uri"]
                    and challenge(form.get("code_verifier", "")) == asked["code_challenge"]
                    and asked["code_challenge_method"] == "S256"
                )
                if not ok:
                    self.send_response(400)
                    self.end_headers()
                    self.wfile.write(b'{"error": "invalid_grant"}')
                    return
                now = int(time.time())
                claims = {
                    "iss": provider.issuer,
                    "aud": CLIENT,
                    "sub": provider.user["sub"],
                    "email": provider.user["email"],
                    "helios_role": provider.user["role"],
                    "nonce": asked["nonce"],
                    "iat": now,
                    "exp": now + 600,
                    **provider.claims,
                }
                claims = {k: v for k, v in claims.items() if v is not None}
                token = jwt.encode(claims, provider.key, algorithm="RS256", headers={"kid": "k1"})
                payload = json.dumps({"id_token": token, "token_type": "Bearer"}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def provider() -> Provider:
    p = Provider()
    yield p
    p.server.shutdown()


@pytest.fixture(scope="module")
def oidc_console(tmp_path_factory, provider) -> DaemonProcess:
    import os

    tmp = tmp_path_factory.mktemp("oidc-console")
    (tmp / "jwks.json").write_text(jwks(provider.key, "k1"))
    console_port = free_port()
    os.environ["HELIOS_TEST_OIDC_SECRET"] = SECRET
    daemon = start_daemon_process(
        tmp,
        f"""
[security]
auth = "keys"
oidc_issuer = "{provider.issuer}"
oidc_audience = "helios-api"
oidc_jwks_file = "{tmp / "jwks.json"}"
oidc_name_claim = "email"
oidc_client_id = "{CLIENT}"
oidc_client_secret_env = "HELIOS_TEST_OIDC_SECRET"
oidc_authorization_endpoint = "{provider.issuer}/authorize"
oidc_token_endpoint = "{provider.issuer}/token"
oidc_redirect_url = "http://127.0.0.1:{console_port}/oidc/callback"
""",
        console=True,
        console_port=console_port,
    )
    yield daemon
    stop_daemon_process(daemon)


def sign_in(daemon: DaemonProcess, http: httpx.Client) -> httpx.Response:
    """The browser's round trip, by hand: console -> provider -> console's callback."""
    base = f"http://127.0.0.1:{daemon.console_port}"
    start = http.get(f"{base}/login/oidc?next=/recovery")
    assert start.status_code == 303
    at_provider = http.get(start.headers["location"])
    assert at_provider.status_code == 302
    return http.get(at_provider.headers["location"])


def test_the_round_trip_signs_in_with_the_providers_name_and_role(oidc_console, provider):
    base = f"http://127.0.0.1:{oidc_console.console_port}"
    with httpx.Client(follow_redirects=False, timeout=10) as http:
        assert "sign\nin with your identity provider" in http.get(f"{base}/login").text
        assert http.get(f"{base}/recovery").status_code == 303  # not yet
        back = sign_in(oidc_console, http)
        assert back.status_code == 200 and 'url=/recovery"' in back.text
        cookie = back.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert http.get(f"{base}/recovery").status_code == 200  # the session works
        asked = provider.token_requests[-1]
        assert asked["grant_type"] == "authorization_code" and asked["code_verifier"]
        http.get(f"{base}/logout")
        assert http.get(f"{base}/recovery").status_code == 303
    log = (oidc_console.log.parent / "data" / "audit.log").read_text()
    assert '"who": "ana@example.com"' in log and "console (oidc)" in log


@pytest.mark.parametrize(
    "claims,why",
    [
        ({"aud": "someone-else"}, "another audience"),
        ({"nonce": "not-the-one-sent"}, "nonce"),
        ({"exp": int(time.time()) - 3600, "iat": int(time.time()) - 7200}, "expired"),
        ({"helios_role": None}, "no HELIOS role"),
        ({"iss": "https://evil.example.com"}, "another issuer"),
    ],
)
def test_a_bad_id_token_signs_nobody_in(oidc_console, provider, claims, why):
    base = f"http://127.0.0.1:{oidc_console.console_port}"
    provider.claims = claims
    try:
        with httpx.Client(follow_redirects=False, timeout=10) as http:
            back = sign_in(oidc_console, http)
            assert back.status_code == 401 and why in back.text
            assert "set-cookie" not in back.headers
            assert http.get(f"{base}/recovery").status_code == 303
    finally:
        provider.claims = {}


def test_a_forged_replayed_or_wrongly_verified_callback_is_refused(oidc_console, provider):
    base = f"http://127.0.0.1:{oidc_console.console_port}"
    with httpx.Client(follow_redirects=False, timeout=10) as http:
        forged = http.get(f"{base}/oidc/callback?code=code-0&state=made-up")
        assert forged.status_code == 401 and "unknown, used already or expired" in forged.text
        start = http.get(f"{base}/login/oidc")
        callback = http.get(start.headers["location"]).headers["location"]
        assert http.get(callback).status_code == 200
        replayed = http.get(callback)  # the same state and code again
        assert replayed.status_code == 401 and "used already" in replayed.text
        # a code the provider refuses (here: not the verifier it was issued for)
        start = http.get(f"{base}/login/oidc")
        callback = http.get(start.headers["location"]).headers["location"]
        code = parse_qs(urlsplit(callback).query)["code"][0]
        provider.codes[code]["code_challenge"] = challenge("some other verifier")
        refused = http.get(callback)
        assert refused.status_code == 401 and "token endpoint answered 400" in refused.text
        denied = http.get(start.headers["location"].replace("/authorize", "/nowhere"))
        assert denied.status_code == 404
    assert http.is_closed


def test_a_browser_signs_in_through_the_provider(oidc_console, browser):
    browser.delete_all_cookies()
    browser.get(f"http://127.0.0.1:{oidc_console.console_port}/login")
    from selenium.webdriver.common.by import By

    browser.find_element(By.CSS_SELECTOR, "a.helios-oidc").click()
    # provider -> callback page -> (same-site) the console, signed in
    header = wait_for(lambda: text_of(browser, ".q-header"), what="the console after sign-in")
    assert "sign out" in header and "Recovery" in header
    assert urlsplit(browser.current_url).path == "/"

"""The console's door with security.auth = "keys": nothing is served without signing in
with an API key (pages, NiceGUI's socket.io, /metrics), a viewer sees the pages with
every control disabled, a bad Host (DNS rebinding) or a foreign Origin is refused, and
the sign-in cannot be turned into an open redirect."""

from __future__ import annotations

import httpx
import pytest
from helios.daemon.identity import KeyStore

from tests.conftest import DaemonProcess, start_daemon_process, stop_daemon_process
from tests.test_console import CHROMEDRIVER, CHROMIUM, text_of, wait_for
from tests.test_console import browser as browser

SECURE = """
[security]
auth = "keys"
"""


@pytest.fixture(scope="module")
def secure_console(tmp_path_factory) -> DaemonProcess:
    tmp = tmp_path_factory.mktemp("secure-console")
    daemon = start_daemon_process(tmp, SECURE, console=True)
    daemon.keys = KeyStore(tmp / "data" / "keys.json")  # type: ignore[attr-defined]
    yield daemon
    stop_daemon_process(daemon)


def base(daemon: DaemonProcess) -> str:
    return f"http://127.0.0.1:{daemon.console_port}"


def test_nothing_is_served_without_signing_in(secure_console):
    url = base(secure_console)
    with httpx.Client(follow_redirects=False, timeout=10) as http:
        for path in ("/", "/recovery", "/decisions", "/storage"):
            r = http.get(url + path)
            assert r.status_code == 303 and r.headers["location"].startswith("/login?next=")
        assert http.get(url + "/metrics").status_code == 401
        sio = http.get(url + "/_nicegui_ws/socket.io/?EIO=4&transport=polling")
        assert sio.status_code == 401  # the console's control channel
        assert http.get(url + "/login").status_code == 200
        bad = http.post(url + "/login", data={"api_key": "helios_0000_forged", "next": "/"})
        assert bad.status_code == 401 and "unknown API key" in bad.text
        viewer = secure_console.keys.create("vera", "viewer")[1]
        assert (
            http.get(url + "/metrics", headers={"Authorization": f"Bearer {viewer}"}).status_code
            == 200
        )
        ingester = secure_console.keys.create("ian", "ingester")[1]
        assert (
            http.get(url + "/metrics", headers={"Authorization": f"Bearer {ingester}"}).status_code
            == 403
        )
        # Sign-in sends only to a path of this console.
        r = http.post(url + "/login", data={"api_key": viewer, "next": "//evil.example/x"})
        assert r.status_code == 303 and r.headers["location"] == "/"
        cookie = r.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert http.get(url + "/storage").status_code == 200  # the session cookie
    # Both sign-ins are in the audit log, with who and from where.
    import json
    import time

    path = secure_console.log.parent / "data" / "audit.log"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
        logins = [(e["who"], e["result"].split(":")[0]) for e in lines if e["action"] == "login"]
        if ("vera", "ok") in logins:
            break
        time.sleep(0.1)
    assert ("(unauthenticated)", "refused") in logins and ("vera", "ok") in logins
    assert all(e["peer"].startswith("127.0.0.1:") for e in lines if e["action"] == "login")


def test_a_tenants_key_may_not_sign_in_to_the_deployment_wide_console(secure_console):
    url = base(secure_console)
    tenant = secure_console.keys.create("blue-app", "admin", tenant="blue")[1]
    with httpx.Client(follow_redirects=False, timeout=10) as http:
        r = http.post(url + "/login", data={"api_key": tenant, "next": "/"})
        assert r.status_code == 401 and "scoped to tenant" in r.text
        assert "set-cookie" not in r.headers
        metrics = http.get(url + "/metrics", headers={"Authorization": f"Bearer {tenant}"})
        assert metrics.status_code == 403


def test_a_foreign_host_or_origin_is_refused(secure_console):
    url = base(secure_console)
    with httpx.Client(follow_redirects=False, timeout=10) as http:
        rebinding = http.get(
            url + "/login", headers={"Host": f"evil.example:{secure_console.console_port}"}
        )
        assert rebinding.status_code == 421
        foreign = http.post(
            url + "/login", data={"api_key": "x"}, headers={"Origin": "https://evil.example"}
        )
        assert foreign.status_code == 403
        same = http.get(url + "/login", headers={"Origin": url})
        assert same.status_code == 200


@pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER), reason="needs Debian chromium and chromium-driver"
)
def test_a_viewer_signs_in_and_sees_every_control_disabled(secure_console, browser):
    from selenium.webdriver.common.by import By

    viewer = secure_console.keys.create("victor", "viewer")[1]
    browser.delete_all_cookies()
    browser.get(base(secure_console) + "/recovery")
    wait_for(lambda: "sign in" in browser.page_source.lower(), what="the sign-in page")
    browser.find_element(By.NAME, "api_key").send_keys(viewer)
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait_for(lambda: text_of(browser, ".helios-catalogue"), what="the recovery page")
    trigger = browser.find_element(By.CSS_SELECTOR, ".helios-trigger")
    assert trigger.get_attribute("disabled") is not None or "disabled" in (
        trigger.get_attribute("class") or ""
    )
    browser.get(base(secure_console) + "/audit")
    wait_for(lambda: "may not read the audit log" in browser.page_source, what="audit refused")
    browser.get(base(secure_console) + "/logout")
    browser.get(base(secure_console) + "/recovery")
    wait_for(lambda: "sign in" in browser.page_source.lower(), what="signed out")
    # An admin reads the audit log: the viewer's sign-in and sign-out are in it.
    admin = secure_console.keys.create("ada", "admin")[1]
    browser.get(base(secure_console) + "/audit")
    browser.find_element(By.NAME, "api_key").send_keys(admin)
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    audit = wait_for(
        lambda: "logout" in (t := text_of(browser, ".helios-audit")) and t, what="the audit log"
    )
    assert "victor" in audit and "login" in audit

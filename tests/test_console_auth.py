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
        for path in ("/", "/recovery", "/decisions", "/storage", "/tenant"):
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


def test_a_tenants_key_signs_in_to_its_own_page_and_nothing_else(secure_console):
    url = base(secure_console)
    tenant = secure_console.keys.create("blue-app", "viewer", tenant="blue")[1]
    with httpx.Client(follow_redirects=False, timeout=10) as http:
        r = http.post(url + "/login", data={"api_key": tenant, "next": "/decisions"})
        assert r.status_code == 303 and "HttpOnly" in r.headers["set-cookie"]
        for path in ("/", "/decisions", "/recovery", "/audit", "/storage", "/sources"):
            r = http.get(url + path)  # the deployment's pages: sent to its own
            assert r.status_code == 303 and r.headers["location"] == "/tenant", path
        assert http.get(url + "/tenant").status_code == 200
        assert http.get(url + "/metrics").status_code == 403
        sio = http.get(url + "/_nicegui_ws/socket.io/?EIO=4&transport=polling")
        assert sio.status_code == 200  # its page's channel
        refused = http.post(url + "/decisions")
        assert refused.status_code == 403 and "scoped to tenant 'blue'" in refused.text
    with httpx.Client(follow_redirects=False, timeout=10) as http:
        metrics = http.get(url + "/metrics", headers={"Authorization": f"Bearer {tenant}"})
        assert metrics.status_code == 403


@pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER), reason="needs Debian chromium and chromium-driver"
)
def test_a_tenant_sees_its_own_outcomes_and_events_only(secure_console, browser):
    import grpc
    from helios.v1 import helios_pb2 as pb
    from helios.v1 import helios_pb2_grpc as pb_grpc
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    blue = secure_console.keys.create("blue-ingest", "ingester", tenant="blue")[1]
    red = secure_console.keys.create("red-ingest", "ingester", tenant="red")[1]
    viewer = secure_console.keys.create("blue-viewer", "viewer", tenant="blue")[1]

    def publish(key: str, event_id: str, sources: tuple[str, ...]) -> None:
        events = [
            pb.Event(event_id=event_id, source=s, event_type="order.created", payload=b"{}")
            for s in sources
        ]
        events[0].produced_at.GetCurrentTime()
        for e in events:
            e.produced_at.CopyFrom(events[0].produced_at)
        with grpc.insecure_channel(secure_console.address) as channel:
            pb_grpc.IngestServiceStub(channel).Publish(
                pb.PublishRequest(events=events), metadata=[("authorization", f"Bearer {key}")]
            )

    publish(blue, "blue-order-1", ("aws", "gcp", "azure"))
    publish(red, "red-order-1", ("aws", "gcp", "azure"))
    browser.delete_all_cookies()
    browser.get(base(secure_console) + "/")
    wait_for(lambda: "sign in" in browser.page_source.lower(), what="the sign-in page")
    browser.find_element(By.NAME, "api_key").send_keys(viewer)
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait_for(lambda: "tenant blue" in text_of(browser, ".helios-tenant-name"), what="its page")
    assert browser.current_url.endswith("/tenant")
    rows = wait_for(
        lambda: "blue-order-1" in (t := text_of(browser, ".helios-tenant-outcomes")) and t,
        what="its outcome",
    )
    assert "red-order-1" not in rows and "COMPLETE" in rows
    box = browser.find_element(By.CSS_SELECTOR, ".helios-tenant-lookup input")
    box.send_keys("red-order-1")
    browser.find_element(By.CSS_SELECTOR, ".helios-tenant-find").click()
    wait_for(
        lambda: "No event" in text_of(browser, ".helios-tenant-lookup-result"), what="not found"
    )
    box.send_keys(Keys.CONTROL, "a")  # clear() does not reach the page's model
    box.send_keys("blue-order-1")
    browser.find_element(By.CSS_SELECTOR, ".helios-tenant-find").click()
    found = wait_for(
        lambda: "status" in (t := text_of(browser, ".helios-tenant-lookup-result")) and t,
        what="its event",
    )
    assert "blue-order-1" in found and "aws" in found
    browser.get(base(secure_console) + "/recovery")  # the deployment's: sent back
    wait_for(lambda: browser.current_url.endswith("/tenant"), what="sent to its page")
    browser.get(base(secure_console) + "/logout")


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

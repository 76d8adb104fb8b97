"""The console, in a real headless Chromium, against a real heliosd with simulated traffic."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from helios.v1 import helios_pb2 as pb
from helios.v1 import helios_pb2_grpc as pb_grpc

from tests.conftest import ARTIFACTS, DaemonProcess, start_daemon_process, stop_daemon_process

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
        reason="needs Debian chromium and chromium-driver (scripts/test.sh installs them)",
    ),
]


@pytest.fixture(scope="module")
def console_daemon(tmp_path_factory) -> Iterator[DaemonProcess]:
    tmp = tmp_path_factory.mktemp("console")
    daemon = start_daemon_process(
        tmp,
        """
[reconcile]
window_seconds = 1.0
grace_seconds = 0.5

[[routes]]
event_type = "bench.*"
window_seconds = 1.0
grace_seconds = 0.5

[sources.inputs.simulator]
plugin = "simulator"
rate_per_second = 200.0
drop_probability = 0.03
duplicate_probability = 0.02
corrupt_probability = 0.01

[sources.inputs.edge]
plugin = "webhook"
envelope = "cloudevents"
source = "aws"
verify = "none"
""",
        console=True,
    )
    yield daemon
    stop_daemon_process(daemon)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    os.environ.setdefault("SE_OFFLINE", "true")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1400,1000",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium')}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


def wait_for(predicate, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception:  # the page is still building
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def text_of(driver, css: str) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, css).text


def test_overview_shows_live_reconciliation(console_daemon, browser):
    from selenium.webdriver.common.by import By

    browser.get(f"http://127.0.0.1:{console_daemon.console_port}/")
    wait_for(lambda: "HELIOS" in browser.title or text_of(browser, ".q-header"), what="header")
    eps = wait_for(
        lambda: float(text_of(browser, ".helios-eps").replace(",", "")) > 50,
        what="events/s above 50",
    )
    assert eps
    for source in ("aws", "gcp", "azure"):  # the last 5 minutes beside the total
        share = wait_for(
            lambda s=source: "5 m" in (t := text_of(browser, f".helios-completeness-{s}")) and t,
            what=f"recent completeness of {source}",
        )
        assert "total" in share and share.endswith("%"), share

    def discrepancy_kinds() -> set[str]:
        # Read in one go: the table refreshes every 2 s and its rows go stale.
        rows = browser.find_elements(By.CSS_SELECTOR, ".helios-discrepancies tbody tr")
        return {row.find_elements(By.TAG_NAME, "td")[1].text for row in rows}

    kinds = wait_for(discrepancy_kinds, what="discrepancy rows")
    assert kinds & {"MISSING", "DUPLICATE", "INCONSISTENT"}
    wait_for(
        lambda: browser.execute_script(
            "return document.querySelector('.helios-outcome-chart canvas') !== null"
        ),
        what="chart",
    )
    ARTIFACTS.mkdir(exist_ok=True)
    time.sleep(2.5)  # one more refresh, so the chart has a few points
    browser.save_screenshot(str(ARTIFACTS / "console-overview.png"))
    assert (ARTIFACTS / "console-overview.png").stat().st_size > 10_000


def _lookup(browser, event_id: str, expect: str) -> float:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    box = browser.find_element(By.CSS_SELECTOR, ".helios-lookup input")
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(Keys.DELETE)  # clear() would bypass the page's input events
    box.send_keys(event_id)
    started = time.monotonic()
    box.send_keys(Keys.ENTER)
    wait_for(lambda: expect in text_of(browser, ".helios-lookup-result"), what=f"lookup {expect}")
    return time.monotonic() - started


def test_event_lookup_shows_every_copy_and_unknown_ids(console_daemon, browser):
    with grpc.insecure_channel(console_daemon.address) as channel:
        outcomes = pb_grpc.QueryServiceStub(channel).ListOutcomes(
            pb.ListOutcomesRequest(page_size=1, filter="kind=MISSING")
        )
    event_id = outcomes.outcomes[0].event_id
    browser.get(f"http://127.0.0.1:{console_daemon.console_port}/")
    wait_for(lambda: text_of(browser, ".helios-lookup"), what="lookup box")
    _lookup(browser, event_id, "status MISSING")
    result = text_of(browser, ".helios-lookup-result")
    assert event_id in result and "MISSING" in result
    _lookup(browser, "no-such-event", "No event 'no-such-event'")


def test_console_stays_responsive_at_full_ingest_load(console_daemon, browser):
    helios = shutil.which("helios", path=os.path.dirname(sys.executable))
    load = subprocess.Popen(
        [
            helios,
            "--address",
            console_daemon.address,
            "bench",
            "--events",
            "150000",
            "--settle",
            "5",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        with grpc.insecure_channel(console_daemon.address) as channel:
            stub = pb_grpc.QueryServiceStub(channel)
            wait_for(
                # The load is on (the figure varies with what else the 2 cores run).
                lambda: stub.GetStats(pb.GetStatsRequest()).copies_per_second > 10_000,
                timeout=120,
                what="bench load",
            )
            outcomes = stub.ListOutcomes(
                pb.ListOutcomesRequest(page_size=1, filter="kind=COMPLETE")
            )
        browser.get(f"http://127.0.0.1:{console_daemon.console_port}/")
        wait_for(lambda: text_of(browser, ".helios-lookup"), what="page under load")
        event_id = outcomes.outcomes[0].event_id
        try:
            took = _lookup(browser, event_id, "status")
        except AssertionError:
            # Seen once in a full run: no answer at all in 20 s, while a lookup otherwise
            # takes well under a second. Keep what the page showed, and ask once more: a
            # lost keystroke fails no more; a console that does not answer still does.
            browser.save_screenshot(str(ARTIFACTS / "console-under-load-first-try.png"))
            took = _lookup(browser, event_id, "status")
        assert took < 3.0, f"a lookup took {took:.1f} s under load"
        browser.save_screenshot(str(ARTIFACTS / "console-under-load.png"))
    finally:
        load.wait(180)
    assert load.returncode in (0, 1)


@pytest.fixture(scope="module")
def detecting_daemon(tmp_path_factory) -> Iterator[DaemonProcess]:
    tmp = tmp_path_factory.mktemp("detecting")
    daemon = start_daemon_process(
        tmp,
        """
clock = "simulated"
clock_speed = 60.0

[reconcile]
window_seconds = 5.0
grace_seconds = 1.0

[detectors]
enabled = ["ewma"]
options = { ewma = { warmup = 3 } }

[sources.inputs.simulator]
plugin = "simulator"
rate_per_second = 3.0
tick_seconds = 0.5
scenarios = [
  { source = "aws", kind = "drop", probability = 0.4, start_minute = 5.0, duration_minutes = 5.0 },
]

[decision]
automation = "approve"
approval_ttl_seconds = 36000.0
""",
        console=True,
    )
    yield daemon
    stop_daemon_process(daemon)


def test_detection_view_charts_the_metrics_and_lists_anomalies(detecting_daemon, browser):
    from selenium.webdriver.common.by import By

    with grpc.insecure_channel(detecting_daemon.address) as channel:
        stub = pb_grpc.QueryServiceStub(channel)
        # A detector warmed up on 3 minutes of thin traffic may also flag something else
        # first; what must show is the aws outage.
        wait_for(
            lambda: any(
                "missing_rate" in m
                for a in stub.ListAnomalies(pb.ListAnomaliesRequest()).anomalies
                for m in a.metrics
            ),
            timeout=90,
            what="a missing_rate anomaly from the aws outage",
        )
    browser.get(f"http://127.0.0.1:{detecting_daemon.console_port}/detection")
    status = wait_for(lambda: text_of(browser, ".helios-detector-ewma"), what="detector status")
    assert status.startswith("ready") and "anomalies" in status
    canvases = wait_for(
        lambda: browser.find_elements(By.CSS_SELECTOR, ".q-card canvas"), what="metric charts"
    )
    assert len(canvases) >= 8
    rows = wait_for(
        lambda: browser.find_elements(By.CSS_SELECTOR, ".helios-anomalies tbody tr"),
        what="anomaly rows",
    )
    assert any("missing_rate" in row.text for row in rows)
    time.sleep(1)
    browser.save_screenshot(str(ARTIFACTS / "console-detection.png"))


def test_prometheus_metrics_are_served_beside_the_console(console_daemon):
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    url = f"http://127.0.0.1:{console_daemon.console_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    found = {f.name: f for f in text_string_to_metric_families(text)}

    def total(name, **labels):
        return sum(
            s.value
            for s in found[name].samples
            if s.name == name + "_total" or s.name == name
            if all(s.labels.get(k) == v for k, v in labels.items())
        )

    assert total("helios_copies_received") > 0
    assert total("helios_outcomes", kind="COMPLETE") > 0
    assert 0.0 < total("helios_source_completeness", source="aws") <= 1.0
    assert found["helios_windows_open"].type == "gauge"
    assert found["helios_outcomes"].type == "counter"


def test_jobs_view_counts_down(console_daemon, browser):
    from selenium.webdriver.common.by import By

    browser.get(f"http://127.0.0.1:{console_daemon.console_port}/jobs")
    rows = wait_for(
        lambda: browser.find_elements(By.CSS_SELECTOR, ".helios-jobs tbody tr"), what="job rows"
    )
    text = "\n".join(row.text for row in rows)
    assert "window-sweep" in text and "index-ttl" in text

    def sweep_runs() -> int:
        row = next(
            r
            for r in browser.find_elements(By.CSS_SELECTOR, ".helios-jobs tbody tr")
            if "window-sweep" in r.text
        )
        return int(row.find_elements(By.TAG_NAME, "td")[4].text)

    first = sweep_runs()
    wait_for(lambda: sweep_runs() > first, what="the sweep's run count to grow")
    browser.save_screenshot(str(ARTIFACTS / "console-jobs.png"))


def test_storage_view_shows_the_durable_index_and_the_open_windows(console_daemon, browser):
    browser.get(f"http://127.0.0.1:{console_daemon.console_port}/storage")
    wait_for(
        lambda: text_of(browser, ".helios-storage-backend") == "index: sqlite",
        what="the sqlite backend",
    )
    assert "fsynced" in text_of(browser, ".helios-storage-durability")
    assert "of at most 1,000,000" in text_of(browser, ".helios-storage-windows")
    assert "locked by this heliosd" in text_of(browser, ".helios-storage-dir")
    details = wait_for(
        lambda: "commits" in (t := text_of(browser, ".helios-storage-details")) and t,
        what="the index's details",
    )
    assert "index.sqlite3" in details
    wait_for(
        lambda: "time slices" in text_of(browser, ".helios-storage-bloom"), what="bloom filters"
    )
    assert "per lookup" in text_of(browser, ".helios-storage-bloom-fp")
    assert "0 slices set aside" in text_of(browser, ".helios-storage-bloom-fp")
    browser.save_screenshot(str(ARTIFACTS / "console-storage.png"))


def test_slo_view_shows_budgets_cost_and_log_levels(console_daemon, browser):
    browser.get(f"http://127.0.0.1:{console_daemon.console_port}/slo")
    rows = wait_for(
        lambda: "source:aws" in (t := text_of(browser, ".helios-slos")) and t,
        what="SLO rows",
    )
    assert "completeness" in rows and "availability" in rows and "timeliness" in rows
    assert "wall-clock" in text_of(browser, ".helios-slo-clock")
    assert "aws" in text_of(browser, ".helios-cost")
    assert "per_million_copies" in text_of(browser, ".helios-cost-prices")
    assert "root=" in text_of(browser, ".helios-log-levels")
    browser.save_screenshot(str(ARTIFACTS / "console-slo.png"))


def test_sources_view_lists_inputs_and_replays_a_dead_letter(console_daemon, browser):
    url = f"http://127.0.0.1:{console_daemon.console_port}"
    ce = {"content-type": "application/cloudevents+json"}
    good = {"specversion": "1.0", "id": "web-1", "type": "bench.web", "source": "/t", "data": {}}
    with httpx.Client() as http:
        assert http.post(url + "/ingest/cloudevents", json=good, headers=ce).status_code == 200
        bad = http.post(url + "/ingest/cloudevents", content=b"{not json", headers=ce)
        assert bad.status_code == 400
    letter_id = bad.json()["dead_letter"]
    browser.get(f"{url}/sources")
    inputs = wait_for(
        lambda: "invalid_json 1" in (t := text_of(browser, ".helios-inputs")) and t,
        what="the webhook input's row",
    )
    assert "webhook cloudevents" in inputs and "/ingest/cloudevents" in inputs
    assert "simulator" in inputs and "none" in inputs
    letters = wait_for(
        lambda: "invalid_json" in (t := text_of(browser, ".helios-dead-letters")) and t,
        what="the dead letter",
    )
    assert str(letter_id) in letters
    click(browser, ".helios-dead-letters tbody .q-checkbox")
    click(browser, ".helios-dlq-replay")
    with grpc.insecure_channel(console_daemon.address) as channel:
        query = pb_grpc.QueryServiceStub(channel)
        replayed = wait_for(
            lambda: (
                (
                    d := query.GetDeadLetter(pb.GetDeadLetterRequest(id=letter_id)).dead_letter
                ).attempts
                == 2
                and d
            ),
            what="the replay from the console",
        )
    assert replayed.replays == ["400 invalid_json"]  # still broken: kept, attempt counted
    browser.save_screenshot(str(ARTIFACTS / "console-sources.png"))


def click(browser, css: str) -> None:
    """Click what `css` finds once it is there (retrying while the page rebuilds)."""
    from selenium.webdriver.common.by import By

    def attempt() -> bool:
        browser.find_element(By.CSS_SELECTOR, css).click()
        return True

    wait_for(attempt, what=f"a clickable {css}")


def _replay_decision(daemon: DaemonProcess, status: str = "pending_approval") -> pb.Decision:
    with grpc.insecure_channel(daemon.address) as channel:
        stub = pb_grpc.QueryServiceStub(channel)

        def find() -> pb.Decision | None:
            found = stub.ListDecisions(
                pb.ListDecisionsRequest(filter=f"status={status} action=replay_missing")
            ).decisions
            return found[0] if found else None

        return wait_for(find, timeout=90, what=f"a replay decision ({status})")


def test_recovery_view_approves_a_replay_triggers_and_sets_breakers(detecting_daemon, browser):
    from selenium.webdriver.common.by import By

    pending = _replay_decision(detecting_daemon)
    browser.get(f"http://127.0.0.1:{detecting_daemon.console_port}/recovery")
    click(browser, f".helios-approve-{pending.id}")
    catalogue = text_of(browser, ".helios-catalogue")
    assert "replay_missing" in catalogue and "quarantine_event" in catalogue
    with grpc.insecure_channel(detecting_daemon.address) as channel:
        query = pb_grpc.QueryServiceStub(channel)
        decision = wait_for(
            lambda: (
                (d := query.GetDecision(pb.GetDecisionRequest(id=pending.id)).decision).status
                == "executed"
                and d
            ),
            what="the approved decision to execute",
        )
        assert decision.decided_by == "anonymous"  # security.auth = none: no identity
        execution = wait_for(
            lambda: (
                (
                    x := query.ListExecutions(
                        pb.ListExecutionsRequest(filter="action=replay_missing")
                    ).executions[-1]
                ).verification
                == "verified"
                and x
            ),
            what="the replay to be verified",
        )
        assert execution.seen_copies == execution.expected_copies > 0
        wait_for(
            lambda: execution.id in text_of(browser, ".helios-executions"),
            what="the execution in the timeline",
        )

        # A dry run from the trigger form: notify on aws (dry run is the form's default).
        def pick(name: str) -> bool:
            """Choose `name` in the action menu, opening it (again) while it is not open:
            a rebuild of the page closed it once on a slow machine."""
            if not browser.find_elements(By.CSS_SELECTOR, ".q-menu"):
                browser.find_element(By.CSS_SELECTOR, ".helios-trigger-action").click()
                return False
            items = browser.find_elements(By.CSS_SELECTOR, ".q-menu .q-item")
            chosen = [item for item in items if item.text.strip() == name]
            if chosen:
                chosen[0].click()
            return bool(chosen)

        wait_for(lambda: pick("notify"), what="notify in the action menu")
        click(browser, ".helios-trigger")
        result = wait_for(
            lambda: text_of(browser, ".helios-trigger-result"), what="the trigger's result"
        )
        assert "dry_run" in result and "notify" in result
        # Breakers by hand.
        click(browser, ".helios-breaker-gcp-open")
        control = query.ListActions
        wait_for(
            lambda: (
                next(
                    b for b in control(pb.ListActionsRequest()).breakers if b.source == "gcp"
                ).state
                == "open"
            ),
            what="the gcp breaker to open",
        )
        time.sleep(2.5)
        ARTIFACTS.mkdir(exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "console-recovery.png"))
        click(browser, ".helios-breaker-gcp-closed")
        wait_for(
            lambda: (
                next(
                    b for b in control(pb.ListActionsRequest()).breakers if b.source == "gcp"
                ).state
                == "closed"
            ),
            what="the gcp breaker to close",
        )


def test_decisions_view_explains_the_ranking_and_the_trace(detecting_daemon, browser):
    from selenium.webdriver.common.by import By

    pending = _replay_decision(detecting_daemon, "pending_approval,executed,expired")
    browser.get(f"http://127.0.0.1:{detecting_daemon.console_port}/decisions?id={pending.id}")
    title = wait_for(lambda: text_of(browser, ".helios-decision-title"), what="the decision")
    assert title.startswith(pending.id) and "missing_events(aws)" in title
    rows = browser.find_elements(By.CSS_SELECTOR, ".helios-ranking tbody tr")
    assert "replay_missing" in rows[0].text and "chosen" in rows[0].text
    assert len(rows) >= 4
    assert "anomaly" in text_of(browser, ".helios-trace")
    listed = wait_for(
        lambda: browser.find_elements(By.CSS_SELECTOR, ".helios-decisions tbody tr"),
        what="the decision list",
    )
    assert any(pending.id in row.text for row in listed)
    time.sleep(1)
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "console-decisions.png"))


async def test_storage_view_of_a_kafka_member_on_redis_shows_its_lease_and_fencing(
    kafka_broker, redis_server, tmp_path, browser
):
    """A group member's Storage page: its Redis index with its fencing epoch, and its
    Kafka input with its partitions and lease (real Redis, real Tansu, real browser)."""
    await kafka_broker.create_topics(12, "helios.events", "helios.outcomes", "helios.dlq")
    member = start_daemon_process(
        tmp_path,
        f"""
[index]
backend = "redis"
options = {{ url = "{redis_server.url}", member = "m1" }}
[sources.inputs.bus]
plugin = "kafka"
bootstrap_servers = "{kafka_broker.bootstrap}"
group_id = "console"
""",
        console=True,
    )
    try:
        browser.get(f"http://127.0.0.1:{member.console_port}/storage")

        def details() -> str:
            text = text_of(browser, ".helios-storage-details")
            return text if "12 of 12" in text else ""

        shown = wait_for(details, 60, what="the member's partitions")
        assert "fencing" in shown and "epoch 0; 0 writes refused as fenced" in shown
        assert "kafka lease" in shown and "s left" in shown and "0 sessions ended" in shown
        browser.save_screenshot(str(ARTIFACTS / "console-storage-kafka.png"))
    finally:
        stop_daemon_process(member)

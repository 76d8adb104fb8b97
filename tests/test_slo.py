"""SLOs: error budgets and multi-window burn rates (the SRE workbook's pairs), a burning
completeness budget raised as an anomaly the MAPE-K loop decides on, ListSlos and
GetCost over gRPC and the CLI."""

from __future__ import annotations

import pytest
from helios.daemon.config import SloConfig
from helios.daemon.slo import Objectives
from helios.v1 import helios_pb2 as pb

from tests.test_heal_api import DROPPING, healing, run


def test_budget_and_burn_follow_the_workbook():
    slo = Objectives(SloConfig(completeness_target=0.99, period_days=30.0))
    t = 1_767_225_600.0
    good = total = 0.0
    for minute in range(120):  # two hours at 0.5% errors: half the allowed rate
        good, total = good + 995, total + 1000
        assert not slo.observe(t + 60 * minute, [("completeness", "source:aws", good, total)])
    view = slo.view("completeness", "source:aws", t + 60 * 119)
    assert view.ratio == pytest.approx(0.995)
    assert view.budget_remaining == pytest.approx(0.5)
    assert view.burn["1h"] == pytest.approx(0.5)
    started = []
    for minute in range(120, 130):  # then every delivery fails
        good, total = good, total + 1000
        started += slo.observe(t + 60 * minute, [("completeness", "source:aws", good, total)])
    # 6 h (2 h of data so far) crosses 6x after 8 failed minutes; 1 h crosses 14.4x when
    # 8.6 of its 60 minutes have failed; the short windows (5 m, 30 m) crossed at once
    assert [(a.pair, a.at) for a in started] == [("slow", t + 60 * 127), ("fast", t + 60 * 128)]
    fast = started[1]
    assert fast.burn_short == pytest.approx(100.0) and fast.burn_long > 14.4
    view = slo.view("completeness", "source:aws", t + 60 * 129)
    assert "fast" in view.firing and view.budget_remaining < 0.5
    for minute in range(130, 200):  # healthy again: the alert stops once 5 m is clean
        good, total = good + 1000, total + 1000
        slo.observe(t + 60 * minute, [("completeness", "source:aws", good, total)])
    assert not slo.view("completeness", "source:aws", t + 60 * 199).firing


def test_no_alert_on_too_little_traffic_to_judge():
    slo = Objectives(SloConfig(min_events=1000))
    started = []
    for minute in range(10):  # 50 events a minute, all lost: 500 < 1000 in the hour
        started += slo.observe(60.0 * minute, [("completeness", "route:*", 0.0, 50.0 * minute)])
    assert not started
    started = slo.observe(600.0, [("completeness", "route:*", 0.0, 1000.0)])
    assert {a.pair for a in started} == {"fast", "slow"}


def test_a_restart_of_the_counters_is_not_a_negative_count():
    slo = Objectives(SloConfig())
    slo.observe(60.0, [("availability", "all", 100.0, 100.0)])
    slo.observe(120.0, [("availability", "all", 5.0, 5.0)])  # heliosd restarted
    view = slo.view("availability", "all", 120.0)
    assert view.total == 105.0 and view.good == 105.0


async def test_a_burning_completeness_budget_raises_an_anomaly_and_shows_everywhere():
    config = DROPPING + (
        "\n[cost]\nper_million_copies = 2.0\nper_replayed_copy = 0.001\n"
        'actions = { replay_missing = 0.5 }\n[decision]\nautomation = "auto"\n'
        "[slo]\nmin_events = 100\n"
    )
    async for h in healing(config=config):
        await run(h.daemon, h.clock, 30)  # the slo job ticks every 10 s
        anomalies = [a for a in h.daemon.detection.anomalies if a.detector == "slo"]
        assert anomalies, "no anomaly from the burning budget of aws"
        assert str(anomalies[0].diagnosis) == "missing_events(aws)"
        decided = [
            d for d in h.daemon.loop.audit.decisions.values() if d.anomaly_id == anomalies[0].id
        ]
        assert decided and decided[0].chosen == "replay_missing"
        assert len(anomalies) == 1  # one burn, one anomaly (fast and slow fired together)
        await run(h.daemon, h.clock, 5)
        d = h.daemon.loop.audit.decisions[decided[0].id]
        assert d.status == "executed", d.reason

        r = await h.query.ListSlos(pb.ListSlosRequest())
        by = {(s.objective, s.scope): s for s in r.slos}
        aws = by[("completeness", "source:aws")]
        assert aws.ratio < 0.9 and "fast" in aws.firing and aws.budget_remaining < 0
        assert by[("completeness", "source:gcp")].ratio == 1.0
        assert not by[("completeness", "source:gcp")].firing
        assert ("timeliness", "all") in by and ("availability", "all") in by
        assert any(scope.startswith("route:") for _, scope in by)

        code, out = await h.cli("slo", "--check")
        assert code == 1 and "source:aws" in out and "fast" in out
        cost = await h.query.GetCost(pb.GetCostRequest())
        lines = {(x.kind, x.name): x for x in cost.lines}
        aws_line = lines[("source", "aws")]
        assert aws_line.replayed > 0  # the loop's replays
        assert aws_line.money == pytest.approx(
            aws_line.units * 2.0 / 1e6 + aws_line.replayed * 0.001
        )
        assert lines[("action", "replay_missing")].money == pytest.approx(
            0.5 * lines[("action", "replay_missing")].units
        )
        code, out = await h.cli("cost")
        assert code == 0 and "replay_missing" in out and "USD" in out

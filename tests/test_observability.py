"""Dashboards and alerts as code: every helios_* metric the Grafana dashboard and the
Prometheus rules name is in a real scrape of a daemon that has ingested, lost copies,
decided, replayed and verified; the rule file is valid Prometheus rule YAML."""

from __future__ import annotations

import json
import re
from pathlib import Path

import grpc
import pytest
import yaml
from helios.v1 import helios_pb2 as pb
from prometheus_client.parser import text_string_to_metric_families

from tests.test_heal_api import DROPPING, healing, run

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "grafana" / "helios-dashboard.json"
RULES = ROOT / "deploy" / "prometheus" / "helios-alerts.yml"
NAME = re.compile(r"\bhelios_[a-z_]+\b")


def dashboard_exprs() -> list[str]:
    data = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [t["expr"] for p in data["panels"] for t in p["targets"]]


def rule_exprs() -> list[str]:
    data = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    rules = [r for g in data["groups"] for r in g["rules"]]
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
        assert rule["alert"].startswith("Helios") and rule["expr"].strip()
    return [r["expr"] for r in rules]


def test_the_dashboard_and_rules_are_well_formed_and_name_metrics():
    exprs = dashboard_exprs()
    assert len(exprs) >= 15
    assert len(rule_exprs()) >= 8
    assert all(NAME.search(e) for e in exprs)


async def test_every_metric_the_dashboard_and_alerts_name_is_exported():
    named = {m for e in dashboard_exprs() + rule_exprs() for m in NAME.findall(e)}
    detecting = (
        DROPPING + "\n[detectors]\nenabled = ['ewma']\noptions = { ewma = { warmup = 2 } }\n"
    )
    async for h in healing(config=detecting):
        await h.daemon.admission.admit([("e-x", "nowhere", "order.created", 0.0, b"{}")])
        with pytest.raises(grpc.aio.AioRpcError):
            await h.query.GetEvent(pb.GetEventRequest(event_id="no-such-event"))
        done = await h.control.TriggerAction(
            pb.TriggerActionRequest(action="replay_missing", target="aws", force=True)
        )
        assert done.execution.status == "running"
        await run(h.daemon, h.clock, 5)
        assert h.daemon.loop.audit.executions[done.execution.id].verification == "verified"
        h.daemon.webhooks.stats_of("simulator").refused("invalid_json")  # an input's error
        text = (await h.daemon.services.observe.prometheus()).decode()
    samples = {s.name for f in text_string_to_metric_families(text) for s in f.samples}
    missing = sorted(m for m in named if m not in samples)
    assert not missing, f"named in deploy/ but not exported: {missing}"

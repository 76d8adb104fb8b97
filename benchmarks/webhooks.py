"""Webhook ingest: deliveries per second into one heliosd, measured with wrk (C, light
on the CPU it shares with heliosd) over keep-alive connections, every delivery a new
event. Three shapes, side by side in one run against the same daemon (SQLite index,
fsync per group commit, so a 200 means durable; then the memory index; verification on):

- EventBridge API destination: one event per POST, x-api-key checked;
- Event Grid: BATCH events per POST (`?code=` checked);
- CloudEvents batch mode: BATCH events per POST (bearer checked).

    .venv/bin/python benchmarks/webhooks.py [SECONDS] [CONNECTIONS] [BATCH]   (default 10 64 100)

Needs wrk (Debian package `wrk`). Prints deliveries/s, copies/s, latency, and the
non-2xx answers (there must be none: a 429 would show pushback), for the durable SQLite
index and then the memory index, and their ratio."""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.conftest import start_daemon_process, stop_daemon_process  # noqa: E402

CONFIG = """
[index]
backend = "sqlite"
[ingest]
queue_capacity_events = 400000
[reconcile]
window_seconds = 5.0
grace_seconds = 1.0
max_open_windows = 2000000
[sources]
names = ["aws", "azure", "edge"]
[[routes]]
event_type = "bench.*"
sources = ["aws"]
[[routes]]
event_type = "grid.*"
sources = ["azure"]
[[routes]]
event_type = "ce.*"
sources = ["edge"]
[sources.inputs.eb]
plugin = "webhook"
envelope = "eventbridge"
source = "aws"
secret_file = "{secret}"
[sources.inputs.eg]
plugin = "webhook"
envelope = "eventgrid"
source = "azure"
secret_file = "{secret}"
[sources.inputs.ce]
plugin = "webhook"
envelope = "cloudevents"
source = "edge"
secret_file = "{secret}"
max_body_bytes = 4194304
"""

# Every request a new event id: thread number and a counter.
LUA = """
local counter, tid = 0, 0
local threads = 0
function setup(thread) threads = threads + 1; thread:set("tid", threads) end
function init(args) tid = tonumber(wrk.thread:get("tid")) or 0; batch = tonumber(args[1]) or 1 end
local function id() counter = counter + 1; return string.format("%s-%d-%d", KIND, tid, counter) end
request = function()
  {body}
end
"""
BODIES = {
    "eventbridge": (
        "/ingest/aws/eventbridge",
        {"content-type": "application/json", "x-api-key": "bench-secret"},
        """local e = id()
  local body = '{"version":"0","id":"t","detail-type":"bench.order","source":"bench",'
    .. '"time":"2026-11-29T10:00:00Z","detail":{"event_id":"' .. e .. '","total":12.5}}'
  return wrk.format("POST", PATH, HEADERS, body)""",
    ),
    "eventgrid": (
        "/ingest/azure/eventgrid?code=bench-secret",
        {"content-type": "application/json"},
        """local parts = {}
  for i = 1, batch do
    local e = id()
    parts[i] = '{"id":"' .. e .. '","eventType":"grid.order","subject":"o",'
      .. '"eventTime":"2026-11-29T10:00:00.1234567Z","data":{"event_id":"' .. e
      .. '","total":12.5},"dataVersion":"1"}'
  end
  return wrk.format("POST", PATH, HEADERS, "[" .. table.concat(parts, ",") .. "]")""",
    ),
    "cloudevents": (
        "/ingest/cloudevents",
        {
            "content-type": "application/cloudevents-batch+json",
            "authorization": "Bearer bench-secret",
        },
        """local parts = {}
  for i = 1, batch do
    local e = id()
    parts[i] = '{"specversion":"1.0","id":"' .. e .. '","type":"ce.order","source":"/b",'
      .. '"data":{"event_id":"' .. e .. '","total":12.5}}'
  end
  return wrk.format("POST", PATH, HEADERS, "[" .. table.concat(parts, ",") .. "]")""",
    ),
}


def script(kind: str, path: str, headers: dict[str, str], body: str) -> str:
    lua_headers = "{" + ", ".join(f'["{k}"] = "{v}"' for k, v in headers.items()) + "}"
    head = f'KIND = "{kind[:2]}"\nPATH = "{path}"\nHEADERS = {lua_headers}\n'
    return head + LUA.replace("{body}", textwrap.dedent(body))


def run(url: str, lua: Path, seconds: int, connections: int, batch: int) -> dict[str, float]:
    done = subprocess.run(
        ["wrk", "-t", "2", "-c", str(connections), "-d", f"{seconds}s", "--latency", "-s",
         str(lua), url, "--", str(batch)],
        capture_output=True, text=True, timeout=seconds + 60,
    )  # fmt: skip
    out = done.stdout
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if rate is None:
        raise SystemExit(f"wrk failed:\n{out}\n{done.stderr}")
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    p50 = re.search(r"50%\s+([\d.]+)(\w+)", out)
    p99 = re.search(r"99%\s+([\d.]+)(\w+)", out)

    def ms(found: re.Match[str] | None) -> float:
        if found is None:
            return float("nan")
        value, unit = float(found.group(1)), found.group(2)
        return value * {"us": 0.001, "ms": 1.0, "s": 1000.0}.get(unit, 1.0)

    return {
        "deliveries": float(rate.group(1)),
        "non2xx": float(bad.group(1)) if bad else 0.0,
        "p50": ms(p50),
        "p99": ms(p99),
    }


def main() -> None:
    seconds = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    connections = int(sys.argv[2]) if len(sys.argv) > 2 else 64
    batch = int(sys.argv[3]) if len(sys.argv) > 3 else 100
    work = Path(tempfile.mkdtemp(prefix="helios-webhooks-"))
    secret = work / "secret"
    secret.write_text("bench-secret")
    print(f"{seconds} s each, {connections} keep-alive connections, wrk -t 2")
    rates: dict[tuple[str, str], float] = {}
    for backend in ("sqlite", "memory"):  # durable (fsync per group commit) vs not
        home = work / backend
        home.mkdir()
        config = CONFIG.format(secret=secret).replace(
            'backend = "sqlite"', f'backend = "{backend}"'
        )
        daemon = start_daemon_process(home, config, console=True)
        url = f"http://127.0.0.1:{daemon.console_port}"
        try:
            for kind, (path, headers, body) in BODIES.items():
                lua = work / f"{kind}.lua"
                lua.write_text(script(kind, path, headers, body))
                per = 1 if kind == "eventbridge" else batch
                r = run(url, lua, seconds, connections, per)
                rates[(backend, kind)] = r["deliveries"]
                print(
                    f"{backend:<7}{kind:<12} {per:>4} events/delivery: "
                    f"{r['deliveries']:>8,.0f} deliveries/s {r['deliveries'] * per:>9,.0f} copies/s"
                    f"  p50 {r['p50']:.1f} ms  p99 {r['p99']:.1f} ms  non-2xx {r['non2xx']:.0f}"
                )
        finally:
            stop_daemon_process(daemon)
    for kind in BODIES:
        print(f"{kind}: sqlite / memory = {rates[('sqlite', kind)] / rates[('memory', kind)]:.2f}")


if __name__ == "__main__":
    main()

"""The decide-and-heal scenario, measured: aws drops 25% of its copies for 5 minutes on a
simulated clock; the loop runs in auto mode. Prints detection delay, the decisions, the
replays, completeness and MTTR.

.venv/bin/python benchmarks/heal.py [--mode auto|approve|observe] [--seed 11]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time

from helios.daemon import config as config_mod
from helios.daemon.app import Daemon
from helios.daemon.clock import ManualClock
from helios.daemon.plugins import load
from helios.plugins.sources.simulator import SimulatorSource

FAULT_FROM, FAULT_MINUTES = 12, 5

CONFIG = """
[daemon]
grpc_address = "127.0.0.1:0"
console_address = ""
data_dir = "{data_dir}"

[reconcile]
window_seconds = 10.0
grace_seconds = 2.0

[sources.inputs.simulator]
plugin = "simulator"
rate_per_second = 10.0
seed = {seed}
tick_seconds = 0.5
scenarios = [
  {{ source = "aws", kind = "drop", probability = 0.25, start_minute = {start}.0, \
duration_minutes = {minutes}.0 }},
]

[detectors]
enabled = ["ewma"]
options = {{ ewma = {{ warmup = 8 }} }}

[decision]
automation = "{mode}"
cycle_seconds = 20.0
"""


async def main(mode: str, seed: int) -> None:
    text = CONFIG.format(
        data_dir=tempfile.mkdtemp(prefix="helios-heal-"),
        seed=seed,
        start=FAULT_FROM,
        minutes=FAULT_MINUTES,
        mode=mode,
    )
    config = config_mod.parse(text, "benchmarks/heal.py")
    manager, registry = load()
    clock = ManualClock()
    daemon = Daemon(config, manager, registry, clock)
    await daemon.start()
    t0 = clock.now()
    wall = time.perf_counter()
    minutes = FAULT_FROM + FAULT_MINUTES + 3
    await daemon.advance(minutes * 60)
    wall = time.perf_counter() - wall
    simulator = daemon.inputs["simulator"]
    assert isinstance(simulator, SimulatorSource)
    truth = simulator.traffic.truth
    dropped = {(e, s) for e, sources in truth.dropped.items() for s in sources}
    fault = [a for a in daemon.detection.anomalies if a.minute >= t0 + FAULT_FROM * 60]
    audit = daemon.loop.audit
    decisions = list(audit.decisions.values())
    runs = [x for x in audit.executions.values() if not x.dry_run]
    healed = 0
    for event_id, _ in dropped:
        record = await daemon.runtime.get_event(event_id)
        healed += record is not None and not record.missing
    aws = next(s for s in daemon.services.reads.sources() if s.source == "aws")
    print(f"simulated {minutes} minutes in {wall:.1f} s of wall time, mode {mode}, seed {seed}")
    print(f"copies withheld from aws by the fault: {len(dropped)}")
    if fault:
        first = fault[0]
        steps = int((first.minute - (t0 + FAULT_FROM * 60)) // 60) + 1
        print(
            f"first anomaly: {first.id}, metric step {steps} of the fault, "
            f"diagnosis {first.diagnosis} (confidence {first.diagnosis.confidence:.2f})"
        )
    statuses: dict[str, int] = {}
    for d in decisions:
        statuses[d.status.value] = statuses.get(d.status.value, 0) + 1
    print(
        f"decisions: {len(decisions)} {statuses}; chosen: {sorted({d.chosen for d in decisions})}"
    )
    print(f"traces: {len({d.trace_id for d in decisions})}")
    print(
        f"executions: {len(runs)}, verified {sum(x.verification == 'verified' for x in runs)}, "
        f"copies replayed {len(truth.replayed)}, "
        f"replayed twice {sum(1 for n in truth.replayed.values() if n > 1)}"
    )
    print(f"withheld copies healed: {healed} of {len(dropped)}")
    print(f"aws completeness {aws.completeness:.4%}")
    mttrs = [x.mttr_seconds for x in runs if x.verification == "verified"]
    if mttrs:
        print(
            f"MTTR (detection to every replayed copy seen), simulated seconds: "
            f"first {mttrs[0]:.1f}, median {statistics.median(mttrs):.1f}, max {max(mttrs):.1f}"
        )
    await daemon.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mode", default="auto", choices=["auto", "approve", "observe"])
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    asyncio.run(main(args.mode, args.seed))

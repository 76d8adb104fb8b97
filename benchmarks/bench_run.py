"""What benchmarks/trust.py and benchmarks/watchers.py share: the minimal daemon config
they compare under, and one `helios bench` run against a daemon, as copies per second."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

# The memory index, no console, no simulator, short windows: ingest and reconcile only.
MINIMAL = """
[index]
backend = "memory"
[reconcile]
window_seconds = 2.0
grace_seconds = 1.0
"""


def bench(address: str, events: int, extra: list[str] | None = None) -> float:
    """`helios [extra] bench --events N` at full speed; its copies per second. Exits when
    the run fails or its outcomes disagree with the ground truth."""
    helios = Path(sys.executable).with_name("helios")
    done = subprocess.run(
        [str(helios), "--address", address, *(extra or []), "bench", "--events", str(events)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    found = re.search(r"sustained: ([\d,]+) copies/s", done.stdout)
    if not found or "all outcomes correct" not in done.stdout:
        raise SystemExit(f"bench failed:\n{done.stdout}\n{done.stderr}")
    return float(found.group(1).replace(",", ""))

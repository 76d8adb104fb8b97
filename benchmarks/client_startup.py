"""How long the `helios` client takes to start, and what it loads: `helios --help` run N
times in fresh processes (wall time), and the modules `import helios.control.cli` brings.

    .venv/bin/python benchmarks/client_startup.py [RUNS]
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

HEAVY = ("numpy", "pydantic", "nicegui", "onnxruntime", "helios.daemon")


def main(runs: int) -> None:
    exe = str(Path(sys.executable).with_name("helios"))
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([exe, "--help"], check=True, capture_output=True)
        times.append((time.perf_counter() - t0) * 1000)
    probe = (
        "import sys, time\n"
        "t = time.perf_counter(); import helios.control.cli\n"
        "ms = (time.perf_counter() - t) * 1000\n"
        f"heavy = sorted({{m.split('.')[0] if not m.startswith('helios.') else 'helios.daemon' "
        f"for m in sys.modules if m.startswith({HEAVY!r})}})\n"
        "print(len(sys.modules), round(ms, 1), ','.join(heavy) or '-')"
    )
    modules, import_ms, heavy = subprocess.run(
        [sys.executable, "-c", probe], check=True, capture_output=True, text=True
    ).stdout.split()
    print(
        f"helios --help: median {statistics.median(times):.0f} ms, "
        f"min {min(times):.0f} ms over {runs} runs"
    )
    print(f"import helios.control.cli: {import_ms} ms, {modules} modules loaded; heavy: {heavy}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)

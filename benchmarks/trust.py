"""The cost of TLS and API-key checking on ingest, side by side in one run: two heliosd
with the same minimal config (memory index, no console, no simulator), one plaintext
with no credentials asked (security.auth = "none", loopback), one over TLS asking for an
API key; `helios bench --events EVENTS` at full speed against each, alternating, ROUNDS
times. Certificates are made with openssl in a temporary directory.

    .venv/bin/python benchmarks/trust.py [EVENTS] [ROUNDS]     (default 200000, 2)
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from helios.daemon.identity import KeyStore  # noqa: E402

from benchmarks.bench_run import MINIMAL, bench  # noqa: E402
from tests.conftest import start_daemon_process, stop_daemon_process  # noqa: E402
from tests.test_security import make_pki  # noqa: E402

CONFIG = MINIMAL


def main() -> None:
    events = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    work = Path(tempfile.mkdtemp(prefix="helios-trust-"))
    pki = work / "pki"
    pki.mkdir()
    files = make_pki(pki)
    (work / "plain").mkdir()
    (work / "tls").mkdir()
    (work / "tls" / "data").mkdir()
    plain = start_daemon_process(work / "plain", CONFIG)
    secure = start_daemon_process(
        work / "tls",
        CONFIG
        + f"""
[security]
auth = "keys"
tls_cert = "{files["server.pem"]}"
tls_key = "{files["server.key"]}"
""",
    )
    # helios bench publishes and reads the outcomes back (WatchOutcomes, GetEvent).
    reader = KeyStore(work / "tls" / "data" / "keys.json").create("bench", "admin")[1]
    tls_args = ["--tls-ca", str(files["ca.pem"]), "--api-key", reader]
    try:
        rates: dict[str, list[float]] = {"plaintext, no auth": [], "TLS + API key": []}
        for _ in range(rounds):
            rates["plaintext, no auth"].append(bench(plain.address, events, []))
            rates["TLS + API key"].append(bench(secure.address, events, tls_args))
        for name, values in rates.items():
            print(f"{name:<20} " + ", ".join(f"{v:,.0f}" for v in values) + " copies/s")
        pairs = zip(rates["TLS + API key"], rates["plaintext, no auth"], strict=True)
        ratios = [t / p for t, p in pairs]
        print("TLS + key / plaintext: " + ", ".join(f"{r:.2f}" for r in ratios))
    finally:
        stop_daemon_process(plain)
        stop_daemon_process(secure)


if __name__ == "__main__":
    main()

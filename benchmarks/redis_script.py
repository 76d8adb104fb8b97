"""What the Redis index's WRITE script costs Redis per record, as Redis itself counts it
(INFO commandstats: the microseconds spent in EVALSHA), for the script as shipped and
for the same script storing each record with `SET key value EX <Lua number>`, as it did
before. Rounds alternate between the two on one redis-server (started here on a free
port, no persistence), each round from an empty Redis; the medians are reported.

    .venv/bin/python benchmarks/redis_script.py [ROUNDS]      (default 6)

Redis's CPU per record matters beyond Redis: it is the share of the machine the
members of a Kafka consumer group do not get (benchmarks/kafka.py, docs/performance.md).
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import redis
from helios.plugins.index.redis_scripts import WRITE

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.conftest import RedisServer  # noqa: E402

SETEX = "redis.call('SETEX', p .. ':{' .. id .. '}', life, ARGV[i + 1])"
SET_EX = "redis.call('SET', p .. ':{' .. id .. '}', ARGV[i + 1], 'EX', tonumber(life))"
RECORDS = 667  # the events of one 2,000-copy batch of three copies each
WRITES = 300
VALUE = b"v" * 220  # about a closed record of three copies (marshal)


def one_round(client: redis.Redis, sha: str, start: int) -> float:
    client.flushall()
    client.config_resetstat()
    n = start
    for _ in range(WRITES):
        args: list[object] = ["bench", 3600, "0-0", "m0", "", 0, RECORDS]
        for _ in range(RECORDS):
            n += 1
            args += (f"k-{n:09d}", VALUE, "")
        args += ("", "", n, "1764489600.0", 0)
        client.evalsha(sha, 1, "bench:open", *args)
    stats = client.info("commandstats")["cmdstat_evalsha"]
    return float(stats["usec_per_call"]) / RECORDS


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 6
    if SETEX not in WRITE:
        sys.exit("the WRITE script no longer stores records with SETEX; update this benchmark")
    scripts = {"SETEX (shipped)": WRITE, "SET .. EX": WRITE.replace(SETEX, SET_EX)}
    work = Path(tempfile.mkdtemp(prefix="helios-redis-script-"))
    server = RedisServer(work)
    server.persistence = ["--appendonly", "no"]
    server.start()
    try:
        client = redis.Redis.from_url(server.url)
        shas = {name: client.script_load(text) for name, text in scripts.items()}
        found: dict[str, list[float]] = {name: [] for name in scripts}
        for k in range(rounds):
            for name, sha in shas.items():
                found[name].append(one_round(client, sha, k * WRITES * RECORDS))
        for name, values in found.items():
            rounded = ", ".join(f"{v:.2f}" for v in values)
            print(f"{name}: median {statistics.median(values):.2f} µs per record ({rounded})")
        shipped, before = (statistics.median(v) for v in found.values())
        print(f"SET .. EX / SETEX: {before / shipped:.2f}x")
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

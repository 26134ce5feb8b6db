"""Apache Kafka (KRaft) on 127.0.0.1 for the tests and local runs: one combined
broker+controller node, or a cluster of several, each with its own data directory and log.

The jars come from Maven Central through `docker/kafka/pom.xml` into a cache (fetched once,
by `mvn`, when missing). Same surface as the Tansu launcher (`EmbeddedBroker` in
processes.py): `url`, `bootstrap`, `start`/`stop`, a context manager, `freeze`/`thaw`; plus
`kill(node)` and `restart(node)`, which keeps the node's data directory (Kafka, unlike the
embedded broker, keeps its log across a restart). Started on free ports, stopped by PID.
"""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import socket
import subprocess
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from streams.runtime.processes import free_port, stop_process

REPO = Path(__file__).resolve().parents[2]
POM = REPO / "docker" / "kafka" / "pom.xml"

# Small and quick to start: the machines running the tests have 2 cores and run much else.
# Serial GC and the C1 compiler only: on 2 cores a single node (format included) was ready in
# 2.5-2.7 s, against 3.0-3.2 s with the JVM's defaults.
JVM_OPTS = (
    "-Xms64m", "-Xmx384m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
    "-Xshare:auto", "-Djava.awt.headless=true",
)

LOG4J = """\
log4j.rootLogger=WARN, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.server.KafkaRaftServer=INFO
"""


def kafka_version(pom: Path = POM) -> str:
    """The broker version the build file pins (its one source)."""
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    found = ET.parse(pom).getroot().find("m:properties/m:kafka.version", ns)
    if found is None or not found.text:
        raise ValueError(f"no kafka.version in {pom}")
    return found.text.strip()


def default_libs(version: str) -> Path:
    """Where the jars are cached: INTENTSTREAM_KAFKA_LIBS, else the pom's default."""
    configured = os.environ.get("INTENTSTREAM_KAFKA_LIBS")
    if configured:
        return Path(configured)
    return Path.home() / ".cache" / "intentstream" / f"kafka-{version}" / "libs"


def ensure_jars(libs: Path | None = None, pom: Path = POM) -> Path:
    """The directory holding the broker's jars, fetched from Maven Central if missing."""
    version = kafka_version(pom)
    libs = libs or default_libs(version)
    if not (libs / f"kafka_2.13-{version}.jar").exists():
        subprocess.run(
            ["mvn", "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
             f"-Dkafka.libs={libs}"],
            check=True,
        )
    return libs


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding (as Kafka's own
    `random-uuid`), redrawn while it starts with "-": the storage tool's argument parser read
    such an id as an option (`--cluster-id: expected one argument`, 1 format in 32)."""
    while (found := base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode())[0] == "-":
        continue
    return found


@dataclass(frozen=True)
class BrokerConfig:
    """What the tests choose about a cluster; everything else is in `node_properties`."""

    nodes: int = 1
    replication_factor: int | None = None  # default: min(3, nodes)
    min_insync_replicas: int | None = None  # default: replication factor - 1, at least 1

    @property
    def rf(self) -> int:
        return self.replication_factor or min(3, self.nodes)

    @property
    def min_isr(self) -> int:
        return self.min_insync_replicas or max(1, self.rf - 1)


@dataclass
class KafkaNode:
    node_id: int
    port: int
    controller_port: int
    workdir: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def properties_path(self) -> Path:
        return self.workdir / "server.properties"

    @property
    def log_path(self) -> Path:
        return self.workdir / "kafka.log"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


def node_properties(node: KafkaNode, voters: str, config: BrokerConfig) -> dict[str, str]:
    """server.properties of one combined broker+controller node (pure)."""
    return {
        "process.roles": "broker,controller",
        "node.id": str(node.node_id),
        "controller.quorum.voters": voters,
        "listeners": f"PLAINTEXT://127.0.0.1:{node.port},"
                     f"CONTROLLER://127.0.0.1:{node.controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{node.port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(node.data_dir),
        # As in docker/compose.yaml: topics are created on purpose, never by a producer.
        "auto.create.topics.enable": "false",
        "num.partitions": "1",
        "default.replication.factor": str(config.rf),
        "min.insync.replicas": str(config.min_isr),
        "offsets.topic.replication.factor": str(config.rf),
        "offsets.topic.num.partitions": "10",  # fewer than 50: a quicker first group join
        "transaction.state.log.replication.factor": str(config.rf),
        "transaction.state.log.min.isr": str(config.min_isr),
        "transaction.state.log.num.partitions": "10",
        # Tests wait for assignment; no 3 s wait for more members before the first one.
        "group.initial.rebalance.delay.ms": "0",
        # Event times in tests lie in the past: never delete a segment for its age.
        "log.retention.ms": "-1",
        # A killed node is fenced (and leaves the ISR) within seconds, not 9 s / 30 s.
        "broker.heartbeat.interval.ms": "500",
        "broker.session.timeout.ms": "4000",
        "replica.lag.time.max.ms": "8000",
        "controlled.shutdown.enable": "true",
    }


def render_properties(props: dict[str, str]) -> str:
    return "".join(f"{key}={value}\n" for key, value in props.items())


class KafkaBroker:
    """`with KafkaBroker(workdir) as kafka: kafka.url` → `kafka://127.0.0.1:PORT` (node 0's
    listener first; every node's listener is in `bootstrap`)."""

    def __init__(
        self, workdir: Path, config: BrokerConfig | None = None, libs: Path | None = None
    ) -> None:
        self.workdir = workdir
        self.config = config or BrokerConfig()
        self.libs = libs
        self.cluster_id = new_cluster_id()
        self.nodes = [
            KafkaNode(i + 1, free_port(), free_port(), workdir / f"node-{i + 1}")
            for i in range(self.config.nodes)
        ]

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)

    @property
    def url(self) -> str:
        return ";".join(f"kafka://127.0.0.1:{node.port}" for node in self.nodes)  # Faust's form

    @property
    def log_path(self) -> Path:
        return self.nodes[0].log_path

    @property
    def pid(self) -> int:
        process = self.nodes[0].process
        if process is None:
            raise RuntimeError("broker not started")
        return process.pid

    def _voters(self) -> str:
        return ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self.nodes)

    def _java(self, *args: str) -> list[str]:
        assert self.libs is not None
        log4j = self.workdir / "log4j.properties"
        return ["java", *JVM_OPTS, f"-Dlog4j.configuration=file:{log4j}",
                "-cp", f"{self.libs}/*", *args]

    def start(self, timeout_s: float = 90.0) -> KafkaBroker:
        self.libs = ensure_jars(self.libs)
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "log4j.properties").write_text(LOG4J)
        for node in self.nodes:
            node.workdir.mkdir(parents=True, exist_ok=True)
            props = node_properties(node, self._voters(), self.config)
            node.properties_path.write_text(render_properties(props))
        self._format_all()
        for node in self.nodes:
            self._launch(node)
        self.wait_ready(timeout_s)
        return self

    def _format_all(self) -> None:
        """KRaft storage of every node, formatted at once (each is a JVM start)."""
        formats = [
            subprocess.Popen(
                self._java("kafka.tools.StorageTool", "format", "--ignore-formatted",
                           "-t", self.cluster_id, "-c", str(node.properties_path)),
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            )
            for node in self.nodes
        ]
        for node, proc in zip(self.nodes, formats, strict=True):
            out, _ = proc.communicate(timeout=120)
            if proc.returncode != 0:
                raise RuntimeError(f"formatting node {node.node_id} failed: {out.decode()}")

    def _launch(self, node: KafkaNode) -> None:
        with node.log_path.open("ab") as log:
            node.process = subprocess.Popen(
                self._java("kafka.Kafka", str(node.properties_path)),
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )

    def wait_ready(self, timeout_s: float = 90.0) -> None:
        """Until every live node answers metadata and counts every live node as a broker."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for node in self.nodes:
                if node.process is not None and node.process.poll() is not None:
                    code = node.process.returncode
                    raise RuntimeError(
                        f"kafka node {node.node_id} exited with {code}; see {node.log_path}")
            live = [n for n in self.nodes if n.alive]
            if all(asyncio.run(_brokers_seen(n.port)) == {m.node_id for m in live}
                   for n in live):
                return
            time.sleep(0.2)
        raise TimeoutError(f"kafka not ready after {timeout_s}s; see {self.workdir}")

    def node(self, node_id: int) -> KafkaNode:
        return next(n for n in self.nodes if n.node_id == node_id)

    def kill(self, node_id: int = 1) -> None:
        """SIGKILL one node: no controlled shutdown, no flush."""
        node = self.node(node_id)
        assert node.process is not None
        os.kill(node.process.pid, signal.SIGKILL)
        node.process.wait(timeout=10)

    def restart(self, node_id: int = 1, timeout_s: float = 90.0) -> None:
        """Start a stopped or killed node again on its ports and data directory."""
        node = self.node(node_id)
        if node.alive:
            raise RuntimeError(f"node {node_id} is running")
        self._launch(node)
        self.wait_ready(timeout_s)

    def freeze(self, node_id: int | None = None) -> None:
        """SIGSTOP one node, or every node."""
        for node in self._chosen(node_id):
            os.kill(node.process.pid, signal.SIGSTOP)  # type: ignore[union-attr]

    def thaw(self, node_id: int | None = None) -> None:
        for node in self._chosen(node_id):
            os.kill(node.process.pid, signal.SIGCONT)  # type: ignore[union-attr]

    def _chosen(self, node_id: int | None) -> list[KafkaNode]:
        return [n for n in self.nodes if n.alive and node_id in (None, n.node_id)]

    def stop(self, grace_s: float = 20.0) -> None:
        # All nodes told at once: a cluster's last nodes cannot shut down in a controlled way
        # once the controller quorum is gone, so one by one would wait out each grace.
        for node in self.nodes:
            if node.alive:
                assert node.process is not None
                os.kill(node.process.pid, signal.SIGCONT)
                os.kill(node.process.pid, signal.SIGTERM)
        for node in self.nodes:
            if node.process is not None:
                stop_process(node.process, grace_s)

    def __enter__(self) -> KafkaBroker:
        return self.start() if all(n.process is None for n in self.nodes) else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


async def _brokers_seen(port: int) -> set[int]:
    """Node ids in one node's metadata answer; empty while it does not answer."""
    from aiokafka import AIOKafkaClient  # only when a broker is started: not at import

    if not _listening(port):  # aiokafka would log every refused connection
        return set()
    client = AIOKafkaClient(bootstrap_servers=f"127.0.0.1:{port}", request_timeout_ms=3000)
    try:
        await client.bootstrap()
        return {b.nodeId for b in client.cluster.brokers()}
    except Exception:  # not listening yet, or not yet a broker: keep waiting
        return set()
    finally:
        await client.close()

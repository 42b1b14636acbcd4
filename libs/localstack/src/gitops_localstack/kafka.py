"""Apache Kafka in KRaft mode (single node, combined broker and controller) on loopback.

The jars come from Maven Central through deploy/local/fetch-kafka.sh; this module writes the
server properties, formats the log directory and starts the broker on free ports. The broker is
ready when it accepts a metadata request on its listener, which is what clients need.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from gitops_localstack import processes

JVM_FLAGS = (
    "-Xms256m",
    "-Xmx512m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-Djava.awt.headless=true",
)

LOG4J = """\
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka=INFO
log4j.logger.org.apache.kafka=INFO
log4j.logger.state.change.logger=WARN
log4j.logger.kafka.request.logger=WARN
"""


def kafka_lib_dir(root: Path, cache_dir: Path) -> Path:
    """Fetch the broker jars if needed and return the folder that holds them."""
    script = root / "deploy" / "local" / "fetch-kafka.sh"
    result = subprocess.run(
        ["bash", str(script)],
        capture_output=True,
        text=True,
        check=False,
        env={**_base_env(), "GITOPS_CACHE_DIR": str(cache_dir)},
    )
    if result.returncode != 0:
        raise processes.StackError(f"fetching Kafka from Maven Central failed:\n{result.stderr}")
    libs = sorted(cache_dir.glob("kafka-*/lib/.complete"))
    if not libs:
        raise processes.StackError(f"no Kafka jars under {cache_dir} after {script}")
    return libs[-1].parent


def _base_env() -> dict[str, str]:
    """The child needs PATH, JAVA_HOME and the Maven settings as the user has them."""
    return dict(os.environ)


@dataclass
class KafkaBroker:
    """A running single-node Kafka broker and how to reach it."""

    workdir: Path
    port: int
    controller_port: int
    processes: list[processes.ManagedProcess] = field(default_factory=list)

    @property
    def bootstrap_servers(self) -> str:
        """The bootstrap address for clients."""
        return f"127.0.0.1:{self.port}"

    @classmethod
    def start(
        cls,
        workdir: Path,
        cache_dir: Path,
        root: Path,
        *,
        timeout: float = 90.0,
        port: int | None = None,
    ) -> KafkaBroker:
        """Format a fresh log directory under workdir and start the broker on free ports."""
        lib = kafka_lib_dir(root, cache_dir)
        java = shutil.which("java")
        if java is None:
            raise processes.StackError("java is not on PATH; Kafka needs Java 17")
        workdir.mkdir(parents=True, exist_ok=True)
        broker = cls(
            workdir=workdir,
            port=port or processes.free_port(),
            controller_port=processes.free_port(),
        )
        data = workdir / "data"
        shutil.rmtree(data, ignore_errors=True)
        props = workdir / "server.properties"
        props.write_text(broker._properties(data))
        (workdir / "log4j.properties").write_text(LOG4J)
        jvm = [
            java,
            *JVM_FLAGS,
            f"-Dlog4j.configuration=file:{workdir / 'log4j.properties'}",
            f"-Dkafka.logs.dir={workdir / 'logs'}",
            "-cp",
            f"{lib}/*",
        ]
        fmt = subprocess.run(
            [
                *jvm,
                "kafka.tools.StorageTool",
                "format",
                "-t",
                _cluster_id(),
                "-c",
                str(props),
                "--ignore-formatted",
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        if fmt.returncode != 0:
            raise processes.StackError(
                f"formatting Kafka storage failed:\n{fmt.stdout}{fmt.stderr}"
            )
        proc = processes.spawn("kafka", [*jvm, "kafka.Kafka", str(props)], workdir / "kafka.log")
        broker.processes.append(proc)
        try:
            processes.wait_until(
                broker._started, timeout=timeout, what="Kafka to start", process=proc
            )
        except processes.StackError:
            broker.stop()
            raise
        return broker

    def _started(self) -> bool:
        log = self.workdir / "kafka.log"
        try:
            started = "Kafka Server started" in log.read_text(errors="replace")
        except OSError:
            return False
        return started and processes.port_open(self.port)

    def _properties(self, data: Path) -> str:
        lines = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},"
            f"CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(data),
            "num.partitions": "3",
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "1",
            "group.initial.rebalance.delay.ms": "0",
            "log.segment.bytes": str(64 * 1024 * 1024),
        }
        return "".join(f"{key}={value}\n" for key, value in lines.items())

    def stop(self) -> None:
        """Stop the broker process."""
        for proc in reversed(self.processes):
            proc.stop()


def _cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")

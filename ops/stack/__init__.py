"""The local stack: Kafka and ClickHouse on loopback, without Docker.

``up`` starts what is not running yet and waits until both answer; ``down``
stops only what this stack started (pid files under ``[stack] dir``). A service
configured as external (``KAFKA_BOOTSTRAP_SERVERS``, ``CLICKHOUSE_URL``) is
never started or stopped here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from eventsieve.config import Settings
from ops.stack.clickhouse import ClickHouseServer
from ops.stack.kafka import KafkaServer

__all__ = ["ClickHouseServer", "KafkaServer", "LocalStack", "ServiceStatus"]


@dataclass(frozen=True)
class ServiceStatus:
    """What ``stack status`` prints for one service."""

    name: str
    state: str  # "running", "stopped", "external", "not answering"
    address: str
    pid: int | None = None
    version: str | None = None
    data_bytes: int | None = None
    data_dir: Path | None = None


class LocalStack:
    """Kafka + ClickHouse for one Settings; external services are left alone."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.kafka = KafkaServer(settings.stack)
        self.clickhouse = ClickHouseServer(settings.stack)

    @property
    def managed(self) -> list[KafkaServer | ClickHouseServer]:
        """The services this stack runs (not the ones configured as external)."""
        services: list[KafkaServer | ClickHouseServer] = []
        if self.settings.kafka.bootstrap_servers is None:
            services.append(self.kafka)
        if self.settings.clickhouse.url is None:
            services.append(self.clickhouse)
        return services

    def up(self) -> list[str]:
        """Start what is not running, wait until all answer; return the names started."""
        started = []
        for service in self.managed:
            if service.process.pid() is None:
                service.start()
                started.append(service.name)
        for service in self.managed:
            service.wait_ready(self.settings.stack.start_timeout_s)
        return started

    def down(self) -> list[str]:
        """Stop the processes this stack started; return the names stopped."""
        return [s.name for s in reversed(self.managed) if s.stop()]

    def status(self) -> list[ServiceStatus]:
        statuses = []
        kafka_external = self.settings.kafka.bootstrap_servers
        if kafka_external is not None:
            statuses.append(ServiceStatus("kafka", "external", kafka_external))
        else:
            statuses.append(self._status(self.kafka, self.kafka.bootstrap, self.kafka.version))
        if self.settings.clickhouse.url is not None:
            statuses.append(ServiceStatus("clickhouse", "external", "(CLICKHOUSE_URL)"))
        else:
            ch = self.clickhouse
            version = ch.server_version() if ch.process.pid() and ch.ready() else None
            statuses.append(self._status(ch, f"127.0.0.1:{ch.port}", version))
        return statuses

    def log_file(self, name: str) -> Path:
        services: dict[str, KafkaServer | ClickHouseServer] = {
            "kafka": self.kafka,
            "clickhouse": self.clickhouse,
        }
        return services[name].process.log_file

    @staticmethod
    def _status(
        service: KafkaServer | ClickHouseServer, address: str, version: str | None
    ) -> ServiceStatus:
        pid = service.process.pid()
        if pid is None:
            state = "stopped"
        elif service.ready():
            state = "running"
        else:
            state = "not answering"
        return ServiceStatus(
            name=service.name,
            state=state,
            address=address,
            pid=pid,
            version=version,
            data_bytes=_du(service.data_dir),
            data_dir=service.data_dir,
        )


def _du(path: Path) -> int:
    if not path.exists():
        return 0
    total = 0
    for f in path.rglob("*"):
        try:
            if f.is_file() and not f.is_symlink():
                total += f.stat().st_blocks * 512  # disk use, not sparse size
        except FileNotFoundError:  # a segment deleted while we walk
            continue
    return total

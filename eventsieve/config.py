"""Configuration: one TOML file plus environment overrides, validated once at start.

Where a value comes from, highest priority first:

1. ``EVENTSIEVE_<SECTION>__<KEY>`` environment variables
   (e.g. ``EVENTSIEVE_TOPICS__PARTITIONS=12``);
2. ``KAFKA_BOOTSTRAP_SERVERS`` and ``CLICKHOUSE_URL``, the conventional names
   for "use these external services" (nothing local is started then);
3. the TOML file: ``--config PATH``, else ``$EVENTSIEVE_CONFIG``, else
   ``./eventsieve.toml`` when it exists;
4. the defaults below.

Every section is a frozen pydantic model with ``extra="forbid"``, so a typo in
a key is an error that names the key rather than a silently ignored setting.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from eventsieve.errors import ConfigError

CONFIG_ENV = "EVENTSIEVE_CONFIG"
DEFAULT_CONFIG_FILE = "eventsieve.toml"
KAFKA_ENV = "KAFKA_BOOTSTRAP_SERVERS"
CLICKHOUSE_ENV = "CLICKHOUSE_URL"

_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
Port = Annotated[int, Field(ge=1, le=65535)]


class Section(BaseModel):
    """Base of every config section: immutable, and unknown keys are errors."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class KafkaSettings(Section):
    """Where Kafka is. Unset ``bootstrap_servers`` means: use the local stack."""

    bootstrap_servers: str | None = None


class ClickHouseSettings(Section):
    """Where ClickHouse is. Unset ``url`` means: use the local stack.

    ``url`` has the clickhouse-driver form
    ``clickhouse://user:password@host:9000/database``. ``cluster`` names a
    cluster of the server's ``<remote_servers>`` (one shard, its replicas):
    migrations then run ON CLUSTER and create Replicated* tables.
    """

    url: SecretStr | None = None
    database: str = "eventsieve"
    cluster: str = Field(default="", pattern=r"^([A-Za-z_][A-Za-z0-9_]*)?$")


class StackSettings(Section):
    """The local, Docker-free stack (``eventsieve stack up``).

    Default ports sit away from Kafka's 9092/9093 and ClickHouse's 9000/8123
    so the stack never collides with a user's own services.
    """

    dir: Path = Path(".eventsieve")
    kafka_version: str = "4.1.1"
    kafka_port: Port = 19092
    kafka_controller_port: Port = 19093
    kafka_heap: str = "1g"
    clickhouse_port: Port = 19000
    clickhouse_http_port: Port = 18123
    start_timeout_s: float = Field(default=90.0, gt=0)


class TopicSettings(Section):
    """Topic names and layout (see DESIGN.md, "Topics")."""

    raw: str = "events.raw"
    orders: str = "events.orders"
    clean: str = "events.clean"
    dropped: str = "events.dropped"
    dlq: str = "events.dlq"
    partitions: int = Field(default=6, ge=1, le=10_000)
    replication_factor: int = Field(default=1, ge=1, le=32)

    @field_validator("raw", "orders", "clean", "dropped", "dlq")
    @classmethod
    def _legal_topic_name(cls, value: str) -> str:
        if not _TOPIC_NAME.match(value) or value in {".", ".."}:
            raise ValueError("a Kafka topic name is 1-249 characters of [A-Za-z0-9._-]")
        return value


class ShieldSettings(Section):
    """Per-project shields: requests matching these are dropped with a reason."""

    ip_blocklist: tuple[str, ...] = ()
    country_blocklist: tuple[str, ...] = ()
    page_blocklist: tuple[str, ...] = ()
    hostname_allowlist: tuple[str, ...] = ()

    @field_validator("ip_blocklist")
    @classmethod
    def _valid_networks(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        for value in values:
            try:
                ipaddress.ip_network(value, strict=False)
            except ValueError as exc:
                raise ValueError(f"{value!r} is not an IP address or CIDR range") from exc
        return values

    @field_validator("country_blocklist")
    @classmethod
    def _country_codes(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        for value in values:
            if not re.fullmatch(r"[A-Za-z]{2}", value):
                raise ValueError(f"{value!r} is not an ISO 3166-1 alpha-2 country code")
        return tuple(v.upper() for v in values)


class ProjectSettings(Section):
    """One project: who may write into it, and its own shields.

    ``tokens`` are public, send-only ingest tokens (safe in browser code).
    ``server_keys`` are secret keys stored hashed, as ``sha256:<hex>``.
    ``vero_tokens`` (Vero ``auth_token``) and ``vtcdn_keys`` (vtcdn API keys) are
    the secrets those compatible routes accept, stored hashed the same way.
    """

    id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    name: str = ""
    tokens: tuple[str, ...] = ()
    server_keys: tuple[str, ...] = ()
    vero_tokens: tuple[str, ...] = ()
    vtcdn_keys: tuple[str, ...] = ()
    domains: tuple[str, ...] = ()
    rate_limit_per_second: float = Field(default=1000.0, gt=0)
    shields: ShieldSettings = ShieldSettings()

    @field_validator("server_keys", "vero_tokens", "vtcdn_keys")
    @classmethod
    def _hashed(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        for value in values:
            if not re.fullmatch(r"sha256:[0-9a-f]{64}", value):
                raise ValueError("secret keys are stored hashed: 'sha256:' + 64 hex digits")
        return values

    @field_validator("domains")
    @classmethod
    def _lower_domains(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(v.strip().lower() for v in values)


class ServerSettings(Section):
    """The HTTP ingestion endpoint (``eventsieve serve``).

    ``trusted_proxies`` are the addresses/CIDR ranges whose ``X-Forwarded-For``
    is believed; from anyone else the peer address is the client.
    """

    host: str = "127.0.0.1"
    port: Port = 8080
    workers: int = Field(default=1, ge=1, le=64)
    # 1 MB: far above any real tracking request, small enough to refuse abuse early.
    max_body_bytes: int = Field(default=1_000_000, ge=1_024)
    # Events per native batch request (VibeFollow batches are capped at 500 by its API).
    max_batch_events: int = Field(default=1_000, ge=1, le=100_000)
    trusted_proxies: tuple[str, ...] = ()
    # librdkafka batching: 20 ms of linger trades a little latency for big batches.
    linger_ms: float = Field(default=20.0, ge=0, le=5_000)
    compression: str = Field(default="lz4", pattern=r"^(none|gzip|snappy|lz4|zstd)$")
    # How long a request waits for Kafka's acknowledgement before answering 503.
    delivery_timeout_s: float = Field(default=10.0, gt=0, le=300)
    retry_after_s: int = Field(default=5, ge=1, le=3_600)
    # VibeFollow Idempotency-Key replay: kept 24 h, per process (bounded in size).
    idempotency_ttl_s: float = Field(default=86_400.0, gt=0)
    idempotency_max_keys: int = Field(default=1_000_000, ge=1)
    cors_origins: tuple[str, ...] = ("*",)
    access_log: bool = True

    @field_validator("trusted_proxies")
    @classmethod
    def _valid_proxies(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        for value in values:
            try:
                ipaddress.ip_network(value, strict=False)
            except ValueError as exc:
                raise ValueError(f"{value!r} is not an IP address or CIDR range") from exc
        return values


class PrivacySettings(Section):
    """Secrets for deriving anonymous visitor ids (a daily salt per secret)."""

    salt_secret: SecretStr = SecretStr("change-me-in-production")


class StreamsSettings(Section):
    """The stream processor (``eventsieve worker``): rule windows, state store, metrics.

    Every window is measured in event time (see streams/eventtime.py), never
    wall-clock, so a replay of the same input gives the same decisions.
    """

    app_id: str = Field(default="eventsieve-streams", pattern=r"^[A-Za-z0-9._-]{1,200}$")
    # "kafka": confluent-kafka, micro-batches, exactly-once with transactions.
    # "faust": faust-streaming agents, at-least-once with idempotent outputs.
    engine: str = Field(default="kafka", pattern=r"^(kafka|faust)$")
    # Vero: identical events within 3 minutes of the last accepted one are duplicates.
    dedup_window_s: float = Field(default=180.0, gt=0)
    # Idempotency-Key / client event ids are remembered for 24 h.
    idempotency_window_s: float = Field(default=86_400.0, gt=0)
    # vtcdn: one email open per user (and message/campaign) per 20 minutes.
    email_open_window_s: float = Field(default=1_200.0, gt=0)
    # orderId uniqueness holds "however late"; 400 days covers a yearly re-purchase cycle.
    order_retention_days: float = Field(default=400.0, gt=0)
    # A client timestamp further than this from received_at is not trusted.
    timestamp_tolerance_s: float = Field(default=600.0, ge=0)
    # State is kept this long beyond its window behind the newest event time of
    # its partition, so late (out-of-order) events still meet it.
    late_grace_s: float = Field(default=900.0, ge=0)
    email_open_events: tuple[str, ...] = (
        "email open",
        "email opened",
        "open email",
        "emailopen",
        "$email_open",
        "email_open",
    )
    email_open_id_properties: tuple[str, ...] = (
        "message_id",
        "messageId",
        "campaign_id",
        "campaignId",
        "email_id",
        "emailId",
    )
    order_events: tuple[str, ...] = (
        "confirmation",
        "purchase",
        "purchased",
        "order completed",
        "order",
        "checkout completed",
    )
    order_id_properties: tuple[str, ...] = ("orderId", "order_id", "orderid")
    spam_referrers: tuple[str, ...] = ()
    store: str = Field(default="memory", pattern=r"^(memory|rocksdb)$")
    data_dir: Path = Path(".eventsieve/streams")
    metrics_port: int = Field(default=0, ge=0, le=65535)
    batch_size: int = Field(default=1_000, ge=1, le=100_000)
    # kafka engine: a micro-batch (one transaction) closes after batch_size
    # records or this long, whichever comes first; latency vs. commit cost.
    batch_interval_ms: int = Field(default=100, ge=1, le=60_000)
    # kafka engine: must exceed the longest micro-batch; also how long a worker
    # that died with an open transaction blocks read_committed readers.
    transaction_timeout_s: float = Field(default=10.0, ge=1.0, le=900.0)
    # How long a silent worker keeps its partitions: the failover time after a
    # crash. Kafka's brokers accept 6 s at the least by default.
    session_timeout_s: float = Field(default=30.0, ge=1.0, le=3_600.0)
    ua_cache_size: int = Field(default=50_000, ge=0)

    @field_validator("email_open_events", "order_events")
    @classmethod
    def _normalised_names(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        # Compared against normalised event names: case-insensitive, "_" == " ".
        return tuple(" ".join(v.replace("_", " ").lower().split()) for v in values)


class SinkSettings(Section):
    """The ClickHouse sink (``eventsieve sink``): batching, retries, metrics.

    A batch is flushed when it holds ``batch_max_rows`` rows or its oldest row
    is ``batch_max_interval_s`` old, whichever comes first; offsets are
    committed only after ClickHouse acknowledged the insert.
    """

    group_id: str = Field(default="eventsieve-sink", pattern=r"^[A-Za-z0-9._-]{1,200}$")
    # ClickHouse wants roughly one INSERT per second per table, 10k-100k rows each.
    batch_max_rows: int = Field(default=50_000, ge=1, le=1_000_000)
    batch_max_interval_s: float = Field(default=1.0, gt=0, le=300)
    # Backoff while ClickHouse is down: doubles from initial up to max, with jitter.
    retry_initial_s: float = Field(default=0.5, gt=0, le=60)
    retry_max_s: float = Field(default=30.0, gt=0, le=600)
    # Modern servers only: how many recent insert tokens a table remembers.
    dedup_window: int = Field(default=1_000, ge=0, le=100_000)
    metrics_port: int = Field(default=0, ge=0, le=65535)


class DlqSettings(Section):
    """``eventsieve dlq list|redrive``: reading events.dlq back.

    ``group_id`` is the consumer group that remembers how far ``redrive`` got
    (a filtered re-drive uses its own group, suffixed with a digest of the
    filters). Reading ends at the end of the topic, or after ``idle_timeout_s``
    without a record.
    """

    group_id: str = Field(default="eventsieve-dlq-redrive", pattern=r"^[A-Za-z0-9._-]{1,200}$")
    idle_timeout_s: float = Field(default=10.0, gt=0, le=600)


class Settings(BaseSettings):
    """The whole configuration of one eventsieve process. Frozen once built."""

    model_config = SettingsConfigDict(
        env_prefix="EVENTSIEVE_",
        env_nested_delimiter="__",
        frozen=True,
        extra="forbid",
    )

    kafka: KafkaSettings = KafkaSettings()
    clickhouse: ClickHouseSettings = ClickHouseSettings()
    stack: StackSettings = StackSettings()
    topics: TopicSettings = TopicSettings()
    privacy: PrivacySettings = PrivacySettings()
    server: ServerSettings = ServerSettings()
    streams: StreamsSettings = StreamsSettings()
    sink: SinkSettings = SinkSettings()
    dlq: DlqSettings = DlqSettings()
    projects: tuple[ProjectSettings, ...] = ()

    @field_validator("projects")
    @classmethod
    def _unique_project_ids(
        cls, values: tuple[ProjectSettings, ...]
    ) -> tuple[ProjectSettings, ...]:
        seen: set[str] = set()
        for project in values:
            if project.id in seen:
                raise ValueError(f"project id {project.id!r} is defined twice")
            seen.add(project.id)
        return values

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment first, then what load_settings passes in (file contents).
        return (env_settings, init_settings)

    def project(self, project_id: str) -> ProjectSettings | None:
        """The project with this id, or None."""
        return next((p for p in self.projects if p.id == project_id), None)


def config_path(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """The config file to read: the flag, else $EVENTSIEVE_CONFIG, else ./eventsieve.toml."""
    if explicit:
        return Path(explicit)
    if env := os.environ.get(CONFIG_ENV):
        return Path(env)
    default = Path(DEFAULT_CONFIG_FILE)
    return default if default.exists() else None


def load_settings(path: str | os.PathLike[str] | None = None) -> Settings:
    """Read, merge and validate the configuration; raise ConfigError naming bad keys."""
    file = config_path(path)
    source = str(file) if file else "defaults"
    data: dict[str, Any] = {}
    if file is not None:
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(source, {"(file)": "no such file"}) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(source, {"(syntax)": str(exc)}) from None
    if kafka := os.environ.get(KAFKA_ENV):
        data.setdefault("kafka", {})["bootstrap_servers"] = kafka
    if clickhouse := os.environ.get(CLICKHOUSE_ENV):
        data.setdefault("clickhouse", {})["url"] = clickhouse
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(source, _problems(exc)) from None


def _problems(exc: ValidationError) -> dict[str, str]:
    problems: dict[str, str] = {}
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"]) or "(root)"
        problems[key] = error["msg"]
    return problems


def settings_environment(settings: Settings) -> dict[str, str]:
    """Environment variables that make a child process load exactly ``settings``.

    How a supervisor or a test hands its (possibly modified) Settings to
    ``eventsieve serve|worker|sink`` subprocesses: every field of every section
    as ``EVENTSIEVE_<SECTION>__<KEY>`` (secrets unmasked, lists and tables as
    JSON), projects as one JSON value. Environment beats the config file, so
    the child sees these values whatever file it reads.
    """
    env: dict[str, str] = {}
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, BaseModel):
            for key in type(value).model_fields:
                field = getattr(value, key)
                if field is not None:
                    env[f"EVENTSIEVE_{name.upper()}__{key.upper()}"] = _env_value(field)
        else:
            env[f"EVENTSIEVE_{name.upper()}"] = _env_value(value)
    return env


def _env_value(value: Any) -> str:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, str | Path | int | float) and not isinstance(value, bool):
        return str(value)
    return json.dumps(_plain(value))


def _plain(value: Any) -> Any:
    """JSON-ready data with secrets unmasked (model_dump would mask them)."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, BaseModel):
        return {k: _plain(getattr(value, k)) for k in type(value).model_fields}
    if isinstance(value, tuple | list | set | frozenset):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    return value

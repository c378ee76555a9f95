"""The sections of the configuration file, and :class:`Config` that holds them all.

``[checks]`` and ``[drift]`` are declared in :mod:`stream_guard.settings.checks` and
:mod:`stream_guard.settings.drift`, ``[models.metrics]`` and ``[models.labels]`` in
:mod:`stream_guard.settings.metrics`.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from stream_guard.errors import ConfigError
from stream_guard.settings.checks import ChecksConfig
from stream_guard.settings.drift import DriftSettings
from stream_guard.settings.kinds import DEFAULT_EARLY_KINDS, Severity
from stream_guard.settings.metrics import LabelSettings, MetricsSettings

__all__ = [
    "ENCODINGS",
    "AlertsConfig",
    "Config",
    "Delivery",
    "Encoding",
    "KafkaConfig",
    "ModelConfig",
    "RedisConfig",
    "SchemaRegistryConfig",
    "WorkerConfig",
]

Encoding = Literal["confluent", "avro", "json"]
ENCODINGS = typing.get_args(Encoding)
#: How alerts and dead letters reach their topics (README, "Delivery guarantees").
Delivery = Literal["at_least_once", "exactly_once"]


@dataclass
class KafkaConfig:
    bootstrap_servers: str = "localhost:9092"
    group_id: str = "stream-guard"
    alerts_topic: str = "stream-guard.alerts"
    dead_letter_topic: str = "stream-guard.dead-letters"
    #: Extra librdkafka properties for the consumer and the producer (security, timeouts...).
    consumer: dict[str, Any] = field(default_factory=dict)
    producer: dict[str, Any] = field(default_factory=dict)
    #: ``at_least_once``: alerts and dead letters acknowledged before the offsets are
    #: committed (a crash may publish one again). ``exactly_once``: each loop turn's alerts,
    #: dead letters and offsets in one Kafka transaction (brokers with transactions).
    delivery: Delivery = "at_least_once"
    #: ``exactly_once``: the transactional id is ``<prefix>-<group_id>-<instance_id>``.
    transactional_id_prefix: str = "stream-guard"
    #: A stable name of this worker instance (a StatefulSet pod's name): a restarted
    #: instance fences its predecessor. Empty: a random id per start (also the worker id).
    instance_id: str = ""

    def transactional_id(self, instance: str) -> str:
        """The producer's ``transactional.id`` for the worker ``instance`` (``exactly_once``)."""
        return f"{self.transactional_id_prefix}-{self.group_id}-{instance}"


@dataclass
class RedisConfig:
    #: ``redis://`` or ``rediss://`` URL (``unix://`` for a socket, not with ``cluster``).
    url: str = "redis://localhost:6379/0"
    #: The server is a Redis Cluster: ``url`` names any one node (database 0), the client finds the others.
    cluster: bool = False
    #: Prefix of every key; the model name follows in a hash tag: ``sg:{fraud}:...``.
    key_prefix: str = "sg"
    #: A command (or a connection attempt) that gets no answer within this long fails: a
    #: paused or overloaded Redis then counts as an outage (the batch is retried with
    #: backoff) instead of holding the worker for ever.
    socket_timeout_s: float = 5.0


@dataclass
class SchemaRegistryConfig:
    #: Confluent Schema Registry URL; empty means "resolve schema ids from ``local_dir``".
    url: str = ""
    #: Directory of ``<schema id>.avsc`` files, for Confluent-framed payloads without a registry.
    local_dir: str = ""
    #: Extra client settings (``basic.auth.user.info``...), passed to the registry client.
    client: dict[str, Any] = field(default_factory=dict)


@dataclass
class WorkerConfig:
    #: Records per micro-batch at most. A batch's Redis writes are per (bucket, slice) counter,
    #: not per event: on the wide bench model, 500 cost 9.3 Redis commands and 85-112 µs of
    #: Redis CPU per event, 5000 cost 2.1 and 20-27 µs (README, "Throughput").
    batch_size: int = 5000
    #: ... or what arrived within this long: the wait a batch adds at a low rate.
    batch_timeout_s: float = 0.5
    #: Commit a batch (dead letters, Redis, label joins) on a thread of its own while the next
    #: one is polled and staged (:mod:`stream_guard.commit_ahead`); off under ``exactly_once``.
    commit_ahead: bool = True
    #: Event-time window of aggregated findings (tumbling windows).
    window_s: int = 60
    #: How far behind the watermark an event may arrive and still count in its window.
    allowed_lateness_s: int = 10
    #: A partition that sent nothing for this long (wall clock) stops holding windows open,
    #: unless this worker owns it and it has a backlog (consumer lag > 0).
    idle_partition_s: float = 30.0
    #: Label pacing (:mod:`stream_guard.pacing`): a labels partition whose last record read is
    #: more than this far ahead (Kafka timestamps) of this worker's event backlog is paused
    #: until the events catch up; a negative value turns pacing off.
    label_lead_s: float = 5.0
    #: ... but for at most this long at a time.
    label_pause_max_s: float = 10.0
    #: An event time further than this from its record's Kafka timestamp (future or past) is
    #: replaced by the Kafka timestamp, with an ``event_time_skew`` finding; 0 turns it off.
    max_event_time_skew_s: float = 3600.0
    #: How long Redis keeps window state and metric buckets.
    retention_s: int = 7 * 24 * 3600
    #: At most this many example offsets / event ids per alert.
    max_examples: int = 5
    #: At most this many distinct finding keys (kind, feature, slice) per batch and alerts of
    #: them per window; the rest become one ``*overflow*`` finding per kind.
    max_finding_keys: int = 100
    #: Records with a larger value are dead-lettered without being decoded (librdkafka's
    #: default ``message.max.bytes``); dead letters over the producer's limit are truncated.
    max_record_bytes: int = 1_000_000
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: str = "info"


@dataclass
class ObservabilityConfig:
    #: Port of the HTTP endpoint serving ``/metrics`` (Prometheus), ``/healthz`` and ``/readyz``; 0 turns it off.
    port: int = 9108
    #: Address it listens on.
    bind: str = "0.0.0.0"
    #: Interval of the librdkafka statistics (consumer lag) and of the periodic stats log line.
    stats_interval_s: float = 60.0
    #: ``/healthz`` fails when the poll loop has not turned for this long.
    liveness_timeout_s: float = 120.0


@dataclass
class AlertsConfig:
    #: Two publications of one open incident are at least this far apart (event time).
    cooldown_s: int = 600
    #: An incident resolves once its problem was absent this long (event time).
    resolve_after_s: int = 300
    #: An open incident that does not escalate is re-published after this long (event time).
    remind_after_s: int = 6 * 3600
    #: An open incident escalates (and is re-published) when its magnitude ``|value - threshold|``
    #: or its rate reaches this multiple of the largest published; a higher severity always escalates.
    escalation_factor: float = 2.0
    #: Severity overrides by alert kind, e.g. ``{ schema_change = "critical" }``.
    severity: dict[str, Severity] = field(default_factory=dict)
    #: ``avro`` (schemaless ``schemas/alert.avsc``), ``confluent`` (the same, registered under
    #: ``<alerts_topic>-value`` and Confluent-framed), ``json`` (the record as a JSON object), or
    #: ``auto``: ``confluent`` when ``schema_registry.url`` is set, else ``avro``.
    encoding: Literal["auto", "avro", "confluent", "json"] = "auto"
    #: Row-level finding kinds that fire early: at the batch that first shows them, when no
    #: incident of their cause is open (the window alert follows with the full counts); ``[]``: off.
    early_kinds: list[str] = field(default_factory=lambda: list(DEFAULT_EARLY_KINDS))


@dataclass
class ModelConfig:
    name: str
    topics: list[str]
    #: Reader schema: path of an ``.avsc`` file (relative paths resolve against the config file).
    schema: str = ""
    #: ... or a subject in the Schema Registry, whose latest version is the reader schema.
    schema_subject: str = ""
    encoding: Encoding = "confluent"
    #: For ``encoding = "avro"``: the schema the producer wrote with (default: ``schema``).
    writer_schema: str = ""
    event_id_field: str = ""
    timestamp_field: str = ""
    features: list[str] = field(default_factory=list)
    prediction_field: str = ""
    score_field: str = ""
    slice_fields: list[str] = field(default_factory=list)
    #: Baseline profile (JSON written by ``stream-guard learn``); without one, only the
    #: schema-level checks run. Workers reload it when the file changes.
    profile: str = ""
    #: Fields of the payload that the schema does not declare raise ``unexpected_field``.
    report_unexpected_fields: bool = True
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    labels: LabelSettings = field(default_factory=LabelSettings)


@dataclass
class Config:
    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    redis: RedisConfig = field(default_factory=RedisConfig)
    schema_registry: SchemaRegistryConfig = field(default_factory=SchemaRegistryConfig)
    worker: WorkerConfig = field(default_factory=WorkerConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    observability: ObservabilityConfig = field(default_factory=ObservabilityConfig)
    #: Baseline value checks; ``enabled = false`` turns them off.
    checks: ChecksConfig = field(default_factory=ChecksConfig)
    #: Drift monitoring; ``enabled = false`` turns it off.
    drift: DriftSettings = field(default_factory=DriftSettings)
    models: list[ModelConfig] = field(default_factory=list)
    #: Directory the config file lives in; relative paths resolve against it.
    base_dir: Path = field(default=Path("."), repr=False, metadata={"setting": False})

    def resolve_path(self, path: str) -> Path:
        candidate = Path(path)
        return candidate if candidate.is_absolute() else self.base_dir / candidate

    def model(self, name: str) -> ModelConfig:
        for model in self.models:
            if model.name == name:
                return model
        known = ", ".join(m.name for m in self.models) or "none"
        raise ConfigError([f"unknown model {name!r} (configured: {known})"])

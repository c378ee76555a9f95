"""Configuration: one TOML file, overridden by ``STREAM_GUARD_*`` environment variables.

Every setting is declared once, in the dataclasses below, and validated at start-up.
Each mistake becomes one readable line in :class:`~stream_guard.errors.ConfigError`.

Environment overrides use ``__`` to descend into sections, e.g.
``STREAM_GUARD_KAFKA__BOOTSTRAP_SERVERS=broker:9092`` or
``STREAM_GUARD_WORKER__BATCH_SIZE=2000``. Values are parsed as TOML scalars when
they can be (numbers, booleans), and taken as strings otherwise.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from stream_guard.errors import ConfigError
from stream_guard.metrics.labels import LabelSettings
from stream_guard.metrics.slices import MetricsSettings

ENV_PREFIX = "STREAM_GUARD_"
Encoding = Literal["confluent", "avro", "json"]
ENCODINGS = typing.get_args(Encoding)
SEVERITIES = ("info", "warning", "critical")


@dataclass
class KafkaConfig:
    bootstrap_servers: str = "localhost:9092"
    group_id: str = "stream-guard"
    alerts_topic: str = "stream-guard.alerts"
    dead_letter_topic: str = "stream-guard.dead-letters"
    #: Extra librdkafka properties for the consumer and the producer (security, timeouts...).
    consumer: dict[str, Any] = field(default_factory=dict)
    producer: dict[str, Any] = field(default_factory=dict)


@dataclass
class RedisConfig:
    url: str = "redis://localhost:6379/0"
    #: Prefix of every key; the model name follows in a hash tag: ``sg:{fraud}:...``.
    key_prefix: str = "sg"


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
    batch_size: int = 500
    batch_timeout_s: float = 0.5
    #: Event-time window of aggregated findings (tumbling windows).
    window_s: int = 60
    #: How far behind the watermark an event may arrive and still count in its window.
    allowed_lateness_s: int = 10
    #: A partition that sent nothing for this long (wall clock) stops holding windows open.
    idle_partition_s: float = 30.0
    #: How long Redis keeps window state and metric buckets.
    retention_s: int = 7 * 24 * 3600
    #: At most this many example offsets / event ids per alert.
    max_examples: int = 5
    #: Records with a larger value are dead-lettered without being decoded (librdkafka's
    #: default ``message.max.bytes``); dead letters over the producer's limit are truncated.
    max_record_bytes: int = 1_000_000
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: str = "info"


@dataclass
class AlertsConfig:
    #: An open incident is re-published at most once per cooldown (event time).
    cooldown_s: int = 600
    #: An incident resolves once its problem was absent this long (event time).
    resolve_after_s: int = 300
    #: Severity overrides by alert kind, e.g. ``{ schema_change = "critical" }``.
    severity: dict[str, str] = field(default_factory=dict)


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
    #: Baseline value checks (see ``stream_guard.checks.ChecksConfig``); ``enabled = false`` turns them off.
    checks: dict[str, Any] = field(default_factory=dict)
    #: Drift monitoring (see ``stream_guard.drift.DriftSettings``); ``enabled = false`` turns it off.
    drift: dict[str, Any] = field(default_factory=dict)
    models: list[ModelConfig] = field(default_factory=list)
    #: Directory the config file lives in; relative paths resolve against it.
    base_dir: Path = field(default=Path("."), repr=False)

    def resolve_path(self, path: str) -> Path:
        candidate = Path(path)
        return candidate if candidate.is_absolute() else self.base_dir / candidate

    def model(self, name: str) -> ModelConfig:
        for model in self.models:
            if model.name == name:
                return model
        known = ", ".join(m.name for m in self.models) or "none"
        raise ConfigError([f"unknown model {name!r} (configured: {known})"])


def load_config(path: str | Path | None, environ: Mapping[str, str] | None = None) -> Config:
    """Read ``path`` (TOML), apply environment overrides and validate.

    ``path`` may be ``None`` to configure from the environment alone.
    Raises :class:`ConfigError` listing every problem found, one line each. Type and
    unknown-key mistakes are reported first, alone: the semantic checks (files exist,
    roles match...) run once the values have the right types.
    """
    raw: dict[str, Any] = {}
    base_dir = Path(".")
    if path is not None:
        file = Path(path)
        try:
            raw = tomllib.loads(file.read_text())
        except FileNotFoundError:
            raise ConfigError([f"config file {file} does not exist"]) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError([f"{file}: invalid TOML: {exc}"]) from None
        base_dir = file.resolve().parent
    problems: list[str] = []
    _apply_env(raw, os.environ if environ is None else environ, problems)
    config: Config | None = _build(Config, raw, "", problems)
    # Semantic checks assume well-typed values; type mistakes are reported first, alone.
    if config is not None and not problems:
        config.base_dir = base_dir
        _check_semantics(config, problems)
    if problems:
        raise ConfigError(problems)
    assert config is not None
    return config


def _apply_env(raw: dict[str, Any], environ: Mapping[str, str], problems: list[str]) -> None:
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        path = name[len(ENV_PREFIX) :].lower().split("__")
        node = raw
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                problems.append(f"{name}: {'.'.join(path[:-1])} is not a section")
                break
            node = child
        else:
            node[path[-1]] = _parse_scalar(value)


def _parse_scalar(value: str) -> Any:
    try:
        return tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        return value


def _build(cls: type, raw: Any, where: str, problems: list[str]) -> Any:
    """Turn ``raw`` into ``cls`` field by field, recording every type mistake in ``problems``."""
    if not isinstance(raw, dict):
        problems.append(f"{where or 'config'}: expected a table, got {type(raw).__name__}")
        return None
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "base_dir"}
    for unknown in sorted(set(raw) - set(fields)):
        problems.append(f"{where}{unknown}: unknown setting (known: {', '.join(sorted(fields))})")
    values: dict[str, Any] = {}
    for name, spec in fields.items():
        key = f"{where}{name}"
        if name not in raw:
            if spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
                problems.append(f"{key}: required setting is missing")
            continue
        values[name] = _coerce(hints[name], raw[name], key, problems)
    try:
        return cls(**values)
    except TypeError:
        return None  # a required field was missing: already reported


def _coerce(hint: Any, value: Any, key: str, problems: list[str]) -> Any:
    origin = typing.get_origin(hint)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _build(hint, value, f"{key}.", problems)
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            problems.append(f"{key}: expected a list, got {value!r}")
            return []
        if isinstance(item, type) and dataclasses.is_dataclass(item):
            built = [_build(item, v, f"{key}[{i}].", problems) for i, v in enumerate(value)]
            return [b for b in built if b is not None]
        return [_coerce(item, v, f"{key}[{i}]", problems) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            problems.append(f"{key}: expected a table, got {value!r}")
            return {}
        return value
    if origin is Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            problems.append(f"{key}: {value!r} is not one of {', '.join(map(str, choices))}")
        return value
    if origin in (typing.Union, types.UnionType):
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool) and (not isinstance(value, hint) or (hint is int and isinstance(value, bool))):
        problems.append(f"{key}: expected {hint.__name__}, got {value!r}")
        return value
    if hint is Path:
        return Path(value)
    return value


def _check_semantics(config: Config, problems: list[str]) -> None:
    worker = config.worker
    for name in ("batch_size", "window_s", "retention_s", "max_examples", "max_record_bytes"):
        if isinstance(getattr(worker, name), int) and getattr(worker, name) <= 0:
            problems.append(f"worker.{name}: must be positive, got {getattr(worker, name)}")
    _check_plugin_tables(config, problems)
    for kind, severity in config.alerts.severity.items():
        if str(severity).lower() not in SEVERITIES:
            problems.append(f"alerts.severity.{kind}: {severity!r} is not one of {', '.join(SEVERITIES)}")
    if not config.models:
        problems.append("models: at least one [[models]] table is required")
    seen: set[str] = set()
    for i, model in enumerate(config.models):
        where = f"models[{i}] ({model.name})"
        if model.name in seen:
            problems.append(f"{where}: duplicate model name")
        seen.add(model.name)
        if ":" in model.name or "{" in model.name or "}" in model.name:
            problems.append(f"{where}: name may not contain ':', '{{' or '}}' (used in Redis keys)")
        if not model.topics:
            problems.append(f"{where}.topics: at least one input topic is required")
        if bool(model.schema) == bool(model.schema_subject):
            problems.append(f"{where}: set exactly one of schema (an .avsc file) or schema_subject")
        if model.schema_subject and not config.schema_registry.url:
            problems.append(f"{where}.schema_subject needs schema_registry.url")
        if model.schema and not config.resolve_path(model.schema).is_file():
            problems.append(f"{where}.schema: file {config.resolve_path(model.schema)} not found")
        if model.writer_schema and not config.resolve_path(model.writer_schema).is_file():
            problems.append(f"{where}.writer_schema: file {config.resolve_path(model.writer_schema)} not found")
        if model.encoding == "confluent" and not (config.schema_registry.url or config.schema_registry.local_dir):
            problems.append(f"{where}: encoding 'confluent' needs schema_registry.url or schema_registry.local_dir")
        _check_metrics(config, model, where, problems)
    label_topics = [m.labels.topic for m in config.models if m.labels.topic]
    for topic in {t for t in label_topics if label_topics.count(t) > 1}:
        problems.append(f"labels topic {topic!r} is used by several models")


def plugin_settings(table: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
    """Split a plugin table into its ``enabled`` flag and the plugin's own settings."""
    rest = dict(table)
    return bool(rest.pop("enabled", True)), rest


def _check_plugin_tables(config: Config, problems: list[str]) -> None:
    from stream_guard.checks import ChecksConfig
    from stream_guard.drift.settings import DriftSettings

    for name, parse in (("checks", ChecksConfig.from_dict), ("drift", DriftSettings.from_dict)):
        enabled, rest = plugin_settings(getattr(config, name))
        if not isinstance(enabled, bool):
            problems.append(f"{name}.enabled: expected a boolean")
        try:
            parse(rest, name)
        except ValueError as exc:
            problems.append(str(exc))


def _check_metrics(config: Config, model: ModelConfig, where: str, problems: list[str]) -> None:
    from stream_guard.metrics.concept import performance_settings_problems

    metrics, labels = model.metrics, model.labels
    problems += performance_settings_problems(metrics, config.worker.window_s, f"{where}.metrics")
    for name in ("bucket_s", "retention_s", "max_values_per_field", "score_bins"):
        value = getattr(metrics, name)
        if isinstance(value, int) and value <= 0:
            problems.append(f"{where}.metrics.{name}: must be positive, got {value}")
    low_high = metrics.score_range
    if len(low_high) != 2 or not low_high[0] < low_high[1]:
        problems.append(f"{where}.metrics.score_range: expected [low, high] with low < high, got {low_high}")
    for crossing in metrics.crossings:
        if len(set(crossing)) < 2:
            problems.append(f"{where}.metrics.crossings: {crossing} needs at least two distinct fields")
    if not labels.topic:
        return
    if not model.event_id_field:
        problems.append(f"{where}.labels needs event_id_field: labels are joined to predictions by event id")
    if labels.topic in model.topics:
        problems.append(f"{where}.labels.topic {labels.topic!r} is also an input topic")
    if labels.lookback_s <= 0:
        problems.append(f"{where}.labels.lookback_s: must be positive, got {labels.lookback_s}")
    elif metrics.retention_s < labels.lookback_s:
        problems.append(f"{where}.metrics.retention_s must be >= labels.lookback_s, or late labels find no bucket")
    if labels.encoding != "json" and not labels.schema:
        problems.append(f"{where}.labels.schema: required for encoding {labels.encoding!r}")
    if labels.schema and not config.resolve_path(labels.schema).is_file():
        problems.append(f"{where}.labels.schema: file {config.resolve_path(labels.schema)} not found")
    if labels.encoding == "confluent" and not (config.schema_registry.url or config.schema_registry.local_dir):
        problems.append(f"{where}.labels: encoding 'confluent' needs schema_registry.url or schema_registry.local_dir")

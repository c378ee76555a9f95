"""Loading and validating the whole file: :func:`load_config`.

Every problem of a file is reported in one run: type and unknown-key mistakes found while
building the sections, and the semantic checks (files exist, roles match, names are known)
on the built values. A semantic check that reads a mistyped value is skipped, the others
still run.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from stream_guard.settings.checks import check_checks
from stream_guard.settings.drift import check_drift
from stream_guard.settings.kinds import ALERT_KINDS, EARLY_KIND_CHOICES
from stream_guard.settings.loading import Problems, apply_env, build, read_toml
from stream_guard.settings.metrics import performance_settings_problems
from stream_guard.settings.sections import Config, ModelConfig

__all__ = ["check_config", "load_config"]


def load_config(
    path: str | Path | None,
    environ: Mapping[str, str] | None = None,
    *,
    require_profiles: bool = True,
    extra_checks: Sequence[Callable[[Config], list[str]]] = (),
) -> Config:
    """Read ``path`` (TOML), apply environment overrides and validate.

    ``path`` may be ``None`` to configure from the environment alone. Raises
    :class:`~stream_guard.errors.ConfigError` listing every problem found, one line each.

    ``require_profiles=False`` accepts a configured ``profile`` file that does not exist
    yet: for ``stream-guard learn``, which writes it. ``extra_checks`` are run on the built
    configuration too and their problem lines reported with the others (``check-config``
    passes the librdkafka property check this way, which this package cannot import).
    """
    raw, base_dir = read_toml(path)
    problems = Problems()
    apply_env(raw, os.environ if environ is None else environ, problems)
    config = build(Config, raw, "", problems)
    if config is not None:
        config.base_dir = base_dir
        check_config(config, problems, require_profiles=require_profiles)
        for check in extra_checks:
            problems.lines.extend(check(config))
    problems.raise_if_any()
    assert config is not None
    return config


def check_config(config: Config, problems: Problems, *, require_profiles: bool = True) -> None:
    """The semantic checks of a built configuration, recorded in ``problems``."""
    worker = config.worker
    for name in ("batch_size", "window_s", "retention_s", "max_examples", "max_record_bytes", "max_finding_keys"):
        value = getattr(worker, name)
        if problems.typed(f"worker.{name}") and value <= 0:
            problems.add(f"worker.{name}", f"must be positive, got {value}")
    obs = config.observability
    if problems.typed("observability.port") and not 0 <= obs.port <= 65535:
        problems.add("observability.port", f"expected a TCP port (0 turns the endpoint off), got {obs.port}")
    for name in ("stats_interval_s", "liveness_timeout_s"):
        if problems.typed(f"observability.{name}") and getattr(obs, name) <= 0:
            problems.add(f"observability.{name}", f"must be positive, got {getattr(obs, name)}")
    if problems.typed("worker.label_pause_max_s") and not worker.label_pause_max_s > 0:
        problems.add("worker.label_pause_max_s", f"must be positive, got {worker.label_pause_max_s:g}")
    skew = worker.max_event_time_skew_s
    if problems.typed("worker.max_event_time_skew_s") and skew < 0:
        problems.add("worker.max_event_time_skew_s", f"must be 0 (off) or positive, got {skew:g}")
    _check_redis(config, problems)
    if problems.typed("redis.socket_timeout_s") and not config.redis.socket_timeout_s > 0:
        problems.add("redis.socket_timeout_s", f"must be positive, got {config.redis.socket_timeout_s}")
    _check_kafka(config, problems)
    check_checks(config.checks, "checks", problems)
    check_drift(config.drift, "drift", problems)
    _check_alerts(config, problems)
    for kind in config.alerts.severity:
        if kind not in ALERT_KINDS:
            problems.add(f"alerts.severity.{kind}", f"unknown alert kind (known: {', '.join(sorted(ALERT_KINDS))})")
    _check_feature_tables(config, problems)
    if not config.models and problems.typed("models"):
        problems.add("models", "at least one [[models]] table is required")
    seen: set[str] = set()
    for i, model in enumerate(config.models):
        _check_model(config, model, i, seen, problems, require_profiles)
    label_topics = [m.labels.topic for m in config.models if m.labels.topic]
    for topic in sorted({t for t in label_topics if label_topics.count(t) > 1}):
        problems.lines.append(f"labels topic {topic!r} is used by several models")


def _check_redis(config: Config, problems: Problems) -> None:
    """``[redis] url`` parses as redis-py reads it; a Cluster has TCP nodes and only database 0."""
    if not problems.typed("redis.url", "redis.cluster"):
        return
    url, cluster = urlsplit(config.redis.url), config.redis.cluster
    if url.scheme not in ("redis", "rediss", "unix"):
        problems.add("redis.url", f"expected a redis://, rediss:// or unix:// URL, got {config.redis.url!r}")
    elif cluster and url.scheme == "unix":
        problems.add("redis.url", "a Redis Cluster is reached over TCP: use a redis:// or rediss:// URL of one node")
    elif cluster:
        db = parse_qs(url.query).get("db", [url.path.strip("/") or "0"])[0]
        if db != "0":
            problems.add("redis.url", f"a Redis Cluster has only database 0, the URL selects database {db}")


#: librdkafka properties that ``[kafka] delivery`` decides; setting them by hand would contradict it.
_DELIVERY_OWNED = {"producer": ("transactional.id",), "consumer": ("isolation.level",)}


def _check_kafka(config: Config, problems: Problems) -> None:
    """``exactly_once``: the transactional properties are the worker's to set, and ids are non-empty."""
    kafka = config.kafka
    if not problems.typed("kafka.delivery", "kafka.producer", "kafka.consumer") or kafka.delivery != "exactly_once":
        return
    for role, names in _DELIVERY_OWNED.items():
        for name in names:
            if name in getattr(kafka, role):
                problems.add(
                    f"kafka.{role}.{name}", 'set by the worker when kafka.delivery = "exactly_once": remove it'
                )
    if str(kafka.producer.get("enable.idempotence", True)).lower() == "false":
        problems.add(
            "kafka.producer.enable.idempotence", "a transactional producer is idempotent: remove it or set it true"
        )
    if problems.typed("kafka.transactional_id_prefix") and not kafka.transactional_id_prefix.strip():
        problems.add("kafka.transactional_id_prefix", "must not be empty")


def _check_alerts(config: Config, problems: Problems) -> None:
    alerts = config.alerts
    for name in ("cooldown_s", "resolve_after_s"):
        if problems.typed(f"alerts.{name}") and getattr(alerts, name) < 0:
            problems.add(f"alerts.{name}", f"must be 0 or positive, got {getattr(alerts, name)}")
    if problems.typed("alerts.remind_after_s", "alerts.cooldown_s") and alerts.remind_after_s < alerts.cooldown_s:
        problems.add(
            "alerts.remind_after_s",
            f"must be at least alerts.cooldown_s ({alerts.cooldown_s}), got {alerts.remind_after_s}",
        )
    if problems.typed("alerts.escalation_factor") and not alerts.escalation_factor > 1:
        problems.add("alerts.escalation_factor", f"must be above 1, got {alerts.escalation_factor:g}")
    confluent = problems.typed("alerts.encoding", "schema_registry.url") and alerts.encoding == "confluent"
    if confluent and not config.schema_registry.url:
        problems.add("alerts.encoding", "'confluent' needs schema_registry.url (alert.avsc is registered there)")
    if problems.typed("alerts.early_kinds"):
        for kind in alerts.early_kinds:
            if kind not in EARLY_KIND_CHOICES:
                problems.add(
                    "alerts.early_kinds",
                    f"{kind!r} cannot fire early (row-level kinds: {', '.join(EARLY_KIND_CHOICES)})",
                )


def _check_feature_tables(config: Config, problems: Problems) -> None:
    """Per-feature tables must name a feature (or the score / prediction field) of some model."""
    roles = ("features", "score_field", "prediction_field")
    if not config.models or not all(
        problems.typed(*(f"models[{i}].{role}" for role in roles)) for i in range(len(config.models))
    ):
        return
    known: set[str] = set()
    for model in config.models:
        known.update(model.features)
        known.update(name for name in (model.score_field, model.prediction_field) if name)
    listed = ", ".join(sorted(known)) or "none"
    for section, names in (("checks", config.checks.features), ("drift", config.drift.features)):
        for name in names:
            if name not in known:
                problems.add(f"{section}.features.{name}", f"not a feature of any model (features: {listed})")


def _check_model(
    config: Config, model: ModelConfig, i: int, seen: set[str], problems: Problems, require_profiles: bool
) -> None:
    key = f"models[{i}]"
    where = f"{key} ({model.name})"
    registry = config.schema_registry
    if problems.typed(f"{key}.name"):
        if model.name in seen:
            problems.add(where, "duplicate model name")
        seen.add(model.name)
        if ":" in model.name or "{" in model.name or "}" in model.name:
            problems.add(where, "name may not contain ':', '{' or '}' (used in Redis keys)")
    if problems.typed(f"{key}.topics") and not model.topics:
        problems.add(f"{where}.topics", "at least one input topic is required")
    if problems.typed(f"{key}.schema", f"{key}.schema_subject"):
        if bool(model.schema) == bool(model.schema_subject):
            problems.add(where, "set exactly one of schema (an .avsc file) or schema_subject")
        if model.schema_subject and problems.typed("schema_registry.url") and not registry.url:
            problems.lines.append(f"{where}.schema_subject needs schema_registry.url")
    for name in ("schema", "writer_schema"):
        path = getattr(model, name)
        if path and problems.typed(f"{key}.{name}") and not config.resolve_path(path).is_file():
            problems.add(f"{where}.{name}", f"file {config.resolve_path(path)} not found")
    if (
        require_profiles
        and model.profile
        and problems.typed(f"{key}.profile")
        and not config.resolve_path(model.profile).is_file()
    ):
        problems.add(
            f"{where}.profile",
            f"file {config.resolve_path(model.profile)} not found (write it with `stream-guard learn`)",
        )
    no_registry = problems.typed("schema_registry") and not (registry.url or registry.local_dir)
    if problems.typed(f"{key}.encoding") and model.encoding == "confluent" and no_registry:
        problems.add(where, "encoding 'confluent' needs schema_registry.url or schema_registry.local_dir")
    _check_metrics(config, model, key, where, problems)


def _check_metrics(config: Config, model: ModelConfig, key: str, where: str, problems: Problems) -> None:
    metrics, labels = model.metrics, model.labels
    mkey = f"{key}.metrics"

    def typed(*keys: str) -> bool:
        return problems.typed(*(k if k.startswith("worker.") else f"{mkey}.{k}" for k in keys))

    for line in performance_settings_problems(metrics, config.worker.window_s, f"{where}.metrics", typed):
        problems.lines.append(line)
    for name in ("bucket_s", "retention_s", "max_values_per_field", "score_bins"):
        value = getattr(metrics, name)
        if typed(name) and value <= 0:
            problems.add(f"{where}.metrics.{name}", f"must be positive, got {value}")
    skew = config.worker.max_event_time_skew_s
    if typed("retention_s", "worker.max_event_time_skew_s") and skew >= metrics.retention_s > 0:
        # A clamped event may still be this far ahead: its bucket would trim every real one.
        problems.add(
            f"{where}.metrics.retention_s",
            f"must exceed worker.max_event_time_skew_s ({skew:g}), got {metrics.retention_s}",
        )
    low_high = metrics.score_range
    if typed("score_range") and (len(low_high) != 2 or not low_high[0] < low_high[1]):
        problems.add(f"{where}.metrics.score_range", f"expected [low, high] with low < high, got {low_high}")
    for crossing in metrics.crossings:
        if len(set(crossing)) < 2:
            problems.add(f"{where}.metrics.crossings", f"{crossing} needs at least two distinct fields")
    lkey = f"{key}.labels"
    if not labels.topic or not problems.typed(f"{lkey}.topic"):
        return
    if problems.typed(f"{key}.event_id_field") and not model.event_id_field:
        problems.lines.append(f"{where}.labels needs event_id_field: labels are joined to predictions by event id")
    if labels.topic in model.topics:
        problems.lines.append(f"{where}.labels.topic {labels.topic!r} is also an input topic")
    if problems.typed(f"{lkey}.lookback_s"):
        if labels.lookback_s <= 0:
            problems.add(f"{where}.labels.lookback_s", f"must be positive, got {labels.lookback_s}")
        elif typed("retention_s") and metrics.retention_s < labels.lookback_s:
            problems.lines.append(
                f"{where}.metrics.retention_s must be >= labels.lookback_s, or late labels find no bucket"
            )
    if problems.typed(f"{lkey}.hold_s") and labels.hold_s < 0:
        problems.add(f"{where}.labels.hold_s", f"must be 0 (no holding) or positive, got {labels.hold_s}")
    if problems.typed(f"{lkey}.encoding", f"{lkey}.schema") and labels.encoding != "json" and not labels.schema:
        problems.add(f"{where}.labels.schema", f"required for encoding {labels.encoding!r}")
    if labels.schema and problems.typed(f"{lkey}.schema") and not config.resolve_path(labels.schema).is_file():
        problems.add(f"{where}.labels.schema", f"file {config.resolve_path(labels.schema)} not found")
    registry = config.schema_registry
    if (
        problems.typed(f"{lkey}.encoding")
        and labels.encoding == "confluent"
        and not (registry.url or registry.local_dir)
    ):
        problems.add(f"{where}.labels", "encoding 'confluent' needs schema_registry.url or schema_registry.local_dir")

"""Building a worker with every stage its configuration asks for."""

from __future__ import annotations

from typing import Any

import redis

from stream_guard.checks import FeatureChecks, WindowChecks
from stream_guard.drift import OnlineDrift, WindowDrift
from stream_guard.metrics import LabelJoiner, LabelStream, MetricsReader, PerformanceEvaluator, SliceRecorder
from stream_guard.metrics.concept import ConceptDriftEvaluator
from stream_guard.metrics.labels import make_label_decoder
from stream_guard.model import ModelRuntime, build_models
from stream_guard.pipeline import Pipeline
from stream_guard.profile import BaselineProfile
from stream_guard.settings import Config
from stream_guard.settings.kinds import Severity
from stream_guard.state.keys import ModelKeys
from stream_guard.worker import Worker


def registry_client(config: Config) -> Any:
    """A Confluent Schema Registry client when ``schema_registry.url`` is set, else None."""
    if not config.schema_registry.url:
        return None
    from confluent_kafka.schema_registry import SchemaRegistryClient

    return SchemaRegistryClient({"url": config.schema_registry.url, **config.schema_registry.client})


def build_pipeline(config: Config, models: list[ModelRuntime], profiles: dict[str, BaselineProfile]) -> Pipeline:
    """The checks, drift and evaluators of ``config``, without slice metrics (no Redis needed)."""
    checkers, evaluators, severities = build_plugins(config, models, profiles)
    return Pipeline(config, checkers=checkers, evaluators=evaluators, severities=severities)


def build_plugins(
    config: Config, models: list[ModelRuntime], profiles: dict[str, BaselineProfile]
) -> tuple[list[Any], list[Any], dict[str, Severity]]:
    """The per-batch checkers, closed-window evaluators and row-finding severities the configuration enables.

    ``profiles`` is shared with the stages: replacing a model's entry (a reloaded
    profile) takes effect on the next batch.
    """
    checkers: list[Any] = []
    evaluators: list[Any] = []
    severities: dict[str, Severity] = {}
    checks = config.checks
    if checks.enabled:
        checkers.append(FeatureChecks(profiles, checks))
        evaluators.append(WindowChecks(profiles, checks))
        severities = dict(checks.finding_severities())
    drift = config.drift
    if drift.enabled:
        checkers += [WindowDrift(profiles, drift), OnlineDrift(profiles, drift)]
        evaluators.append(checkers[-2])
    return checkers, evaluators, severities


def build_worker(config: Config, client: redis.Redis | None = None, **worker_kwargs: Any) -> Worker:
    """A worker for ``config`` with checks, drift, slice metrics and labels as configured."""
    registry = registry_client(config)
    models = build_models(config, registry)
    client = client or redis.Redis.from_url(config.redis.url, decode_responses=True)
    profiles = {m.name: m.profile for m in models if m.profile is not None}
    checkers, evaluators, severities = build_plugins(config, models, profiles)
    recorders: dict[str, SliceRecorder] = {}
    streams: list[LabelStream] = []
    for model in models:
        settings = model.config.metrics
        if not settings.enabled:
            continue
        keys = ModelKeys(config.redis.key_prefix, model.name)
        labels = model.config.labels
        ttl = labels.lookback_s if labels.topic else 0
        recorders[model.name] = SliceRecorder.for_model(model, settings, model.profile, prediction_ttl_s=ttl)
        reader = MetricsReader(client, keys, settings.bucket_s * 1000)
        evaluators.append(PerformanceEvaluator.for_settings(model.name, reader, settings))
        if labels.topic:
            decoder = make_label_decoder(config, labels, registry)
            streams.append(LabelStream(model.name, LabelJoiner(keys, settings), decoder, labels))
            evaluators.append(ConceptDriftEvaluator.for_settings(model.name, reader, settings))
    pipeline = Pipeline(
        config, checkers=checkers, evaluators=evaluators, severities=severities, slice_recorders=recorders
    )
    return Worker(config, models, client, pipeline=pipeline, label_streams=streams, profiles=profiles, **worker_kwargs)


def metrics_reader(config: Config, model: str, client: redis.Redis | None = None) -> MetricsReader:
    """The Python API of rolling metrics: ``metrics_reader(load_config(path), "fraud").last(...)``."""
    settings = config.model(model).metrics
    client = client or redis.Redis.from_url(config.redis.url, decode_responses=True)
    return MetricsReader(client, ModelKeys(config.redis.key_prefix, model), settings.bucket_s * 1000)

"""Building a worker, and everything it runs with, from its configuration: the one place that wires."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import structlog
from confluent_kafka import Consumer, KafkaError

from stream_guard.alerts.codec import alert_encoder
from stream_guard.alerts.lifecycle import IncidentTracker, LifecycleSettings
from stream_guard.checkpoint import OffsetSink, Sinks
from stream_guard.checks import FeatureChecks, WindowChecks
from stream_guard.closing import WindowCloser
from stream_guard.delivery import (
    ConsumerOffsets,
    DeadLetterProducer,
    RedisLabelJoins,
    RedisWindowState,
    TransactionOffsets,
)
from stream_guard.drift import OnlineDrift, WindowDrift
from stream_guard.drift.checkpoint import DetectorCheckpointer
from stream_guard.kafka import (
    DeliveryTracker,
    TransactionalProducer,
    consumer_settings,
    make_consumer,
    producer_settings,
)
from stream_guard.logs import librdkafka_logger
from stream_guard.metrics import LabelJoiner, LabelStream, MetricsReader, PerformanceEvaluator, SliceRecorder
from stream_guard.metrics.concept import ConceptDriftEvaluator
from stream_guard.metrics.estimate_alerts import EstimatePerformanceEvaluator
from stream_guard.metrics.label_gate import LabelGate
from stream_guard.metrics.label_messages import make_label_decoder
from stream_guard.model import ModelRuntime, build_models
from stream_guard.observability.metrics import WorkerMetrics
from stream_guard.observability.server import HealthServer, WorkerHealth
from stream_guard.pipeline import Pipeline
from stream_guard.profile import BaselineProfile
from stream_guard.registry import registry_client as registry_client
from stream_guard.settings import Config
from stream_guard.stages import Stages
from stream_guard.state.client import RedisClient, connect
from stream_guard.state.keys import ModelKeys
from stream_guard.state.keyspace import MemoryKeySpace
from stream_guard.state.protocol import IncidentState, LabelState
from stream_guard.state.window_store import WindowStore
from stream_guard.transactions import RedisPendingSteps, Transaction, read_outcome
from stream_guard.worker import Worker, WorkerParts

log = structlog.get_logger("stream_guard.assembly")


def build_pipeline(config: Config, models: list[ModelRuntime], profiles: dict[str, BaselineProfile]) -> Pipeline:
    """The checks, drift and evaluators of ``config``, without slice metrics (no Redis needed)."""
    return Pipeline(config, build_stages(config, profiles))


def build_stages(config: Config, profiles: dict[str, BaselineProfile], *, checkpoints: bool = False) -> Stages:
    """The checks and drift stages the configuration enables, under their roles.

    ``profiles`` is shared with the stages: replacing a model's entry (a reloaded
    profile) takes effect on the next batch. ``checkpoints``: the online detectors'
    state goes to Redis with each batch (a worker; an offline replay has no restart).
    """
    stages = Stages()
    checks = config.checks
    if checks.enabled:
        feature_checks = FeatureChecks(profiles, checks)
        stages.row_checks.append(feature_checks)
        stages.contributors.append(feature_checks)
        stages.evaluators.append(WindowChecks(profiles, checks))
        stages.severities = dict(checks.finding_severities())
    drift = config.drift
    if drift.enabled:
        window_drift, online_drift = WindowDrift(profiles, drift), OnlineDrift(profiles, drift)
        stages.row_checks += [window_drift, online_drift]
        stages.contributors.append(window_drift)
        stages.evaluators.append(window_drift)
        stages.partition_state.append(online_drift)
        if checkpoints:
            stages.checkpointer = DetectorCheckpointer(online_drift)
            stages.contributors.append(stages.checkpointer)
            stages.partition_state.append(stages.checkpointer)
    return stages


def add_metrics(
    config: Config, models: list[ModelRuntime], source: RedisClient | MemoryKeySpace, stages: Stages, registry: Any
) -> list[LabelStream]:
    """Slice metrics, label joins and performance evaluators of the models that keep metrics.

    Parameters
    ----------
    config, models
        The configuration and its models; those with ``[models.metrics] enabled`` get a
        :class:`~stream_guard.metrics.SliceRecorder` in ``stages`` and the evaluators of
        their label-based and label-free performance checks.
    source
        Where the evaluators read the metric buckets: the worker's Redis client, or the
        in-memory state of a replay (a :class:`~stream_guard.state.memory.MemoryState`
        holding the model's keys).
    stages
        Gains the recorders and evaluators.
    registry
        The schema registry client of the label decoders (``None`` without one).

    Returns
    -------
    list of LabelStream
        One per model with a labels topic: its decoder and its :class:`~stream_guard.metrics.LabelJoiner`.
    """
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
        reader = MetricsReader(source, keys, settings.bucket_s * 1000)
        stages.evaluators.append(PerformanceEvaluator.for_settings(model.name, reader, settings))
        if settings.task == "classification" and settings.estimate_calibration != "off":
            estimate = EstimatePerformanceEvaluator.for_settings(
                model.name, reader, settings, labels=bool(labels.topic)
            )
            stages.evaluators.append(estimate)
        if labels.topic:
            decoder = make_label_decoder(config, labels, registry)
            joiner = LabelJoiner(keys, settings, hold_s=labels.hold_s)
            streams.append(LabelStream(model.name, joiner, decoder, labels, config.worker.max_record_bytes))
            stages.evaluators.append(ConceptDriftEvaluator.for_settings(model.name, reader, settings))
    stages.slice_recorders = recorders
    return streams


def build_worker(
    config: Config,
    client: RedisClient | None = None,
    *,
    worker_id: str | None = None,
    consumer_overrides: dict[str, Any] | None = None,
    close_interval_s: float = 1.0,
    lease_ms: int = 30_000,
    metrics: WorkerMetrics | None = None,
    health: WorkerHealth | None = None,
) -> Worker:
    """A worker for ``config`` with checks, drift, slice metrics and labels as configured.

    ``metrics`` and ``health``: the ones an HTTP endpoint started before the worker serves
    (``stream-guard run`` reports not ready while it waits for a Redis Cluster).
    """
    worker_id = worker_id or config.kafka.instance_id or f"sg-{uuid.uuid4().hex[:8]}"
    registry = registry_client(config)
    models = build_models(config, registry)
    encoder = alert_encoder(config, registry)  # registers alert.avsc: a registry problem stops the start here
    client = client or connect(config.redis)
    profiles = {m.name: m.profile for m in models if m.profile is not None}
    stages = build_stages(config, profiles, checkpoints=True)
    label_streams = add_metrics(config, models, client, stages, registry)
    pipeline = Pipeline(config, stages)
    w = config.worker
    stores = {
        m.name: WindowStore(
            client,
            ModelKeys(config.redis.key_prefix, m.name),
            window_ms=w.window_s * 1000,
            lateness_ms=w.allowed_lateness_s * 1000,
            idle_ms=int(w.idle_partition_s * 1000),
            retention_s=w.retention_s,
            worker_id=worker_id,
        )
        for m in models
    }
    incidents = {m.name: incident_tracker(config, m, client, stores[m.name].keys) for m in models}
    metrics = metrics or WorkerMetrics()
    health = health or worker_health(config)
    consumer = make_consumer(
        config.kafka,
        librdkafka_logger(),
        stats_cb=metrics.on_stats,
        error_cb=functools.partial(_on_client_error, health),
        **{"statistics.interval.ms": int(config.observability.stats_interval_s * 1000), **(consumer_overrides or {})},
    )
    producer, transaction = delivery_clients(config, consumer, client, stores, worker_id, lease_ms)
    offsets: OffsetSink = ConsumerOffsets(consumer) if transaction is None else TransactionOffsets(transaction)
    sinks = Sinks(
        dead_letters=DeadLetterProducer(producer, config.kafka.dead_letter_topic, worker_id),
        state=RedisWindowState(client, stores, on_roundtrip=metrics.redis_seconds.observe),
        labels=RedisLabelJoins({s.topic: s for s in label_streams}, stores),
        offsets=offsets,
    )
    models_by_name = {m.name: m for m in models}
    closer = WindowCloser(
        models_by_name,
        stores,
        incidents,
        pipeline,
        producer,
        config.kafka.alerts_topic,
        lease_ms=lease_ms,
        encoder=encoder,
        label_gates=label_gates(models, stores, w.window_s * 1000),
        settlement=transaction,
        blocked=(lambda model: set()) if transaction is None else functools.partial(_unsettled, transaction, lease_ms),
    )
    parts = WorkerParts(
        models,
        stores,
        pipeline,
        consumer,
        producer,
        sinks,
        closer,
        label_streams,
        profiles,
        metrics,
        health,
        client,
        transaction,
    )
    return Worker(config, parts, worker_id=worker_id, close_interval_s=close_interval_s)


def delivery_clients(
    config: Config,
    consumer: Consumer,
    client: RedisClient,
    stores: Mapping[str, WindowStore],
    worker_id: str,
    lease_ms: int,
) -> tuple[DeliveryTracker, Transaction | None]:
    """The producer of alerts and dead letters, and the turn's transaction with ``delivery = "exactly_once"``."""
    kafka = config.kafka
    settings = producer_settings(kafka)
    if kafka.delivery == "at_least_once":
        return DeliveryTracker(settings, logger=librdkafka_logger()), None
    if not kafka.instance_id:
        log.warning(
            "kafka.instance_id is not set: this worker's transactional id is new at each start, "
            "so a restart cannot fence its predecessor (set it to a stable name, e.g. the pod's)",
            transactional_id=kafka.transactional_id(worker_id),
        )
    producer = TransactionalProducer(settings, kafka.transactional_id(worker_id), logger=librdkafka_logger())
    probe_settings = consumer_settings(kafka)
    transaction = Transaction(
        producer,
        consumer,
        RedisPendingSteps(client, {name: store.keys for name, store in stores.items()}),
        stores,
        window_ms=config.worker.window_s * 1000,
        lease_ms=lease_ms,
        outcome=functools.partial(read_outcome, probe_settings),
    )
    return producer, transaction


def _unsettled(transaction: Transaction, lease_ms: int, model: str) -> set[int]:
    """The windows of ``model`` whose last close is in a transaction not resolved yet (not to be closed)."""
    return transaction.resolve(model, min_age_ms=lease_ms)


def incident_tracker(
    config: Config, model: ModelRuntime, state: RedisClient | IncidentState, keys: ModelKeys | None = None
) -> IncidentTracker:
    """The incident lifecycle of ``model`` under ``[alerts]``: on a Redis client (with ``keys``) or a state store."""
    alerts = config.alerts
    lifecycle = LifecycleSettings(
        alerts.cooldown_s, alerts.resolve_after_s, alerts.remind_after_s, alerts.escalation_factor
    )
    outputs = (model.config.score_field, model.config.prediction_field)
    return IncidentTracker(state, keys, lifecycle, outputs=outputs)


def label_gates(
    models: Sequence[ModelRuntime], stores: Mapping[str, LabelState], window_ms: int
) -> dict[str, LabelGate]:
    """The label gate of each model with labels: its label-based checks wait for the label watermark."""
    gates = {}
    for m in models:
        settings = m.config.metrics
        if settings.enabled and m.config.labels.topic:
            every, delay = settings.performance_every_s * 1000, settings.performance_label_delay_s * 1000
            gates[m.name] = LabelGate(stores[m.name], window_ms=window_ms, every_ms=every, delay_ms=delay)
    return gates


def _on_client_error(health: WorkerHealth, error: KafkaError) -> None:
    """librdkafka's ``error_cb``: every broker down makes the worker not ready until one answers."""
    if error.code() == KafkaError._ALL_BROKERS_DOWN:
        health.broker_ok = False
    log.warning("kafka client error", error=error.str())


def worker_health(config: Config) -> WorkerHealth:
    """What the probes of a worker of ``config`` read, before the worker runs (not ready yet)."""
    return WorkerHealth(liveness_timeout_s=config.observability.liveness_timeout_s)


def start_http_endpoint(config: Config, metrics: WorkerMetrics, health: WorkerHealth) -> HealthServer | None:
    """The ``/metrics``, ``/healthz`` and ``/readyz`` endpoint of a worker (None if ``observability.port = 0``)."""
    obs = config.observability
    if not obs.port:
        return None
    server = HealthServer(metrics, health, bind=obs.bind, port=obs.port).start()
    log.info("http endpoint listening", bind=obs.bind, port=server.port, paths=["/metrics", "/healthz", "/readyz"])
    return server


def metrics_reader(config: Config, model: str, client: RedisClient | None = None) -> MetricsReader:
    """The Python API of rolling metrics: ``metrics_reader(load_config(path), "fraud").last(...)``."""
    settings = config.model(model).metrics
    client = client or connect(config.redis)
    return MetricsReader(client, ModelKeys(config.redis.key_prefix, model), settings.bucket_s * 1000)

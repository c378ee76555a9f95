"""Closing event-time windows: evaluate the merged counters, publish the alerts, then finish.

A window is *due* once the global watermark passed its end plus the allowed lateness
(:meth:`~stream_guard.state.window_store.WindowStore.due_windows`). Any worker may
close it (the loop is :func:`~stream_guard.state.closing.close_due_windows`, shared with
the offline replay): it takes a short lease, reads the merged counters, runs the
evaluators, lets the incident tracker decide what to publish, waits for the broker to
acknowledge the alerts, and only then removes the window from the open set. A worker that dies in
between lets the lease expire and another one closes the window again (at-least-once;
the alert ids are the same).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import structlog

from stream_guard.alerts.codec import AlertEncoder, AlertEncoding
from stream_guard.alerts.lifecycle import IncidentTracker
from stream_guard.alerts.model import Alert
from stream_guard.kafka import DeliveryTracker
from stream_guard.metrics.label_gate import LabelGate
from stream_guard.model import ModelRuntime
from stream_guard.pipeline import Pipeline
from stream_guard.state.closing import close_due_windows
from stream_guard.state.update import WindowSnapshot
from stream_guard.state.window_store import WindowStore

log = structlog.get_logger("stream_guard.closing")


class WindowCloser:
    """Closes every model's due windows and publishes their alerts on ``alerts_topic``."""

    def __init__(
        self,
        models: Mapping[str, ModelRuntime],
        stores: Mapping[str, WindowStore],
        incidents: Mapping[str, IncidentTracker],
        pipeline: Pipeline,
        producer: DeliveryTracker,
        alerts_topic: str,
        *,
        lease_ms: int = 30_000,
        encoding: AlertEncoding = "avro",
        encoder: AlertEncoder | None = None,
        label_gates: Mapping[str, LabelGate] | None = None,
    ) -> None:
        #: ``encoder`` (a ``confluent`` one needs the registry) or else one of ``encoding``.
        self._encoder = encoder or AlertEncoder(encoding)
        self._models = models
        self._stores = stores
        self._incidents = incidents
        self._pipeline = pipeline
        self._producer = producer
        self._alerts_topic = alerts_topic
        self._lease_ms = lease_ms
        self._label_gates = dict(label_gates or {})

    def close_due(self, now_ms: int, *, final: bool = False) -> list[Alert]:
        """Close the windows the watermark has passed (every open one if ``final``); the alerts published."""
        published: list[Alert] = []
        for name, store in self._stores.items():
            publish = functools.partial(self._publish, name, now_ms=now_ms)
            gate = self._label_gates.get(name)
            ready = None if gate is None else functools.partial(gate.ready, now_ms=now_ms)
            closed = close_due_windows(store, publish, now_ms=now_ms, lease_ms=self._lease_ms, final=final, ready=ready)
            published += [alert for alerts in closed.outputs for alert in alerts]
        return published

    def _publish(self, name: str, window: WindowSnapshot, *, now_ms: int) -> list[Alert]:
        """Evaluate a closed window, let the incidents decide, and wait for the broker's acks."""
        raised = self._pipeline.window_alerts(self._models[name], window)
        incidents = self._incidents[name]
        alerts = incidents.publishable(raised)
        alerts += incidents.resolved(window.end_ms, {a.incident_id for a in raised})
        self._produce(name, alerts, now_ms)
        self._producer.flush()
        incidents.delivered(window.end_ms)
        if alerts:
            log.info("window closed", model=name, window_start=window.start_ms, alerts=len(alerts))
        return alerts

    def publish_early(self, raised: Mapping[str, Sequence[Alert]], now_ms: int) -> list[Alert]:
        """A batch's early alerts (:meth:`IncidentTracker.early`), by model: published and acknowledged.

        Called before the batch's state and offsets are committed: a failure raises (the batch
        is retried and fires the same alerts again); once this returns, they are not fired again.
        """
        fired = {name: self._incidents[name].early(alerts) for name, alerts in raised.items() if alerts}
        for name, alerts in fired.items():
            self._produce(name, alerts, now_ms)
        published = [alert for alerts in fired.values() for alert in alerts]
        if published:
            self._producer.flush()
        for name, alerts in fired.items():
            self._incidents[name].early_delivered()
            if alerts:
                log.info("early alerts", model=name, alerts=[f"{a.kind}|{a.feature or ''}" for a in alerts])
        return published

    def _produce(self, name: str, alerts: Sequence[Alert], now_ms: int) -> None:
        content_type = self._encoder.content_type
        for alert in alerts:
            self._producer.produce(
                self._alerts_topic,
                self._encoder.encode(alert, emitted_at=now_ms),
                alert.alert_id,
                headers=[("model", name.encode()), ("kind", alert.kind.encode()), ("content-type", content_type)],
            )

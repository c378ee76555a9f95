"""Closing event-time windows: evaluate the merged counters, publish the alerts, then finish.

A window is *due* once the global watermark passed its end plus the allowed lateness
(:meth:`~stream_guard.state.window_store.WindowStore.due_windows`). Any worker may
close it (the loop is :func:`~stream_guard.state.closing.close_due_windows`, shared with
the offline replay): it takes a short lease, reads the merged counters, runs the
evaluators, lets the incident tracker decide what to publish, produces the alerts, and
once they are delivered for good (acknowledged, or committed in the turn's transaction:
:mod:`stream_guard.transactions`) closes the resolved incidents and removes the window from
the open set. A worker that dies in between lets the lease expire and another one closes
the window again: the same alerts (same ids), published again at least once, or exactly
once in a transaction.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence

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
from stream_guard.transactions import AtLeastOnce, RedisStep, Settlement, crash_point

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
        settlement: Settlement | None = None,
        blocked: Callable[[str], set[int]] = lambda model: set(),
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
        #: When the Redis steps after delivery run (default: once the broker acknowledged).
        self._settlement = settlement or AtLeastOnce(producer)
        #: Per model, the window starts not to close yet (their last close is not settled).
        self._blocked = blocked

    def close_due(self, now_ms: int, *, final: bool = False) -> list[Alert]:
        """Close the windows the watermark has passed (every open one if ``final``); the alerts published."""
        published: list[Alert] = []
        for name, store in self._stores.items():
            publish = functools.partial(self._publish, name, now_ms=now_ms)
            gate = self._label_gates.get(name)
            blocked = self._blocked(name)

            def ready(start: int, gate: LabelGate | None = gate, blocked: set[int] = blocked) -> bool:
                return start not in blocked and (gate is None or gate.ready(start, now_ms=now_ms))

            closed = close_due_windows(
                store, publish, now_ms=now_ms, lease_ms=self._lease_ms, final=final, ready=ready, finish=False
            )
            published += [alert for alerts in closed.outputs for alert in alerts]
        return published

    def _publish(self, name: str, window: WindowSnapshot, *, now_ms: int) -> list[Alert]:
        """Evaluate a closed window, let the incidents decide, and wait for the broker's acks."""
        raised = self._pipeline.window_alerts(self._models[name], window)
        incidents = self._incidents[name]
        alerts = incidents.publishable(raised)
        alerts += incidents.resolved(window.end_ms, {a.incident_id for a in raised})
        if alerts:
            crash_point("closing")
        self._produce(name, alerts, now_ms)
        store = self._stores[name]
        steps = [
            RedisStep("close", name, window.end_ms, incident_id, members=tuple(members))
            for incident_id, members in incidents.resolving(window.end_ms).items()
        ]
        steps.append(RedisStep("finish", name, window.start_ms, events=window.fields.get("n", "0")))

        def settle() -> None:
            incidents.delivered(window.end_ms)
            store.finish(window)

        self._settlement.after_delivery(settle, steps)
        if alerts:
            log.info("window closed", model=name, window_start=window.start_ms, alerts=len(alerts))
        return alerts

    def publish_early(self, raised: Mapping[str, Sequence[Alert]], now_ms: int) -> list[Alert]:
        """A batch's early alerts (:meth:`IncidentTracker.early`), by model: published and acknowledged.

        Called before the batch's state and offsets are committed: a failure raises (the batch
        is retried and fires the same alerts again); once they are delivered for good, they
        are not fired again.
        """
        fired = {name: self._incidents[name].early(alerts) for name, alerts in raised.items() if alerts}
        for name, alerts in fired.items():
            self._produce(name, alerts, now_ms)
        for name, alerts in fired.items():
            if not alerts:
                continue
            incidents = self._incidents[name]
            steps = [RedisStep("early", name, end, cause) for cause, end in incidents.early_pending()]
            self._settlement.after_delivery(incidents.early_delivered, steps)
            log.info("early alerts", model=name, alerts=[f"{a.kind}|{a.feature or ''}" for a in alerts])
        return [alert for alerts in fired.values() for alert in alerts]

    def _produce(self, name: str, alerts: Sequence[Alert], now_ms: int) -> None:
        content_type = self._encoder.content_type
        for alert in alerts:
            self._producer.produce(
                self._alerts_topic,
                self._encoder.encode(alert, emitted_at=now_ms),
                alert.alert_id,
                headers=[("model", name.encode()), ("kind", alert.kind.encode()), ("content-type", content_type)],
            )

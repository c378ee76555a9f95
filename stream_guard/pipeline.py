"""The stages between decoding and delivery, shared by the worker and ``evaluate``'s replay.

Per batch: findings (schema, dead letters, checkers) → window counters and slice metrics
(:func:`~stream_guard.aggregation.build_updates`). Per closed window: evaluators →
alerts with their configured severities. Neither step does I/O: the caller applies the
updates (Redis, or the in-memory state of a replay) and publishes the alerts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from stream_guard.aggregation import build_updates
from stream_guard.alerts.evaluate import DEFAULT_SEVERITY, finding_alerts
from stream_guard.alerts.model import Alert, Severity
from stream_guard.batch import EventBatch
from stream_guard.findings import RowFindings, dead_letter_findings, schema_findings
from stream_guard.model import ModelRuntime
from stream_guard.settings import Config
from stream_guard.state.keys import ModelKeys
from stream_guard.state.window_store import StateUpdate, WindowSnapshot

#: Evaluates a closed window into alerts.
Evaluator = Callable[[ModelRuntime, WindowSnapshot], list[Alert]]


class Pipeline:
    """Checkers, slice recorders and evaluators of a worker, as configured.

    Parameters
    ----------
    checkers
        Objects with ``findings(model, batch)`` and optionally
        ``contribute(batch, groups, keys)`` and ``forget(sources)``.
    evaluators
        Closed-window evaluators, run after the row findings' own.
    severities
        Severity of row findings by ``kind`` or ``kind|feature``, over the defaults.
    slice_recorders
        Slice metrics recorder of each model that keeps metrics.
    """

    def __init__(
        self,
        config: Config,
        *,
        checkers: Sequence[Any] = (),
        evaluators: Sequence[Evaluator] = (),
        severities: Mapping[str, Severity] | None = None,
        slice_recorders: Mapping[str, Any] | None = None,
    ) -> None:
        self.config = config
        self.checkers = list(checkers)
        finding_severities = {**DEFAULT_SEVERITY, **(severities or {})}
        self.evaluators: list[Evaluator] = [
            lambda m, s: finding_alerts(m.name, s, finding_severities),
            *evaluators,
        ]
        self.slice_recorders = dict(slice_recorders or {})

    def batch_updates(
        self, model: ModelRuntime, batch: EventBatch, keys: ModelKeys, errors: Mapping[int, Exception]
    ) -> tuple[list[StateUpdate], list[RowFindings]]:
        """The Redis updates of one model's batch, and its findings.

        ``errors`` maps the rows that failed to decode to their errors.
        """
        findings = schema_findings(batch) + dead_letter_findings(batch, dict(errors))
        for checker in self.checkers:
            findings += checker.findings(model, batch)
        contributors = [c.contribute for c in self.checkers if hasattr(c, "contribute")]
        recorder = self.slice_recorders.get(model.name)
        if recorder is not None:
            contributors.append(recorder.contributor(findings))
        updates = build_updates(
            batch,
            findings,
            keys,
            window_ms=self.config.worker.window_s * 1000,
            max_examples=self.config.worker.max_examples,
            contributors=contributors,
        )
        return updates, findings

    def window_alerts(self, model: ModelRuntime, window: WindowSnapshot) -> list[Alert]:
        """Every evaluator's alerts for a closed window, with ``[alerts] severity`` overrides."""
        overrides = self.config.alerts.severity
        alerts = []
        for evaluate in self.evaluators:
            for alert in evaluate(model, window):
                override = overrides.get(alert.kind)
                alerts.append(dataclasses.replace(alert, severity=Severity(override.upper())) if override else alert)
        return alerts

    def forget(self, sources: Sequence[str]) -> None:
        """Drop per-partition state of revoked or lost partitions."""
        for checker in self.checkers:
            if hasattr(checker, "forget"):
                checker.forget(sources)

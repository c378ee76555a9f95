"""The stages between decoding and delivery, shared by the worker and ``evaluate``'s replay.

Per batch: findings (schema, dead letters, row checks) → window counters, contributed
counters and slice metrics (:func:`~stream_guard.aggregation.build_updates`). Per closed
window: evaluators → alerts with their configured severities. Neither step does I/O:
the caller applies the updates (Redis, or the in-memory state of a replay) and
publishes the alerts. The roles are the protocols of :mod:`stream_guard.stages`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

from stream_guard.aggregation import Contributor, build_updates
from stream_guard.alerts.evaluate import DEFAULT_SEVERITY, finding_alerts
from stream_guard.alerts.model import Alert, Severity
from stream_guard.batch import EventBatch
from stream_guard.config import Config
from stream_guard.findings import RowFindings, dead_letter_findings, schema_findings
from stream_guard.model import ModelRuntime
from stream_guard.stages import Stages, WindowEvaluator
from stream_guard.state.keys import ModelKeys
from stream_guard.state.window_store import StateUpdate, WindowSnapshot


class _RowFindingAlerts:
    """The evaluator of the row findings' own counters, with their configured severities."""

    def __init__(self, severities: Mapping[str, Severity]) -> None:
        self._severities = {**DEFAULT_SEVERITY, **severities}

    def __call__(self, model: ModelRuntime, window: WindowSnapshot) -> list[Alert]:
        return finding_alerts(model.name, window, self._severities)


class Pipeline:
    """The configured :class:`~stream_guard.stages.Stages` of a worker, run per batch and per window."""

    def __init__(self, config: Config, stages: Stages | None = None) -> None:
        self.config = config
        self.stages = stages or Stages()
        self.evaluators: list[WindowEvaluator] = [_RowFindingAlerts(self.stages.severities), *self.stages.evaluators]

    def batch_updates(
        self, model: ModelRuntime, batch: EventBatch, keys: ModelKeys, errors: Mapping[int, Exception]
    ) -> tuple[list[StateUpdate], list[RowFindings]]:
        """The Redis updates of one model's batch, and its findings.

        ``errors`` maps the rows that failed to decode to their errors.
        """
        stages = self.stages
        findings = schema_findings(batch) + dead_letter_findings(batch, dict(errors))
        for check in stages.row_checks:
            findings += check.findings(model, batch)
        contributors: list[Contributor] = [c.contribute for c in stages.contributors]
        recorder = stages.slice_recorders.get(model.name)
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

    def forget(self, sources: Iterable[str]) -> None:
        """Drop per-partition state of revoked or lost partitions."""
        names = list(sources)
        for stage in self.stages.partition_state:
            stage.forget(names)

"""From a closed window's merged counters to alerts, for the row-level findings."""

from __future__ import annotations

import json
from collections.abc import Mapping

from stream_guard.aggregation import DEAD_LETTERS
from stream_guard.alerts.model import Alert, Example, Severity
from stream_guard.settings.kinds import SCHEMA_FINDING_SEVERITIES as DEFAULT_SEVERITY
from stream_guard.state.window_store import WindowSnapshot

__all__ = ["DEFAULT_SEVERITY", "finding_alerts"]


def finding_alerts(
    model: str, window: WindowSnapshot, severities: Mapping[str, Severity] = DEFAULT_SEVERITY
) -> list[Alert]:
    """One alert per (kind, feature, slice) that has findings in the window.

    ``severities`` maps ``<kind>|<feature>`` or ``<kind>`` to a severity (the first wins).
    """
    total = window.events + window.count(DEAD_LETTERS)
    alerts = []
    for key, count_text in sorted(window.with_prefix("f|").items()):
        kind, feature, slice_ = key.split("|", 2)
        count = int(count_text)
        observed, expected = json.loads(window.fields.get(f"d|{key}", '["", ""]'))
        examples = tuple(Example(**e) for e in window.examples.get(key, []))
        rate = count / total if total else 0.0
        subject = f"{feature!r} " if feature else ""
        alerts.append(
            Alert(
                model=model,
                kind=kind,
                feature=feature or None,
                slice=slice_,
                severity=severities.get(f"{kind}|{feature}") or severities.get(kind, Severity.WARNING),
                window_start=window.start_ms,
                window_end=window.end_ms,
                count=count,
                total=total,
                rate=rate,
                observed=observed,
                expected=expected,
                detector=f"schema.{kind}" if kind in DEFAULT_SEVERITY else kind,
                message=(
                    f"{kind} {subject}in {count} of {total} events ({rate:.1%}): "
                    f"observed {observed or '?'}, expected {expected or '?'}"
                ),
                examples=examples,
            )
        )
    return alerts

"""From a closed window's merged counters to alerts, for the row-level findings."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping

from stream_guard.aggregation import DEAD_LETTERS
from stream_guard.alerts.model import Alert, Example, Severity
from stream_guard.findings import OVERFLOW
from stream_guard.settings.kinds import SCHEMA_FINDING_SEVERITIES as DEFAULT_SEVERITY
from stream_guard.state.window_store import WindowSnapshot

__all__ = ["DEFAULT_SEVERITY", "finding_alerts"]


def finding_alerts(
    model: str,
    window: WindowSnapshot,
    severities: Mapping[str, Severity] = DEFAULT_SEVERITY,
    *,
    max_keys: int | None = None,
) -> list[Alert]:
    """One alert per (kind, feature, slice) that has findings in the window.

    ``severities`` maps ``<kind>|<feature>`` or ``<kind>`` to a severity (the first wins).
    With more than ``max_keys`` finding keys, the ``max_keys`` with the most findings are
    kept and the rest become one alert per kind on feature ``*overflow*`` (with the
    batches' own overflow findings of that kind), whose count sums theirs.
    """
    counts = {key: int(text) for key, text in window.with_prefix("f|").items()}
    overflow: dict[tuple[str, str], list[str]] = defaultdict(list)
    if max_keys is not None and len(counts) > max_keys:
        ranked = sorted((k for k in counts if k.split("|", 2)[1] != OVERFLOW), key=lambda k: (-counts[k], k))
        for key in [*ranked[max_keys:], *(k for k in counts if k.split("|", 2)[1] == OVERFLOW)]:
            kind, _, slice_ = key.split("|", 2)
            overflow[(kind, slice_)].append(key)
        counts = {k: counts[k] for k in ranked[:max_keys]}
    total = window.events + window.count(DEAD_LETTERS)
    alerts = []
    for key in sorted(counts):
        kind, feature, slice_ = key.split("|", 2)
        observed, expected = json.loads(window.fields.get(f"d|{key}", '["", ""]'))
        examples = tuple(Example(**e) for e in window.examples.get(key, []))
        alerts.append(
            _alert(model, window, severities, kind, feature, slice_, counts[key], total, observed, expected, examples)
        )
    for (kind, slice_), keys in sorted(overflow.items()):
        dropped = [k for k in keys if k.split("|", 2)[1] != OVERFLOW]
        count = sum(int(window.fields[f"f|{k}"]) for k in keys)
        observed = f"{len(dropped)} more distinct {kind} findings"
        batches = [json.loads(window.fields.get(f"d|{k}", '["", ""]'))[0] for k in keys if k not in dropped]
        if batches:
            observed += f"; batches: {batches[0]}"
        alerts.append(
            _alert(
                model, window, severities, kind, OVERFLOW, slice_, count, total, observed, "distinct findings capped"
            )
        )
    return alerts


def _alert(
    model: str,
    window: WindowSnapshot,
    severities: Mapping[str, Severity],
    kind: str,
    feature: str,
    slice_: str,
    count: int,
    total: int,
    observed: str,
    expected: str,
    examples: tuple[Example, ...] = (),
) -> Alert:
    rate = count / total if total else 0.0
    subject = f"{feature!r} " if feature else ""
    return Alert(
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

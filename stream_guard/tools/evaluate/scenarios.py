"""Scenarios (fault, feature, rate): planning them, injecting them and replaying each from the onset."""

from __future__ import annotations

import math
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from stream_guard.alerts.model import Alert
from stream_guard.errors import EvaluationInputError
from stream_guard.model import ModelRuntime
from stream_guard.profile import BaselineProfile
from stream_guard.settings import Config
from stream_guard.tools.evaluate.events import Stream
from stream_guard.tools.evaluate.faults import (
    DEFAULT_RATES,
    FAULTS,
    Target,
    applies,
    faulty_values,
    same_value,
    targets,
    with_value,
)
from stream_guard.tools.evaluate.replay import Replay
from stream_guard.tools.evaluate.report import Evaluation, ScenarioResult, count_false_alarms


@dataclass(frozen=True)
class Scenario:
    """One fault class injected into one feature, hitting a share ``rate`` of the events."""

    feature: str
    fault: str
    rate: float


def plan_scenarios(
    model: ModelRuntime,
    profile: BaselineProfile,
    *,
    features: Sequence[str] | None = None,
    faults: Sequence[str] | None = None,
    rates: Sequence[float] = DEFAULT_RATES,
) -> list[Scenario]:
    """Every applicable (feature, fault) pair at every rate, in target then fault order.

    Raises
    ------
    EvaluationInputError
        On an unknown feature or fault, a rate outside (0, 1], or when nothing applies.
    """
    available = targets(model, profile)
    unknown = [f for f in features or () if f not in available]
    if unknown:
        raise EvaluationInputError(f"unknown features {unknown}; the model's are: {', '.join(available)}")
    bad = [f for f in faults or () if f not in FAULTS]
    if bad:
        raise EvaluationInputError(f"unknown faults {bad}; known: {', '.join(FAULTS)}")
    if not rates or any(not 0 < r <= 1 for r in rates):
        raise EvaluationInputError(f"rates must be in (0, 1], got {list(rates)}")
    chosen = [available[f] for f in (features or available)]
    out = [
        Scenario(target.name, fault, rate)
        for target in chosen
        for fault in faults or FAULTS
        if applies(FAULTS[fault], target)
        for rate in rates
    ]
    if not out:
        raise EvaluationInputError("none of the faults applies to the features chosen")
    return out


def evaluate(
    config: Config,
    model: ModelRuntime,
    profile: BaselineProfile,
    stream: Stream,
    scenarios: Sequence[Scenario],
    *,
    onset_fraction: float = 0.4,
    batch_size: int = 500,
    seed: int = 0,
    source: str = "",
    learn_events: int = 0,
    progress: Callable[[str], None] | None = None,
) -> Evaluation:
    """Replay ``stream`` clean, then once per scenario with its fault injected from the onset.

    The onset is the first batch boundary at or after ``onset_fraction`` of the stream.
    """
    n = len(stream)
    onset = min(math.ceil(onset_fraction * n / batch_size) * batch_size, n)
    if onset >= n:
        raise EvaluationInputError(f"the onset ({onset_fraction:.0%} of {n} events) leaves no event to inject into")
    started = time.perf_counter()
    clean = Replay(config, model, profile)
    checkpoint: Replay | None = None
    clean_alerts: list[Alert] = []
    for start in range(0, n, batch_size):
        if start == onset:
            checkpoint = clean.fork()
        clean.process(stream.batch(start, min(start + batch_size, n)))
        clean_alerts += clean.close_due()
    clean_alerts += clean.close_due(final=True)
    assert checkpoint is not None
    clean_s = time.perf_counter() - started
    clean_keys = {(a.window_start, a.kind, a.feature) for a in clean_alerts}
    available = targets(model, profile)
    onset_ms = int(stream.event_time_ms[onset])
    results = []
    for i, scenario in enumerate(scenarios):
        if progress:
            progress(f"[{i + 1}/{len(scenarios)}] {scenario.fault} on {scenario.feature} at {scenario.rate:g}")
        results.append(
            _run_scenario(
                checkpoint, stream, available[scenario.feature], scenario, onset, onset_ms, batch_size, seed, clean_keys
            )
        )
    total_s = time.perf_counter() - started
    return Evaluation(
        model=model.name,
        source=source,
        profile_source=profile.source,
        learn_events=learn_events,
        events=n,
        windows=clean.windows_closed,
        window_s=config.worker.window_s,
        allowed_lateness_s=config.worker.allowed_lateness_s,
        batch_size=batch_size,
        partitions=int(stream.partitions.max()) + 1,
        onset_index=onset,
        onset_ms=onset_ms,
        scenarios=results,
        false_alarms=count_false_alarms(clean_alerts, n, clean.windows_closed),
        runtime_s={"clean": round(clean_s, 3), "scenarios": round(total_s - clean_s, 3), "total": round(total_s, 3)},
    )


@dataclass
class Injection:
    """The rows one scenario changes, and their faulty values of the target."""

    rows: np.ndarray  # row indices, ascending
    values: list[Any]

    def records(self, stream: Stream, target: Target, fault: str, start: int, stop: int) -> dict[int, dict[str, Any]]:
        """Row -> faulty record, for the changed rows in ``[start, stop)``."""
        lo, hi = np.searchsorted(self.rows, [start, stop]).tolist()
        return {
            row: with_value(fault, target, stream.records[row], value)
            for row, value in zip(self.rows[lo:hi].tolist(), self.values[lo:hi], strict=True)
        }


def plan_injection(stream: Stream, target: Target, scenario: Scenario, onset: int, seed: int) -> Injection:
    """Which rows from ``onset`` on the scenario hits (each with probability ``rate``), and how.

    Rows the fault leaves as they were (a null scaled, a value already at the sentinel)
    are not counted as injected. The draws depend only on ``seed`` and the scenario.
    """
    rng = np.random.default_rng([seed, zlib.crc32(f"{scenario.fault}|{scenario.feature}|{scenario.rate!r}".encode())])
    rows = np.arange(onset, len(stream))
    if scenario.rate < 1:
        rows = rows[rng.random(rows.size) < scenario.rate]
    old = [stream.records[i].get(target.name) for i in rows.tolist()]
    new = faulty_values(scenario.fault, target, old, rng)
    changed = [not same_value(a, b) for a, b in zip(old, new, strict=True)]
    return Injection(rows[np.asarray(changed, dtype=bool)], [v for v, c in zip(new, changed, strict=True) if c])


def _run_scenario(
    checkpoint: Replay,
    stream: Stream,
    target: Target,
    scenario: Scenario,
    onset: int,
    onset_ms: int,
    batch_size: int,
    seed: int,
    clean_keys: set[tuple[int, str, str | None]],
) -> ScenarioResult:
    expects = FAULTS[scenario.fault].expects
    injection = plan_injection(stream, target, scenario, onset, seed)
    result = ScenarioResult(scenario.feature, scenario.fault, scenario.rate, list(expects), len(injection.rows))
    replay = checkpoint.fork()
    others: dict[str, None] = {}
    n = len(stream)
    for start in range(onset, n + batch_size, batch_size):
        if start < n:
            stop = min(start + batch_size, n)
            decoded = stream.decoded[start:stop]
            for row, record in injection.records(stream, target, scenario.fault, start, stop).items():
                decoded[row - start] = stream.decode(record)
            replay.process(stream.batch(start, stop, decoded, offset=start))
            alerts = replay.close_due()
        else:
            alerts = replay.close_due(final=True)
        alerts = [a for a in alerts if a.window_end > onset_ms]
        matches = [a for a in alerts if a.feature == scenario.feature and a.kind in expects]
        others.update(
            (f"{a.kind}|{a.feature or ''}", None)
            for a in alerts
            if (a.window_start, a.kind, a.feature) not in clean_keys and not any(a is m for m in matches)
        )
        if matches:
            first = min(matches, key=lambda a: (a.window_start, expects.index(a.kind)))
            result.detected, result.kind = True, first.kind
            result.window_start, result.window_end = first.window_start, first.window_end
            result.delay_s = (first.window_end - onset_ms) / 1000
            result.delay_events = int(np.count_nonzero(stream.event_time_ms[onset:] < first.window_end))
            break
    result.other_alerts = list(others)
    return result

"""``stream-guard evaluate``: replay a clean stream with faults injected, measure detection and false alarms.

Users calibrate their ``[checks]`` and ``[drift]`` settings with it, on their own data:
for every fault class, feature and rate it says whether an alert fired, which one, and
how long after the fault began; and for every check, how often it fires on the clean
stream.

Method
------
1. Clean events of one model come from a file (Parquet, CSV, JSON lines) or, for the
   sample model, from :class:`~stream_guard.simulator.Simulator`. The first part
   (``learn_fraction``) learns the baseline profile, unless a profile is given; the
   rest is the replayed stream. Event times are the model's timestamp field when the
   events carry it, else synthetic at ``events_per_second``.
2. Each record passes the decoder's field checks (as a JSON payload would: a null in a
   non-nullable field becomes a ``type_mismatch``), then the stream is cut into batches
   of ``batch_size``, spread round-robin over ``partitions`` pseudo-partitions with
   consecutive offsets.
3. :class:`Replay` runs the worker's own :class:`~stream_guard.pipeline.Pipeline` (as
   :func:`~stream_guard.assembly.build_pipeline` builds it from the config) on each
   batch, applying the window counters to a :class:`~stream_guard.state.memory.MemoryState`,
   and after each batch closes the windows the watermark has passed into alerts.
4. A clean run gives the false alarms. Faults start at ``onset`` (a batch boundary);
   every scenario resumes from a copy of the clean run's state at the onset and stops
   at its first matching alert, or at the end of the stream.

Not replayed: slice metrics and label-based performance (no labels), dead letters (the
events are records, not bytes), and the incident lifecycle: counts are per-window
alerts, before cooldowns merge repeats into one page.

Detection
---------
A scenario is detected by the first alert, in window order, on the injected feature
whose kind is one of the fault's ``expects`` (the first listed wins within a window),
in a window that ends after the onset. Its delay runs from the onset's event time to
that window's end, in seconds of event time and in events; the alert is raised once the
watermark passes the window's end plus ``allowed_lateness_s``.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import sys
import time
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from stream_guard.alerts.model import Alert
from stream_guard.assembly import build_pipeline
from stream_guard.batch import EventBatch, to_epoch_ms
from stream_guard.decoding import Decoded, RecordChecker
from stream_guard.errors import StreamGuardError
from stream_guard.learning import learn_from_frame, profiled_fields
from stream_guard.model import ModelRuntime
from stream_guard.profile import BaselineProfile, CategoricalProfile, NumericProfile, read_reference
from stream_guard.schemas import FieldType
from stream_guard.settings import Config
from stream_guard.state.keys import ModelKeys
from stream_guard.state.memory import MemoryState

#: 2023-11-14T22:00:00Z, a whole hour: synthetic event times start here.
SYNTHETIC_START_MS = 1_699_999_200_000
DEFAULT_RATES = (0.01, 0.1, 1.0)
UNSEEN_VALUE = "sg-unseen-category"
#: Share the most frequent category reaches under ``mix_shift``.
MIX_SHARE = 0.8


class EvaluationError(StreamGuardError):
    """The evaluation cannot run as asked (bad input data, unknown feature or fault...)."""


# ----------------------------------------------------------------------------- faults


@dataclass(frozen=True)
class Fault:
    """A fault class: which fields it applies to and which alerts count as detecting it.

    ``applies_to`` is ``numeric`` (int/float features, not booleans), ``float`` (float
    and double features), ``categorical``, ``any`` (every feature) or ``score`` (the
    score field, else a numeric prediction field).
    """

    name: str
    applies_to: str
    expects: tuple[str, ...]
    description: str


FAULTS: dict[str, Fault] = {
    f.name: f
    for f in (
        Fault("scale_x150", "numeric", ("out_of_range", "data_drift", "online_drift"), "unit change: value x 150"),
        Fault("scale_x12", "numeric", ("out_of_range", "data_drift", "online_drift"), "unit change: value x 12"),
        Fault("nan", "float", ("nan",), "NaN instead of the value"),
        Fault("inf", "float", ("infinite",), "+inf instead of the value"),
        Fault("null", "any", ("null_rate", "type_mismatch"), "null instead of the value"),
        Fault("sentinel_-1", "numeric", ("sentinel_spike", "out_of_range"), "-1 default instead of the value"),
        Fault(
            "shift_mean_1.5x",
            "numeric",
            ("data_drift", "online_drift"),
            "drift: value + half the baseline mean (mean x 1.5)",
        ),
        Fault("unseen_category", "categorical", ("unseen_category", "data_drift", "type_mismatch"), "a new category"),
        Fault(
            "cardinality_explosion",
            "categorical",
            ("cardinality", "unseen_category", "data_drift", "type_mismatch"),
            "a unique id per event",
        ),
        Fault("mix_shift", "categorical", ("data_drift",), f"the top category takes {MIX_SHARE:.0%} of events"),
        Fault(
            "score_shift_+0.2",
            "score",
            ("prediction_drift", "online_drift"),
            "score + 0.2 (prediction recomputed)",
        ),
    )
}


@dataclass(frozen=True)
class Target:
    """A field faults are injected into: its schema type, its baseline, its role."""

    name: str
    field: FieldType
    baseline: NumericProfile | CategoricalProfile | None
    score: bool = False
    #: Prediction field recomputed from a shifted score ("" for none), at ``threshold``.
    prediction: str = ""
    prediction_field: FieldType | None = None
    threshold: float = 0.5


def targets(model: ModelRuntime, profile: BaselineProfile) -> dict[str, Target]:
    """The model's features, and its score field (else a numeric prediction field), by name."""
    out = {
        name: Target(name, model.fields[name], profile.features.get(name))
        for name in [*model.numeric_features, *model.categorical_features]
    }
    cfg, fields = model.config, model.fields
    score = cfg.score_field or cfg.prediction_field
    if not score or not fields[score].is_numeric or fields[score].base == "boolean":
        return out
    recompute = ""
    if cfg.score_field and cfg.prediction_field and cfg.metrics.task == "classification":
        recompute = cfg.prediction_field if fields[cfg.prediction_field].is_numeric else ""
    out[score] = Target(
        score,
        fields[score],
        profile.features.get(score),
        score=True,
        prediction=recompute,
        prediction_field=fields[recompute] if recompute else None,
        threshold=cfg.metrics.threshold,
    )
    return out


def applies(fault: Fault, target: Target) -> bool:
    """Whether ``fault`` can be injected into ``target`` and means something there."""
    if target.score or fault.applies_to == "score":
        return target.score and fault.applies_to == "score"
    spec, baseline = target.field, target.baseline
    if fault.applies_to == "any":
        return True
    if fault.applies_to == "float":
        return spec.base in ("float", "double")
    if fault.applies_to == "numeric":
        numeric = spec.is_numeric and spec.base != "boolean"
        if fault.name == "shift_mean_1.5x":
            return numeric and isinstance(baseline, NumericProfile) and baseline.mean is not None
        return numeric
    if spec.is_numeric:
        return False
    if fault.name == "mix_shift":
        # The top category must exist and have room to grow to MIX_SHARE.
        return (
            isinstance(baseline, CategoricalProfile)
            and bool(baseline.frequencies)
            and max(baseline.frequencies.values()) < MIX_SHARE
        )
    return True


def _typed(spec: FieldType | None, value: float) -> Any:
    """``value`` in the Python type a field of ``spec`` carries (int fields stay ints)."""
    base = spec.base if spec is not None else "double"
    if base == "boolean":
        return bool(value)
    return round(value) if base in ("int", "long") else float(value)


def faulty_values(fault: str, target: Target, values: Sequence[Any], rng: np.random.Generator) -> list[Any]:
    """``values`` of ``target`` as ``fault`` turns them (nulls stay null under scaling and shifts)."""
    n, spec = len(values), target.field
    if fault in ("scale_x150", "scale_x12"):
        factor = 150 if fault == "scale_x150" else 12
        return [None if v is None else _typed(spec, v * factor) for v in values]
    if fault == "nan":
        return [math.nan] * n
    if fault == "inf":
        return [math.inf] * n
    if fault == "null":
        return [None] * n
    if fault == "sentinel_-1":
        return [_typed(spec, -1)] * n
    if fault == "shift_mean_1.5x":
        baseline = target.baseline
        assert isinstance(baseline, NumericProfile) and baseline.mean is not None
        delta = 0.5 * abs(baseline.mean) or 0.5 * (baseline.std or 0.0) or 1.0
        return [None if v is None else _typed(spec, v + delta) for v in values]
    if fault == "unseen_category":
        return [UNSEEN_VALUE] * n
    if fault == "cardinality_explosion":
        return [f"sg-id-{int(x):012x}" for x in rng.integers(0, 1 << 48, n)]
    if fault == "mix_shift":
        baseline = target.baseline
        assert isinstance(baseline, CategoricalProfile)
        top, share = max(baseline.frequencies.items(), key=lambda item: item[1])
        # Moving a share q of the other rows to the top one gives it share + q * (1 - share).
        moved = rng.random(n) < (MIX_SHARE - share) / (1 - share)
        return [top if m else v for v, m in zip(values, moved.tolist(), strict=True)]
    if fault == "score_shift_+0.2":
        baseline = target.baseline
        capped = isinstance(baseline, NumericProfile) and baseline.max is not None and baseline.max <= 1.0
        return [None if v is None else _typed(spec, min(1.0, v + 0.2) if capped else v + 0.2) for v in values]
    raise EvaluationError(f"unknown fault {fault!r}; known: {', '.join(FAULTS)}")


def inject(
    fault: str, target: Target, records: Sequence[dict[str, Any]], rng: np.random.Generator
) -> list[dict[str, Any]]:
    """Copies of ``records`` with ``fault`` applied to ``target``; a shifted score moves its prediction."""
    new = faulty_values(fault, target, [r.get(target.name) for r in records], rng)
    return [_with_value(fault, target, record, value) for record, value in zip(records, new, strict=True)]


def _with_value(fault: str, target: Target, record: dict[str, Any], value: Any) -> dict[str, Any]:
    record = dict(record)
    record[target.name] = value
    if target.prediction and value is not None and fault == "score_shift_+0.2":
        record[target.prediction] = _typed(target.prediction_field, float(value >= target.threshold))
    return record


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


# ------------------------------------------------------------------------------ input


@dataclass
class Events:
    """Clean events of one model: a frame to learn from, and the same rows as records."""

    frame: pd.DataFrame
    records: list[dict[str, Any]]
    source: str


def simulated_events(n: int, *, seed: int, events_per_second: float) -> Events:
    """``n`` clean events of the sample fraud model, ``events_per_second`` apart in event time."""
    from stream_guard.simulator import Simulator

    records = Simulator(encoding="json", seed=seed).records(n, SYNTHETIC_START_MS, 1000.0 / events_per_second)
    # Arrow keeps None as null and NaN as NaN; a NumPy frame would turn an int column's nulls into NaN.
    frame = pa.Table.from_pylist(records).to_pandas(types_mapper=pd.ArrowDtype)
    return Events(frame, records, f"simulator seed {seed}")


def file_events(path: str | Path, model: ModelRuntime) -> Events:
    """The rows of a Parquet, CSV or JSON-lines file, in the types the model's schema declares.

    Columns that are no field of the schema (labels, row ids) are dropped. A timestamp
    written as ISO-8601 text is parsed, and an int field stored as whole floats (a
    column with missing cells, written by pandas) becomes ints again: the live stream
    carries ints there, and the decoder would report floats as type mismatches.
    """
    try:
        frame = read_reference(path)
    except (ValueError, FileNotFoundError) as exc:
        raise EvaluationError(str(exc)) from None
    frame = frame[[c for c in frame.columns if c in model.fields]].copy()
    stamp = model.config.timestamp_field
    if stamp in frame.columns and pd.api.types.is_string_dtype(frame[stamp].dtype):
        try:
            frame[stamp] = pd.to_datetime(frame[stamp], utc=True, format="ISO8601")
        except ValueError as exc:
            raise EvaluationError(f"{path}: {stamp} is neither a number nor an ISO-8601 time: {exc}") from None
    for name in frame.columns:
        column = frame[name]
        if model.fields[name].base in ("int", "long") and pd.api.types.is_float_dtype(column.dtype):
            values = column.dropna()
            if bool((values == values.round()).all()):
                frame[name] = column.astype(pd.ArrowDtype(pa.int64()))
    records = pa.Table.from_pandas(frame, preserve_index=False).to_pylist()
    return Events(frame, records, f"file:{path}")


def _epoch_ms(value: Any) -> int | None:
    stamp = to_epoch_ms(value)
    if stamp is None and isinstance(value, str):
        try:
            stamp = to_epoch_ms(datetime.fromisoformat(value))
        except ValueError:
            return None
    return stamp


def event_times(records: Sequence[dict[str, Any]], field_name: str, events_per_second: float) -> np.ndarray:
    """Event time of every record: its ``field_name``, else synthetic at ``events_per_second``.

    Records without a usable stamp among stamped ones take the previous record's stamp.
    """
    stamps = [_epoch_ms(r.get(field_name)) for r in records] if field_name else []
    if not any(s is not None for s in stamps):
        step = 1000.0 / events_per_second
        return (SYNTHETIC_START_MS + np.arange(len(records)) * step).astype(np.int64)
    last = next(s for s in stamps if s is not None)
    out = np.empty(len(records), dtype=np.int64)
    for i, stamp in enumerate(stamps):
        last = stamp if stamp is not None else last
        out[i] = last
    return out


# ----------------------------------------------------------------------------- stream


class Stream:
    """The replayed events as the worker receives them: decoded, timed, partitioned."""

    def __init__(
        self,
        model: ModelRuntime,
        records: list[dict[str, Any]],
        *,
        events_per_second: float = 100.0,
        partitions: int = 3,
    ) -> None:
        if not records:
            raise EvaluationError("no events to replay")
        self.model = model
        self.records = records
        self.checker = RecordChecker(model.reader_schema, report_unexpected=model.config.report_unexpected_fields)
        self.decoded = [self.decode(r) for r in records]
        self.event_time_ms = event_times(records, model.config.timestamp_field, events_per_second)
        id_field = model.config.event_id_field
        self.event_ids = [None if not id_field or r.get(id_field) is None else str(r[id_field]) for r in records]
        index = np.arange(len(records), dtype=np.int64)
        self.partitions, self.offsets = index % partitions, index // partitions
        self.topic = model.config.topics[0]

    def __len__(self) -> int:
        return len(self.records)

    def decode(self, record: dict[str, Any]) -> Decoded:
        """``record`` after the decoder's field checks, as a JSON payload of it would decode."""
        values, issues = self.checker.check(record)
        return Decoded(values, issues)

    def batch(self, start: int, stop: int, decoded: Sequence[Decoded] | None = None, offset: int = 0) -> EventBatch:
        """Rows ``[start, stop)`` as one micro-batch; ``decoded[i - offset]`` replaces row i's values."""
        n = stop - start
        return EventBatch(
            model=self.model.name,
            decoded=self.decoded[start:stop] if decoded is None else list(decoded[start - offset : stop - offset]),
            topics=[self.topic] * n,
            partitions=self.partitions[start:stop],
            offsets=self.offsets[start:stop],
            event_time_ms=self.event_time_ms[start:stop],
            event_ids=self.event_ids[start:stop],
            failed=np.zeros(n, dtype=bool),
        )


# ----------------------------------------------------------------------------- replay


class Replay:
    """The worker's per-batch and per-window stages for one model, on a :class:`MemoryState`.

    Runs the worker's own :class:`~stream_guard.pipeline.Pipeline`, without Kafka, Redis,
    dead letters, slice metrics or the incident lifecycle.
    The clock of the state is the event time: sources never go idle in a replay.
    """

    def __init__(self, config: Config, model: ModelRuntime, profile: BaselineProfile) -> None:
        self.config, self.model = config, model
        self.profiles = {model.name: profile}
        self.pipeline = build_pipeline(config, [model], self.profiles)
        w = config.worker
        self.keys = ModelKeys(config.redis.key_prefix, model.name)
        self.state = MemoryState(
            self.keys,
            window_ms=w.window_s * 1000,
            lateness_ms=w.allowed_lateness_s * 1000,
            retention_s=w.retention_s,
        )
        self.clock_ms = 0
        self.windows_closed = 0

    def process(self, batch: EventBatch) -> None:
        """Findings, window counters and their application, as :meth:`Worker.process` does."""
        updates, _findings = self.pipeline.batch_updates(self.model, batch, self.keys, {})
        self.clock_ms = max(self.clock_ms, int(batch.event_time_ms.max()))
        self.state.apply(updates, self.clock_ms)

    def close_due(self, *, final: bool = False) -> list[Alert]:
        """Alerts of the windows the watermark has passed (all open windows if ``final``)."""
        state = self.state
        raised: list[Alert] = []
        for start in state.open_windows() if final else state.due_windows(self.clock_ms):
            if not state.claim(start, 0):
                continue
            snapshot = state.snapshot(start)
            raised += self.pipeline.window_alerts(self.model, snapshot)
            state.finish(snapshot)
            self.windows_closed += 1
        return raised

    def fork(self) -> Replay:
        """An independent copy of the stages' state; the model and the profile are shared."""
        profile = self.profiles[self.model.name]
        # Pre-seeded memo: deepcopy returns these objects themselves instead of copies.
        memo = {id(self.config): self.config, id(self.model): self.model, id(profile): profile}
        return copy.deepcopy(self, memo)


# -------------------------------------------------------------------------- scenarios


@dataclass(frozen=True)
class Scenario:
    feature: str
    fault: str
    rate: float


@dataclass
class ScenarioResult:
    """What one scenario raised; delays are ``None`` when it went undetected."""

    feature: str
    fault: str
    rate: float
    expects: list[str]
    injected: int
    detected: bool = False
    kind: str | None = None
    window_start: int | None = None
    window_end: int | None = None
    delay_s: float | None = None
    delay_events: int | None = None
    #: ``kind|feature`` of the other alerts raised after the onset (up to the detection)
    #: that the clean run did not raise in the same window.
    other_alerts: list[str] = field(default_factory=list)


@dataclass
class CheckFalseAlarms:
    """Alerts of one (kind, feature) on the clean stream."""

    kind: str
    feature: str | None
    alerts: int
    per_100k_events: float
    per_window: float


@dataclass
class Evaluation:
    """Everything ``stream-guard evaluate`` reports."""

    model: str
    source: str
    profile_source: str
    learn_events: int
    events: int
    windows: int
    window_s: int
    allowed_lateness_s: int
    batch_size: int
    partitions: int
    onset_index: int
    onset_ms: int
    scenarios: list[ScenarioResult]
    false_alarms: list[CheckFalseAlarms]
    runtime_s: dict[str, float]

    @property
    def false_alarm_total(self) -> int:
        return sum(f.alerts for f in self.false_alarms)

    def summary(self) -> dict[str, Any]:
        delays = [s.delay_s for s in self.scenarios if s.delay_s is not None]
        events = [s.delay_events for s in self.scenarios if s.delay_events is not None]
        return {
            "detected": sum(s.detected for s in self.scenarios),
            "scenarios": len(self.scenarios),
            "median_delay_s": statistics.median(delays) if delays else None,
            "median_delay_events": statistics.median(events) if events else None,
            "false_alarms": self.false_alarm_total,
            "false_alarms_per_100k_events": _per_100k(self.false_alarm_total, self.events),
        }

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["summary"] = self.summary()
        return out


def _per_100k(count: int, events: int) -> float:
    return count * 100_000 / events if events else 0.0


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
    EvaluationError
        On an unknown feature or fault, a rate outside (0, 1], or when nothing applies.
    """
    available = targets(model, profile)
    unknown = [f for f in features or () if f not in available]
    if unknown:
        raise EvaluationError(f"unknown features {unknown}; the model's are: {', '.join(available)}")
    bad = [f for f in faults or () if f not in FAULTS]
    if bad:
        raise EvaluationError(f"unknown faults {bad}; known: {', '.join(FAULTS)}")
    if not rates or any(not 0 < r <= 1 for r in rates):
        raise EvaluationError(f"rates must be in (0, 1], got {list(rates)}")
    chosen = [available[f] for f in (features or available)]
    out = [
        Scenario(target.name, fault, rate)
        for target in chosen
        for fault in faults or FAULTS
        if applies(FAULTS[fault], target)
        for rate in rates
    ]
    if not out:
        raise EvaluationError("none of the faults applies to the features chosen")
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
        raise EvaluationError(f"the onset ({onset_fraction:.0%} of {n} events) leaves no event to inject into")
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
        false_alarms=_false_alarms(clean_alerts, n, clean.windows_closed),
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
            row: _with_value(fault, target, stream.records[row], value)
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
    changed = [not _same(a, b) for a, b in zip(old, new, strict=True)]
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


def _false_alarms(alerts: Sequence[Alert], events: int, windows: int) -> list[CheckFalseAlarms]:
    counts = Counter((a.kind, a.feature) for a in alerts)
    return [
        CheckFalseAlarms(kind, feature, count, _per_100k(count, events), count / windows if windows else 0.0)
        for (kind, feature), count in sorted(counts.items(), key=lambda item: (item[0][0], item[0][1] or ""))
    ]


# ----------------------------------------------------------------------------- report


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _rate(rate: float) -> str:
    return f"{rate * 100:g}%"


def _cell(result: ScenarioResult) -> str:
    if result.injected == 0:
        return "none injected"
    if not result.detected:
        return "missed"
    return f"{result.delay_s:g}s / {result.delay_events:,}"


def render(report: Evaluation) -> str:
    """The human-readable report: detection matrix, false alarms, summary."""
    lines = [
        f"model {report.model}: profile {report.profile_source!r}"
        + (f", learned from the first {report.learn_events:,} events" if report.learn_events else ""),
        f"replayed {report.events:,} clean events from {report.source} ({report.windows} windows of "
        f"{report.window_s}s, lateness {report.allowed_lateness_s}s; batches of {report.batch_size} over "
        f"{report.partitions} partitions); faults injected from event {report.onset_index:,} "
        f"({_iso(report.onset_ms)}) on",
        "",
        "detection delay: event time from the onset to the end of the first alerting window / events in between",
    ]
    rates = sorted({s.rate for s in report.scenarios})
    rows: dict[tuple[str, str], dict[float, ScenarioResult]] = {}
    for s in report.scenarios:
        rows.setdefault((s.feature, s.fault), {})[s.rate] = s
    width = max([len(f) for f, _ in rows] + [7])
    header = f"{'feature':<{width}}  {'fault':<21}  {'expects':<16}" + "".join(f"  {_rate(r):>16}" for r in rates)
    lines += [header + "  detected by", "-" * (len(header) + 13)]
    for (feature, fault), by_rate in rows.items():
        cells = "".join(f"  {_cell(by_rate[r]) if r in by_rate else '':>16}" for r in rates)
        kinds = [k for k in (by_rate[r].kind for r in rates if r in by_rate) if k]
        lines.append(
            f"{feature:<{width}}  {fault:<21}  {FAULTS[fault].expects[0]:<16}{cells}  {', '.join(dict.fromkeys(kinds))}"
        )
    lines += ["", f"false alarms on the clean stream ({report.events:,} events, {report.windows} windows):"]
    if report.false_alarms:
        lines.append(
            f"  {'check':<20}  {'feature':<{width}}  {'alerts':>6}  {'per 100k events':>15}  {'per window':>10}"
        )
        for f in report.false_alarms:
            lines.append(
                f"  {f.kind:<20}  {f.feature or '-':<{width}}  {f.alerts:>6}  {f.per_100k_events:>15.2f}  "
                f"{f.per_window:>10.3f}"
            )
    else:
        lines.append("  none")
    summary = report.summary()
    delay = (
        f"median delay {summary['median_delay_s']:g}s ({summary['median_delay_events']:,.0f} events)"
        if summary["median_delay_s"] is not None
        else "no delay to report"
    )
    runtime = report.runtime_s
    lines += [
        "",
        f"summary: {summary['detected']}/{summary['scenarios']} scenarios detected; {delay}; "
        f"{summary['false_alarms']} false alarms on the clean stream "
        f"({summary['false_alarms_per_100k_events']:.2f} per 100k events)",
        f"runtime: {runtime['total']:.1f}s (clean replay {runtime['clean']:.1f}s, "
        f"{summary['scenarios']} scenarios {runtime['scenarios']:.1f}s)",
    ]
    return "\n".join(lines)


# -------------------------------------------------------------------------------- CLI


def add_evaluate_command(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``stream-guard evaluate`` on the CLI's subparsers."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "evaluate",
        help="replay clean events with faults injected: detection delay per check, false alarms",
        description=(
            "Replay clean events of a model through the worker's checks, once clean and once per "
            "(fault, feature, rate) scenario, and report detection delays and false alarms. "
            "Needs neither Kafka nor Redis."
        ),
        epilog="fault classes (applies to: alerts that count as detection):\n"
        + "\n".join(
            f"  {f.name:<22} {f.description} ({f.applies_to}: {', '.join(f.expects)})" for f in FAULTS.values()
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-c", "--config", help="TOML config file (its [checks] and [drift] are evaluated)")
    parser.add_argument("-m", "--model", help="model name (default: the only configured model)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--from-file", metavar="PATH", help="clean events: Parquet, CSV or JSON lines")
    source.add_argument("--simulate", type=int, metavar="N", help="N simulated events of the sample fraud model")
    parser.add_argument("--profile", metavar="PATH", help="baseline profile to use (default: learn it from the data)")
    parser.add_argument(
        "--learn-fraction",
        metavar="SHARE",
        type=float,
        default=0.5,
        help="share of the events that learns the profile (default 0.5)",
    )
    parser.add_argument(
        "--events-per-second",
        metavar="RATE",
        type=float,
        default=100.0,
        help="synthetic event rate without timestamps (default 100)",
    )
    parser.add_argument("--features", metavar="LIST", help="comma-separated features to inject into (default: all)")
    parser.add_argument(
        "--faults", metavar="LIST", help=f"comma-separated fault classes (default: all of {', '.join(FAULTS)})"
    )
    parser.add_argument(
        "--rates",
        metavar="LIST",
        default=",".join(map(str, DEFAULT_RATES)),
        help="comma-separated shares of events hit (default 0.01,0.1,1.0)",
    )
    parser.add_argument(
        "--onset",
        metavar="SHARE",
        type=float,
        default=0.4,
        help="where faults start, as a share of the replay (default 0.4)",
    )
    parser.add_argument("--batch-size", metavar="N", type=int, default=500, help="events per micro-batch (default 500)")
    parser.add_argument(
        "--partitions", metavar="N", type=int, default=3, help="pseudo-partitions, round-robin (default 3)"
    )
    parser.add_argument(
        "--seed", metavar="N", type=int, default=0, help="seed of the simulator and the injectors (default 0)"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    parser.set_defaults(handler=run_evaluate)
    return parser


def _names(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def _pick(models: list[ModelRuntime], name: str | None) -> ModelRuntime:
    by_name = {m.name: m for m in models}
    if name is None:
        if len(models) != 1:
            raise EvaluationError(f"several models are configured; pick one with --model ({', '.join(by_name)})")
        return models[0]
    if name not in by_name:
        raise EvaluationError(f"unknown model {name!r} (configured: {', '.join(by_name)})")
    return by_name[name]


def run_evaluate(args: argparse.Namespace) -> int:
    """The ``evaluate`` command: returns the exit code (0 once the report is printed)."""
    from stream_guard.assembly import registry_client
    from stream_guard.model import build_models
    from stream_guard.settings import load_config

    config = load_config(args.config, require_profiles=False)  # evaluate may learn the profile itself
    model = _pick(build_models(config, registry_client(config)), args.model)
    try:
        rates = [float(r) for r in args.rates.split(",") if r.strip()]
    except ValueError:
        raise EvaluationError(f"--rates: expected comma-separated numbers, got {args.rates!r}") from None
    for name, value, ok in (
        ("--learn-fraction", args.learn_fraction, 0 < args.learn_fraction < 1),
        ("--onset", args.onset, 0 <= args.onset < 1),
        ("--events-per-second", args.events_per_second, args.events_per_second > 0),
        ("--batch-size", args.batch_size, args.batch_size > 0),
        ("--partitions", args.partitions, args.partitions > 0),
        ("--simulate", args.simulate, args.simulate is None or args.simulate > 1),
    ):
        if not ok:
            raise EvaluationError(f"{name}: {value} is out of range")
    if args.simulate is not None:
        events = simulated_events(args.simulate, seed=args.seed, events_per_second=args.events_per_second)
    else:
        events = file_events(args.from_file, model)
    needed = [f for f in [*profiled_fields(model)[0], *profiled_fields(model)[1]] if f not in events.frame.columns]
    if needed:
        raise EvaluationError(f"the events ({events.source}) lack the model's fields {needed}")
    if args.profile:
        profile = BaselineProfile.load(args.profile)
        if profile.model != model.name:
            raise EvaluationError(f"{args.profile} is a profile of model {profile.model!r}, not {model.name!r}")
        learn, replayed = 0, events.records
    else:
        learn = int(len(events.records) * args.learn_fraction)
        source = f"{events.source}, first {learn} rows"
        profile = learn_from_frame(model, events.frame.iloc[:learn].copy(), source)
        replayed = events.records[learn:]
    model.profile = profile
    stream = Stream(model, replayed, events_per_second=args.events_per_second, partitions=args.partitions)
    scenarios = plan_scenarios(model, profile, features=_names(args.features), faults=_names(args.faults), rates=rates)
    quiet = args.quiet or args.json

    def progress(text: str) -> None:
        print(f"\r\033[K{text}", end="", file=sys.stderr, flush=True)

    report = evaluate(
        config,
        model,
        profile,
        stream,
        scenarios,
        onset_fraction=args.onset,
        batch_size=args.batch_size,
        seed=args.seed,
        source=events.source,
        learn_events=learn,
        progress=None if quiet or not sys.stderr.isatty() else progress,
    )
    if not quiet and sys.stderr.isatty():
        print("\r\033[K", end="", file=sys.stderr, flush=True)
    print(json.dumps(report.to_dict(), indent=2) if args.json else render(report))
    return 0

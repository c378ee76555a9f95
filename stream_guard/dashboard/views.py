"""What the dashboard shows of one model, read from Redis: metric series, drift per window, incidents.

* Slice metrics: the bucket hashes, through :class:`~stream_guard.metrics.query.MetricsReader`
  (``series`` per bucket for the plots, ``rollup`` over the range for the worst slices).
* Drift: the statistics are recomputed per closed or open window from the histogram
  counters the worker keeps in the window hashes (``h|<f>|<bin>``, ``c|<f>|<category>``)
  against the model's baseline profile, with the functions the worker judges windows with:
  PSI for numeric fields, Jensen-Shannon distance for categorical ones, each against its
  configured threshold. Every window kept in Redis (``worker.retention_s``) gets a point,
  not only those that raised an alert.
* Incidents: the open-incident set and each incident's hash.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stream_guard.drift.stats import evaluate_categorical_drift, evaluate_numeric_drift
from stream_guard.drift.window import CATEGORY_PREFIX, HISTOGRAM_PREFIX, PROFILE_PREFIX, profile_tag
from stream_guard.metrics.estimate import estimate_slice
from stream_guard.metrics.query import HIGHER_IS_BETTER, MetricsReader, RankedSlice, SliceMetrics
from stream_guard.profile import BaselineProfile, CategoricalProfile, NumericProfile
from stream_guard.settings import Config
from stream_guard.settings.drift import DriftSettings
from stream_guard.state.client import RedisClient, pipeline, scan_model_keys
from stream_guard.state.keys import ModelKeys

#: Slices drawn in the per-slice performance plot besides all traffic.
SLICES_PLOTTED = 4


@dataclass(frozen=True)
class DriftSeries:
    """One field's drift statistic per window, and the threshold it is judged against."""

    feature: str
    statistic: str
    threshold: float
    points: list[tuple[int, float]]


@dataclass(frozen=True)
class Incident:
    incident_id: str
    kind: str
    feature: str | None
    slice: str
    severity: str
    opened_start: int
    last_seen_end: int
    windows: int
    events: int
    #: The other findings of this cause (``kind feature@slice``), from the incident's members.
    evidence: tuple[str, ...] = ()


@dataclass
class ModelView:
    """Everything of one model over ``[start_ms, end_ms)`` (event time)."""

    model: str
    start_ms: int
    end_ms: int
    bucket_ms: int
    task: str
    metric: str
    events: int
    #: All traffic, per bucket.
    overall: list[tuple[int, SliceMetrics]] = field(default_factory=list)
    #: The plotted slices, per bucket.
    slices: dict[str, list[tuple[int, SliceMetrics]]] = field(default_factory=dict)
    worst: list[RankedSlice] = field(default_factory=list)
    overall_value: float | None = None
    slice_count: int = 0
    drift: list[DriftSeries] = field(default_factory=list)
    incidents: list[Incident] = field(default_factory=list)
    profile_missing: bool = False
    #: All traffic's label-free estimated accuracy per bucket (empty without a calibration in the profile).
    estimated: list[tuple[int, float | None]] = field(default_factory=list)


def default_metric(task: str) -> str:
    """The label-based metric ranked and plotted per slice: recall (classification) or MAE (regression)."""
    return "mae" if task == "regression" else "recall"


def read_model_view(
    config: Config,
    model: str,
    client: RedisClient,
    *,
    window_ms: int,
    metric: str | None = None,
    min_support: int = 100,
    end_ms: int | None = None,
) -> ModelView:
    """The view of ``model`` over the ``window_ms`` before ``end_ms`` (default: the end of its newest bucket)."""
    settings = config.model(model)
    keys = ModelKeys(config.redis.key_prefix, model)
    reader = MetricsReader(client, keys, settings.metrics.bucket_s * 1000)
    if end_ms is None:
        buckets = reader.buckets()
        end_ms = buckets[-1] + reader.bucket_ms if buckets else latest_window_end(client, keys, config) or 0
    start_ms = end_ms - window_ms
    rollup = reader.rollup(start_ms, end_ms)
    task = rollup.task
    metric = metric or default_metric(task)
    worst = rollup.worst_slices(metric, min_support=min_support, limit=10)
    plotted = [r.slice for r in worst[:SLICES_PLOTTED]]
    if not plotted:
        plotted = [m.slice for m in sorted(rollup.select(), key=lambda m: -m.events)[:SLICES_PLOTTED]]
    view = ModelView(
        model=model,
        start_ms=start_ms,
        end_ms=end_ms,
        bucket_ms=reader.bucket_ms,
        task=task,
        metric=metric,
        events=rollup.overall.events,
        overall=_series(reader, start_ms, end_ms, "*"),
        slices={name: _series(reader, start_ms, end_ms, name) for name in plotted},
        worst=worst,
        overall_value=rollup.overall.value(metric),
        slice_count=len(rollup.select()),
        incidents=read_incidents(client, keys),
    )
    profile = _load_profile(config, model)
    if profile is None:
        view.profile_missing = True
    else:
        view.drift = read_drift(client, keys, profile, config.drift, start_ms, end_ms)
        estimation = profile.performance.estimation if profile.performance is not None else None
        if estimation is not None and task == "classification":
            calibration = estimation.calibration
            view.estimated = [(t, estimate_slice(s, calibration).value("accuracy")) for t, s in view.overall]
    return view


def _series(reader: MetricsReader, start_ms: int, end_ms: int, slice_: str) -> list[tuple[int, SliceMetrics]]:
    return [(t, SliceMetrics(slice_, counters)) for t, counters in reader.series(start_ms, end_ms, slice_)]


def _load_profile(config: Config, model: str) -> BaselineProfile | None:
    path = config.model(model).profile
    resolved = config.resolve_path(path) if path else None
    if resolved is None or not resolved.is_file():
        return None
    return BaselineProfile.load(resolved)


def window_starts(client: RedisClient, keys: ModelKeys) -> list[int]:
    """Starts of every window hash kept in Redis (open or closed), oldest first."""
    prefix = keys.window(0)[:-1]
    pattern = re.sub(r"([*?\[\]\\])", r"\\\1", prefix) + "*"
    starts = set()
    for key in scan_model_keys(client, keys, pattern):
        tail = str(key)[len(prefix) :]
        if tail.isdigit():
            starts.add(int(tail))
    return sorted(starts)


def latest_window_end(client: RedisClient, keys: ModelKeys, config: Config) -> int | None:
    starts = window_starts(client, keys)
    return starts[-1] + config.worker.window_s * 1000 if starts else None


def window_counters(fields: dict[str, str]) -> dict[str, dict[str, int]]:
    """``feature -> slot -> count`` of a window hash's histogram (``h|``) and category (``c|``) counters."""
    out: dict[str, dict[str, int]] = {}
    for name, value in fields.items():
        if name.startswith((HISTOGRAM_PREFIX, CATEGORY_PREFIX)):
            _, feature, slot = name.split("|", 2)
            out.setdefault(feature, {})[slot] = int(float(value))
    return out


def window_drift(
    profile: BaselineProfile, settings: DriftSettings, fields: dict[str, str]
) -> dict[str, tuple[str, float, float]]:
    """``feature -> (statistic, value, threshold)`` of one window hash against ``profile``.

    Numeric fields get their PSI, categorical ones their JS distance; fields with fewer
    than ``min_count`` values, disabled in the settings, or (numeric) counted under
    another profile's bins are left out, as the worker leaves them unjudged.
    """
    tags = {name[len(PROFILE_PREFIX) :] for name in fields if name.startswith(PROFILE_PREFIX)}
    bins_match = not tags or tags == {profile_tag(profile)}
    out: dict[str, tuple[str, float, float]] = {}
    for feature, counts in sorted(window_counters(fields).items()):
        reference = profile.features.get(feature)
        own = settings.feature(feature)
        if reference is None or not own.enabled:
            continue
        if isinstance(reference, NumericProfile):
            if not bins_match:
                continue
            freqs = np.asarray(reference.bin_freqs, dtype=np.float64)
            current = np.zeros(freqs.size, dtype=np.float64)
            for slot, count in counts.items():
                if slot.isdigit() and int(slot) < freqs.size:
                    current[int(slot)] += count
            verdicts = evaluate_numeric_drift(
                freqs,
                current,
                psi_threshold=own.psi_threshold,
                js_threshold=own.js_threshold,
                min_count=own.min_count,
                ks_alpha=own.alpha,
            )
            wanted = "psi"
        elif isinstance(reference, CategoricalProfile):
            verdicts = evaluate_categorical_drift(
                reference.frequencies,
                reference.other_rate,
                counts,
                js_threshold=own.js_threshold,
                alpha=own.alpha,
                min_count=own.min_count,
            )
            wanted = "js_distance"
        else:
            continue
        for verdict in verdicts:
            if verdict.statistic == wanted:
                out[feature] = (wanted, float(verdict.value), float(verdict.threshold))
    return out


def read_drift(
    client: RedisClient, keys: ModelKeys, profile: BaselineProfile, settings: DriftSettings, start_ms: int, end_ms: int
) -> list[DriftSeries]:
    """Each monitored field's drift statistic per window starting in ``[start_ms, end_ms)``."""
    starts = [t for t in window_starts(client, keys) if start_ms <= t < end_ms]
    pipe = pipeline(client)
    for start in starts:
        pipe.hgetall(keys.window(start))
    hashes: list[dict[str, str]] = pipe.execute() if starts else []
    points: dict[str, list[tuple[int, float]]] = {}
    judged: dict[str, tuple[str, float]] = {}
    for start, fields in zip(starts, hashes, strict=True):
        for feature, (statistic, value, threshold) in window_drift(profile, settings, fields).items():
            points.setdefault(feature, []).append((start, value))
            judged[feature] = (statistic, threshold)
    return [DriftSeries(f, judged[f][0], judged[f][1], pts) for f, pts in sorted(points.items())]


def read_incidents(client: RedisClient, keys: ModelKeys) -> list[Incident]:
    """Open incidents, the most recently seen first."""
    ids = [str(i) for i in client.zrevrange(keys.incidents, 0, 99)]
    pipe = pipeline(client)
    for incident_id in ids:
        pipe.hgetall(keys.incident(incident_id))
    out = []
    for incident_id, fields in zip(ids, pipe.execute() if ids else [], strict=True):
        if not fields:
            continue
        summary: dict[str, Any] = json.loads(fields.get("alert", "{}"))
        out.append(
            Incident(
                incident_id=incident_id,
                kind=str(summary.get("kind", "?")),
                feature=summary.get("feature"),
                slice=str(summary.get("slice", "")),
                severity=str(summary.get("severity", "?")),
                opened_start=int(fields.get("opened_start", 0)),
                last_seen_end=int(fields.get("last_seen_end", 0)),
                windows=int(fields.get("windows", 0)),
                events=int(fields.get("events", 0)),
                evidence=_evidence_of(fields, summary),
            )
        )
    return out


def _evidence_of(fields: dict[str, str], summary: dict[str, Any]) -> tuple[str, ...]:
    """The incident's member findings (``m|<id>`` = ``kind|feature|slice``) other than its primary's."""
    primary = f"{summary.get('kind')}|{summary.get('feature') or ''}|{summary.get('slice', '*')}"
    found = []
    for name, descriptor in sorted(fields.items()):
        if not name.startswith("m|") or descriptor == primary:
            continue
        kind, feature, where = [*descriptor.split("|"), "", ""][:3]
        found.append(f"{kind} {feature}".rstrip() + (f"@{where}" if where not in ("", "*") else ""))
    return tuple(found)


def is_better_higher(metric: str) -> bool:
    return metric in HIGHER_IS_BETTER

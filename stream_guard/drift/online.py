"""Online drift detection in the worker: one River detector per (feature, partition).

:class:`OnlineDrift` is a worker checker (``findings`` only). For every batch it feeds
each monitored numeric series of each source partition, in offset order, to that
series' detector, and turns detections into ``online_drift`` row findings; those
become alerts through ``finding_alerts`` like any finding.

What the detector sees
----------------------
Values are clipped to the baseline's 0.1 % and 99.9 % quantiles and scaled to
``[0, 1]`` by that range. ADWIN's bound assumes values in ``[0, 1]``: fed the raw
log-normal amounts of the simulator it raised 15 to 28 false alarms per 100k events
of a stable stream; scaled, none in 400k events of any feature. Mean shifts survive
the clipping.

Seeding
-------
A key's detector is seeded on first sight with ``seed_size`` values drawn from the
baseline, so that drift present from the first live event is a change against the
reference instead of the detector's starting point. A feature whose baseline top
values cover 99 % of its finite values (a flag, a small count) is drawn from those
values, exactly; otherwise from :func:`~stream_guard.drift.detectors.reference_sample`,
shifted to the baseline mean: interpolating between quantiles overestimates the mean
of a skewed feature (by 10 % for log-normal amounts), which ADWIN would soon flag.

Redelivery
----------
The worker retries a failed batch; rows of a partition at or below the last offset fed
are not fed again (it would corrupt the detector's window). Detections made on them are
remembered and reported again, so a retried batch yields the same findings.
"""

from __future__ import annotations

import math
import pickle
import zlib
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import river

from stream_guard.batch import EventBatch
from stream_guard.drift.detectors import OnlineDriftMonitor, reference_sample
from stream_guard.drift.window import numeric_column, profile_tag
from stream_guard.errors import BaselineSampleUnavailableError, DriftCheckpointUnusableError
from stream_guard.findings import RowFindings
from stream_guard.model import ModelRuntime
from stream_guard.profile import BaselineProfile, NumericProfile
from stream_guard.settings.drift import DriftSettings
from stream_guard.settings.kinds import ONLINE_DRIFT

__all__ = ["ONLINE_DRIFT", "OnlineDrift", "baseline_seed"]

#: Top values covering this share of a feature's finite values make it discrete for seeding.
DISCRETE_COVERAGE = 0.99
#: Detections remembered per partition, to report them again on a redelivered batch.
MAX_REMEMBERED = 1024

_CHECKPOINT_FORMAT = 1


def baseline_seed(feature: NumericProfile, n: int, rng: np.random.Generator) -> np.ndarray:
    """Draw ``n`` values resembling the baseline of a numeric feature (see the module docstring).

    Raises
    ------
    BaselineSampleUnavailableError
        (a ``ValueError``) If the profile has no finite values to draw from, or no
        quantiles nor histogram to draw them with.
    """
    if feature.mean is None:
        raise BaselineSampleUnavailableError(f"the baseline of {feature.name!r} has no finite values")
    finite_share = 1.0 - feature.null_rate - feature.nan_rate - feature.inf_rate
    shares = np.array([r for _, r in feature.top_values], dtype=np.float64)
    if finite_share > 0 and shares.sum() >= DISCRETE_COVERAGE * finite_share:
        values = np.array([v for v, _ in feature.top_values], dtype=np.float64)
        return values[rng.choice(values.size, size=n, p=shares / shares.sum())]
    sample = reference_sample(feature.bin_edges, feature.bin_freqs, feature.quantiles, n, rng)
    return sample + (feature.mean - sample.mean()) if n else sample


@dataclass(frozen=True)
class _Series:
    """A numeric feature as fed to the detectors: clipped to ``[lo, lo + span]``, scaled to [0, 1]."""

    name: str
    feature: NumericProfile
    lo: float
    span: float

    @classmethod
    def of(cls, name: str, feature: NumericProfile) -> _Series:
        assert feature.min is not None and feature.max is not None
        lo, hi = feature.quantiles.get("0.001", feature.min), feature.quantiles.get("0.999", feature.max)
        if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
            lo, hi = feature.min, feature.max
        # A constant baseline has no spread to scale by: any other value is then 0 or 1.
        span = hi - lo if hi > lo else max(abs(lo), 1.0)
        return cls(name, feature, float(lo), float(span))

    def scale(self, x: np.ndarray) -> np.ndarray:
        """Values as fed to the detector; NaN and +-inf become NaN (and are skipped).

        Non-finite values are the ``nan``/``infinite`` checks' business: clipped, an
        infinity would look like a shift of the distribution.
        """
        scaled = np.clip((x - self.lo) / self.span, 0.0, 1.0)
        scaled[~np.isfinite(x)] = np.nan
        return scaled

    def unscale(self, u: float) -> float:
        return self.lo + u * self.span


@dataclass(frozen=True)
class _Detection:
    feature: str
    value: float
    observed: str
    expected: str


def _source_name(partition: Any) -> str:
    """``topic:partition`` of a string or of a ``TopicPartition``-like object."""
    if isinstance(partition, str):
        return partition
    return f"{partition.topic}:{partition.partition}"


def _sources(batch: EventBatch) -> tuple[np.ndarray, np.ndarray]:
    """The sorted ``topic:partition`` names of a batch's rows, and the index of each row's."""
    index: dict[tuple[str, int], int] = {}
    pairs = zip(batch.topics, batch.partitions.tolist(), strict=True)
    first = np.fromiter((index.setdefault(pair, len(index)) for pair in pairs), dtype=np.int64, count=len(batch))
    names = np.array([f"{t}:{p}" for t, p in index], dtype=str)
    order = np.argsort(names, kind="stable")
    rank = np.empty(order.size, dtype=np.int64)
    rank[order] = np.arange(order.size)
    return names[order], rank[first]


def _detectors(monitor: OnlineDriftMonitor) -> dict[Hashable, Any]:
    # OnlineDriftMonitor exposes neither a key's detector nor a way to drop keys; this is
    # the one place that reaches into it.
    return monitor._detectors


class OnlineDrift:
    """River drift detectors per (feature, partition), as a worker checker.

    Parameters
    ----------
    profiles
        Baseline profiles by model name; a model without one is not monitored. The
        mapping is read on every batch, not copied: replacing a model's entry (a
        reloaded profile) drops the model's detectors, which are seeded again from the
        new baseline on their next values (their scaling and reference come from it).
    settings
        Detector kind and parameters, the monitored features (``online_features``,
        default: the model's numeric features plus its score field; a listed feature
        that a model's profile lacks, or has as categorical, is skipped for that
        model), seeding.
    """

    def __init__(self, profiles: Mapping[str, BaselineProfile], settings: DriftSettings | None = None) -> None:
        self._profiles = profiles
        self._settings = settings or DriftSettings()
        self._loaded: dict[str, BaselineProfile] = {}
        self._series: dict[str, dict[str, _Series]] = {}
        self._monitors: dict[str, OnlineDriftMonitor] = {}
        self._selected: dict[str, list[str]] = {}
        self._seeded: dict[str, set[Hashable]] = {}
        self._fed: dict[tuple[str, str], int] = {}
        self._recent: dict[tuple[str, str], dict[int, list[_Detection]]] = {}

    def _series_of(self, model: str) -> dict[str, _Series]:
        """The numeric series of ``model``'s current profile (empty without a profile)."""
        profile = self._profiles.get(model)
        if profile is not self._loaded.get(model):
            for state in (self._monitors, self._seeded, self._selected, self._series, self._loaded):
                state.pop(model, None)
            if profile is not None:
                self._loaded[model] = profile
                self._series[model] = {
                    name: _Series.of(name, f)
                    for name, f in profile.features.items()
                    if isinstance(f, NumericProfile) and f.mean is not None and self._settings.feature(name).enabled
                }
        return self._series.get(model, {})

    # -- hook ------------------------------------------------------------------------

    def findings(self, model: ModelRuntime, batch: EventBatch) -> list[RowFindings]:
        """Feed the batch to the detectors; one finding per (feature, partition) that detected.

        Each finding lists the rows at which the detector signalled a change and their
        values. Rows already fed (a redelivered batch) only repeat earlier detections.
        """
        series = self._series_of(model.name)
        if not series or len(batch) == 0:
            return []
        names = self._selected.get(model.name)
        if names is None:
            names = self._selected[model.name] = self._select(model)
        if not names:
            return []
        monitor = self._monitor(model.name)
        valid = ~batch.failed if len(batch.failed) == len(batch) else np.ones(len(batch), dtype=bool)
        raw = {name: np.where(valid, numeric_column(batch, name), np.nan) for name in names}
        scaled = {name: series[name].scale(raw[name]) for name in names}

        source_names, source_of_row = _sources(batch)
        order = np.lexsort((batch.offsets, source_of_row))
        bounds = np.searchsorted(source_of_row[order], np.arange(source_names.size + 1))
        out: list[RowFindings] = []
        for s, source in enumerate(source_names.tolist()):
            rows = order[bounds[s] : bounds[s + 1]]
            offsets = batch.offsets[rows]
            state = (model.name, source)
            replayed = offsets <= self._fed.get(state, -1)
            if replayed.any():
                out += self._repeat(state, rows[replayed], offsets[replayed])
                rows, offsets = rows[~replayed], offsets[~replayed]
            if rows.size == 0:
                continue
            for name in names:
                key = (name, source)
                if key not in self._seeded[model.name]:
                    self._seed(model.name, monitor, key, series[name])
                positions = monitor.update_batch(key, scaled[name][rows])
                if positions:
                    out.append(self._finding(monitor, key, series[name], rows, positions, raw[name], offsets, state))
            self._fed[state] = int(offsets.max())
        return out

    # -- partitions and checkpoints ----------------------------------------------------

    def forget(self, partitions: Iterable[Any]) -> None:
        """Drop all state of these partitions (``"topic:partition"`` strings or TopicPartitions).

        Call it when partitions are revoked or lost: their next owner starts from the
        baseline (or a checkpoint), and if they come back here they are seeded afresh.
        """
        gone = {_source_name(p) for p in partitions}
        for model, monitor in self._monitors.items():
            detectors = _detectors(monitor)
            for key in [k for k in detectors if isinstance(k, tuple) and k[1] in gone]:
                del detectors[key]
                self._seeded[model].discard(key)
        for state in [s for s in self._fed if s[1] in gone]:
            del self._fed[state]
        for state in [s for s in self._recent if s[1] in gone]:
            del self._recent[state]

    def export_partition(self, model: str, source: str) -> dict[str, Any] | None:
        """The state of ``model``'s detectors of partition ``source``, for its checkpoint.

        None when the partition has fed nothing yet. The detectors themselves are River
        objects (pickled by :mod:`stream_guard.drift.checkpoint`); the rest is plain data.
        """
        state = (model, source)
        monitor = self._monitors.get(model)
        profile = self._loaded.get(model)
        if monitor is None or profile is None or state not in self._fed:
            return None
        detectors = _detectors(monitor)
        return {
            "river": river.__version__,
            "kind": self._settings.detector.kind,
            "params": dict(self._settings.detector.params),
            "profile": profile_tag(profile),
            "detectors": {k[0]: d for k, d in detectors.items() if isinstance(k, tuple) and k[1] == source},
            "seeded": sorted(k[0] for k in self._seeded.get(model, ()) if isinstance(k, tuple) and k[1] == source),
            "recent": {
                offset: [(d.feature, d.value, d.observed, d.expected) for d in found]
                for offset, found in self._recent.get(state, {}).items()
            },
        }

    def restore_partition(self, model: str, source: str, offset: int, state: Mapping[str, Any]) -> None:
        """Replace the partition's detectors by ``state`` (:meth:`export_partition`), fed up to ``offset``.

        Raises
        ------
        DriftCheckpointUnusableError
            (a ``ValueError``) If ``state`` was written with another River version, detector
            or baseline profile, or is malformed; the partition's state is then left as it was.
        """
        series = self._series_of(model)
        profile = self._loaded.get(model)
        if profile is None or not series:
            return  # not monitored (any more): nothing to restore
        spec = self._settings.detector
        try:
            written = (state["river"], state["kind"], dict(state["params"]), state["profile"])
            detectors = dict(state["detectors"])
            seeded = {(str(name), source) for name in state["seeded"]}
            recent = {
                int(o): [_Detection(str(f), float(v), str(obs), str(exp)) for f, v, obs, exp in found]
                for o, found in dict(state["recent"]).items()
            }
        except (KeyError, TypeError, ValueError) as exc:
            raise DriftCheckpointUnusableError(f"malformed detector state: {type(exc).__name__}: {exc}") from exc
        expected = (river.__version__, spec.kind, dict(spec.params), profile_tag(profile))
        if written != expected:
            names = ("river version", "detector", "detector parameters", "baseline profile")
            differ = [name for name, a, b in zip(names, written, expected, strict=True) if a != b]
            raise DriftCheckpointUnusableError(f"checkpoint written with another {', '.join(differ)}")
        build = type(spec.build())
        if not all(isinstance(d, build) for d in detectors.values()):
            raise DriftCheckpointUnusableError(f"checkpoint holds detectors other than {spec.kind}")
        self.forget([source])
        monitor = self._monitor(model)
        for name, detector in detectors.items():
            _detectors(monitor)[(str(name), source)] = detector
        self._seeded[model].update(seeded)
        self._fed[(model, source)] = int(offset)
        if recent:
            self._recent[(model, source)] = recent

    def to_bytes(self) -> bytes:
        """Pickle every detector's state, the offsets fed and recent detections.

        Only loadable with the same River version, detector settings and profiles.
        """
        payload = {
            "format": _CHECKPOINT_FORMAT,
            "kind": self._settings.detector.kind,
            "params": dict(self._settings.detector.params),
            "profiles": {m: profile_tag(p) for m, p in self._loaded.items()},
            "monitors": {m: monitor.to_bytes() for m, monitor in self._monitors.items()},
            "fed": dict(self._fed),
            "recent": {k: dict(v) for k, v in self._recent.items()},
        }
        return pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)

    @classmethod
    def from_bytes(
        cls, data: bytes, profiles: Mapping[str, BaselineProfile], settings: DriftSettings | None = None
    ) -> OnlineDrift:
        """Restore from :meth:`to_bytes`; it continues exactly where that one stopped.

        Unpickling runs code chosen by whoever wrote ``data``: load only checkpoints
        from the service's own trusted store.

        Raises
        ------
        DriftCheckpointUnusableError
            (a ``ValueError``) If ``data`` is no such checkpoint, or was written with another River version,
            detector or baseline profile (then start without it: keys are reseeded).
        """
        try:
            payload = pickle.loads(data)
        except Exception as exc:
            raise DriftCheckpointUnusableError("data is not an OnlineDrift checkpoint") from exc
        if not isinstance(payload, dict) or payload.get("format") != _CHECKPOINT_FORMAT:
            raise DriftCheckpointUnusableError("data is not an OnlineDrift checkpoint (unknown format)")
        drift = cls(profiles, settings)
        spec = drift._settings.detector
        if (payload["kind"], payload["params"]) != (spec.kind, dict(spec.params)):
            raise DriftCheckpointUnusableError(
                f"checkpoint was written for detector {payload['kind']} {payload['params']}, "
                f"the settings ask for {spec.kind} {dict(spec.params)}"
            )
        for model, monitor_bytes in payload["monitors"].items():
            profile = drift._profiles.get(model)
            if profile is None:
                continue
            if payload["profiles"].get(model) != profile_tag(profile):
                raise DriftCheckpointUnusableError(
                    f"checkpoint was written with another baseline profile of model {model!r}"
                )
            drift._series_of(model)
            monitor = OnlineDriftMonitor.from_bytes(monitor_bytes)
            drift._monitors[model] = monitor
            drift._seeded[model] = set(monitor.keys())
        drift._fed = {s: o for s, o in payload["fed"].items() if s[0] in drift._monitors}
        drift._recent = {s: d for s, d in payload["recent"].items() if s[0] in drift._monitors}
        return drift

    # -- internals -------------------------------------------------------------------

    def _select(self, model: ModelRuntime) -> list[str]:
        series = self._series[model.name]
        if self._settings.online_features is not None:
            names = list(self._settings.online_features)
        else:
            names = [*model.numeric_features, model.config.score_field]
        return list(dict.fromkeys(n for n in names if n and n in series))

    def _monitor(self, model: str) -> OnlineDriftMonitor:
        monitor = self._monitors.get(model)
        if monitor is None:
            monitor = self._monitors[model] = OnlineDriftMonitor(self._settings.detector)
            self._seeded[model] = set()
        return monitor

    def _seed(self, model: str, monitor: OnlineDriftMonitor, key: tuple[str, str], series: _Series) -> None:
        n = self._settings.seed_size
        if n:
            # Reproducible per key, whichever worker owns the partition.
            mix = zlib.crc32(f"{model}|{key[0]}|{key[1]}".encode())
            rng = np.random.default_rng([self._settings.seed, mix])
            try:
                values = baseline_seed(series.feature, n, rng)
            except BaselineSampleUnavailableError:
                # A hand-edited profile may have neither quantiles nor a usable histogram:
                # the detector then takes the live stream as its reference.
                values = np.empty(0)
            monitor.seed(key, series.scale(values))
        self._seeded[model].add(key)

    def _finding(
        self,
        monitor: OnlineDriftMonitor,
        key: tuple[str, str],
        series: _Series,
        rows: np.ndarray,
        positions: list[int],
        raw: np.ndarray,
        offsets: np.ndarray,
        state: tuple[str, str],
    ) -> RowFindings:
        name, source = key
        detected = rows[positions]
        values = raw[detected].tolist()
        estimation = getattr(_detectors(monitor)[key], "estimation", None)
        if isinstance(estimation, float) and math.isfinite(estimation):
            window_mean = series.unscale(estimation)  # ADWIN's window after its cut: the new regime
        else:
            after = raw[rows[positions[0] :]]
            window_mean = float(np.nanmean(after)) if np.isfinite(after).any() else math.nan
        reference = series.feature.mean
        observed = (
            f"{self._settings.detector.kind} detected a change on {source} "
            f"(window mean {window_mean:.4g} vs reference mean {reference:.4g})"
        )
        median = series.feature.quantiles.get("0.5")
        expected = f"values as in the baseline (mean {reference:.4g}" + (
            f", median {median:.4g})" if median is not None else ")"
        )
        remembered = self._recent.setdefault(state, {})
        for offset, value in zip(offsets[positions].tolist(), values, strict=True):
            remembered.setdefault(offset, []).append(_Detection(name, value, observed, expected))
        while len(remembered) > MAX_REMEMBERED:
            del remembered[next(iter(remembered))]
        return RowFindings(ONLINE_DRIFT, name, detected, observed, expected, values)

    def _repeat(self, state: tuple[str, str], rows: np.ndarray, offsets: np.ndarray) -> list[RowFindings]:
        """The findings of remembered detections among redelivered rows."""
        remembered = self._recent.get(state, {})
        grouped: dict[tuple[str, str, str], tuple[list[int], list[float]]] = {}
        for row, offset in zip(rows.tolist(), offsets.tolist(), strict=True):
            for d in remembered.get(offset, ()):
                found = grouped.setdefault((d.feature, d.observed, d.expected), ([], []))
                found[0].append(row)
                found[1].append(d.value)
        return [
            RowFindings(ONLINE_DRIFT, feature, np.asarray(idx, dtype=np.int64), observed, expected, values)
            for (feature, observed, expected), (idx, values) in grouped.items()
        ]

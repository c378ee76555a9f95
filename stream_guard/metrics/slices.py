"""Per-slice, per-bucket counters of a batch, added to the batch's fenced state updates.

A row of a batch belongs to several slices at once: ``*`` (all traffic), one
``field=value`` slice per slice field (and, when enabled, per categorical feature), and
one ``f1=v1,f2=v2`` slice per configured crossing (fields in sorted order). Rows are
grouped by (source partition, event-time bucket, slice) with one pandas ``groupby`` and
each group's sums become hash increments in that source's :class:`StateUpdate`, so the
metrics are fenced with the rest of the batch and cost no extra round trip.

Cardinality is bounded per field: values outside the baseline profile's known
categories, or (without a profile) beyond the first ``max_values_per_field`` distinct
values this worker has seen, are recorded as ``other``; a missing value is ``null``.
Characters that delimit slices and fields (``|``, ``,``, ``=``, whitespace) become ``_``
and values are cut at 64 characters.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from stream_guard.aggregation import Contributor, WindowGroups
from stream_guard.batch import EventBatch
from stream_guard.findings import RowFindings
from stream_guard.metrics import store as s
from stream_guard.profile import CategoricalProfile, category_key
from stream_guard.settings.metrics import MetricsSettings
from stream_guard.state.keys import ModelKeys

if TYPE_CHECKING:
    from stream_guard.model import ModelRuntime
    from stream_guard.profile import BaselineProfile

Dimension = tuple[str, ...]
_UNSAFE = re.compile(r"[|,=\s]")
_MAX_VALUE_LEN = 64


def slice_name(parts: Mapping[str, str]) -> str:
    """``{"device_type": "android", "country": "US"}`` -> ``country=US,device_type=android``."""
    if not parts:
        return s.ALL
    return ",".join(f"{k}={parts[k]}" for k in sorted(parts))


def parse_slice(name: str) -> dict[str, str]:
    """Inverse of :func:`slice_name` (``*`` -> ``{}``)."""
    if name == s.ALL:
        return {}
    return dict(part.split("=", 1) for part in name.split(","))


def slice_dimension(name: str) -> Dimension:
    """The sorted fields of a slice: ``country=US,device_type=ios`` -> ``("country", "device_type")``."""
    return tuple(parse_slice(name))


def _safe(value: str) -> str:
    # '|', ',' and '=' delimit slices and hash fields; whitespace would make tables ambiguous.
    return _UNSAFE.sub("_", value)[:_MAX_VALUE_LEN]


class ValueCapper:
    """Maps raw field values to bounded slice values (``other`` beyond the known ones).

    Parameters
    ----------
    known
        Field -> allowed values (as :func:`~stream_guard.profile.category_key`), e.g. from a
        baseline profile. Fields not listed learn their values on the fly.
    max_values
        Values a field without a known list admits (first seen, first kept) before ``other``.
    """

    def __init__(self, known: Mapping[str, Iterable[str]] | None = None, max_values: int = 50) -> None:
        self._known = {f: {_safe(v) for v in values} for f, values in (known or {}).items()}
        self._seen: dict[str, dict[str, None]] = {}
        self.max_values = max_values

    @classmethod
    def from_profile(cls, profile: BaselineProfile | None, max_values: int = 50) -> ValueCapper:
        known = {}
        if profile is not None:
            known = {
                name: list(f.frequencies) for name, f in profile.features.items() if isinstance(f, CategoricalProfile)
            }
        return cls(known, max_values)

    def cap(self, field_name: str, values: Sequence[Any]) -> np.ndarray:
        """Slice values of ``values`` (a unicode array): known values, ``other`` or ``null``."""
        keys = np.array([s.NULL if v is None else _safe(category_key(v)) for v in values], dtype=object)
        if len(keys) == 0:
            return keys.astype(str)
        uniques, first = np.unique(keys, return_index=True)
        allowed: Collection[str] | None = self._known.get(field_name)
        if allowed is None:
            seen = self._seen.setdefault(field_name, {})
            for value in uniques[np.argsort(first)].tolist():
                if value != s.NULL and value not in seen and len(seen) < self.max_values:
                    seen[value] = None
            allowed = seen.keys()
        keep = np.array([u == s.NULL or u in allowed for u in uniques.tolist()], dtype=bool)
        mapped = np.where(keep, uniques, s.OTHER)
        return mapped[np.searchsorted(uniques, keys)].astype(str)


def _as_float(values: Sequence[Any]) -> np.ndarray:
    out = np.full(len(values), np.nan)
    for i, v in enumerate(values):
        if isinstance(v, (int, float, np.number)) and not isinstance(v, (str, bytes)):
            out[i] = float(v)
    return out


class SliceRecorder:
    """Writes one model's slice metrics (and stored predictions) into a batch's updates.

    Parameters
    ----------
    dimensions
        The slice dimensions recorded besides ``*``: ``("device_type",)``, ``("country", "device_type")``...
    features
        Features whose nulls are counted.
    prediction_field, score_field
        Fields of the prediction and of the score ("" when the model has none).
    settings
        Bucket size, retention, histogram, cardinality cap.
    capper
        Maps raw values to bounded slice values.
    prediction_ttl_s
        When > 0 (labels are configured), each event with an id stores its prediction for
        this long under ``sg:{m}:pred:<event_id>``, for :class:`~stream_guard.metrics.labels.LabelJoiner`.
    """

    def __init__(
        self,
        dimensions: Sequence[Dimension],
        features: Sequence[str],
        prediction_field: str,
        score_field: str,
        settings: MetricsSettings | None = None,
        capper: ValueCapper | None = None,
        prediction_ttl_s: int = 0,
    ) -> None:
        self.settings = settings or MetricsSettings()
        unique: dict[Dimension, None] = {}
        for dim in dimensions:
            if dim:
                unique[tuple(sorted(set(dim)))] = None
        self.dimensions = list(unique)
        self.features = list(features)
        self.prediction_field = prediction_field
        self.score_field = score_field
        self.capper = capper or ValueCapper(max_values=self.settings.max_values_per_field)
        self.prediction_ttl_s = prediction_ttl_s
        self.bucket_ms = self.settings.bucket_s * 1000
        lo, hi = self.settings.score_range
        self._edges = (float(lo), float(hi))

    @classmethod
    def for_model(
        cls,
        model: ModelRuntime,
        settings: MetricsSettings | None = None,
        profile: BaselineProfile | None = None,
        *,
        prediction_ttl_s: int = 0,
    ) -> SliceRecorder:
        """The recorder of a configured model: its slice fields, crossings and categorical features."""
        settings = settings or MetricsSettings()
        dims: list[Dimension] = [(f,) for f in model.config.slice_fields]
        dims += [tuple(c) for c in settings.crossings]
        if settings.categorical_slices:
            dims += [(f,) for f in model.categorical_features]
        return cls(
            dims,
            [*model.numeric_features, *model.categorical_features],
            model.config.prediction_field,
            model.config.score_field,
            settings,
            ValueCapper.from_profile(profile, settings.max_values_per_field),
            prediction_ttl_s,
        )

    # -- slices --------------------------------------------------------------------------

    def slice_labels(self, batch: EventBatch, rows: np.ndarray) -> dict[Dimension, np.ndarray]:
        """The slice of each of ``rows`` in every dimension (``*`` excluded)."""
        fields = sorted({f for dim in self.dimensions for f in dim})
        capped = {f: self.capper.cap(f, [batch.column(f)[r] for r in rows.tolist()]) for f in fields}
        out: dict[Dimension, np.ndarray] = {}
        for dim in self.dimensions:
            label = np.char.add(f"{dim[0]}=", capped[dim[0]])
            for f in dim[1:]:
                label = np.char.add(np.char.add(label, f",{f}="), capped[f])
            out[dim] = label
        return out

    # -- the hook ------------------------------------------------------------------------

    def contributor(self, findings: Sequence[RowFindings]) -> Contributor:
        """A :data:`~stream_guard.aggregation.Contributor` for ``build_updates`` that sees ``findings``."""

        def contribute(batch: EventBatch, groups: WindowGroups, keys: ModelKeys) -> None:
            self.contribute_with_findings(batch, findings, groups, keys)

        return contribute

    def contribute_with_findings(
        self, batch: EventBatch, findings: Sequence[RowFindings], groups: WindowGroups, keys: ModelKeys
    ) -> None:
        """Add the batch's slice metrics (and stored predictions) to ``groups.updates``."""
        rows = batch.valid_rows
        if len(rows) == 0:
            return
        mkeys = s.MetricKeys(keys)
        sources = np.asarray(groups.sources, dtype=object)[groups.group_of_row[rows]]
        buckets = (batch.event_time_ms[rows] // self.bucket_ms) * self.bucket_ms
        labels = self.slice_labels(batch, rows)
        frame = self._row_metrics(batch, rows, findings)
        frame["src"] = sources
        frame["bucket"] = buckets
        long = pd.concat(
            [frame.assign(slice=s.ALL)] + [frame.assign(slice=labels[dim]) for dim in self.dimensions],
            ignore_index=True,
        )
        sums = long.groupby(["src", "bucket", "slice"], sort=True).sum()
        metrics = list(sums.columns)
        is_float = [m in s.FLOAT_METRICS for m in metrics]
        values = sums.to_numpy(dtype=np.float64)
        for (source, bucket, slice_), row in zip(sums.index.tolist(), values, strict=True):
            update = groups.updates[source]
            key = mkeys.bucket(bucket)
            for metric, flt, amount in zip(metrics, is_float, row.tolist(), strict=True):
                if flt:
                    update.incr_float(key, s.field_name(slice_, metric), amount)
                else:
                    update.incr(key, s.field_name(slice_, metric), round(amount))
        for source, part in frame[["src", "bucket"]].groupby("src"):
            update = groups.updates[source]
            for bucket in np.unique(part["bucket"].to_numpy()).tolist():
                s.register_bucket(update, mkeys, bucket, self.settings.retention_s)
            s.trim_index(update, mkeys, int(part["bucket"].max()), self.settings.retention_s)
        if self.prediction_ttl_s > 0:
            self._store_predictions(batch, rows, sources, buckets, labels, groups, mkeys)

    # -- internals -----------------------------------------------------------------------

    def _row_metrics(self, batch: EventBatch, rows: np.ndarray, findings: Sequence[RowFindings]) -> pd.DataFrame:
        n = len(rows)
        position = np.full(len(batch), -1)
        position[rows] = np.arange(n)
        columns: dict[str, np.ndarray] = {s.EVENTS: np.ones(n, dtype=np.int64)}
        for kind in sorted({f.kind for f in findings}):
            hit = np.zeros(n, dtype=bool)
            for finding in findings:
                if finding.kind == kind and len(finding.rows):
                    at = position[finding.rows]
                    hit[at[at >= 0]] = True
            columns[s.VIOLATION + kind] = hit
        for feature in self.features:
            column = batch.column(feature)
            columns[s.NULLS + feature] = np.fromiter((column[r] is None for r in rows.tolist()), dtype=bool, count=n)
        if self.prediction_field:
            column = batch.column(self.prediction_field)
            pred = _as_float([column[r] for r in rows.tolist()])
            ok = np.isfinite(pred)
            columns[s.PRED_N] = ok
            columns[s.PRED_SUM] = np.where(ok, pred, 0.0)
            columns[s.PRED_SQ] = np.where(ok, pred * pred, 0.0)
        if self.score_field:
            column = batch.column(self.score_field)
            score = _as_float([column[r] for r in rows.tolist()])
            ok = np.isfinite(score)
            bins = self.settings.score_bins
            lo, hi = self._edges
            # Scores outside the range land in the edge bins, so the bins always sum to the scored events.
            index = np.clip(np.floor((np.where(ok, score, lo) - lo) / (hi - lo) * bins), 0, bins - 1).astype(int)
            for b in range(bins):
                columns[f"{s.HIST}{b}"] = ok & (index == b)
            columns[s.SCORE_SUM] = np.where(ok, score, 0.0)
        return pd.DataFrame(columns)

    def _store_predictions(
        self,
        batch: EventBatch,
        rows: np.ndarray,
        sources: np.ndarray,
        buckets: np.ndarray,
        labels: dict[Dimension, np.ndarray],
        groups: WindowGroups,
        keys: s.MetricKeys,
    ) -> None:
        pred_col = batch.column(self.prediction_field) if self.prediction_field else [None] * len(batch)
        score_col = batch.column(self.score_field) if self.score_field else [None] * len(batch)
        scores = _as_float([score_col[r] for r in rows.tolist()])
        per_row = np.stack([labels[d] for d in self.dimensions], axis=1).tolist() if self.dimensions else None
        stored_field = s.field_name(s.ALL, s.STORED)
        for i, row in enumerate(rows.tolist()):
            event_id = batch.event_ids[row]
            if event_id is None:
                continue
            slices = per_row[i] if per_row is not None else []
            score = float(scores[i]) if np.isfinite(scores[i]) else None
            bucket = int(buckets[i])
            groups.updates[sources[i]].set_once(
                keys.prediction(event_id),
                s.encode_prediction(bucket, slices, pred_col[row], score),
                self.prediction_ttl_s,
                keys.bucket(bucket),
                [stored_field, *(s.field_name(x, s.STORED) for x in slices)],
            )


__all__ = [
    "Dimension",
    "SliceRecorder",
    "ValueCapper",
    "parse_slice",
    "slice_dimension",
    "slice_name",
]

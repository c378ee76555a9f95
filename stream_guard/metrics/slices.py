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

import math
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pandas as pd

from stream_guard.aggregation import Contributor, WindowGroups
from stream_guard.batch import EventBatch
from stream_guard.findings import RowFindings
from stream_guard.metrics import store as s
from stream_guard.profile import CategoricalProfile, category_key
from stream_guard.profile_estimate import split_bin
from stream_guard.settings.metrics import MetricsSettings
from stream_guard.state.keys import ModelKeys

if TYPE_CHECKING:
    from stream_guard.model import ModelRuntime
    from stream_guard.profile import BaselineProfile

Dimension = tuple[str, ...]


class SliceCodes(NamedTuple):
    """The slices of a batch's rows in one dimension: ``names[codes[i]]`` is row ``i``'s."""

    codes: np.ndarray
    names: np.ndarray

    def labels(self) -> np.ndarray:
        """The slice name of every row (an object array)."""
        labels: np.ndarray = self.names[self.codes]
        return labels


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
        codes, names = self.codes(field_name, values)
        if len(codes) == 0:
            return np.array([], dtype=str)
        labels: np.ndarray = names[codes].astype(str)
        return labels

    def codes(
        self, field_name: str, values: Sequence[Any], strings: tuple[np.ndarray, np.ndarray] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(codes, names)``: ``names[codes[i]]`` is the slice value of ``values[i]``.

        ``names`` (an object array) is sorted; each distinct raw value is keyed and capped
        once, however many rows hold it. ``strings``: ``pandas.factorize`` of ``values``
        when they are strings and None only (:meth:`EventBatch.factorized`), not done again.
        """
        raw_codes, uniques = _factorize(values) if strings is None else _none_last(*strings)
        keys = [s.NULL if v is None else _safe(category_key(v)) for v in uniques]
        allowed: Collection[str] | None = self._known.get(field_name)
        if allowed is None:
            seen = self._seen.setdefault(field_name, {})
            for key in keys:  # in order of first appearance
                if key != s.NULL and key not in seen and len(seen) < self.max_values:
                    seen[key] = None
            allowed = seen.keys()
        mapped = np.array([k if k == s.NULL or k in allowed else s.OTHER for k in keys], dtype=object)
        if len(mapped) == 0:
            return np.zeros(0, dtype=np.int64), mapped
        names, code_of_unique = np.unique(mapped, return_inverse=True)
        return code_of_unique.reshape(-1)[raw_codes], names


_NONE = type(None)


def _factorize(values: Sequence[Any]) -> tuple[np.ndarray, list[Any]]:
    """Codes of ``values`` into their distinct values (in order of first appearance; a
    column of strings has its ``None`` last).

    ``True == 1 == 1.0`` in Python, but their category keys differ: a column mixing
    booleans with other types is keyed by (is bool, value).
    """
    index: dict[Any, int] = {}
    kinds = set(map(type, values)) - {_NONE}
    if kinds == {str}:
        # Strings (and None) only: pandas' hash table, in order of first appearance as below.
        return _none_last(*pd.factorize(np.fromiter(values, dtype=object, count=len(values))))
    if len(kinds) > 1 and kinds & {bool, np.bool_}:
        keyed = [(isinstance(v, (bool, np.bool_)), v) for v in values]
        codes = [index.setdefault(k, len(index)) for k in keyed]
        return np.asarray(codes, dtype=np.int64), [k[1] for k in index]
    codes = [index.setdefault(v, len(index)) for v in values]
    return np.asarray(codes, dtype=np.int64), list(index)


def _none_last(codes: np.ndarray, uniques: np.ndarray) -> tuple[np.ndarray, list[Any]]:
    """``pandas.factorize`` codes and distinct values with ``None`` (code -1) as the last distinct value."""
    found = uniques.tolist()
    if (codes < 0).any():
        codes = np.where(codes < 0, len(found), codes)
        found.append(None)
    return codes.astype(np.int64), found


def _as_float(values: Sequence[Any]) -> np.ndarray:
    """Numbers as float64 (booleans as 0/1), NaN for anything else."""
    kinds = set(map(type, values))
    if kinds <= {int, float}:
        return np.array(values, dtype=np.float64).reshape(len(values))
    if kinds <= {int, float, _NONE}:
        return np.array([np.nan if v is None else v for v in values], dtype=np.float64).reshape(len(values))
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
        #: Whether the threshold lies inside a score bin: then ``pp`` counts the scores at or above it.
        self._count_score_positive = (
            split_bin(self.settings.threshold, self.settings.score_bins, self._edges) is not None
        )

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

    def slice_codes(self, batch: EventBatch, rows: np.ndarray) -> dict[Dimension, SliceCodes]:
        """The slice of each of ``rows`` in every dimension (``*`` excluded), as codes into names.

        Each field is factorised once per batch; a crossing combines its fields' codes,
        so no per-row string is built.
        """
        fields = sorted({f for dim in self.dimensions for f in dim})
        capped = {f: self._field_codes(batch, f, rows) for f in fields}
        out: dict[Dimension, SliceCodes] = {}
        for dim in self.dimensions:
            codes, names = capped[dim[0]]
            parts = [np.array([f"{dim[0]}={v}" for v in names.tolist()], dtype=object)]
            combined = codes
            for f in dim[1:]:
                f_codes, f_names = capped[f]
                combined = combined * len(f_names) + f_codes
                parts.append(np.array([f"{f}={v}" for v in f_names.tolist()], dtype=object))
            if len(dim) == 1:
                out[dim] = SliceCodes(codes, parts[0])
                continue
            present, inverse = np.unique(combined, return_inverse=True)
            labels = []
            for value in present.tolist():
                pieces = []
                for names_f in reversed(parts[1:]):
                    value, code = divmod(value, len(names_f))
                    pieces.append(names_f[code])
                pieces.append(parts[0][value])
                labels.append(",".join(reversed(pieces)))
            out[dim] = SliceCodes(inverse.reshape(-1), np.array(labels, dtype=object))
        return out

    def _field_codes(self, batch: EventBatch, name: str, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The capper's codes of a field at ``rows``, from the batch's factorisation when it applies."""
        if len(rows) == len(batch) and batch.value_types(name) - {_NONE} == {str}:
            return self.capper.codes(name, batch.column(name), batch.factorized(name))
        return self.capper.codes(name, batch.values_at(name, rows))

    def slice_labels(self, batch: EventBatch, rows: np.ndarray) -> dict[Dimension, np.ndarray]:
        """The slice of each of ``rows`` in every dimension (``*`` excluded), as strings."""
        return {dim: c.labels().astype(str) for dim, c in self.slice_codes(batch, rows).items()}

    # -- the hook ------------------------------------------------------------------------

    def contributor(self, findings: Sequence[RowFindings]) -> Contributor:
        """A :data:`~stream_guard.aggregation.Contributor` for ``build_updates`` that sees ``findings``."""

        def contribute(batch: EventBatch, groups: WindowGroups, keys: ModelKeys) -> None:
            self.contribute_with_findings(batch, findings, groups, keys)

        return contribute

    def contribute_with_findings(
        self, batch: EventBatch, findings: Sequence[RowFindings], groups: WindowGroups, keys: ModelKeys
    ) -> None:
        """Add the batch's slice metrics (and stored predictions) to ``groups.updates``.

        Rows are grouped by (source, bucket, slice) on integer codes; each group's sums
        (one ``np.add.reduceat`` per dimension) become increments, in the order of
        (source, bucket, slice), skipping zeros.
        """
        rows = batch.valid_rows
        if len(rows) == 0:
            return
        mkeys = s.MetricKeys(keys)
        source_of_row = groups.group_of_row[rows]
        source_names = sorted(set(groups.sources))
        source_code = {name: i for i, name in enumerate(source_names)}
        group_source = np.array([source_code[x] for x in groups.sources], dtype=np.int64)
        src = group_source[source_of_row]
        buckets = (batch.event_time_ms[rows] // self.bucket_ms) * self.bucket_ms
        bucket_values, bucket_code = np.unique(buckets, return_inverse=True)
        cell = src * len(bucket_values) + bucket_code.reshape(-1)
        n_cells = len(source_names) * len(bucket_values)
        codes = self.slice_codes(batch, rows)
        metrics, matrix = self._row_metrics(batch, rows, findings)
        everyone = SliceCodes(np.zeros(len(rows), dtype=np.int64), np.array([s.ALL], dtype=object))
        places, slices, sums = [], [], []
        for dim_codes in (everyone, *codes.values()):
            width = len(dim_codes.names)
            key = cell * width + dim_codes.codes
            present, summed = s.grouped_sums(key, n_cells * width, matrix)
            sums.append(summed)
            places.append(present // width)
            slices.append(dim_codes.names[present % width])
        where = np.concatenate(places)
        # One op per (source, bucket): every slice's counters of the bucket in one argument.
        place_names = [(name, int(b)) for name in source_names for b in bucket_values.tolist()]
        s.add_slice_sums(
            groups.updates, mkeys, place_names, where, np.concatenate(slices), np.concatenate(sums), metrics
        )
        for i, source_name in enumerate(source_names):
            mine = buckets[src == i]
            if len(mine) == 0:
                continue
            update = groups.updates[source_name]
            for bucket in np.unique(mine).tolist():
                s.register_bucket(update, mkeys, bucket, self.settings.retention_s)
            s.trim_index(update, mkeys, int(mine.max()), self.settings.retention_s)
        if self.prediction_ttl_s > 0:
            self._store_predictions(batch, rows, src, source_names, buckets, codes, groups, mkeys)

    # -- internals -----------------------------------------------------------------------

    def _row_metrics(
        self, batch: EventBatch, rows: np.ndarray, findings: Sequence[RowFindings]
    ) -> tuple[list[str], np.ndarray]:
        """The metric names and their per-row values (one column each, float64)."""
        n = len(rows)
        position = np.full(len(batch), -1)
        position[rows] = np.arange(n)
        columns: dict[str, np.ndarray] = {s.EVENTS: np.ones(n)}
        for kind in sorted({f.kind for f in findings}):
            hit = np.zeros(n, dtype=bool)
            for finding in findings:
                if finding.kind == kind and len(finding.rows):
                    at = position[finding.rows]
                    hit[at[at >= 0]] = True
            columns[s.VIOLATION + kind] = hit
        for feature in self.features:
            columns[s.NULLS + feature] = batch.null_mask(feature)[rows]
        if self.prediction_field:
            pred = _as_float(batch.values_at(self.prediction_field, rows))
            ok = np.isfinite(pred)
            columns[s.PRED_N] = ok
            columns[s.PRED_SUM] = np.where(ok, pred, 0.0)
            columns[s.PRED_SQ] = np.where(ok, pred * pred, 0.0)
        if self.score_field:
            score = _as_float(batch.values_at(self.score_field, rows))
            ok = np.isfinite(score)
            bins = self.settings.score_bins
            lo, hi = self._edges
            # Scores outside the range land in the edge bins, so the bins always sum to the scored events
            # (a huge finite score overflows to inf on the way, which the clip puts in the last bin).
            with np.errstate(over="ignore"):
                position = np.floor((np.where(ok, score, lo) - lo) / (hi - lo) * bins)
            index = np.clip(position, 0, bins - 1).astype(int)
            for b in range(bins):
                columns[f"{s.HIST}{b}"] = ok & (index == b)
            columns[s.SCORE_SUM] = np.where(ok, score, 0.0)
            if self._count_score_positive:
                columns[s.SCORE_POSITIVE] = ok & (score >= self.settings.threshold)
        matrix = np.empty((n, len(columns)), dtype=np.float64)
        for j, values in enumerate(columns.values()):
            matrix[:, j] = values
        return list(columns), matrix

    def _store_predictions(
        self,
        batch: EventBatch,
        rows: np.ndarray,
        src: np.ndarray,
        source_names: Sequence[str],
        buckets: np.ndarray,
        codes: dict[Dimension, SliceCodes],
        groups: WindowGroups,
        keys: s.MetricKeys,
    ) -> None:
        """One ``set_once_counted`` per source: each event's prediction, and the batch's
        ``st`` counters summed per (bucket, slice)."""
        n = len(rows)
        predictions = batch.values_at(self.prediction_field, rows) if self.prediction_field else [None] * n
        scores = _as_float(batch.values_at(self.score_field, rows)) if self.score_field else np.full(n, np.nan)
        dims = list(codes.values())
        # Every row counts in "*" and in one slice per dimension: its counters are slots of one table.
        slot_names = [s.field_name(s.ALL, s.STORED)]
        slots = [np.zeros(n, dtype=np.int64)]
        for c in dims:
            slots.append(c.codes + len(slot_names))
            slot_names += [s.field_name(x, s.STORED) for x in c.names.tolist()]
        bucket_values, bucket_code = np.unique(buckets, return_inverse=True)
        cells = bucket_code.reshape(-1, 1) * len(slot_names) + np.stack(slots, axis=1)
        event_ids = batch.event_ids
        ids = [event_ids[row] for row in rows.tolist()]
        has_id = np.array([x is not None for x in ids], dtype=bool)
        score_values = [float(x) if math.isfinite(x) else None for x in scores.tolist()]
        slice_columns = [c.labels() for c in dims]
        for i, source_name in enumerate(source_names):
            mine = np.flatnonzero((src == i) & has_id)
            if len(mine) == 0:
                continue
            present, listed = np.unique(cells[mine], return_inverse=True)
            counters = [
                (keys.bucket(int(bucket_values[cell // len(slot_names)])), slot_names[cell % len(slot_names)])
                for cell in present.tolist()
            ]
            at = mine.tolist()
            values = s.encode_predictions(
                buckets[mine].tolist(),
                [column[mine].tolist() for column in slice_columns],
                [predictions[r] for r in at],
                [score_values[r] for r in at],
            )
            prediction_keys = keys.predictions([ids[r] for r in at])
            groups.updates[source_name].set_once_counted_rows(
                prediction_keys, values, listed.reshape(len(mine), -1), self.prediction_ttl_s, counters
            )


__all__ = [
    "Dimension",
    "SliceRecorder",
    "ValueCapper",
    "parse_slice",
    "slice_dimension",
    "slice_name",
]

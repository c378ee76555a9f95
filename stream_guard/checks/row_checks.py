"""Row-level feature checks against the baseline profile, and the window checks' counters.

:class:`FeatureChecks` has the two hooks of a worker checker: :meth:`~FeatureChecks.findings`
flags single rows (their counters become alerts through ``finding_alerts``) and
:meth:`~FeatureChecks.contribute` adds the counters that :mod:`.window_checks` tests
when the window closes. Only decoded rows (``~batch.failed``) are looked at.

A feature is checked when the model lists it *and* the profile has it; its kind
(numeric or categorical) is the profile's. Rows whose value the decoder already
replaced because of a ``type_mismatch`` or ``missing_field`` issue on that feature
count neither as null nor as a value: the decoder's finding reports them.

Row checks
----------
``out_of_range``
    Finite value outside ``[lower_bound(tol), upper_bound(tol)]`` of the profile,
    widened on a heavy tail to the spread of the reference's extreme 0.1 % (see
    :func:`range_bounds`). ``tolerance`` 0 means the exact learned range.
``nan`` / ``infinite``
    NaN / +-inf values, only on features whose reference ``nan_rate`` / ``inf_rate``
    is 0. Where the reference had some, the check is skipped (no rate test of NaN).
``unseen_category``
    A value outside the profile's ``frequencies``, only when ``other_rate`` is 0 (the
    reference value set is complete). A capped profile (``other_rate > 0``) does not
    know all legitimate values, so the check is skipped; ``cardinality`` still applies.
``type_mismatch``
    A ``str`` (or any non-number) in a numeric feature, a non-``str`` in a categorical
    one, when the decoding let it through (union types, hand-built batches). The
    decoder's own ``type_mismatch`` findings share the same counter.

Window hash fields (``keys.window(start)``)
--------------------------------------------
=============================  =====================================================
``null|<feature>``             rows where the feature is null
``nv|<feature>``               rows where it has a value of the right type
``top|<feature>|<value_key>``  rows equal to a numeric value (``profile.value_key``):
                               every top value of the baseline, plus any value that
                               is at least 1 % (and 5 rows) of the feature's last
                               1000 values in this worker, batch included; at most
                               :data:`MAX_NEW_VALUES` such new values at a time
``hll|card|<feature>``         name of the HyperLogLog key ``<window key>:card:<feature>``
                               of the categorical's distinct values; the snapshot
                               reader puts its ``PFCOUNT`` in ``card|<feature>``
=============================  =====================================================

A new value is counted from the batch where it reaches 1 % of the recent values on,
so its window count may fall short of the truth (never above): the sentinel test errs
towards silence. The recent values are per worker process (a restart forgets them).
"""

from __future__ import annotations

import math
import weakref
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from operator import attrgetter
from typing import Any

import numpy as np
import pandas as pd

from stream_guard.aggregation import WindowGroups
from stream_guard.batch import EventBatch
from stream_guard.decoded import ColumnarRecords
from stream_guard.findings import RowFindings
from stream_guard.model import ModelRuntime
from stream_guard.profile import BaselineProfile, CategoricalProfile, NumericProfile, value_key
from stream_guard.settings.checks import ChecksConfig
from stream_guard.state.keys import ModelKeys

#: A value becomes a sentinel candidate at this share of the recent values...
CANDIDATE_SHARE = 0.01
#: ... and at least this many rows.
CANDIDATE_MIN_ROWS = 5
#: Recent values of a feature the candidates are chosen from (across batches)...
RECENT_ROWS = 1000
#: ... chosen again after this many new values.
DECIDE_EVERY = 250
#: Most new (non-top) values counted at a time per feature, the most frequent first.
MAX_NEW_VALUES = 16

_NUMBER_TYPES = (int, float, np.integer, np.floating, np.bool_)  # bool is an int
_DECODER_ISSUES = frozenset({"type_mismatch", "missing_field"})
_NONE = type(None)


@dataclass
class _Column:
    """One feature of a batch, converted once for findings and counters."""

    null: np.ndarray  # valid rows whose value is null
    present: np.ndarray  # valid rows with a value of the right type
    wrong_type: np.ndarray  # valid rows with a value of the wrong type
    objects: Callable[[], np.ndarray]  # the values (object), converted when a finding shows them
    numbers: np.ndarray | None = None  # numeric: float64, NaN where not present
    codes: np.ndarray | None = None  # categorical: index into uniques, -1 where not present
    uniques: np.ndarray | None = None

    @property
    def raw(self) -> np.ndarray:
        return self.objects()


class FeatureChecks:
    """Checks each feature of a batch against its model's :class:`BaselineProfile`.

    Parameters
    ----------
    profiles
        Baseline profiles by model name; a model without one gets no feature checks.
    config
        Which checks run on which feature, and how.
    """

    def __init__(self, profiles: Mapping[str, BaselineProfile], config: ChecksConfig) -> None:
        # Not a copy: the worker replaces a model's entry when its profile file changes.
        self._profiles = profiles
        self._config = config
        self._features: dict[str, list[str]] = {}
        self._cached_batch: weakref.ref[EventBatch] | None = None
        self._cache: dict[str, _Column] = {}
        self._issues: dict[str, np.ndarray] = {}
        self._recent: dict[tuple[str, str], _RecentValues] = {}

    # -- hooks -----------------------------------------------------------------------

    def findings(self, model: ModelRuntime, batch: EventBatch) -> list[RowFindings]:
        """Row findings of the enabled row checks (see the module docstring)."""
        profile = self._profiles.get(model.name)
        if profile is None or len(batch) == 0:
            return []
        listed = [*model.numeric_features, *model.categorical_features]
        self._features[model.name] = [f for f in listed if f in profile.features]
        out: list[RowFindings] = []
        for name in self._features[model.name]:
            feature = profile.features[name]
            column = self._column(batch, name, feature)
            if isinstance(feature, NumericProfile):
                out += self._numeric_findings(name, feature, column)
            else:
                out += self._categorical_findings(name, feature, column)
            if column.wrong_type.any() and self._config.is_enabled("type_mismatch", name):
                out.append(_type_mismatch(name, feature, column))
        return out

    def contribute(self, batch: EventBatch, groups: WindowGroups, keys: ModelKeys) -> None:
        """Add the window checks' counters of ``batch`` to its updates (fields above)."""
        profile = self._profiles.get(batch.model)
        if profile is None or len(batch) == 0:
            return
        config = self._config
        names = self._features.get(batch.model, list(profile.features))
        window_keys = [keys.window(int(s)) for s in groups.starts.tolist()]
        # Each group's counters in one op of its window hash: one read and one write in Redis.
        fields: list[list[tuple[str, int]]] = [[] for _ in range(groups.size)]
        for name in names:
            feature = profile.features[name]
            sentinel = isinstance(feature, NumericProfile) and config.is_enabled("sentinel_spike", name)
            cardinality = isinstance(feature, CategoricalProfile) and config.is_enabled("cardinality", name)
            if not (sentinel or cardinality or config.is_enabled("null_rate", name)):
                continue
            column = self._column(batch, name, feature)
            nulls = groups.counts(column.null).tolist()
            present = groups.counts(column.present).tolist()
            for g in range(groups.size):
                fields[g] += ((f"null|{name}", nulls[g]), (f"nv|{name}", present[g]))
            if sentinel:
                assert isinstance(feature, NumericProfile)
                recent = self._recent.setdefault((batch.model, name), _RecentValues())
                _count_values(name, feature, column, recent, groups, fields)
            if cardinality:
                _add_distinct(name, column, groups, keys, window_keys)
        for g, counters in enumerate(fields):
            groups.update_of(g).incr_many(window_keys[g], counters)

    # -- conversion ------------------------------------------------------------------

    def _column(self, batch: EventBatch, name: str, feature: NumericProfile | CategoricalProfile) -> _Column:
        if self._cached_batch is None or self._cached_batch() is not batch:
            self._cached_batch = weakref.ref(batch)
            self._cache = {}
            self._issues = _decoder_issue_rows(batch)
        column = self._cache.get(name)
        if column is None:
            column = _convert(batch, name, isinstance(feature, NumericProfile), self._issues.get(name))
            self._cache[name] = column
        return column

    # -- checks ----------------------------------------------------------------------

    def _numeric_findings(self, name: str, feature: NumericProfile, column: _Column) -> list[RowFindings]:
        assert column.numbers is not None
        values, config, out = column.numbers, self._config, []
        finite = np.isfinite(values)
        if config.is_enabled("out_of_range", name) and feature.min is not None:
            lo, hi = range_bounds(feature, config.settings("out_of_range", name).tolerance or 0.0)
            rows = np.flatnonzero(finite & ((values < lo) | (values > hi)))
            if rows.size:
                bad = values[rows]
                observed = f"min {_g(bad.min())}, max {_g(bad.max())}"
                out.append(RowFindings("out_of_range", name, rows, observed, f"[{_g(lo)}, {_g(hi)}]", bad.tolist()))
        if config.is_enabled("nan", name) and feature.nan_rate == 0:
            rows = np.flatnonzero(np.isnan(values) & column.present)
            if rows.size:
                out.append(
                    RowFindings("nan", name, rows, "NaN", "no NaN (reference NaN rate 0)", [float("nan")] * rows.size)
                )
        if config.is_enabled("infinite", name) and feature.inf_rate == 0:
            rows = np.flatnonzero(np.isinf(values))
            if rows.size:
                signs = sorted({"+inf" if v > 0 else "-inf" for v in np.unique(values[rows]).tolist()})
                expected = "finite values (reference inf rate 0)"
                out.append(RowFindings("infinite", name, rows, " and ".join(signs), expected, values[rows].tolist()))
        return out

    def _categorical_findings(self, name: str, feature: CategoricalProfile, column: _Column) -> list[RowFindings]:
        if not self._config.is_enabled("unseen_category", name) or feature.other_rate > 0:
            return []
        assert column.codes is not None and column.uniques is not None
        if column.uniques.size == 0:
            return []
        known = np.fromiter((u in feature.frequencies for u in column.uniques.tolist()), bool, column.uniques.size)
        rows = np.flatnonzero(column.present & ~known[column.codes])
        if rows.size == 0:
            return []
        unseen = column.uniques[~known].tolist()
        shown = ", ".join(repr(u) for u in unseen[:3]) + (", ..." if len(unseen) > 3 else "")
        expected = f"one of the {len(feature.frequencies)} reference categories"
        return [RowFindings("unseen_category", name, rows, f"unseen {shown}", expected, column.raw[rows].tolist())]


def range_bounds(feature: NumericProfile, tolerance: float) -> tuple[float, float]:
    """The ``out_of_range`` bounds: the learned range widened by ``tolerance`` of its span...

    ... and, when ``tolerance > 0``, by at least the spread of the reference's extreme
    0.1 % on each side (``max - q0.999``, ``q0.001 - min``). A fresh value exceeds the
    maximum of N reference values with probability 1 / (N + 1) whatever the
    distribution, so a margin proportional to the range alone pages about once per N
    events on a heavy-tailed feature (a few per 100k events for amounts); the tail
    spread grows with the tail, and is 0 for a bounded or clipped feature.
    """
    lo, hi = feature.lower_bound(tolerance), feature.upper_bound(tolerance)
    q_lo, q_hi = feature.quantiles.get("0.001"), feature.quantiles.get("0.999")
    if tolerance > 0 and q_lo is not None and q_hi is not None and feature.min is not None and feature.max is not None:
        lo = min(lo, feature.min - (q_lo - feature.min))
        hi = max(hi, feature.max + (feature.max - q_hi))
    return lo, hi


def _convert(batch: EventBatch, name: str, numeric: bool, issue_rows: np.ndarray | None) -> _Column:
    n = len(batch)
    valid = np.ones(n, dtype=bool) if len(batch.failed) != n else ~batch.failed
    if issue_rows is not None:
        valid[issue_rows] = False
    kinds = batch.value_types(name) - {_NONE}
    wrong_type = np.zeros(n, dtype=bool)
    typed = all(issubclass(t, _NUMBER_TYPES if numeric else str) for t in kinds)
    if typed:
        null = valid & batch.null_mask(name)  # every value of a right type: no mask per type
    else:
        raw = batch.objects(name)
        types = np.fromiter(map(type, raw), dtype=object, count=n)
        null = valid & (types == _NONE)
        for t in kinds:
            if not issubclass(t, _NUMBER_TYPES if numeric else str):
                wrong_type |= types == t
        wrong_type &= valid
    present = valid & ~null & ~wrong_type
    column = _Column(null=null, present=present, wrong_type=wrong_type, objects=partial(batch.objects, name))
    if numeric and typed:
        column.numbers = np.where(present, batch.numeric(name)[0], np.nan)
        return column
    if typed:  # strings and None only: the batch's factorisation of the field holds every value
        codes, uniques = batch.factorized(name)
        column.codes, column.uniques = _present_codes(codes, batch.objects(name), present, uniques)
        return column
    clean = raw.copy()
    clean[~present] = None
    if numeric:
        column.numbers = clean.astype(np.float64)
    else:
        codes, uniques = pd.factorize(clean)
        column.codes, column.uniques = codes, np.asarray(uniques, dtype=object)
    return column


def _present_codes(
    codes: np.ndarray, raw: np.ndarray, present: np.ndarray, uniques: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``pandas.factorize`` of the values at ``present`` (None elsewhere), from the codes of all values.

    The distinct values are renumbered in order of first appearance among the present
    rows, each the value of its first present row: what factorising those alone gives.
    Where the present rows are the non-null ones, that is the factorisation of all values
    itself (``codes`` and their ``uniques``, when given).
    """
    if uniques is not None and np.array_equal(present, codes >= 0):
        return codes.copy(), uniques
    kept = np.where(present, codes, -1)
    rows = np.flatnonzero(kept >= 0)
    if rows.size == 0:
        return np.full(len(kept), -1, dtype=np.int64), np.empty(0, dtype=object)
    distinct, first = np.unique(kept[rows], return_index=True)
    order = np.argsort(first, kind="stable")
    renumbered = np.full(int(codes.max()) + 2, -1, dtype=np.int64)  # the last slot: code -1 stays -1
    renumbered[distinct[order]] = np.arange(order.size)
    return renumbered[kept], raw[rows[first[order]]]


def _decoder_issue_rows(batch: EventBatch) -> dict[str, np.ndarray]:
    """Rows whose value of a field the decoder replaced (type mismatch, missing), by field."""
    if isinstance(batch.decoded, ColumnarRecords):
        return {}  # records read by columns have no field issues
    issues = list(map(attrgetter("issues"), batch.decoded))
    rows: dict[str, list[int]] = defaultdict(list)
    for i in np.flatnonzero(np.fromiter(map(bool, issues), dtype=bool, count=len(issues))).tolist():
        for issue in issues[i]:
            if issue.kind in _DECODER_ISSUES:
                rows[issue.field].append(i)
    return {name: np.asarray(idx, dtype=np.int64) for name, idx in rows.items()}


def _type_mismatch(name: str, feature: NumericProfile | CategoricalProfile, column: _Column) -> RowFindings:
    rows = np.flatnonzero(column.wrong_type)
    values = column.raw[rows]
    observed = sorted({type(v).__name__ for v in values.tolist()})
    expected = "number" if isinstance(feature, NumericProfile) else "str"
    return RowFindings("type_mismatch", name, rows, ", ".join(observed), expected, values.tolist())


class _RecentValues:
    """The last values of one numeric feature, to spot new frequent values across batches.

    Small batches (low traffic) hold too few rows to see a 1 % value, so the decision
    looks at the last :data:`RECENT_ROWS` values, whatever the batch size.
    """

    def __init__(self) -> None:
        self.values = np.empty(0)
        self.fresh = 0
        self.candidates = np.empty(0)

    def update(self, values: np.ndarray, top: np.ndarray) -> np.ndarray:
        """Add a batch's finite values; return the sorted non-top values to count."""
        self.values = np.concatenate([self.values, values])[-RECENT_ROWS:]
        self.fresh += values.size
        if self.fresh >= DECIDE_EVERY:
            self.fresh = 0
            uniques, counts = np.unique(self.values, return_counts=True)
            needed = max(CANDIDATE_MIN_ROWS, math.ceil(CANDIDATE_SHARE * self.values.size))
            new = ~np.isin(uniques, top) & (counts >= needed)
            order = np.argsort(-counts[new], kind="stable")[:MAX_NEW_VALUES]
            self.candidates = np.sort(uniques[new][order])
        return self.candidates


def _count_values(
    name: str,
    feature: NumericProfile,
    column: _Column,
    recent: _RecentValues,
    groups: WindowGroups,
    fields: list[list[tuple[str, int]]],
) -> None:
    """Count, per group, every baseline top value and every recently frequent value (into ``fields[g]``)."""
    assert column.numbers is not None
    rows = np.flatnonzero(column.present & np.isfinite(column.numbers))
    if rows.size == 0:
        return
    values = column.numbers[rows]
    top = np.array([v for v, _ in feature.top_values], dtype=np.float64)
    watched = np.concatenate([top, recent.update(values, top)])
    counted = np.isin(values, watched)
    uniques, inverse = np.unique(values[counted], return_inverse=True)
    n_values = max(uniques.size, 1)
    pairs, pair_counts = np.unique(
        groups.group_of_row[rows[counted]].astype(np.int64) * n_values + inverse, return_counts=True
    )
    for pair, count in zip(pairs.tolist(), pair_counts.tolist(), strict=True):
        g, v = divmod(pair, n_values)
        fields[g].append((f"top|{name}|{value_key(uniques[v])}", count))


def _add_distinct(name: str, column: _Column, groups: WindowGroups, keys: ModelKeys, window_keys: list[str]) -> None:
    """Add each group's distinct values to the window's HyperLogLog of the feature."""
    assert column.codes is not None and column.uniques is not None
    rows = np.flatnonzero(column.present)
    if rows.size == 0:
        return
    n_codes = max(column.uniques.size, 1)
    pairs = np.unique(groups.group_of_row[rows].astype(np.int64) * n_codes + column.codes[rows])
    by_group: dict[int, list[int]] = defaultdict(list)
    for g, code in zip((pairs // n_codes).tolist(), (pairs % n_codes).tolist(), strict=True):
        by_group[g].append(code)
    for g, codes in by_group.items():
        update = groups.update_of(g)
        key = keys.cardinality(int(groups.starts[g]), name)
        update.add_distinct(key, column.uniques[codes].tolist())
        update.set(window_keys[g], f"hll|card|{name}", key)


def _g(x: Any) -> str:
    return f"{float(x):.6g}"

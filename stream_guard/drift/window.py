"""Windowed drift statistics: each event-time window's histograms against the baseline.

:class:`WindowDrift` has both halves of the worker's hooks. As a contributor it adds,
per (partition, window) group of a batch, the counts of every monitored feature in the
bins of its baseline profile; Redis sums them over all workers and partitions, so the
closed window holds the model's global histogram. As an evaluator it compares that
histogram with the baseline when the window closes: one alert per drifted feature.

Monitored fields are those the model lists (numeric and categorical features, score
and prediction fields) that the profile has and the settings leave enabled; the kind
(numeric or categorical) is the profile's. Drift of the score or prediction field is
``prediction_drift``, of any other feature ``data_drift``. Only decoded rows
(``~batch.failed``) count; nulls and non-finite numbers are not counted.

Window hash fields (``keys.window(start)``)
-------------------------------------------
==============================  ===================================================
``h|<feature>|<bin>``           numeric values in bin ``<bin>`` (0-based) of the
                                profile's ``bin_edges`` (``[e_i, e_i+1)``, as
                                :func:`stream_guard.drift.stats.bin_counts`)
``c|<feature>|<category>``      categorical values whose key
                                (:func:`stream_guard.profile.category_key`) is one
                                of the profile's ``frequencies``
``c|<feature>|__unseen__``      all other categorical values, in one field, so the
                                number of fields stays bounded by the profile
``hp|<profile tag>``            decoded rows counted under that baseline profile
                                (:func:`profile_tag`); a window counted under
                                another profile's bins is not judged on them
==============================  ===================================================
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from stream_guard.aggregation import WindowGroups
from stream_guard.alerts.model import Alert, stable_id
from stream_guard.batch import EventBatch
from stream_guard.drift.persistence import DriftRuns
from stream_guard.drift.stats import DriftVerdict, evaluate_categorical_drift, evaluate_numeric_drift
from stream_guard.findings import RowFindings
from stream_guard.model import ModelRuntime
from stream_guard.profile import BaselineProfile, CategoricalProfile, NumericProfile, category_key
from stream_guard.settings.drift import DriftSettings, FeatureDriftSettings
from stream_guard.settings.kinds import DATA_DRIFT, PREDICTION_DRIFT
from stream_guard.state.keys import ModelKeys
from stream_guard.state.window_store import WindowSnapshot

__all__ = [
    "CATEGORY_PREFIX",
    "DATA_DRIFT",
    "HISTOGRAM_PREFIX",
    "PREDICTION_DRIFT",
    "PROFILE_PREFIX",
    "UNSEEN",
    "WindowDrift",
    "decide",
    "monitored_fields",
    "numeric_column",
    "profile_tag",
]

HISTOGRAM_PREFIX = "h|"
CATEGORY_PREFIX = "c|"
#: ``hp|<tag>``: rows counted under the baseline profile with this tag (see :func:`profile_tag`).
PROFILE_PREFIX = "hp|"
#: Category slot of every value outside the profile's frequencies.
UNSEEN = "__unseen__"

_NUMBER_TYPES = (int, float, np.integer, np.floating, np.bool_, type(None))
_LABELS = {"psi": "PSI", "js_distance": "JS", "ks_binned": "KS", "chi_square": "chi-square"}


def numeric_column(batch: EventBatch, name: str) -> np.ndarray:
    """A field of ``batch`` as float64: NaN where null, absent or not a number.

    Strings are NaN even when they spell a number: the decoder reports them as type
    mismatches, and they must not count as values.
    """
    if all(issubclass(t, _NUMBER_TYPES) for t in batch.value_types(name)):
        return batch.numeric(name)[0]  # None becomes NaN
    values = batch.column(name)
    return np.fromiter(
        (float(v) if isinstance(v, _NUMBER_TYPES) and v is not None else np.nan for v in values),
        dtype=np.float64,
        count=len(values),
    )


@dataclass
class _Plan:
    """How one profiled feature is counted: its bins or category slots, and field names."""

    name: str
    profile: NumericProfile | CategoricalProfile
    fields: list[str]  # field name of every bin / slot
    edges: np.ndarray | None = None  # numeric
    index: dict[str, int] = field(default_factory=dict)  # categorical: key -> slot

    @property
    def numeric(self) -> bool:
        return self.edges is not None


def _plan(name: str, feature: NumericProfile | CategoricalProfile) -> _Plan | None:
    """The counting plan of a feature, or None when its baseline is empty."""
    if isinstance(feature, NumericProfile):
        if len(feature.bin_edges) < 2 or not sum(feature.bin_freqs) > 0:
            return None
        n_bins = len(feature.bin_edges) - 1
        fields = [f"{HISTOGRAM_PREFIX}{name}|{b}" for b in range(n_bins)]
        return _Plan(name, feature, fields, edges=np.asarray(feature.bin_edges, dtype=np.float64))
    if not feature.frequencies and not feature.other_rate > 0:
        return None
    categories = list(feature.frequencies)
    fields = [f"{CATEGORY_PREFIX}{name}|{c}" for c in [*categories, UNSEEN]]
    return _Plan(name, feature, fields, index={c: i for i, c in enumerate(categories)})


def profile_tag(profile: BaselineProfile) -> str:
    """A short id of a baseline profile, the same on every worker."""
    return stable_id(profile.model, profile.created_at, profile.source, profile.row_count)[:10]


def monitored_fields(model: ModelRuntime, available: Mapping[str, object]) -> list[str]:
    """The model's features, score and prediction fields that are in ``available``, once each."""
    names = [
        *model.numeric_features,
        *model.categorical_features,
        model.config.score_field,
        model.config.prediction_field,
    ]
    return list(dict.fromkeys(n for n in names if n and n in available))


class WindowDrift:
    """Per-window histograms against the baseline: a contributor and an evaluator.

    Parameters
    ----------
    profiles
        Baseline profiles by model name; a model without one is not monitored. The
        mapping is read on every call, not copied: replacing a model's entry (a
        reloaded profile) counts and judges against the new baseline from then on.
        Windows (partly) counted under another profile's bins are not judged on their
        numeric features, whose bins would not match.
    settings
        Thresholds per feature; features disabled there are neither counted nor judged.
        A field's alert is raised once it drifted in ``persistence`` consecutive
        windows (:class:`~stream_guard.drift.persistence.DriftRuns`).
    """

    def __init__(self, profiles: Mapping[str, BaselineProfile], settings: DriftSettings | None = None) -> None:
        self._profiles = profiles
        self._settings = settings or DriftSettings()
        self._loaded: dict[str, BaselineProfile] = {}
        self._plans: dict[str, dict[str, _Plan]] = {}
        self._tags: dict[str, str] = {}
        self._fields: dict[str, list[str]] = {}
        self._runs = DriftRuns(self._settings.persistence)

    def _plans_of(self, model: str) -> dict[str, _Plan]:
        """The counting plans of ``model``'s current profile (empty without a profile)."""
        profile = self._profiles.get(model)
        if profile is None:
            return {}
        if self._loaded.get(model) is not profile:
            plans = {}
            for name, feature in profile.features.items():
                plan = _plan(name, feature) if self._settings.feature(name).enabled else None
                if plan is not None:
                    plans[name] = plan
            self._loaded[model], self._plans[model], self._tags[model] = profile, plans, profile_tag(profile)
            self._fields.pop(model, None)
        return self._plans[model]

    # -- hooks -----------------------------------------------------------------------

    def findings(self, model: ModelRuntime, batch: EventBatch) -> list[RowFindings]:
        """No row findings; remembers which fields ``model`` monitors for :meth:`contribute`.

        The worker calls every contributor's ``findings`` before ``contribute``, and
        ``contribute`` is not told the model.
        """
        self._fields[model.name] = monitored_fields(model, self._plans_of(model.name))
        return []

    def contribute(self, batch: EventBatch, groups: WindowGroups, keys: ModelKeys) -> None:
        """Add each group's bin and category counts to its window hash (fields above).

        Before the first :meth:`findings` of the model, every profiled feature is counted.
        """
        plans = self._plans_of(batch.model)
        if not plans or len(batch) == 0:
            return
        valid = ~batch.failed if len(batch.failed) == len(batch) else np.ones(len(batch), dtype=bool)
        window_keys = [keys.window(int(s)) for s in groups.starts.tolist()]
        tag_field = f"{PROFILE_PREFIX}{self._tags[batch.model]}"
        rows_per_group = groups.counts(valid)
        # Each group's counters in one op of its window hash: one read and one write in Redis.
        fields: list[list[tuple[str, int]]] = [[(tag_field, count)] for count in rows_per_group.tolist()]
        for name in self._fields.get(batch.model, list(plans)):
            plan = plans.get(name)
            if plan is None:
                continue
            if plan.numeric:
                slots, rows = _bin_slots(plan, numeric_column(batch, name), valid)
            else:
                slots, rows = _category_slots(plan, batch, name, valid)
            if rows.size == 0:
                continue
            n_slots = len(plan.fields)
            cells = groups.group_of_row[rows].astype(np.int64) * n_slots + slots
            counts = np.bincount(cells, minlength=groups.size * n_slots)
            nonzero = np.flatnonzero(counts)
            for cell, count in zip(nonzero.tolist(), counts[nonzero].tolist(), strict=True):
                g, slot = divmod(cell, n_slots)
                fields[g].append((plan.fields[slot], count))
        for g, counters in enumerate(fields):
            groups.update_of(g).incr_many(window_keys[g], counters)

    def __call__(self, model: ModelRuntime, window: WindowSnapshot) -> list[Alert]:
        """One alert per monitored field whose window histogram drifted from the baseline.

        With ``correction = "bonferroni"`` each test runs at its ``alpha`` divided by the
        number of fields judged in the window, so that a stable window raises a test-based
        alert with probability at most ``alpha`` whatever the number of features.
        """
        plans = self._plans_of(model.name)
        if not plans:
            return []
        counters = _read_counters(window.fields)
        tags = window.with_prefix(PROFILE_PREFIX)
        bins_match = not tags or set(tags) == {self._tags[model.name]}
        judged = []
        for name in monitored_fields(model, plans):
            if name not in counters or (plans[name].numeric and not bins_match):
                continue
            plan, settings = plans[name], self._settings.feature(name)
            ref, cur, verdicts = _judge(plan, settings, counters[name])
            if verdicts:
                judged.append((plan, settings, ref, cur, verdicts))
        tests = len(judged) if self._settings.correction == "bonferroni" else 1
        alerts = []
        for plan, settings, ref, cur, verdicts in judged:
            verdicts = [_corrected(v, tests) for v in verdicts]
            strongest = decide(verdicts, self._settings.rule)
            lasted = self._runs.observe((model.name, plan.name), window.start_ms, window.end_ms, strongest is not None)
            if lasted and strongest is not None:
                roles = (model.config.score_field, model.config.prediction_field)
                kind = PREDICTION_DRIFT if plan.name in roles else DATA_DRIFT
                alert = _alert(model.name, kind, plan, settings, window, verdicts, strongest, ref, cur)
                alerts.append(self._noting_persistence(alert))
        return alerts

    def _noting_persistence(self, alert: Alert) -> Alert:
        k = self._settings.persistence
        if k <= 1:
            return alert
        note = f"; drifted in {k} consecutive windows"
        return replace(alert, observed=alert.observed + note, message=alert.message + note)


# ------------------------------------------------------------------------------ counting


def _bin_slots(plan: _Plan, x: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bin of every countable row, and those rows (finite values within the outer edges)."""
    edges = plan.edges
    assert edges is not None
    rows = np.flatnonzero(valid & np.isfinite(x) & (x >= edges[0]) & (x <= edges[-1]))
    # As stats.bin_counts (and numpy): a value on a finite last edge goes into the last bin.
    slots = np.minimum(np.searchsorted(edges, x[rows], side="right") - 1, edges.size - 2)
    return slots, rows


def _category_slots(plan: _Plan, batch: EventBatch, name: str, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Slot of every non-null row of field ``name`` (its category, or the unseen slot), and those rows."""
    codes, uniques = batch.factorized(name)
    unseen = len(plan.index)
    slot_of = np.fromiter((plan.index.get(category_key(u), unseen) for u in uniques), np.int64, len(uniques))
    rows = np.flatnonzero(valid & (codes >= 0))
    return slot_of[codes[rows]], rows


# ---------------------------------------------------------------------------- evaluation


def _read_counters(fields: Mapping[str, str]) -> dict[str, dict[str, int]]:
    """``feature -> bin index or category -> count`` of the window's ``h|``/``c|`` fields."""
    out: dict[str, dict[str, int]] = defaultdict(dict)
    for name, value in fields.items():
        if name.startswith((HISTOGRAM_PREFIX, CATEGORY_PREFIX)):
            _, feature, slot = name.split("|", 2)
            out[feature][slot] = int(float(value))
    return out


def _numeric_vectors(plan: _Plan, counts: Mapping[str, int]) -> tuple[np.ndarray, np.ndarray]:
    ref = np.asarray(plan.profile.bin_freqs, dtype=np.float64)  # type: ignore[union-attr]
    cur = np.zeros(ref.size, dtype=np.float64)
    for slot, count in counts.items():
        # Bins beyond the profile (written under a profile with more bins) cannot be compared.
        if slot.isdigit() and int(slot) < ref.size:
            cur[int(slot)] += count
    return ref, cur


def _categorical_vectors(plan: _Plan, counts: Mapping[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """Reference shares and counts per category, the unseen/other slot last (for the text)."""
    feature = plan.profile
    assert isinstance(feature, CategoricalProfile)
    categories = list(feature.frequencies)
    ref = np.array([feature.frequencies[c] for c in categories] + [feature.other_rate], dtype=np.float64)
    cur = np.array([counts.get(c, 0) for c in categories] + [0], dtype=np.float64)
    cur[-1] = sum(v for k, v in counts.items() if k not in feature.frequencies)
    return ref, cur


def _judge(
    plan: _Plan, settings: FeatureDriftSettings, counts: Mapping[str, int]
) -> tuple[np.ndarray, np.ndarray, list[DriftVerdict]]:
    """Reference shares, window counts and verdicts of one field (no verdicts below min_count)."""
    if plan.numeric:
        ref, cur = _numeric_vectors(plan, counts)
        verdicts = evaluate_numeric_drift(
            ref,
            cur,
            psi_threshold=settings.psi_threshold,
            js_threshold=settings.js_threshold,
            min_count=settings.min_count,
            ks_alpha=settings.alpha,
        )
        return ref, cur, verdicts
    feature = plan.profile
    assert isinstance(feature, CategoricalProfile)
    ref, cur = _categorical_vectors(plan, counts)
    verdicts = evaluate_categorical_drift(
        feature.frequencies,
        feature.other_rate,
        counts,
        js_threshold=settings.js_threshold,
        alpha=settings.alpha,
        min_count=settings.min_count,
    )
    return ref, cur, verdicts


def _corrected(verdict: DriftVerdict, tests: int) -> DriftVerdict:
    """A test's verdict at level ``alpha / tests`` (Bonferroni); distances unchanged."""
    if verdict.p_value is None or tests <= 1:
        return verdict
    level = verdict.threshold / tests
    return replace(verdict, threshold=level, drifted=verdict.p_value < level)


def _is_test(verdict: DriftVerdict) -> bool:
    return verdict.p_value is not None


def decide(verdicts: list[DriftVerdict], rule: str = "effect_and_test") -> DriftVerdict | None:
    """The verdict an alert names, or None when the window did not drift.

    Under ``"effect_and_test"`` an effect size (PSI, JS) must be above its threshold and
    the test (KS, chi-square) significant; a test that could not be computed (fewer than
    two bins with enough expected count, reported as statistic 0 and p = 1) does not
    veto. Under ``"any"`` any drifted verdict suffices.

    The strongest verdict is the effect size furthest above its threshold (ratio
    value / threshold). Tests rank after effect sizes: in a large window a p-value is
    near 0 for any shift, so it says little about how strong the shift is.
    """
    effects = [v for v in verdicts if not _is_test(v) and v.drifted]
    tests = [v for v in verdicts if _is_test(v)]
    significant = [v for v in tests if v.drifted]
    if rule == "effect_and_test":
        undecided = [v for v in tests if not (v.value == 0.0 and v.p_value == 1.0)]
        if not effects or (undecided and not significant):
            return None
    elif not (effects or significant):
        return None
    if effects:
        return max(effects, key=lambda v: v.value / v.threshold)
    return min(significant, key=lambda v: v.p_value or 0.0)


def _p_text(p: float | None) -> str:
    # Below the smallest double the p-value underflows to 0; "p=0" would overstate it.
    return "p<1e-300" if not p else f"p={p:.2g}"


def _verdict_text(verdict: DriftVerdict) -> str:
    label = _LABELS.get(verdict.statistic, verdict.statistic)
    if verdict.statistic == "ks_binned":
        return f"KS D={verdict.value:.3g} ({_p_text(verdict.p_value)})"
    if _is_test(verdict):
        return f"{label} {verdict.value:.4g} ({_p_text(verdict.p_value)})"
    return f"{label} {verdict.value:.3g}"


def _interval(edges: np.ndarray, i: int) -> str:
    lo, hi = edges[i], edges[i + 1]
    left = "(" if np.isinf(lo) else "["
    return f"{left}{lo:.4g}, {hi:.4g})"


def _numeric_shape(edges: np.ndarray, ref: np.ndarray, cur: np.ndarray) -> str:
    """Which way the mass moved, and the bin that changed most."""
    p, q = ref / ref.sum(), cur / cur.sum()
    bins = np.arange(p.size)
    shift = float(q @ bins - p @ bins)
    if abs(shift) >= 0.1:
        direction = f"mean bin shifted {'up' if shift > 0 else 'down'} by {abs(shift):.2f} of {p.size} bins"
    else:
        direction = "shape changed, mean bin unchanged"
    j = int(np.argmax(np.abs(q - p)))
    return f"{direction}; bin {_interval(edges, j)} holds {q[j]:.1%} (baseline {p[j]:.1%})"


def _categorical_shape(categories: list[str], ref: np.ndarray, cur: np.ndarray, top: int = 3) -> str:
    """The categories whose share changed most."""
    p, q = ref / ref.sum(), cur / cur.sum()
    labels = [*categories, "other/unseen"]
    order = np.argsort(-np.abs(q - p), kind="stable")[:top]
    return ", ".join(f"{labels[i]}={q[i]:.1%} (baseline {p[i]:.1%})" for i in order.tolist() if q[i] != p[i])


def _alert(
    model: str,
    kind: str,
    plan: _Plan,
    settings: FeatureDriftSettings,
    window: WindowSnapshot,
    verdicts: list[DriftVerdict],
    strongest: DriftVerdict,
    ref: np.ndarray,
    cur: np.ndarray,
) -> Alert:
    count, total = int(cur.sum()), window.events
    stats_text = ", ".join(_verdict_text(v) for v in verdicts)
    if plan.numeric:
        assert plan.edges is not None
        observed = f"{stats_text}; {_numeric_shape(plan.edges, ref, cur)}"
        expected = (
            f"the baseline histogram ({ref.size} bins): PSI <= {settings.psi_threshold:g}, "
            f"JS <= {settings.js_threshold:g}, KS p >= {settings.alpha:g}"
        )
    else:
        categories = list(plan.index)
        observed = f"{stats_text}; {_categorical_shape(categories, ref, cur)}"
        mix = ", ".join(f"{c}={ref[i]:.1%}" for i, c in enumerate(categories[:5]))
        expected = (
            f"the baseline mix ({mix}{', ...' if len(categories) > 5 else ''}): "
            f"chi-square p >= {settings.alpha:g}, JS <= {settings.js_threshold:g}"
        )
    label = _LABELS.get(strongest.statistic, strongest.statistic)
    if _is_test(strongest):
        value = float(strongest.p_value or 0.0)
        headline = f"{label} {_p_text(value)}, below {strongest.threshold:g}"
    else:
        value = strongest.value
        headline = f"{label} {value:.3g} above {strongest.threshold:g}"
    return Alert(
        model=model,
        kind=kind,
        feature=plan.name,
        slice="",
        severity=settings.severity,
        window_start=window.start_ms,
        window_end=window.end_ms,
        count=count,
        total=total,
        rate=count / total if total else 0.0,
        observed=observed,
        expected=expected,
        detector=strongest.statistic,
        message=f"{kind.replace('_', ' ')} on {plan.name!r}: {headline} over {count} values ({observed})",
        value=value,
        threshold=strongest.threshold,
    )

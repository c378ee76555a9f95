"""Window drift statistics (stream_guard.drift.window) on simulated streams, without Redis.

Batches go through the checkers' ``findings`` and ``build_updates`` as in the worker;
a small interpreter applies the ``StateUpdate`` ops to dicts the way the Lua script
applies them to Redis, and each closed window goes through ``finding_alerts`` and
``WindowDrift``. Streams are seeded, with known change points.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pytest

from stream_guard.aggregation import build_updates
from stream_guard.alerts.evaluate import finding_alerts
from stream_guard.alerts.model import Alert, Severity
from stream_guard.batch import EventBatch
from stream_guard.decoding import Decoded
from stream_guard.drift import (
    DATA_DRIFT,
    ONLINE_DRIFT,
    PREDICTION_DRIFT,
    UNSEEN,
    DriftSettings,
    DriftVerdict,
    OnlineDrift,
    WindowDrift,
    evaluate_categorical_drift,
)
from stream_guard.drift.window import decide, profile_tag
from stream_guard.learning import learn_profile
from stream_guard.model import ModelRuntime
from stream_guard.profile import BaselineProfile, CategoricalProfile
from stream_guard.settings import ModelConfig
from stream_guard.state.keys import ModelKeys
from stream_guard.state.memory import MemoryState
from stream_guard.state.ops import KEYLESS, split_ops
from stream_guard.state.window_store import StateUpdate, WindowSnapshot
from stream_guard.tools.simulator import DEVICE_TYPES, Simulator

MODEL = "fraud"
TOPIC = "fraud.inferences"
NUMERIC = ["amount", "age", "account_age_days", "num_tx_24h", "is_new_user"]
CATEGORICAL = ["merchant_category", "device_type", "country"]
WINDOW_MS = 10_000
T0 = 1_700_000_000_000  # a window start
PER_WINDOW = WINDOW_MS  # one event per ms
BATCH = 1000
PARTITIONS = 3
CHANGE = 50_000  # index of the first changed event in the change-point streams
DRIFT_KINDS = (DATA_DRIFT, PREDICTION_DRIFT, ONLINE_DRIFT)
#: Tests of one window's statistics judge it alone, without the persistence rule.
ONE_WINDOW = DriftSettings(persistence=1)


# --------------------------------------------------------------------------- harness


def new_state(keys: ModelKeys) -> MemoryState:
    """The in-memory window store, which runs ops as the Lua script does (tests/state/test_conformance.py)."""
    return MemoryState(keys, window_ms=WINDOW_MS, lateness_ms=0)


def apply(state: MemoryState, update: StateUpdate) -> None:
    """Apply one update; its ops may only name the update's own keys."""
    assert all(op in KEYLESS or int(args[0]) >= 5 for op, args in split_ops(update.ops)), (
        "Lua KEYS 1..4 are the fixed model keys"
    )
    assert state.apply([update], now_ms=0) == [1]


def make_model(numeric: list[str] = NUMERIC, categorical: list[str] = CATEGORICAL) -> ModelRuntime:
    return ModelRuntime(
        config=ModelConfig(name=MODEL, topics=[TOPIC], score_field="score", prediction_field="prediction"),
        reader_schema={},
        fields={},
        decoder=None,
        numeric_features=list(numeric),
        categorical_features=list(categorical),
    )


def make_batch(records: list[dict[str, Any]], first_index: int, failed: np.ndarray | None = None) -> EventBatch:
    """Events ``first_index...`` of a stream spread round-robin over the partitions."""
    index = np.arange(first_index, first_index + len(records))
    return EventBatch(
        model=MODEL,
        decoded=[Decoded(values=r, issues=[]) for r in records],
        topics=[TOPIC] * len(records),
        partitions=index % PARTITIONS,
        offsets=index // PARTITIONS,
        event_time_ms=np.array([r["ts"] for r in records], dtype=np.int64),
        event_ids=[r["event_id"] for r in records],
        failed=np.zeros(len(records), dtype=bool) if failed is None else failed,
    )


def clean_records(n: int, seed: int) -> list[dict[str, Any]]:
    return Simulator(encoding="json", seed=seed).records(n, T0, 1)


@dataclass
class Run:
    """What a stream produced: closed windows, their alerts, and every drift finding."""

    windows: list[WindowSnapshot]
    alerts: dict[int, list[Alert]]  # by window start
    findings: list[tuple[str, str, int]] = field(default_factory=list)  # kind, feature, stream index

    def drift_alerts(self, start: int) -> list[Alert]:
        return [a for a in self.alerts[start] if a.kind in DRIFT_KINDS]

    def first_finding(self, kind: str, feature: str, after: int = 0) -> int | None:
        hits = [i for k, f, i in self.findings if k == kind and f == feature and i >= after]
        return min(hits) if hits else None


def run_stream(
    records: list[dict[str, Any]],
    profile: BaselineProfile,
    settings: DriftSettings | None = None,
    model: ModelRuntime | None = None,
) -> Run:
    """Run ``records`` batch by batch through the drift checkers, as the worker would."""
    model = model or make_model()
    settings = settings or DriftSettings()
    window = WindowDrift({MODEL: profile}, settings)
    online = OnlineDrift({MODEL: profile}, settings)
    keys = ModelKeys("sg", MODEL)
    state = new_state(keys)
    run = Run([], {})
    for first in range(0, len(records), BATCH):
        batch = make_batch(records[first : first + BATCH], first)
        findings = [f for checker in (window, online) for f in checker.findings(model, batch)]
        for finding in findings:
            run.findings += [(finding.kind, finding.feature, first + int(r)) for r in finding.rows]
        for update in build_updates(
            batch, findings, keys, window_ms=WINDOW_MS, max_examples=5, contributors=[window.contribute]
        ):
            apply(state, update)
    for start in state.open_windows():
        snapshot = state.snapshot(start)
        run.windows.append(snapshot)
        run.alerts[start] = finding_alerts(MODEL, snapshot) + window(model, snapshot)
    return run


def window_start(index: int) -> int:
    return T0 + (index // PER_WINDOW) * WINDOW_MS


def shifted(
    records: list[dict[str, Any]], start: int, change: Callable[[dict[str, Any]], None]
) -> list[dict[str, Any]]:
    out = [dict(r) for r in records]
    for r in out[start:]:
        change(r)
    return out


def scale_amount(r: dict[str, Any]) -> None:
    r["amount"] = round(r["amount"] * 1.5, 2)


def raise_score(r: dict[str, Any]) -> None:
    r["score"] = min(1.0, r["score"] + 0.2)
    r["prediction"] = int(r["score"] >= 0.5)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def profile() -> BaselineProfile:
    frame = pd.DataFrame(Simulator(encoding="json", seed=101).records(100_000, T0 - 10**9, 1))
    return learn_profile(
        frame,
        model=MODEL,
        numeric=[*NUMERIC, "score"],
        categorical=[*CATEGORICAL, "prediction"],
        source="simulator seed 101",
    )


@pytest.fixture(scope="module")
def stationary(profile: BaselineProfile) -> Run:
    return run_stream(clean_records(200_000, seed=202), profile)


@pytest.fixture(scope="module")
def amount_shift(profile: BaselineProfile) -> Run:
    return run_stream(shifted(clean_records(100_000, seed=303), CHANGE, scale_amount), profile)


@pytest.fixture(scope="module")
def device_shift(profile: BaselineProfile) -> Run:
    rng = np.random.default_rng(404)
    names = [d for d, _ in DEVICE_TYPES]
    others = sum(p for d, p in DEVICE_TYPES if d != "android")
    shares = [0.8 if d == "android" else 0.2 * p / others for d, p in DEVICE_TYPES]
    draws = iter(rng.choice(names, size=100_000 - CHANGE, p=shares).tolist())

    def android_heavy(r: dict[str, Any]) -> None:
        r["device_type"] = next(draws)

    return run_stream(shifted(clean_records(100_000, seed=404), CHANGE, android_heavy), profile)


@pytest.fixture(scope="module")
def score_shift(profile: BaselineProfile) -> Run:
    return run_stream(shifted(clean_records(100_000, seed=505), CHANGE, raise_score), profile)


@pytest.fixture(scope="module")
def shifted_from_start(profile: BaselineProfile) -> Run:
    def everything(r: dict[str, Any]) -> None:
        scale_amount(r)
        raise_score(r)

    return run_stream(shifted(clean_records(30_000, seed=606), 0, everything), profile)


# --------------------------------------------------------------------------- scenarios


def test_stationary_stream_raises_no_drift(stationary: Run) -> None:
    assert len(stationary.windows) == 20
    assert all(w.events == PER_WINDOW for w in stationary.windows)
    raised = [(a.kind, a.feature, a.observed) for w in stationary.windows for a in stationary.drift_alerts(w.start_ms)]
    assert raised == []
    assert stationary.findings == []  # no online_drift finding in 200k events x 6 series x 3 partitions


def test_stationary_windows_hold_full_histograms(stationary: Run, profile: BaselineProfile) -> None:
    window = stationary.windows[0]
    for name in [*NUMERIC, "score"]:
        counts = window.with_prefix(f"h|{name}|")
        assert len(counts) <= len(profile.features[name].bin_edges) - 1
        # every finite value is counted once (age has ~2 % nulls)
        total = sum(int(v) for v in counts.values())
        assert (0.95 if name == "age" else 1.0) * PER_WINDOW <= total <= PER_WINDOW
    for name in [*CATEGORICAL, "prediction"]:
        counts = window.with_prefix(f"c|{name}|")
        assert sum(int(v) for v in counts.values()) == PER_WINDOW
        assert UNSEEN not in counts
    # only the model's fields are counted: no histogram of user_id or event_id
    assert {k.split("|")[1] for k in window.fields if k[:2] in ("h|", "c|")} == {
        *NUMERIC,
        *CATEGORICAL,
        "score",
        "prediction",
    }


def test_amount_shift_is_data_drift_once_it_lasted_two_windows(amount_shift: Run) -> None:
    second = window_start(CHANGE) + WINDOW_MS
    for w in amount_shift.windows:
        alerts = amount_shift.drift_alerts(w.start_ms)
        window_drift = [a for a in alerts if a.kind == DATA_DRIFT]
        if w.start_ms < window_start(CHANGE):
            assert alerts == [], f"window {w.start_ms}"
        else:
            # persistence 2 (the default): the change's first window drifted, the alert waits for the second
            assert [a.feature for a in window_drift] == ([] if w.start_ms < second else ["amount"]), w.start_ms
    alert = next(a for a in amount_shift.alerts[second] if a.kind == DATA_DRIFT)
    assert alert.detector in ("psi", "js_distance")
    assert alert.value is not None and alert.threshold is not None and alert.value > alert.threshold
    assert "mean bin shifted up" in alert.observed
    assert "KS D=" in alert.observed and "PSI <= 0.2" in alert.expected
    assert alert.severity is Severity.WARNING and alert.slice == ""
    assert alert.window_start == second and alert.window_end == second + WINDOW_MS
    assert "drifted in 2 consecutive windows" in alert.observed


def test_amount_shift_is_caught_online_within_a_few_thousand_events(amount_shift: Run) -> None:
    assert amount_shift.first_finding(ONLINE_DRIFT, "amount") is not None
    first = amount_shift.first_finding(ONLINE_DRIFT, "amount")
    assert CHANGE <= first < CHANGE + 3000
    # every partition notices, and nothing else is flagged
    assert {f for k, f, _ in amount_shift.findings} == {"amount"}
    online = [a for a in amount_shift.alerts[window_start(CHANGE)] if a.kind == ONLINE_DRIFT]
    assert [a.feature for a in online] == ["amount"]
    assert online[0].count >= 1 and "detected a change" in online[0].observed


def test_sustained_drift_keeps_one_stable_incident(amount_shift: Run) -> None:
    after = [w.start_ms for w in amount_shift.windows if w.start_ms > window_start(CHANGE)]
    alerts = [next(a for a in amount_shift.alerts[s] if a.kind == DATA_DRIFT) for s in after]
    assert len(alerts) == 4
    assert len({a.incident_id for a in alerts}) == 1
    assert len({a.alert_id for a in alerts}) == 4


def test_device_mix_change_is_data_drift_with_significant_chi_square(
    device_shift: Run, profile: BaselineProfile
) -> None:
    for w in device_shift.windows:
        kinds = [(a.kind, a.feature) for a in device_shift.drift_alerts(w.start_ms)]
        assert kinds == ([] if w.start_ms <= window_start(CHANGE) else [(DATA_DRIFT, "device_type")])
    changed = device_shift.windows[CHANGE // PER_WINDOW + 1]
    (alert,) = device_shift.drift_alerts(changed.start_ms)
    assert re.match(
        r"chi-square \d+ \(p<1e-300\), JS 0\.3\d+; android=(79|80)\.\d% \(baseline 45\.\d%\)", alert.observed
    )
    counts = {k: int(v) for k, v in changed.with_prefix("c|device_type|").items()}
    feature = profile.features["device_type"]
    verdicts = {v.statistic: v for v in evaluate_categorical_drift(feature.frequencies, feature.other_rate, counts)}
    assert verdicts["chi_square"].drifted and verdicts["chi_square"].p_value < 1e-100  # type: ignore[operator]
    assert alert.detector == "js_distance" and alert.value == pytest.approx(verdicts["js_distance"].value)


def test_score_shift_is_prediction_drift(score_shift: Run) -> None:
    for w in score_shift.windows:
        alerts = score_shift.drift_alerts(w.start_ms)
        if w.start_ms < window_start(CHANGE):
            assert alerts == []
        elif w.start_ms == window_start(CHANGE):
            assert {a.kind for a in alerts} <= {ONLINE_DRIFT}  # window statistics wait for a second window
        else:
            assert {(a.kind, a.feature) for a in alerts if a.kind != ONLINE_DRIFT} == {
                (PREDICTION_DRIFT, "score"),
                (PREDICTION_DRIFT, "prediction"),
            }
    first = score_shift.first_finding(ONLINE_DRIFT, "score")
    assert first is not None and CHANGE <= first < CHANGE + 1000


def test_drift_from_the_first_event_is_caught_online_in_the_first_window(shifted_from_start: Run) -> None:
    first_window, second_window = (w.start_ms for w in shifted_from_start.windows[:2])
    kinds = {(a.kind, a.feature) for a in shifted_from_start.alerts[first_window]}
    assert {(ONLINE_DRIFT, "amount"), (ONLINE_DRIFT, "score")} <= kinds
    # the window statistics drifted from the first window; their alerts need a second one
    kinds = {(a.kind, a.feature) for a in shifted_from_start.alerts[second_window]}
    assert {(DATA_DRIFT, "amount"), (PREDICTION_DRIFT, "score")} <= kinds
    for feature in ("amount", "score"):
        hits = [i for k, f, i in shifted_from_start.findings if f == feature]
        # the seeded detector of every partition fires early in the first window
        assert {i % PARTITIONS for i in hits if i < PER_WINDOW} == set(range(PARTITIONS))
        # ADWIN at delta 1e-5 (the false-alarm budget's default) needs up to about 2,000 events per partition
        assert min(hits) < 7000


# --------------------------------------------------------------------------- counting


def test_contribute_counts_match_profile_bins_and_skip_failed_rows(profile: BaselineProfile) -> None:
    records = clean_records(3000, seed=7)
    records[5]["device_type"] = "smart-fridge"
    records[6]["device_type"] = "toaster"
    failed = np.zeros(3000, dtype=bool)
    failed[100:200] = True
    batch = make_batch(records, 0, failed)
    drift = WindowDrift({MODEL: profile})
    model = make_model()
    assert drift.findings(model, batch) == []
    keys = ModelKeys("sg", MODEL)
    state = new_state(keys)
    for update in build_updates(batch, [], keys, window_ms=WINDOW_MS, max_examples=5, contributors=[drift.contribute]):
        apply(state, update)
    window = state.snapshot(T0)
    kept = [r for r, bad in zip(records, failed, strict=True) if not bad]
    amounts = np.array([r["amount"] for r in kept])
    expected = profile.features["amount"].bin_counts(amounts)
    got = np.zeros_like(expected)
    for b, v in window.with_prefix("h|amount|").items():
        got[int(b)] = int(v)
    assert got.tolist() == expected.tolist()
    devices = window.with_prefix("c|device_type|")
    assert devices[UNSEEN] == "2"
    assert int(devices["android"]) == sum(r["device_type"] == "android" for r in kept)
    predictions = window.with_prefix("c|prediction|")
    assert set(predictions) <= {"0", "1"}  # ints keyed as the profile keys them


def test_disabled_feature_is_neither_counted_nor_judged(profile: BaselineProfile) -> None:
    settings = DriftSettings.from_dict({"features": {"amount": {"enabled": False}}})
    run = run_stream(shifted(clean_records(20_000, seed=8), 10_000, scale_amount), profile, settings)
    assert not any(k.startswith("h|amount|") for w in run.windows for k in w.fields)
    assert all(a.feature != "amount" for alerts in run.alerts.values() for a in alerts)


def _snapshot(fields: dict[str, int]) -> WindowSnapshot:
    return WindowSnapshot(T0, T0 + WINDOW_MS, {"n": "1000", **{k: str(v) for k, v in fields.items()}})


def test_min_count_and_severity_come_from_settings(profile: BaselineProfile) -> None:
    # every amount in the top bin: drifted whatever the size, but judged only from min_count values
    top = len(profile.features["amount"].bin_edges) - 2
    model = make_model()
    small = _snapshot({f"h|amount|{top}": 199})
    big = _snapshot({f"h|amount|{top}": 200})
    drift = WindowDrift({MODEL: profile}, ONE_WINDOW)
    assert drift(model, small) == []
    (alert,) = drift(model, big)
    assert (alert.kind, alert.feature, alert.count, alert.severity) == (DATA_DRIFT, "amount", 200, Severity.WARNING)
    strict = DriftSettings.from_dict(
        {"min_count": 500, "persistence": 1, "features": {"amount": {"severity": "critical"}}}
    )
    assert WindowDrift({MODEL: profile}, strict)(model, big) == []
    lenient = DriftSettings.from_dict(
        {"persistence": 1, "features": {"amount": {"min_count": 10, "severity": "critical"}}}
    )
    (alert,) = WindowDrift({MODEL: profile}, lenient)(model, small)
    assert alert.severity is Severity.CRITICAL


def test_unseen_categories_drift_and_prediction_kind_follows_the_field_role(profile: BaselineProfile) -> None:
    model = make_model()
    drift = WindowDrift({MODEL: profile}, ONE_WINDOW)
    (alert,) = drift(model, _snapshot({f"c|country|{UNSEEN}": 400, "c|country|US": 400}))
    assert (alert.kind, alert.feature) == (DATA_DRIFT, "country")
    assert "other/unseen=50.0%" in alert.observed
    (alert,) = drift(model, _snapshot({"c|prediction|1": 900, "c|prediction|0": 100}))
    assert alert.kind == PREDICTION_DRIFT
    # a model without that field role: the same counters are data drift
    plain = ModelRuntime(ModelConfig(name=MODEL, topics=[TOPIC]), {}, {}, None, [], ["prediction"])
    (alert,) = drift(plain, _snapshot({"c|prediction|1": 900, "c|prediction|0": 100}))
    assert alert.kind == DATA_DRIFT


def test_model_without_profile_is_ignored(profile: BaselineProfile) -> None:
    drift = WindowDrift({"other": profile})
    batch = make_batch(clean_records(100, seed=9), 0)
    keys = ModelKeys("sg", MODEL)
    updates = build_updates(batch, [], keys, window_ms=WINDOW_MS, max_examples=5, contributors=[drift.contribute])
    assert not any(isinstance(op, str) and op.startswith(("h|", "c|")) for u in updates for op in u.ops)
    assert drift(make_model(), _snapshot({"h|amount|0": 1000})) == []


# --------------------------------------------------------------------------- decision rule


def _v(statistic: str, value: float, threshold: float, drifted: bool, p: float | None = None) -> DriftVerdict:
    return DriftVerdict(statistic, value, threshold, drifted, p)


def test_decide_needs_effect_and_test_by_default() -> None:
    psi_hi, js_hi = _v("psi", 0.5, 0.2, True), _v("js_distance", 0.15, 0.1, True)
    ks_sig, ks_not = _v("ks_binned", 0.2, 0.01, True, 1e-9), _v("ks_binned", 0.01, 0.01, False, 0.4)
    assert decide([psi_hi, js_hi, ks_sig]) is psi_hi  # 2.5x its threshold beats 1.5x
    assert decide([psi_hi, js_hi, ks_not]) is None  # small window noise: test not significant
    assert decide([_v("psi", 0.01, 0.2, False), _v("js_distance", 0.02, 0.1, False), ks_sig]) is None
    assert decide([_v("psi", 0.01, 0.2, False), ks_sig], rule="any") is ks_sig
    assert decide([psi_hi, ks_not], rule="any") is psi_hi
    # a chi-square that could not be computed (one usable bin) does not veto
    assert decide([_v("chi_square", 0.0, 0.01, False, 1.0), js_hi]) is js_hi
    assert decide([]) is None


def test_windows_counted_under_another_profile_are_not_judged_on_their_bins(profile: BaselineProfile) -> None:
    records = shifted(clean_records(3000, seed=10), 0, scale_amount)
    profiles = {MODEL: profile}  # shared with the worker, which replaces entries on reload
    drift = WindowDrift(profiles, DriftSettings(min_count=100, persistence=1))
    model = make_model()
    keys = ModelKeys("sg", MODEL)
    state = new_state(keys)
    batch = make_batch(records, 0)
    drift.findings(model, batch)
    for update in build_updates(batch, [], keys, window_ms=WINDOW_MS, max_examples=5, contributors=[drift.contribute]):
        apply(state, update)
    window = state.snapshot(T0)
    assert window.with_prefix("hp|") == {profile_tag(profile): "3000"}
    assert [a.feature for a in drift(model, window)] == ["amount"]
    profiles[MODEL] = BaselineProfile.from_dict({**profile.to_dict(), "created_at": "2030-01-01T00:00:00Z"})
    assert drift(model, window) == []
    # categorical counters are keyed by category, not by bin: still judged
    window.fields[f"c|country|{UNSEEN}"] = "3000"
    assert [a.feature for a in drift(model, window)] == ["country"]
    del profiles[MODEL]
    assert drift(model, window) == []


def test_bonferroni_divides_alpha_by_the_fields_judged(profile: BaselineProfile) -> None:
    device = profile.features["device_type"]
    assert isinstance(device, CategoricalProfile)
    base = {c: round(1000 * f) for c, f in device.frequencies.items()}

    def chi_square_p(counts: dict[str, int]) -> float:
        verdicts = evaluate_categorical_drift(device.frequencies, device.other_rate, counts)
        return float(verdicts[0].p_value or 0.0)

    # a mix whose chi-square p-value lies between alpha / 2 and alpha
    counts = next(
        c
        for k in range(100)
        for c in [{**base, "android": base["android"] + k, "ios": base["ios"] - k}]
        if 0.005 < chi_square_p(c) < 0.01
    )
    country = profile.features["country"]
    assert isinstance(country, CategoricalProfile)
    fields = {f"c|device_type|{c}": n for c, n in counts.items()}
    fields |= {f"c|country|{c}": round(1000 * f) for c, f in country.frequencies.items()}
    window = _snapshot(fields)  # two fields judged: device_type and country
    model = make_model()
    plain = WindowDrift({MODEL: profile}, DriftSettings(rule="any", correction="none", persistence=1))
    (alert,) = plain(model, window)
    assert (alert.feature, alert.detector, alert.threshold) == ("device_type", "chi_square", 0.01)
    assert WindowDrift({MODEL: profile}, DriftSettings(rule="any", persistence=1))(model, window) == []


# --------------------------------------------------------------------------- persistence


def _window_at(index: int, fields: dict[str, int]) -> WindowSnapshot:
    start = T0 + index * WINDOW_MS
    return WindowSnapshot(start, start + WINDOW_MS, {"n": "1000", **{k: str(v) for k, v in fields.items()}})


def test_drift_alert_needs_persistence_consecutive_drifted_windows(profile: BaselineProfile) -> None:
    top = len(profile.features["amount"].bin_edges) - 2
    drifted, clean_bins = {f"h|amount|{top}": 1000}, profile.features["amount"].bin_freqs
    clean = {f"h|amount|{b}": round(1000 * f) for b, f in enumerate(clean_bins)}
    model = make_model()
    drift = WindowDrift({MODEL: profile}, DriftSettings(persistence=3))
    verdicts = [drift(model, _window_at(i, fields)) for i, fields in enumerate([drifted, drifted, clean, drifted])]
    assert verdicts == [[], [], [], []]  # a clean window breaks the run
    assert drift(model, _window_at(4, drifted)) == []  # two in a row
    (alert,) = drift(model, _window_at(5, drifted))  # three
    assert (alert.feature, alert.window_start) == ("amount", T0 + 5 * WINDOW_MS)
    assert "drifted in 3 consecutive windows" in alert.message
    # a window that is not judged (below min_count) breaks a run too; so does a gap
    assert drift(model, _window_at(6, {f"h|amount|{top}": 10})) == []
    assert drift(model, _window_at(8, drifted)) == [] and drift(model, _window_at(10, drifted)) == []


def test_drift_runs_remember_a_few_windows_per_field() -> None:
    from stream_guard.drift.persistence import KEPT_WINDOWS, DriftRuns

    runs = DriftRuns(2)
    assert [runs.observe("a", s, s + 10, True) for s in (0, 10)] == [False, True]
    assert runs.observe("b", 20, 30, True) is False  # fields are independent
    assert runs.observe("a", 20, 30, True) is True
    # windows closed out of order: 40 before 30 (unknown yet) waits, 30 after 20 alerts
    assert runs.observe("a", 40, 50, True) is False and runs.observe("a", 30, 40, True) is True
    for s in range(50, 1000, 10):
        runs.observe("a", s, s + 10, True)
    assert len(runs._verdicts["a"]) <= 2 + KEPT_WINDOWS + 1

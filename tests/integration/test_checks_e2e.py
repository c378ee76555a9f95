"""Baseline value checks and drift end to end: learned profile, real broker, real redis-server, alerts topic."""

from __future__ import annotations

import math
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from streamtest import (
    consume_all,
    findings_of,
    learn_simulated_profile,
    new_worker,
    produce,
    run_until,
    write_config,
)

from stream_guard.alerts.codec import decode_alert
from stream_guard.checks.row_checks import range_bounds
from stream_guard.profile import BaselineProfile, NumericProfile
from stream_guard.settings.checks import CHECKS, DEFAULT_TOLERANCES
from stream_guard.tools.simulator import Simulator

pytestmark = pytest.mark.integration

WINDOW_MS = 60_000
START_MS = 1_700_000_000_000 - 1_700_000_000_000 % WINDOW_MS  # window-aligned
STEP_MS = 20  # 3000 events per window
PER_WINDOW = WINDOW_MS // STEP_MS
CLEAN_WINDOWS = 3
FAULTY_WINDOWS = 2
ONSET_MS = START_MS + CLEAN_WINDOWS * WINDOW_MS
VALUE_FAULTS = {
    "amount_in_yen": 0.05,
    "age_sentinel": 0.05,
    "unseen_merchant": 0.02,
    "amount_nan": 0.02,
    "age_null": 0.10,
}


def _window_ms(alert: dict[str, Any]) -> int:
    return int(alert["window_start"].timestamp() * 1000)


def _latest_alerts(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    """Every alert of the topic, decoded with the alert schema; the newest message per alert_id."""
    latest: dict[str, dict[str, Any]] = {}
    for message in consume_all(bootstrap, topic, idle_s=2):
        alert = decode_alert(message.value())
        assert message.key().decode() == alert["alert_id"]
        latest[alert["alert_id"]] = alert
    return list(latest.values())


def _config_with_profile(tmp_path: Path, bootstrap: str, redis_url: str, unique: str) -> Any:
    config = write_config(
        tmp_path,
        bootstrap=bootstrap,
        redis_url=redis_url,
        unique=unique,
        window_s=WINDOW_MS // 1000,
        model_extra='profile = "profile.json"',
    )
    # The reference: clean records of another seed than the stream's.
    learn_simulated_profile(config, tmp_path / "profile.json", n=50_000, seed=1234)
    return config


def test_value_faults_fire_their_checks_in_the_first_faulty_window_and_never_before(
    tmp_path: Path, bootstrap: str, redis_url: str, unique: str
) -> None:
    """Each value fault fires its check on its feature in the onset window, counted exactly; clean windows fire none."""
    config = _config_with_profile(tmp_path, bootstrap, redis_url, unique)
    clean = list(Simulator(seed=21).stream(CLEAN_WINDOWS * PER_WINDOW, START_MS, step_ms=STEP_MS))
    faulty_sim = Simulator(seed=22, faults=VALUE_FAULTS)
    faulty = list(faulty_sim.stream(FAULTY_WINDOWS * PER_WINDOW, ONSET_MS, step_ms=STEP_MS))
    events = clean + faulty
    assert all(f is None for _, _, f in clean) and {f for _, _, f in faulty} >= set(VALUE_FAULTS)
    n = produce(bootstrap, config.models[0].topics[0], ((None, p, r["ts"]) for r, p, _ in events), partitions=3)

    worker = new_worker(config)
    run_until([worker], lambda: worker.stats.consumed >= n, timeout_s=90)
    assert (worker.stats.decoded, worker.stats.dead_lettered) == (n, 0)

    alerts = _latest_alerts(bootstrap, config.kafka.alerts_topic)
    before = [(a["kind"], a["feature"], _window_ms(a)) for a in alerts if _window_ms(a) < ONSET_MS]
    before = [b for b in before if b[0] in CHECKS]
    assert before == [], f"check alerts in clean windows: {before}"

    # A feature's findings are one incident (one alert, the others related): read them all.
    firing = [a for a in findings_of(alerts) if a["status"] == "FIRING"]
    first: dict[tuple[str, str], dict[str, Any]] = {}
    for alert in sorted(firing, key=_window_ms):
        first.setdefault((alert["kind"], alert["feature"]), alert)
    expected = [
        ("out_of_range", "amount"),
        ("out_of_range", "age"),
        ("sentinel_spike", "age"),
        ("unseen_category", "merchant_category"),
        ("nan", "amount"),
        ("null_rate", "age"),
    ]
    missing = [k for k in expected if k not in first]
    assert not missing, f"missing {missing}; got {sorted(first)}"
    assert {k: _window_ms(first[k]) for k in expected} == {k: ONSET_MS for k in expected}

    # Counts of the onset window, from the records produced.
    onset = [r for r, _, _ in faulty if r["ts"] < ONSET_MS + WINDOW_MS]
    profile_amount = BaselineProfile.load(tmp_path / "profile.json").features["amount"]
    assert isinstance(profile_amount, NumericProfile)
    lo, hi = range_bounds(profile_amount, DEFAULT_TOLERANCES["out_of_range"])
    amounts = [r["amount"] for r in onset]
    outside = sum(1 for a in amounts if math.isfinite(a) and not lo <= a <= hi)
    assert first[("out_of_range", "amount")]["count"] == outside > 0
    assert first[("out_of_range", "age")]["count"] == sum(1 for r in onset if r["age"] == -1)
    assert first[("nan", "amount")]["count"] == sum(1 for a in amounts if math.isnan(a))
    assert first[("unseen_category", "merchant_category")]["count"] == sum(
        1 for r in onset if r["merchant_category"] == "crypto"
    )
    assert first[("null_rate", "age")]["count"] == sum(1 for r in onset if r["age"] is None)
    # age's findings are one cause led by out_of_range (tier 1, critical); the sentinel is its evidence.
    assert first[("sentinel_spike", "age")]["carrier"] == first[("out_of_range", "age")]["alert_id"]
    assert first[("sentinel_spike", "age")]["value"] > first[("sentinel_spike", "age")]["threshold"]
    for key in expected:
        alert = first[key]
        assert alert["total"] == PER_WINDOW
        assert alert["window_end"] - alert["window_start"] == timedelta(milliseconds=WINDOW_MS)
        assert alert["severity"] == ("CRITICAL" if key[0] in ("out_of_range", "nan") else "WARNING")


def test_drift_after_the_change_raises_data_and_prediction_drift_and_none_before(
    tmp_path: Path, bootstrap: str, redis_url: str, unique: str
) -> None:
    """amount x1.5 and score +0.2 mid-stream raise data_drift(amount) and prediction_drift(score) then, not before."""
    config = _config_with_profile(tmp_path, bootstrap, redis_url, unique)
    sim = Simulator(seed=31)
    stable_windows, drifted_windows = 3, 3
    change_ms = START_MS + stable_windows * WINDOW_MS
    items = []
    for record in sim.records((stable_windows + drifted_windows) * PER_WINDOW, START_MS, step_ms=STEP_MS):
        if record["ts"] >= change_ms:
            # amount_drift and score_shift both at 100 %: every later event carries both.
            record = sim.corrupt(sim.corrupt(record, "amount_drift"), "score_shift")
        items.append((None, sim.encode(record), record["ts"]))
    n = produce(bootstrap, config.models[0].topics[0], items, partitions=3)

    worker = new_worker(config)
    run_until([worker], lambda: worker.stats.consumed >= n, timeout_s=90)
    assert worker.stats.decoded == n

    alerts = _latest_alerts(bootstrap, config.kafka.alerts_topic)
    drift_kinds = ("data_drift", "prediction_drift", "online_drift")
    drift = [a for a in findings_of(alerts) if a["kind"] in drift_kinds]
    early = [(a["kind"], a["feature"], _window_ms(a)) for a in drift if _window_ms(a) < change_ms]
    assert early == [], f"drift alerts before the change: {early}"
    # One cause, one incident: River's ADWIN sees amount's shift in the change's own window;
    # the window statistics agree one window later ([drift] persistence = 2) and join that
    # open incident as evidence, as does the score's shift, which follows amount's.
    opened = [a for a in alerts if a["status"] == "FIRING" and a["feature"] == "amount" and a["kind"] in drift_kinds]
    assert opened, [(a["kind"], a["feature"], a["status"]) for a in alerts]
    first = min(opened, key=_window_ms)
    assert _window_ms(first) in (change_ms, change_ms + WINDOW_MS), _window_ms(first) - START_MS
    assert first["kind"] in ("online_drift", "data_drift") and first["total"] == PER_WINDOW and first["count"] > 0
    score = [a for a in drift if a["feature"] == "score" and a["status"] == "FIRING"]
    assert score and all(a["cause_id"] == first["cause_id"] for a in score), score
    assert all(_window_ms(a) >= change_ms for a in score)
    # Nothing else about the inputs drifted.
    assert {a["feature"] for a in drift} <= {"amount", "score"}, sorted({a["feature"] for a in drift})


def test_profile_learned_from_the_topic_counts_missing_ages_as_nulls(
    tmp_path: Path, bootstrap: str, redis_url: str, unique: str
) -> None:
    """learn_from_topic records a missing age as null (as the live checks count it), not as NaN."""
    from stream_guard.learning import learn_from_topic
    from stream_guard.model import build_models

    config = write_config(tmp_path, bootstrap=bootstrap, redis_url=redis_url, unique=unique, partitions=1)
    events = list(Simulator(seed=41).stream(3000, START_MS, step_ms=STEP_MS))
    items = [(None, p, r["ts"]) for r, p, _ in events]
    # Tansu reports a partition's high watermark as the last record batch's base offset + 1,
    # and learn_from_topic stops at the high watermark: the last event goes in a batch of its own.
    n = produce(bootstrap, config.models[0].topics[0], items[:-1]) + produce(
        bootstrap, config.models[0].topics[0], items[-1:]
    )
    (model,) = build_models(config)
    profile = learn_from_topic(config, model, events=n, timeout_s=30)
    assert profile.row_count == n
    age = profile.features["age"]
    assert isinstance(age, NumericProfile)
    nulls = sum(1 for r, _, _ in events if r["age"] is None)
    assert nulls > 0
    assert (age.null_rate, age.nan_rate) == (pytest.approx(nulls / n), 0.0)

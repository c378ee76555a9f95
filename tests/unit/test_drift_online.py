"""Online River detectors in the worker (stream_guard.drift.online), on seeded streams."""

from __future__ import annotations

import pickle
import re
from typing import Any

import numpy as np
import pandas as pd
import pytest
from confluent_kafka import TopicPartition

from stream_guard.batch import EventBatch
from stream_guard.decoding import Decoded
from stream_guard.drift import ONLINE_DRIFT, DriftSettings, OnlineDrift, baseline_seed
from stream_guard.findings import RowFindings
from stream_guard.learning import learn_profile
from stream_guard.model import ModelRuntime
from stream_guard.profile import BaselineProfile, NumericProfile
from stream_guard.settings import ModelConfig
from stream_guard.tools.simulator import Simulator

MODEL = "fraud"
TOPIC = "fraud.inferences"
NUMERIC = ["amount", "age", "account_age_days", "num_tx_24h", "is_new_user"]
CATEGORICAL = ["merchant_category", "device_type", "country"]
T0 = 1_700_000_000_000
PARTITIONS = 3
BATCH = 1000
SERIES = [*NUMERIC, "score"]  # the default online features: numeric features + score


@pytest.fixture(scope="module")
def profile() -> BaselineProfile:
    frame = pd.DataFrame(Simulator(encoding="json", seed=101).records(100_000, T0 - 10**9, 1))
    return learn_profile(frame, model=MODEL, numeric=[*NUMERIC, "score"], categorical=[*CATEGORICAL, "prediction"])


@pytest.fixture(scope="module")
def model() -> ModelRuntime:
    return ModelRuntime(
        config=ModelConfig(name=MODEL, topics=[TOPIC], score_field="score", prediction_field="prediction"),
        reader_schema={},
        fields={},
        decoder=None,
        numeric_features=list(NUMERIC),
        categorical_features=list(CATEGORICAL),
    )


def records(n: int, seed: int, shift_from: int | None = None) -> list[dict[str, Any]]:
    """Clean events; from ``shift_from`` on, amounts x1.5 and scores +0.2."""
    out = Simulator(encoding="json", seed=seed).records(n, T0, 1)
    for r in out[shift_from:] if shift_from is not None else []:
        r["amount"] = round(r["amount"] * 1.5, 2)
        r["score"] = min(1.0, r["score"] + 0.2)
    return out


def make_batch(recs: list[dict[str, Any]], first_index: int, failed: np.ndarray | None = None) -> EventBatch:
    index = np.arange(first_index, first_index + len(recs))
    return EventBatch(
        model=MODEL,
        decoded=[Decoded(values=r, issues=[]) for r in recs],
        topics=[TOPIC] * len(recs),
        partitions=index % PARTITIONS,
        offsets=index // PARTITIONS,
        event_time_ms=np.array([r["ts"] for r in recs], dtype=np.int64),
        event_ids=[r["event_id"] for r in recs],
        failed=np.zeros(len(recs), dtype=bool) if failed is None else failed,
    )


def state(drift: OnlineDrift) -> tuple[dict[Any, tuple[float, ...]], dict[Any, int]]:
    """What an ADWIN monitor remembers: each key's window, and the offsets fed (pickles are not canonical)."""
    detectors = drift._monitor(MODEL)._detectors
    windows = {k: (d.width, d.total, d.variance, d.n_detections) for k, d in detectors.items()}
    return windows, dict(drift._fed)


def feed(drift: OnlineDrift, model: ModelRuntime, recs: list[dict[str, Any]], first: int = 0) -> list[tuple[str, int]]:
    """(feature, stream index) of every detection, feeding ``recs`` in batches."""
    hits = []
    for start in range(0, len(recs), BATCH):
        batch = make_batch(recs[start : start + BATCH], first + start)
        for finding in drift.findings(model, batch):
            assert finding.kind == ONLINE_DRIFT
            hits += [(finding.feature, first + start + int(r)) for r in finding.rows]
    return hits


# --------------------------------------------------------------------------- seeding


def test_seed_matches_the_baseline_mean_and_values(profile: BaselineProfile) -> None:
    rng = np.random.default_rng(0)
    for name in SERIES:
        feature = profile.features[name]
        assert isinstance(feature, NumericProfile) and feature.mean is not None
        seed = baseline_seed(feature, 20_000, rng)
        assert seed.mean() == pytest.approx(feature.mean, rel=0.02), name
    flags = baseline_seed(profile.features["is_new_user"], 5000, rng)  # type: ignore[arg-type]
    assert set(np.unique(flags).tolist()) == {0.0, 1.0}  # discrete: drawn from the top values
    counts = baseline_seed(profile.features["num_tx_24h"], 5000, rng)  # type: ignore[arg-type]
    assert np.array_equal(counts, np.round(counts))


# --------------------------------------------------------------------------- detection


def test_stationary_stream_gives_no_findings(profile: BaselineProfile, model: ModelRuntime) -> None:
    drift = OnlineDrift({MODEL: profile})
    assert feed(drift, model, records(60_000, seed=11)) == []
    assert sorted(drift._monitor(MODEL).keys()) == sorted((f, f"{TOPIC}:{p}") for f in SERIES for p in range(3))


def test_mean_shift_is_detected_within_a_few_thousand_events(profile: BaselineProfile, model: ModelRuntime) -> None:
    drift = OnlineDrift({MODEL: profile})
    hits = feed(drift, model, records(40_000, seed=12, shift_from=20_000))
    assert all(i >= 20_000 for _, i in hits)
    for feature in ("amount", "score"):
        first = {p: min((i for f, i in hits if f == feature and i % PARTITIONS == p), default=None) for p in range(3)}
        assert all(i is not None and i < 20_000 + 3000 for i in first.values()), (feature, first)
    assert {f for f, _ in hits} == {"amount", "score"}


def test_seeding_catches_drift_present_from_the_first_event(profile: BaselineProfile, model: ModelRuntime) -> None:
    shifted = records(6000, seed=13, shift_from=0)
    seeded = feed(OnlineDrift({MODEL: profile}), model, shifted)
    assert {f for f, _ in seeded} == {"amount", "score"}
    # ADWIN at delta 1e-5 (the false-alarm budget's default): about 1,200 events of each of the 3 partitions
    assert max(min(i for f, i in seeded if f == feature) for feature in ("amount", "score")) < 4000
    # without a seed the detector takes the drifted data as its reference
    unseeded = feed(OnlineDrift({MODEL: profile}, DriftSettings(seed_size=0)), model, shifted)
    assert unseeded == []


def test_finding_names_detector_window_and_reference(profile: BaselineProfile, model: ModelRuntime) -> None:
    drift = OnlineDrift({MODEL: profile}, DriftSettings(online_features=("amount",)))
    recs = records(3000, seed=14, shift_from=0)
    batch = make_batch(recs, 0)
    findings = drift.findings(model, batch)
    assert findings and {f.feature for f in findings} == {"amount"}
    assert {f.kind for f in findings} == {ONLINE_DRIFT}
    pattern = rf"ADWIN detected a change on {re.escape(TOPIC)}:\d \(window mean ([\d.]+) vs reference mean ([\d.]+)\)"
    for finding in findings:
        match = re.fullmatch(pattern, finding.observed)
        assert match, finding.observed
        window_mean, reference = map(float, match.groups())
        assert window_mean > 1.2 * reference
        assert reference == pytest.approx(profile.features["amount"].mean, rel=1e-3)  # type: ignore[union-attr]
        assert finding.expected.startswith("values as in the baseline (mean ")
        assert finding.values == [recs[int(r)]["amount"] for r in finding.rows]
        assert finding.slice == ""
        assert len({int(batch.partitions[r]) for r in finding.rows}) == 1  # one finding per partition


def test_values_are_fed_in_offset_order(profile: BaselineProfile, model: ModelRuntime) -> None:
    recs = records(6000, seed=15, shift_from=3000)
    ordered = OnlineDrift({MODEL: profile})
    shuffled = OnlineDrift({MODEL: profile})
    rng = np.random.default_rng(1)
    for start in range(0, len(recs), 2000):
        batch = make_batch(recs[start : start + 2000], start)
        perm = rng.permutation(len(batch))
        mixed = make_batch([batch.decoded[i].values for i in perm], start)
        mixed.partitions, mixed.offsets = batch.partitions[perm], batch.offsets[perm]
        expected = _rows_by_key(ordered.findings(model, batch), batch)
        got = _rows_by_key(shuffled.findings(model, mixed), mixed)
        assert got == expected
    assert state(ordered) == state(shuffled)


def _rows_by_key(findings: list[RowFindings], batch: EventBatch) -> dict[tuple[str, int], list[int]]:
    """Detections as (feature, partition) -> offsets, independent of row order."""
    out: dict[tuple[str, int], list[int]] = {}
    for f in findings:
        for r in f.rows.tolist():
            out.setdefault((f.feature, int(batch.partitions[r])), []).append(int(batch.offsets[r]))
    return {k: sorted(v) for k, v in out.items()}


def test_failed_rows_are_not_fed(profile: BaselineProfile, model: ModelRuntime) -> None:
    recs = records(3000, seed=16)
    for r in recs[1000:2000]:
        r["amount"] = 10_000.0
    failed = np.zeros(3000, dtype=bool)
    failed[1000:2000] = True
    drift = OnlineDrift({MODEL: profile})
    assert drift.findings(model, make_batch(recs, 0, failed)) == []


def test_other_detectors_and_their_parameters(profile: BaselineProfile, model: ModelRuntime) -> None:
    settings = DriftSettings.from_dict(
        {
            "detector": {"kind": "PageHinkley", "params": {"threshold": 50.0, "min_instances": 30, "mode": "up"}},
            "online_features": ["score"],
        }
    )
    drift = OnlineDrift({MODEL: profile}, settings)
    hits = feed(drift, model, records(24_000, seed=17, shift_from=12_000))
    assert hits and {f for f, _ in hits} == {"score"}
    assert 12_000 <= min(i for _, i in hits) < 12_000 + 3000
    detector = next(iter(drift._monitor(MODEL)._detectors.values()))
    assert (type(detector).__name__, detector.threshold, detector.mode) == ("PageHinkley", 50.0, "up")


def test_online_features_a_profile_lacks_are_skipped(profile: BaselineProfile, model: ModelRuntime) -> None:
    # one table configures every model: a listed feature may be categorical or absent in one of them
    drift = OnlineDrift({MODEL: profile}, DriftSettings(online_features=("country", "no_such_field", "score")))
    feed(drift, model, records(1000, seed=18))
    assert sorted(drift._monitor(MODEL).keys()) == [("score", f"{TOPIC}:{p}") for p in range(PARTITIONS)]


def test_model_without_profile_gives_nothing(profile: BaselineProfile, model: ModelRuntime) -> None:
    drift = OnlineDrift({"other": profile})
    assert drift.findings(model, make_batch(records(100, seed=18, shift_from=0), 0)) == []


# --------------------------------------------------------------------------- state


def test_redelivered_rows_are_not_fed_twice_and_repeat_their_findings(
    profile: BaselineProfile, model: ModelRuntime
) -> None:
    drift = OnlineDrift({MODEL: profile})
    recs = records(4000, seed=19, shift_from=2000)
    feed(drift, model, recs[:2000])
    batch = make_batch(recs[2000:3000], 2000)
    first = drift.findings(model, batch)
    assert first  # the shift is detected in this batch
    before, data = state(drift), drift.to_bytes()
    again = drift.findings(model, batch)  # the worker retries a batch whose Redis write failed
    assert state(drift) == before
    assert _rows_by_key(again, batch) == _rows_by_key(first, batch)
    assert {(f.feature, f.observed) for f in again} == {(f.feature, f.observed) for f in first}
    # a batch straddling old and new offsets feeds only the new ones
    overlap = make_batch(recs[2500:3500], 2500)
    reference = OnlineDrift.from_bytes(data, {MODEL: profile})
    assert _new_rows_only(drift.findings(model, overlap), overlap) == _new_rows_only(
        reference.findings(model, make_batch(recs[3000:3500], 3000)), make_batch(recs[3000:3500], 3000)
    )
    assert state(drift) == state(reference)


def _new_rows_only(findings: list[RowFindings], batch: EventBatch) -> dict[tuple[str, int], list[int]]:
    return {
        k: [o for o in v if o >= 1000] for k, v in _rows_by_key(findings, batch).items() if any(o >= 1000 for o in v)
    }


def test_checkpoint_round_trip_continues_exactly(profile: BaselineProfile, model: ModelRuntime) -> None:
    recs = records(30_000, seed=20, shift_from=15_000)
    straight = OnlineDrift({MODEL: profile})
    expected = feed(straight, model, recs)
    first = OnlineDrift({MODEL: profile})
    hits = feed(first, model, recs[:12_000])
    data = first.to_bytes()
    assert isinstance(pickle.loads(data), dict)
    restored = OnlineDrift.from_bytes(data, {MODEL: profile})
    hits += feed(restored, model, recs[12_000:], first=12_000)
    assert hits == expected and any(i >= 15_000 for _, i in hits)
    assert state(restored) == state(straight)


def test_checkpoint_is_refused_for_other_settings_profiles_or_bytes(
    profile: BaselineProfile, model: ModelRuntime
) -> None:
    drift = OnlineDrift({MODEL: profile})
    feed(drift, model, records(1000, seed=21))
    data = drift.to_bytes()
    with pytest.raises(ValueError, match="checkpoint was written for detector ADWIN"):
        OnlineDrift.from_bytes(
            data, {MODEL: profile}, DriftSettings.from_dict({"detector": {"params": {"delta": 0.01}}})
        )
    other = BaselineProfile.from_dict({**profile.to_dict(), "created_at": "2000-01-01T00:00:00Z"})
    with pytest.raises(ValueError, match="another baseline profile of model 'fraud'"):
        OnlineDrift.from_bytes(data, {MODEL: other})
    with pytest.raises(ValueError, match="not an OnlineDrift checkpoint"):
        OnlineDrift.from_bytes(b"garbage", {MODEL: profile})


def test_forget_drops_revoked_partitions_only(profile: BaselineProfile, model: ModelRuntime) -> None:
    drift = OnlineDrift({MODEL: profile})
    recs = records(3000, seed=22)
    feed(drift, model, recs)
    drift.forget([TopicPartition(TOPIC, 0), f"{TOPIC}:1"])
    keys = drift._monitor(MODEL).keys()
    assert sorted(keys) == sorted((f, f"{TOPIC}:2") for f in SERIES)
    # partition 0 comes back: its offsets are fed again, from a freshly seeded detector
    fresh = OnlineDrift({MODEL: profile})
    batch = make_batch(recs[:BATCH], 0)
    assert drift.findings(model, batch) == fresh.findings(model, batch) == []
    key = ("amount", f"{TOPIC}:0")
    assert state(drift)[0][key] == state(fresh)[0][key]
    rows_of_partition = len(range(0, BATCH, PARTITIONS))
    assert state(drift)[0][key][0] == 2000 + rows_of_partition  # the seed, then this batch


def test_a_replaced_profile_reseeds_the_model(profile: BaselineProfile, model: ModelRuntime) -> None:
    profiles = {MODEL: profile}  # shared with the worker, which replaces entries on reload
    drift = OnlineDrift(profiles)
    recs = records(6000, seed=23)
    feed(drift, model, recs[:3000])
    profiles[MODEL] = BaselineProfile.from_dict({**profile.to_dict(), "created_at": "2030-01-01T00:00:00Z"})
    assert feed(drift, model, recs[3000:], first=3000) == []
    # offsets fed before the reload are not fed again; the new detectors start from their seed
    assert state(drift)[0][("amount", f"{TOPIC}:0")][0] == 2000 + len(range(3000, 6000, PARTITIONS))
    del profiles[MODEL]
    assert drift.findings(model, make_batch(records(100, seed=24, shift_from=0), 6000)) == []
    assert MODEL not in drift._monitors

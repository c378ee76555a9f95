"""Online River detectors of stream_guard.drift.detectors, on seeded streams with known change points."""

from __future__ import annotations

import numpy as np
import pytest
from river import drift
from scipy import stats as sps

from stream_guard.drift.detectors import OnlineDriftMonitor, reference_sample
from stream_guard.settings import DetectorSpec

PROBS = ["0.001", "0.01", "0.05", "0.25", "0.5", "0.75", "0.95", "0.99", "0.999"]
NORMAL_QUANTILES = {p: float(sps.norm.ppf(float(p))) for p in PROBS}
NORMAL_EDGES = [-np.inf, -1.0, 0.0, 1.0, np.inf]
NORMAL_FREQS = np.diff(sps.norm.cdf(NORMAL_EDGES)).tolist()


def test_monitor_validates_spec_at_construction() -> None:
    with pytest.raises(ValueError):
        OnlineDriftMonitor(DetectorSpec("KSWIN", {"stat_size": 500}))


# --- ADWIN on numeric streams -----------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_adwin_quiet_on_stationary_stream(seed: int) -> None:
    stream = np.random.default_rng(seed).normal(size=20_000)
    assert OnlineDriftMonitor(DetectorSpec("ADWIN")).update_batch("x", stream) == []


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_adwin_detects_mean_shift_soon_after_change(seed: int) -> None:
    rng = np.random.default_rng(seed)
    stream = np.concatenate([rng.normal(0.0, 1.0, 5000), rng.normal(0.5, 1.0, 5000)])
    detections = OnlineDriftMonitor(DetectorSpec("ADWIN")).update_batch("x", stream)
    assert detections, "shift not detected"
    assert 5000 <= detections[0] < 6000


def test_state_is_kept_across_batches_and_keys_are_independent() -> None:
    rng = np.random.default_rng(4)
    stream = np.concatenate([rng.normal(0.0, 1.0, 5000), rng.normal(0.5, 1.0, 5000)])
    whole = OnlineDriftMonitor(DetectorSpec()).update_batch("x", stream)

    monitor = OnlineDriftMonitor(DetectorSpec())
    chunked = []
    for start in range(0, stream.size, 700):
        chunked += [start + i for i in monitor.update_batch("x", stream[start : start + 700])]
        monitor.update_batch("other", rng.normal(50.0, 9.0, 100))
    assert chunked == whole
    assert monitor.keys() == ["x", "other"]


def test_non_finite_values_are_skipped_and_indices_refer_to_input() -> None:
    rng = np.random.default_rng(5)
    clean = np.concatenate([rng.normal(0.0, 1.0, 3000), rng.normal(2.0, 1.0, 1000)])
    dirty = np.insert(clean, [0, 10, 3000, 3000], [np.nan, np.inf, np.nan, -np.inf])
    clean_hits = OnlineDriftMonitor(DetectorSpec()).update_batch("x", clean)
    dirty_hits = OnlineDriftMonitor(DetectorSpec()).update_batch("x", dirty)
    assert clean_hits
    assert dirty_hits == [i + 4 for i in clean_hits]  # all four inserts land before the change
    assert all(np.isfinite(dirty[i]) for i in dirty_hits)


def test_update_batch_rejects_2d_values() -> None:
    with pytest.raises(ValueError, match="1-D"):
        OnlineDriftMonitor(DetectorSpec()).update_batch("x", np.zeros((2, 2)))


# --- seeding from the baseline ------------------------------------------------------


def test_reference_sample_follows_the_quantiles() -> None:
    sample = reference_sample(NORMAL_EDGES, NORMAL_FREQS, NORMAL_QUANTILES, 50_000, np.random.default_rng(0))
    assert sample.shape == (50_000,)
    assert sample.min() >= NORMAL_QUANTILES["0.001"] and sample.max() <= NORMAL_QUANTILES["0.999"]
    for p in ("0.05", "0.25", "0.5", "0.75", "0.95"):
        assert np.quantile(sample, float(p)) == pytest.approx(NORMAL_QUANTILES[p], abs=0.03)


def test_reference_sample_is_reproducible_and_handles_edge_cases() -> None:
    a = reference_sample(NORMAL_EDGES, NORMAL_FREQS, NORMAL_QUANTILES, 100, np.random.default_rng(1))
    b = reference_sample(NORMAL_EDGES, NORMAL_FREQS, NORMAL_QUANTILES, 100, np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)
    empty = reference_sample(NORMAL_EDGES, NORMAL_FREQS, NORMAL_QUANTILES, 0, np.random.default_rng(1))
    assert empty.size == 0
    with pytest.raises(ValueError):
        reference_sample(NORMAL_EDGES, NORMAL_FREQS, {"median": 0.0}, 10, np.random.default_rng(1))
    with pytest.raises(ValueError):
        reference_sample(NORMAL_EDGES, NORMAL_FREQS, NORMAL_QUANTILES, -1, np.random.default_rng(1))


def test_reference_sample_falls_back_to_histogram_without_quantiles() -> None:
    edges, freqs = [-np.inf, 0.0, 1.0, 3.0, np.inf], [0.1, 0.6, 0.3, 0.0]
    sample = reference_sample(edges, freqs, {}, 20_000, np.random.default_rng(2))
    assert sample.min() >= 0.0 and sample.max() <= 3.0
    assert np.mean(sample == 0.0) == pytest.approx(0.1, abs=0.01)  # the -inf bin collapses onto 0
    assert np.mean((sample > 0.0) & (sample < 1.0)) == pytest.approx(0.6, abs=0.02)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_seeded_detector_catches_drift_present_from_first_event(seed: int) -> None:
    rng = np.random.default_rng(seed)
    live = rng.normal(0.5, 1.0, 5000)  # already shifted when monitoring starts

    reference = reference_sample(NORMAL_EDGES, NORMAL_FREQS, NORMAL_QUANTILES, 5000, rng)
    seeded = OnlineDriftMonitor(DetectorSpec(), seed_values={"x": reference})
    unseeded = OnlineDriftMonitor(DetectorSpec())

    seeded_hits = seeded.update_batch("x", live)
    assert seeded_hits and seeded_hits[0] < 500
    # The unseeded detector takes the shifted data as its reference and never complains.
    assert unseeded.update_batch("x", live) == []


def test_seeding_never_reports_drift() -> None:
    rng = np.random.default_rng(3)
    # A seed with a change inside: ADWIN detects it while seeding, which must stay silent.
    seed_values = np.concatenate([rng.normal(0.0, 1.0, 2000), rng.normal(3.0, 1.0, 2000)])
    monitor = OnlineDriftMonitor(DetectorSpec("ADWIN", {"clock": 1}))
    monitor.seed("x", seed_values)
    assert monitor.update_batch("x", rng.normal(3.0, 1.0, 2000)) == []


def test_detection_on_last_seed_value_is_not_reported_on_first_live_value() -> None:
    rng = np.random.default_rng(3)
    seed_values = np.concatenate([rng.normal(0.0, 1.0, 2000), rng.normal(3.0, 1.0, 2000)])
    plain = drift.ADWIN(clock=1)
    last = next(i for i, v in enumerate(seed_values) if (plain.update(v), plain.drift_detected)[1])
    # A detector that keeps its window past that detection fires again on the next value.
    plain._drift_detected = False
    plain.update(3.0)
    assert plain.drift_detected

    monitor = OnlineDriftMonitor(DetectorSpec("ADWIN", {"clock": 1}), seed_values={"x": seed_values[: last + 1]})
    assert monitor.update_batch("x", rng.normal(3.0, 1.0, 2000)) == []


# --- binary detectors -----------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_ddm_detects_error_rate_jump(seed: int) -> None:
    rng = np.random.default_rng(seed)
    errors = np.concatenate([rng.random(2000) < 0.1, rng.random(2000) < 0.4]).astype(float)
    # DDM's default warm_start=30 raises early false alarms while its error-rate estimate settles.
    detections = OnlineDriftMonitor(DetectorSpec("DDM", {"warm_start": 500})).update_batch("errors", errors)
    assert detections and 2000 <= detections[0] < 2300
    assert all(i >= 2000 for i in detections)


def test_binary_detector_rejects_non_binary_values() -> None:
    monitor = OnlineDriftMonitor(DetectorSpec("DDM"))
    with pytest.raises(ValueError, match="0 or 1"):
        monitor.update_batch("errors", np.array([0.0, 1.0, 0.5]))
    assert monitor.update_batch("errors", np.array([True, False, np.nan])) == []


# --- checkpointing ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec",
    [
        DetectorSpec("ADWIN"),
        DetectorSpec("KSWIN", {"alpha": 0.0001, "seed": 7}),
        DetectorSpec("PageHinkley", {"threshold": 20.0}),
    ],
    ids=lambda s: s.kind,
)
def test_round_trip_continues_identically(spec: DetectorSpec) -> None:
    rng = np.random.default_rng(11)
    reference = reference_sample(NORMAL_EDGES, NORMAL_FREQS, NORMAL_QUANTILES, 2000, rng)
    original = OnlineDriftMonitor(spec, seed_values={("amount", 0): reference})
    original.update_batch(("amount", 0), rng.normal(0.0, 1.0, 3000))
    original.update_batch(("amount", 1), rng.normal(0.0, 1.0, 500))

    restored = OnlineDriftMonitor.from_bytes(original.to_bytes())
    assert restored.spec == spec
    assert restored.keys() == original.keys()

    continuation = np.concatenate([rng.normal(0.0, 1.0, 2000), rng.normal(1.5, 1.0, 4000)])
    expected = original.update_batch(("amount", 0), continuation)
    assert expected, "continuation should contain a detectable change"
    assert restored.update_batch(("amount", 0), continuation) == expected
    other = original.update_batch(("amount", 1), continuation)
    assert restored.update_batch(("amount", 1), continuation) == other


def test_from_bytes_rejects_foreign_data() -> None:
    import pickle

    with pytest.raises(ValueError, match="checkpoint"):
        OnlineDriftMonitor.from_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="checkpoint"):
        OnlineDriftMonitor.from_bytes(pickle.dumps({"detectors": {}}))

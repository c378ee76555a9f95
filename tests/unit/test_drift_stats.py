"""Window statistics of stream_guard.drift.stats, on seeded synthetic data."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps
from scipy.spatial.distance import jensenshannon

from stream_guard.drift.stats import (
    DriftVerdict,
    bin_counts,
    categorical_counts_to_vector,
    chi_square_test,
    evaluate_categorical_drift,
    evaluate_numeric_drift,
    js_distance,
    ks_statistic_binned,
    psi,
)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20240601)


@pytest.fixture
def profile(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Decile bins of a standard normal reference sample, as a baseline profile stores them."""
    reference = rng.normal(size=50_000)
    inner = np.quantile(reference, np.linspace(0.1, 0.9, 9))
    edges = np.concatenate([[-np.inf], inner, [np.inf]])
    counts = bin_counts(reference, edges)
    return edges, counts / counts.sum()


# --- bin_counts ---------------------------------------------------------------


def test_bin_counts_matches_numpy_histogram_for_finite_data(rng: np.random.Generator) -> None:
    values = rng.normal(size=1000)
    inner = [-1.0, -0.2, 0.0, 0.7, 1.5]
    edges = [-np.inf, *inner, np.inf]
    wide = [values.min() - 1, *inner, values.max() + 1]
    np.testing.assert_array_equal(bin_counts(values, edges), np.histogram(values, wide)[0])


def test_bin_counts_is_left_closed_and_skips_non_finite() -> None:
    edges = [-np.inf, 0.0, 1.0, np.inf]
    values = np.array([0.0, 1.0, -5.0, 0.5, 7.0, np.nan, np.inf, -np.inf])
    # 0.0 and 1.0 sit on edges and go to the bin on their right.
    np.testing.assert_array_equal(bin_counts(values, edges), [1, 2, 2])


def test_bin_counts_with_finite_outer_edges_behaves_like_numpy() -> None:
    values = np.array([-1.0, 0.0, 0.5, 1.0, 2.0])
    edges = [0.0, 0.5, 1.0]
    np.testing.assert_array_equal(bin_counts(values, edges), np.histogram(values, edges)[0])


@pytest.mark.parametrize("edges", [[0.0], [0.0, 0.0, 1.0], [1.0, 0.0], [0.0, np.nan, 1.0]])
def test_bin_counts_rejects_bad_edges(edges: list[float]) -> None:
    with pytest.raises(ValueError):
        bin_counts([0.5], edges)


def test_bin_counts_of_empty_input_is_all_zero() -> None:
    np.testing.assert_array_equal(bin_counts(np.array([]), [-np.inf, 0, np.inf]), [0, 0])


# --- psi ----------------------------------------------------------------------


def test_psi_matches_hand_computation() -> None:
    expected = (
        (0.1 - 0.25) * math.log(0.1 / 0.25) + (0.3 - 0.25) * math.log(0.3 / 0.25) + (0.6 - 0.5) * math.log(0.6 / 0.5)
    )
    assert psi([0.25, 0.25, 0.5], [10, 30, 60]) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(0.164792, abs=1e-6)


def test_psi_normalises_reference_shares() -> None:
    assert psi([1, 1, 2], [10, 30, 60]) == pytest.approx(psi([0.25, 0.25, 0.5], [10, 30, 60]))


def test_psi_smooths_empty_bins_with_eps() -> None:
    eps = 1e-4
    q = np.array([1.0, eps]) / (1 + eps)
    p = np.array([0.5, 0.5])
    assert psi([0.5, 0.5], [100, 0], eps=eps) == pytest.approx(float(np.sum((q - p) * np.log(q / p))))
    assert psi([0.5, 0.5, 0.0], [50, 50, 0]) == pytest.approx(0.0, abs=1e-12)


def test_psi_near_zero_for_identical_distribution(rng: np.random.Generator, profile) -> None:
    edges, freqs = profile
    assert psi(freqs, bin_counts(rng.normal(size=10_000), edges)) < 0.01


def test_psi_flags_half_std_mean_shift(rng: np.random.Generator, profile) -> None:
    edges, freqs = profile
    # Theory for decile bins: about 0.238.
    assert psi(freqs, bin_counts(rng.normal(0.5, 1.0, size=10_000), edges)) > 0.2


@pytest.mark.parametrize(
    ("ref", "cur"),
    [
        ([0.5, 0.5], [1, 2, 3]),  # shape mismatch
        ([0.5, -0.5], [1, 1]),
        ([0.5, 0.5], [0, 0]),  # empty window
        ([0.0, 0.0], [1, 1]),  # empty reference
        ([0.5, np.nan], [1, 1]),
    ],
)
def test_statistics_reject_invalid_inputs(ref: list[float], cur: list[float]) -> None:
    for statistic in (psi, js_distance, chi_square_test, ks_statistic_binned):
        with pytest.raises(ValueError):
            statistic(ref, cur)


# --- js_distance ----------------------------------------------------------------


def test_js_distance_is_zero_for_identical_and_one_for_disjoint() -> None:
    assert js_distance([0.2, 0.3, 0.5], [20, 30, 50]) == pytest.approx(0.0, abs=1e-7)
    assert js_distance([0.5, 0.5, 0.0, 0.0], [0, 0, 7, 3]) == pytest.approx(1.0)


def test_js_distance_is_symmetric_bounded_and_matches_scipy(rng: np.random.Generator) -> None:
    for _ in range(50):
        # Small counts so that some bins are empty on one side only.
        a = rng.integers(0, 5, size=8).astype(float)
        b = rng.integers(0, 5, size=8).astype(float)
        a[0] += 1
        b[0] += 1
        d = js_distance(a, b)
        assert 0.0 <= d <= 1.0
        assert d == pytest.approx(js_distance(b, a), abs=1e-12)
        assert d == pytest.approx(jensenshannon(a, b, base=2), abs=1e-9)


# --- chi_square_test -------------------------------------------------------------


# In a window of 2000, "crypto" expects 4 (< 5), so the chi-square test has to pool it.
CATEGORY_SHARES = {"card": 0.55, "bank": 0.3, "wallet": 0.1, "crypto": 0.002}
OTHER_RATE = 0.048


def _draw_categories(rng: np.random.Generator, n: int, shares: dict[str, float], other: float) -> dict[str, int]:
    names = [*shares, "__other__"]
    probs = np.array([*shares.values(), other])
    counts = rng.multinomial(n, probs / probs.sum())
    drawn = dict(zip(names, counts.tolist()))
    drawn["unseen-value"] = drawn.pop("__other__")
    return drawn


def test_chi_square_false_alarm_rate_under_null_is_near_alpha(rng: np.random.Generator) -> None:
    alpha, windows = 0.01, 500
    flagged = 0
    for _ in range(windows):
        window = _draw_categories(rng, 2000, CATEGORY_SHARES, OTHER_RATE)
        ref, cur = categorical_counts_to_vector(CATEGORY_SHARES, OTHER_RATE, window)
        flagged += chi_square_test(ref, cur)[1] < alpha
    # Expected 5 of 500; 15 would be a wildly miscalibrated test.
    assert flagged / windows < 0.03


def test_chi_square_p_value_tiny_when_new_category_takes_20_percent(rng: np.random.Generator) -> None:
    live = _draw_categories(rng, 2000, CATEGORY_SHARES, 0.0)
    live = {k: int(v * 0.8) for k, v in live.items()}
    live["brand-new"] = 400
    ref, cur = categorical_counts_to_vector(CATEGORY_SHARES, 0.0, live)
    statistic, p_value = chi_square_test(ref, cur)
    assert math.isfinite(statistic)
    assert p_value < 1e-12


def test_chi_square_matches_scipy_without_pooling() -> None:
    ref, cur = [0.2, 0.3, 0.5], [25, 28, 47]
    expected = sps.chisquare(cur, np.array(ref) * 100)
    assert chi_square_test(ref, cur) == pytest.approx((expected.statistic, expected.pvalue))


def test_chi_square_pools_bins_with_small_expectation() -> None:
    # n = 100: the last three bins expect 2, 2 and 1 -> pooled into one bin expecting 5.
    ref, cur = [0.5, 0.45, 0.02, 0.02, 0.01], [45, 45, 1, 2, 7]
    expected = sps.chisquare([45, 45, 10], [50, 45, 5])
    assert chi_square_test(ref, cur) == pytest.approx((expected.statistic, expected.pvalue))


def test_chi_square_needs_two_usable_bins() -> None:
    assert chi_square_test([0.99, 0.01], [50, 1]) == (0.0, 1.0)
    assert chi_square_test([1.0], [10]) == (0.0, 1.0)


# --- ks_statistic_binned ----------------------------------------------------------


def test_ks_binned_detects_shift_and_stays_quiet_without_one(rng: np.random.Generator, profile) -> None:
    edges, freqs = profile
    _, p_same = ks_statistic_binned(freqs, bin_counts(rng.normal(size=2000), edges))
    d_shift, p_shift = ks_statistic_binned(freqs, bin_counts(rng.normal(0.5, 1.0, size=2000), edges))
    assert p_same > 0.01
    assert p_shift < 1e-6
    assert 0.15 < d_shift < 0.2  # the unbinned D of a 0.5 std shift is 0.197


def test_ks_binned_is_a_lower_bound_of_the_exact_statistic(rng: np.random.Generator) -> None:
    edges = np.array([-np.inf, -1.5, -0.5, 0.0, 0.5, 1.5, np.inf])
    freqs = np.diff(sps.norm.cdf(edges))
    for shift in (0.0, 0.1, 0.3):
        sample = rng.normal(shift, 1.0, size=500)
        d_binned, p_binned = ks_statistic_binned(freqs, bin_counts(sample, edges))
        exact = sps.ks_1samp(sample, sps.norm.cdf, method="asymp")
        assert d_binned <= exact.statistic + 1e-12
        assert p_binned >= exact.pvalue - 1e-12


# --- categorical alignment ----------------------------------------------------------


def test_categorical_counts_to_vector_aligns_and_pools_unseen() -> None:
    ref, cur = categorical_counts_to_vector({"a": 0.6, "b": 0.3}, 0.1, {"b": 5, "zz": 2, "yy": 1})
    np.testing.assert_allclose(ref, [0.6, 0.3, 0.1])
    np.testing.assert_array_equal(cur, [0, 5, 3])


def test_categorical_counts_to_vector_rejects_negative_counts() -> None:
    with pytest.raises(ValueError):
        categorical_counts_to_vector({"a": 1.0}, 0.0, {"a": -1})


# --- evaluate_* -----------------------------------------------------------------------


def test_evaluate_numeric_drift_quiet_on_identical_distribution(rng: np.random.Generator, profile) -> None:
    edges, freqs = profile
    verdicts = evaluate_numeric_drift(freqs, bin_counts(rng.normal(size=10_000), edges))
    assert [v.statistic for v in verdicts] == ["psi", "js_distance", "ks_binned"]
    assert not any(v.drifted for v in verdicts)
    assert verdicts[0].value == pytest.approx(0.0, abs=0.01)
    assert verdicts[2].p_value is not None and verdicts[0].p_value is None


def test_evaluate_numeric_drift_flags_shift(rng: np.random.Generator, profile) -> None:
    edges, freqs = profile
    verdicts = evaluate_numeric_drift(freqs, bin_counts(rng.normal(0.5, 1.0, size=10_000), edges))
    assert all(v.drifted for v in verdicts)
    assert verdicts[0] == DriftVerdict("psi", verdicts[0].value, 0.2, True)


def test_evaluate_numeric_drift_min_count_gate(profile) -> None:
    _, freqs = profile
    assert evaluate_numeric_drift(freqs, np.full(10, 9)) == []  # 90 < 100
    assert len(evaluate_numeric_drift(freqs, np.full(10, 10))) == 3
    assert evaluate_numeric_drift(freqs, np.zeros(10), min_count=0) == []


def test_evaluate_returns_nothing_for_an_empty_reference() -> None:
    assert evaluate_numeric_drift(np.zeros(4), np.full(4, 100)) == []
    assert evaluate_categorical_drift({}, 0.0, {"a": 500}) == []


def test_evaluate_categorical_drift(rng: np.random.Generator) -> None:
    stationary = _draw_categories(rng, 5000, CATEGORY_SHARES, OTHER_RATE)
    verdicts = evaluate_categorical_drift(CATEGORY_SHARES, OTHER_RATE, stationary)
    assert [v.statistic for v in verdicts] == ["chi_square", "js_distance"]
    assert not any(v.drifted for v in verdicts)

    shifted = dict(stationary, wallet=stationary["wallet"] + 3000)
    chi2, js = evaluate_categorical_drift(CATEGORY_SHARES, OTHER_RATE, shifted)
    assert chi2.drifted and chi2.p_value < 1e-12 and chi2.threshold == 0.01
    assert js.drifted

    assert evaluate_categorical_drift(CATEGORY_SHARES, OTHER_RATE, {"card": 99}) == []


def test_js_threshold_of_a_small_categorical_window_rises_above_its_noise_floor() -> None:
    """A clean window of 300 values over 50 categories passes JS 0.1 by chance; its threshold accounts for that."""
    from stream_guard.drift.stats import js_noise_floor

    rng = np.random.default_rng(11)
    shares = 1.0 / np.arange(1, 51) ** 0.8
    shares /= shares.sum()
    ref = {f"r{i}": float(p) for i, p in enumerate(shares)}
    floors, passed = [], 0
    for _ in range(200):
        counts = dict(zip(ref, rng.multinomial(300, shares).tolist(), strict=True))
        _, js = evaluate_categorical_drift(ref, 0.0, counts, js_threshold=0.1, min_count=100)
        floors.append(js.value)
        passed += js.drifted
    plain = sum(js > 0.1 for js in floors)
    assert plain > 150  # a plain 0.1 threshold calls nearly every clean window drifted
    assert np.median(floors) == pytest.approx(js_noise_floor(50, 300), rel=0.15)
    assert passed < plain / 2  # the test (chi-square at alpha) still decides for the rest
    # a real shift still passes: half the values on one rare category
    shifted = dict(zip(ref, rng.multinomial(150, shares).tolist(), strict=True))
    shifted["r49"] += 150
    _, js = evaluate_categorical_drift(ref, 0.0, shifted, js_threshold=0.1, min_count=100)
    assert js.drifted and js.threshold == pytest.approx(np.hypot(0.1, js_noise_floor(50, 300)))
    # large windows keep the configured threshold
    _, big = evaluate_categorical_drift(ref, 0.0, {k: round(v * 10**6) for k, v in ref.items()}, js_threshold=0.1)
    assert big.threshold == pytest.approx(0.1, abs=1e-3)

"""Unit tests for stream_guard.learning.profiles: learning baseline profiles from reference data."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from profile_frames import categorical_profile, mixed_frame, numeric_profile

from stream_guard.learning import learn_profile, read_reference
from stream_guard.profile import (
    QUANTILE_KEYS,
    category_key,
)

# --- numeric summaries ----------------------------------------------------------------


def test_numeric_summary_matches_numpy(rng: np.random.Generator) -> None:
    """Quantiles, min, max, mean and std equal numpy's on a seeded normal sample."""
    x = rng.normal(3.0, 2.0, 20_000)
    f = numeric_profile(pd.DataFrame({"x": x}), "x")
    expected = np.quantile(x, [float(k) for k in QUANTILE_KEYS])
    assert list(f.quantiles) == list(QUANTILE_KEYS)
    assert [f.quantiles[k] for k in QUANTILE_KEYS] == pytest.approx(expected, rel=0, abs=0)
    assert (f.min, f.max) == (x.min(), x.max())
    assert f.mean == pytest.approx(x.mean(), rel=1e-12)
    assert f.std == pytest.approx(x.std(), rel=1e-12)
    assert (f.dtype, f.count, f.null_rate, f.nan_rate, f.inf_rate) == ("float", 20_000, 0.0, 0.0, 0.0)


def test_null_nan_and_inf_rates_are_distinct() -> None:
    """NaN in a float column is nan, None/pd.NA is null, float NaN objects are nan, inf is inf."""
    floats = pd.DataFrame({"x": [1.0, np.nan, np.inf, -np.inf, 2.0, 3.0, np.nan, 4.0]})
    f = numeric_profile(floats, "x")
    assert (f.null_rate, f.nan_rate, f.inf_rate) == (0.0, 0.25, 0.25)
    assert (f.min, f.max) == (1.0, 4.0)  # infinities excluded from the range

    objects = pd.DataFrame({"x": pd.Series([1, None, pd.NA, float("nan"), 2.5, np.inf, 3, 4], dtype=object)})
    f = numeric_profile(objects, "x")
    assert (f.null_rate, f.nan_rate, f.inf_rate) == (0.25, 0.125, 0.125)

    nullable = pd.DataFrame({"x": pd.array([1, None, 3, 4], dtype="Int64")})
    f = numeric_profile(nullable, "x")
    assert (f.dtype, f.null_rate, f.nan_rate) == ("int", 0.25, 0.0)


def test_sentinel_value_is_in_top_values_with_its_rate(rng: np.random.Generator) -> None:
    """A -1 sentinel on exactly 5% of rows is the top value with rate 0.05 and has chunk variability."""
    n = 20_000
    x = rng.normal(50, 10, n)
    x[rng.permutation(n)[: n // 20]] = -1.0
    f = numeric_profile(pd.DataFrame({"x": x}), "x")
    assert f.top_values[0] == (-1.0, 0.05)
    assert len(f.top_values) == 1  # continuous values are never repeated, so not "frequent"
    variability = f.top_value_variability["-1.0"]
    assert variability.mean == pytest.approx(0.05)
    assert 0 < variability.std < 0.02


def test_top_values_are_capped_and_ordered_by_frequency(rng: np.random.Generator) -> None:
    """At most 10 top values, most frequent first, shares of all rows (nulls included)."""
    x = pd.Series(rng.integers(0, 30, 10_000), dtype="Int64")
    x[:1000] = pd.NA
    f = numeric_profile(pd.DataFrame({"x": x}), "x")
    assert len(f.top_values) == 10
    rates = [r for _, r in f.top_values]
    assert rates == sorted(rates, reverse=True)
    counts = x.value_counts()
    value, rate = f.top_values[0]
    assert rate == counts[int(value)] / 10_000


def test_bin_freqs_sum_to_one_and_match_numpy_histogram(rng: np.random.Generator) -> None:
    """bin_freqs sum to 1 over finite values and equal numpy.histogram with the same edges."""
    x = rng.lognormal(0, 1, 30_000)
    x[:300] = np.nan
    x[300:400] = np.inf
    f = numeric_profile(pd.DataFrame({"x": x}), "x")
    assert f.bin_edges[0] == -math.inf and f.bin_edges[-1] == math.inf
    assert len(f.bin_edges) == 11  # 9 decile edges + 2 outer edges
    assert sum(f.bin_freqs) == pytest.approx(1.0)
    finite = x[np.isfinite(x)]
    counts, _ = np.histogram(finite, bins=np.array(f.bin_edges))
    np.testing.assert_allclose(f.bin_freqs, counts / finite.size, rtol=0, atol=1e-15)
    np.testing.assert_array_equal(f.bin_counts(x), counts)


def test_bin_edges_deduplicated_for_point_mass() -> None:
    """A column with heavy repeated values gets deduplicated, strictly increasing edges."""
    x = np.array([0.0] * 700 + list(range(1, 301)), dtype=float)
    f = numeric_profile(pd.DataFrame({"x": x}), "x")
    edges = f.bin_edges
    assert all(a < b for a, b in zip(edges, edges[1:]))
    assert len(edges) < 11
    assert sum(f.bin_freqs) == pytest.approx(1.0)


def test_bool_and_int_columns_are_numeric_with_dtype() -> None:
    """Bool columns profile as numeric dtype 'bool' (0/1); integer columns as 'int'."""
    frame = pd.DataFrame({"b": [True, False, True, True, True, False, True, True], "i": range(8)})
    b = numeric_profile(frame, "b")
    assert (b.dtype, b.min, b.max, b.mean) == ("bool", 0.0, 1.0, 0.75)
    assert b.top_values == [(1.0, 0.75), (0.0, 0.25)]
    assert numeric_profile(frame, "i").dtype == "int"


# --- categorical summaries ------------------------------------------------------------


def test_categorical_frequencies_other_rate_and_cardinality(rng: np.random.Generator) -> None:
    """Frequencies are shares of non-null rows, capped at max_categories with the rest in other_rate."""
    values = rng.choice(list("abcdefghij"), 10_000, p=[0.3, 0.2, 0.15, 0.1, 0.07, 0.05, 0.04, 0.04, 0.03, 0.02])
    series = pd.Series(values, dtype=object)
    series[:500] = None
    f = categorical_profile(pd.DataFrame({"c": series}), "c", max_categories=3)
    shares = series.value_counts(normalize=True)
    assert list(f.frequencies) == ["a", "b", "c"]
    assert f.frequencies == {k: pytest.approx(shares[k], abs=1e-15) for k in "abc"}
    assert f.other_rate == pytest.approx(1 - shares[list("abc")].sum())
    assert (f.cardinality, f.null_rate, f.count) == (10, 0.05, 10_000)

    uncapped = categorical_profile(pd.DataFrame({"c": series}), "c")
    assert len(uncapped.frequencies) == 10 and uncapped.other_rate == 0.0
    assert sum(uncapped.frequencies.values()) == pytest.approx(1.0)


def test_category_keys_merge_int_and_integral_float() -> None:
    """Categories are keyed by category_key, so 1 and 1.0 are one category '1'."""
    assert [category_key(v) for v in (1, 1.0, np.int64(2), 2.5, True, "x")] == ["1", "1", "2", "2.5", "True", "x"]
    f = categorical_profile(pd.DataFrame({"c": pd.Series([1, 1.0, 2, None], dtype=object)}), "c")
    assert (f.frequencies, f.cardinality, f.null_rate) == ({"1": 2 / 3, "2": 1 / 3}, 2, 0.25)


def test_chunk_cardinality_counts_distinct_values_per_chunk() -> None:
    """chunk_cardinality reports the mean/std of distinct values per chunk."""
    # chunk 0 holds 2 distinct values, chunk 1 holds 4.
    values = ["a", "b"] * 50 + ["a", "b", "c", "d"] * 25
    f = categorical_profile(pd.DataFrame({"c": values}), "c", chunk_size=100)
    card = f.chunk_cardinality
    assert (card.n_chunks, card.chunk_size, card.mean) == (2, 100, 3.0)
    assert card.std == pytest.approx(np.std([2, 4], ddof=1))
    assert f.cardinality == 4


# --- chunk variability ----------------------------------------------------------------


def test_chunk_variability_constant_vs_alternating_null_rate() -> None:
    """A null rate constant per chunk has ~0 std; one alternating between chunks has a large std."""
    n, chunk = 10_000, 500
    constant = np.ones(n)
    constant[::10] = np.nan  # exactly 10% per chunk
    alternating = np.ones(n)
    chunk_index = np.arange(n) // chunk
    alternating[(chunk_index % 2 == 0) & (np.arange(n) % 5 == 0)] = np.nan  # 20%, 0%, 20%, ...
    frame = pd.DataFrame({"c": pd.array(constant, dtype="Float64"), "a": pd.array(alternating, dtype="Float64")})
    profile = learn_profile(frame, model="m", numeric=["c", "a"], categorical=[], chunk_size=chunk)
    steady = profile.features["c"].null_rate_variability
    swinging = profile.features["a"].null_rate_variability
    assert (steady.n_chunks, steady.chunk_size) == (20, chunk)
    assert steady.mean == pytest.approx(0.1) and steady.std == pytest.approx(0.0, abs=1e-12)
    assert swinging.mean == pytest.approx(0.1) and swinging.std > 0.09


def test_default_chunk_size_and_trailing_partial_chunk() -> None:
    """Default chunk size is max(1000, rows // 50); a trailing partial chunk joins the previous one."""
    frame = pd.DataFrame({"x": np.zeros(2500)})
    profile = learn_profile(frame, model="m", numeric=["x"], categorical=[])
    assert profile.chunk_size == 1000
    assert profile.features["x"].null_rate_variability.n_chunks == 2
    big = learn_profile(pd.DataFrame({"x": np.zeros(100_000)}), model="m", numeric=["x"], categorical=[])
    assert big.chunk_size == 2000 and big.features["x"].null_rate_variability.n_chunks == 50
    small = learn_profile(pd.DataFrame({"x": np.zeros(10)}), model="m", numeric=["x"], categorical=[])
    assert small.chunk_size == 10 and small.features["x"].null_rate_variability.n_chunks == 1


# --- validation -----------------------------------------------------------------------


def test_missing_and_non_numeric_columns_raise_naming_the_column() -> None:
    """Absent columns and unconvertible numeric columns raise ValueError naming the column."""
    frame = pd.DataFrame({"x": [1.0, 2.0], "s": ["a", "b"]})
    with pytest.raises(ValueError, match="ghost"):
        learn_profile(frame, model="m", numeric=["x"], categorical=["ghost"])
    with pytest.raises(ValueError, match="'s'"):
        learn_profile(frame, model="m", numeric=["s"], categorical=[])
    with pytest.raises(ValueError, match="no rows"):
        learn_profile(frame.iloc[:0], model="m", numeric=["x"], categorical=[])
    with pytest.raises(ValueError, match="more than once"):
        learn_profile(frame, model="m", numeric=["x"], categorical=["x"])


def test_numeric_strings_are_converted() -> None:
    """Object columns of numeric strings are converted; missing strings count as null."""
    f = numeric_profile(pd.DataFrame({"x": ["1.5", "2", None, "4"]}), "x")
    assert (f.min, f.max, f.null_rate, f.nan_rate) == (1.5, 4.0, 0.25, 0.0)


# --- reading reference data -----------------------------------------------------------


def test_read_reference_csv_parquet_and_jsonl(tmp_path, rng: np.random.Generator) -> None:
    """read_reference reads .csv, .parquet and .jsonl; missing cells profile as nulls."""
    frame = mixed_frame(rng, 200).replace([np.inf], 5.0)
    frame["amount"] = frame["amount"].astype(object)
    frame.loc[:9, "amount"] = None
    frame.to_csv(tmp_path / "ref.csv", index=False)
    frame.to_parquet(tmp_path / "ref.parquet")
    frame.to_json(tmp_path / "ref.jsonl", orient="records", lines=True)
    for suffix in ("csv", "parquet", "jsonl"):
        loaded = read_reference(tmp_path / f"ref.{suffix}")
        assert list(loaded.columns) == list(frame.columns) and len(loaded) == 200, suffix
        profile = learn_profile(loaded, model="m", numeric=["amount", "count", "flag"], categorical=["country"])
        amount = profile.features["amount"]
        assert (amount.null_rate, amount.nan_rate) == (0.05, 0.0), suffix
        assert profile.features["flag"].dtype == "bool", suffix
        assert profile.features["count"].dtype == "int", suffix
        assert profile.features["country"].cardinality == 3, suffix


def test_read_reference_parquet_keeps_nan_apart_from_null(tmp_path) -> None:
    """A Parquet float column holding both NaN and null keeps the two apart."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"x": pa.array([1.0, float("nan"), None, 2.0])}), tmp_path / "r.parquet")
    f = numeric_profile(read_reference(tmp_path / "r.parquet"), "x")
    assert (f.null_rate, f.nan_rate) == (0.25, 0.25)


def test_read_reference_errors(tmp_path) -> None:
    """Unsupported suffixes and missing files raise a clear ValueError."""
    (tmp_path / "ref.xlsx").write_text("x")
    with pytest.raises(ValueError, match="unsupported"):
        read_reference(tmp_path / "ref.xlsx")
    with pytest.raises(ValueError, match="not found"):
        read_reference(tmp_path / "absent.csv")


# --- scale ----------------------------------------------------------------------------


def test_learns_one_million_rows_by_eight_features(rng: np.random.Generator) -> None:
    """1M rows x 8 features (numeric, sentinel, bool, nulls, categorical) learn without error."""
    n = 1_000_000
    sentinel = rng.normal(size=n)
    sentinel[rng.random(n) < 0.05] = -1.0
    with_nan = rng.exponential(size=n)
    with_nan[rng.random(n) < 0.02] = np.nan
    frame = pd.DataFrame(
        {
            "a": rng.normal(size=n),
            "b": rng.uniform(size=n),
            "c": sentinel,
            "d": with_nan,
            "e": rng.integers(0, 100, n),
            "f": rng.random(n) < 0.1,
            "g": rng.choice(["x", "y", "z"], n),
            "h": rng.integers(0, 5000, n).astype(str),
        }
    )
    profile = learn_profile(frame, model="m", numeric=list("abcdef"), categorical=["g", "h"])
    assert profile.row_count == n and profile.chunk_size == 20_000
    assert profile.features["c"].top_values[0][0] == -1.0
    assert profile.features["h"].cardinality == 5000

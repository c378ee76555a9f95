"""Unit tests for stream_guard.batch: the per-batch columns the stages read."""

from __future__ import annotations

import numpy as np

from stream_guard.batch import EventBatch
from stream_guard.decoding import Decoded


def _batch(values: list[dict[str, object]]) -> EventBatch:
    n = len(values)
    return EventBatch(
        model="m",
        decoded=[Decoded(v, []) for v in values],
        topics=["t"] * n,
        partitions=np.zeros(n, dtype=np.int64),
        offsets=np.arange(n, dtype=np.int64),
        event_time_ms=np.zeros(n, dtype=np.int64),
        event_ids=[None] * n,
        failed=np.zeros(n, dtype=bool),
    )


def test_numeric_is_float_with_nan_for_nulls_and_absent_values() -> None:
    """Ints, floats and booleans become float64; None and absent fields are NaN and null."""
    batch = _batch([{"x": 1}, {"x": None}, {"x": 2.5}, {}, {"x": True}])
    numbers, null = batch.numeric("x")
    assert np.array_equal(numbers, [1.0, np.nan, 2.5, np.nan, 1.0], equal_nan=True)
    assert null.tolist() == [False, True, False, True, False]
    assert batch.null_mask("x").tolist() == null.tolist()


def test_values_at_picks_rows_and_with_failed_clears_the_caches() -> None:
    """``values_at`` follows the rows given; marking rows failed drops their values from every cache."""
    batch = _batch([{"x": 1}, {"x": 2}, {"x": 3}])
    assert batch.values_at("x", np.array([0, 2])) == [1, 3]
    assert batch.numeric("x")[0].tolist() == [1.0, 2.0, 3.0]
    failed = batch.with_failed([1])
    assert failed.values_at("x", np.arange(3)) == [1, None, 3]
    assert failed.null_mask("x").tolist() == [False, True, False]


def test_columns_are_each_record_s_value_whatever_its_fields_and_their_order() -> None:
    """Columns transposed per batch equal a per-record lookup: failed rows, other field orders, extra or missing fields."""
    rng = np.random.default_rng(3)
    shapes = [("a", "b", "c"), ("a", "b", "c"), ("b", "a", "c"), ("a", "b"), ("a", "b", "c", "d"), ()]
    for _ in range(40):
        records = []
        for _ in range(int(rng.integers(1, 12))):
            shape = shapes[int(rng.integers(len(shapes)))]
            records.append({name: None if rng.random() < 0.2 else f"{name}{rng.integers(3)}" for name in shape})
        batch = _batch(records)
        for name in ("c", "a", "d", "zz", "b"):
            assert batch.column(name) == [r.get(name) for r in records]
            assert batch.null_mask(name).tolist() == [r.get(name) is None for r in records]

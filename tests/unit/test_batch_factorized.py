"""A batch's shared per-field conversions give what each stage computed on its own before."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from stream_guard.batch import EventBatch
from stream_guard.checks.row_checks import _present_codes
from stream_guard.decoding import Decoded
from stream_guard.metrics.slices import SliceRecorder, ValueCapper


def _batch(values: list[dict[str, Any]], failed: list[int] | None = None) -> EventBatch:
    n = len(values)
    mask = np.zeros(n, dtype=bool)
    mask[failed or []] = True
    return EventBatch(
        model="m",
        decoded=[Decoded(v, []) for v in values],
        topics=["t"] * n,
        partitions=np.zeros(n, dtype=np.int64),
        offsets=np.arange(n, dtype=np.int64),
        event_time_ms=np.zeros(n, dtype=np.int64),
        event_ids=[None] * n,
        failed=mask,
    )


def _strings(rng: np.random.Generator, n: int) -> list[dict[str, Any]]:
    return [{"a": None if rng.random() < 0.2 else f"v{rng.integers(6)}", "b": int(rng.integers(3))} for _ in range(n)]


def test_columns_of_records_with_as_many_other_fields() -> None:
    """Records holding as many fields as the first but other ones read each field by name (None where absent)."""
    records: list[dict[str, Any]] = [{"a": 1, "b": 2, "c": 3}, {"c": 4, "a": 5, "b": 6}, {"a": 7, "b": 8, "x": 9}, {}]
    batch = _batch(records)
    for name in ("a", "b", "c", "x"):
        assert batch.column(name) == [r.get(name) for r in records]


def test_objects_types_and_factorized_are_those_of_the_column() -> None:
    """objects, value_types and factorized describe the field's values, absent ones as None."""
    records: list[dict[str, Any]] = [{"a": "x"}, {"a": None}, {"a": "y"}, {}, {"a": "x"}]
    batch = _batch(records)
    assert batch.objects("a").tolist() == ["x", None, "y", None, "x"]
    assert batch.value_types("a") == {str, type(None)}
    codes, uniques = batch.factorized("a")
    assert codes.tolist() == [0, -1, 1, -1, 0]
    assert uniques.tolist() == ["x", "y"]


def test_present_codes_are_the_factorisation_of_the_present_values_alone() -> None:
    """Renumbering the batch's codes gives pandas.factorize of the values with the non-present ones None."""
    rng = np.random.default_rng(5)
    for _ in range(200):
        n = int(rng.integers(0, 30))
        raw = np.array([None if rng.random() < 0.2 else f"v{rng.integers(8)}" for _ in range(n)], dtype=object)
        codes, uniques = pd.factorize(raw)
        # Some rows left out, or exactly the null ones (then the batch's own factorisation is the answer).
        present = rng.random(n) < 0.6 if rng.random() < 0.5 else codes >= 0
        clean = raw.copy()
        clean[~present] = None
        want_codes, want_uniques = pd.factorize(clean)
        for given in (None, np.asarray(uniques, dtype=object)):
            got_codes, got_uniques = _present_codes(codes, raw, present, given)
            assert got_codes.tolist() == want_codes.tolist()
            assert got_uniques.tolist() == list(want_uniques)


def test_capper_codes_from_the_batch_factorisation_equal_its_own() -> None:
    """A string field capped from the batch's factorisation gets the codes and names of factorising it again."""
    rng = np.random.default_rng(6)
    shared, own = ValueCapper(max_values=4), ValueCapper(max_values=4)  # first seen, first kept: order matters
    for _ in range(50):
        batch = _batch(_strings(rng, int(rng.integers(1, 40))))
        got = shared.codes("a", batch.column("a"), batch.factorized("a"))
        want = own.codes("a", list(batch.column("a")))
        assert got[0].tolist() == want[0].tolist()
        assert got[1].tolist() == want[1].tolist()


def test_slice_codes_of_a_whole_batch_and_of_some_rows() -> None:
    """Slice codes of every row (the shared factorisation) and of a row subset (factorised alone) agree."""
    rng = np.random.default_rng(7)
    records = _strings(rng, 200)
    batch = _batch(records)
    every = SliceRecorder([("a",), ("a", "b")], [], "", "").slice_codes(batch, np.arange(len(records)))
    some = np.arange(0, len(records), 3)
    subset = SliceRecorder([("a",), ("a", "b")], [], "", "").slice_codes(batch, some)
    for dim in every:
        assert every[dim].labels()[some].tolist() == subset[dim].labels().tolist()

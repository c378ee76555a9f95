"""Unit tests for stream_guard.state.ops: one op vocabulary, read alike by the builder, the Lua script and MemoryState."""

from __future__ import annotations

import re

import numpy as np
import pytest

from stream_guard.state import MemoryState, ModelKeys, Op, StateUpdate
from stream_guard.state.exceptions import StateOpUnknownError, StateUpdateInvalidError
from stream_guard.state.ops import SHAPES, split_ops
from stream_guard.state.window_store import APPLY_SCRIPT

KEYS = ModelKeys("sg", "fraud")


def test_every_op_has_a_shape_and_a_lua_branch_and_nothing_else_does() -> None:
    """The apply script dispatches exactly the letters of Op (generated from one table)."""
    assert set(SHAPES) == set(Op)
    assert set(re.findall(r"op == '(\w)'", APPLY_SCRIPT)) == {op.value for op in Op}


def test_memory_state_handles_every_op() -> None:
    """MemoryState has one handler per op."""
    assert set(MemoryState(KEYS, window_ms=1, lateness_ms=0)._handlers) == set(Op)


def test_split_ops_reads_back_what_the_builder_wrote() -> None:
    """split_ops gives each op its arguments, variable-length ones (P, X, O, K) included."""
    u = StateUpdate("t:0", 0, 1, 0)
    u.open_window(10)
    u.add_distinct("k", ["a", "b"])
    u.set_once("p", "v", 60, "c", ["x", "y", "z"])
    u.delete("k")
    u.set_once_counted([("q", "v", [0, 1]), ("r", "w", [0])], 60, [("c", "x"), ("c", "y")])
    u.delete_all(["q", "r"])
    assert list(split_ops(u.ops)) == [
        (Op.OPEN_WINDOW, [10]),
        (Op.ADD_DISTINCT, [5, 2, "a", "b"]),
        (Op.SET_ONCE, [7, "v", 60, 6, 3, "x", "y", "z"]),
        (Op.DELETE, [5]),
        (Op.SET_ONCE_COUNTED, [60, 2, 12, 8, "v", "1,2", 9, "w", "1", 6, "x", 2, 6, "y", 1]),
        (Op.DELETE_ALL, [2, 8, 9]),
    ]
    assert u.keys == ["k", "c", "p", "q", "r"]


def test_the_builder_writes_plain_letters() -> None:
    """Ops go to Redis as plain one-letter strings, not enum members."""
    u = StateUpdate("t:0", 0, 1, 0)
    u.incr("k", "n", 1)
    assert type(u.ops[0]) is str and u.ops[0] == "H"


def test_an_unknown_letter_fails() -> None:
    with pytest.raises(StateOpUnknownError, match="unknown op Q"):
        list(split_ops(["Q", 1]))


def test_zero_increments_are_not_written() -> None:
    """incr and incr_float skip a zero amount, add_distinct an empty list."""
    u = StateUpdate("t:0", 0, 1, 0)
    u.incr("k", "n", 0)
    u.incr_float("k", "s", 0.0)
    u.add_distinct("h", [])
    assert u.ops == [] and u.keys == []


@pytest.mark.parametrize("amount", [float("inf"), float("-inf"), float("nan")])
def test_a_non_finite_float_increment_is_refused_while_the_update_is_built(amount: float) -> None:
    """incr_float(inf/nan) raises StateUpdateInvalidError before any op is queued (no store could apply it)."""
    u = StateUpdate("t:0", 0, 1, 0)
    with pytest.raises(StateUpdateInvalidError, match="non-finite increment"):
        u.incr_float(KEYS.window(0), "sum", amount)
    assert u.ops == []


def test_the_apply_script_validates_every_op() -> None:
    """Every op letter has a branch in the validation pass too, and the fence is written after the ops."""
    validation, writes = APPLY_SCRIPT.split("local own_ttl", 1)
    assert set(re.findall(r"op == '(\w)'", validation)) == {op.value for op in Op}
    assert "HSET', KEYS[1]" not in validation
    assert "HSET', KEYS[1]" in writes


def test_incr_many_packs_a_hash_s_counters_in_one_argument() -> None:
    """M carries every (field, amount) of a hash in one argument: integers as digits, floats by repr, zeros left out."""
    u = StateUpdate("t:0", 0, 1, 0)
    u.incr_many("k", [("a|n", 2), ("a|sv", 0.5), ("b|n", 0), ("b|sv", 1.0)])
    assert list(split_ops(u.ops)) == [(Op.INCR_MANY, [5, "a|n\n2\na|sv\n0.5\nb|sv\n1.0"])]


@pytest.mark.parametrize(("name", "amount"), [("a\nb", 1), ("", 1), ("a", float("nan"))])
def test_incr_many_refuses_what_it_cannot_pack(name: str, amount: float) -> None:
    """A field with a newline or empty, or a non-finite amount, raises before anything is queued."""
    u = StateUpdate("t:0", 0, 1, 0)
    with pytest.raises(StateUpdateInvalidError):
        u.incr_many("k", [(name, amount)])
    assert u.ops == []


def test_incr_array_writes_what_incr_many_writes() -> None:
    """incr_array's packed op equals incr_many's of the same pairs (zeros, rounding, floats, negatives)."""
    rng = np.random.default_rng(4)
    for _ in range(50):
        n = int(rng.integers(1, 40))
        names = [f"s{int(rng.integers(5))}=v|m{i}" for i in range(n)]
        is_float = rng.random(n) < 0.4
        amounts = np.where(rng.random(n) < 0.3, 0.0, rng.integers(-3, 9, n) + np.where(is_float, rng.random(n), 0.0))
        amounts[rng.random(n) < 0.1] = 2.5  # a half, rounded to even where it is an integer count
        expected, packed = StateUpdate("t:0", 0, 1, 0), StateUpdate("t:0", 0, 1, 0)
        pairs = [(f, float(a) if fl else round(float(a))) for f, a, fl in zip(names, amounts, is_float, strict=True)]
        expected.incr_many("k", pairs)
        packed.incr_array("k", names, amounts, is_float)
        assert packed.ops == expected.ops


@pytest.mark.parametrize(("name", "amount"), [("a\nb", 1.0), ("", 2.0), ("x", float("nan")), ("x", float("inf"))])
def test_incr_array_refuses_what_incr_many_refuses(name: str, amount: float) -> None:
    """A field with a newline, an empty field and a non-finite float raise StateUpdateInvalidError."""
    u = StateUpdate("t:0", 0, 1, 0)
    with pytest.raises(StateUpdateInvalidError):
        u.incr_array("k", ["ok", name], np.array([1.0, amount]), np.array([False, True]))


def test_set_once_counted_lists_and_sums_each_entry_s_counters() -> None:
    """O's arguments: per entry its key, value and 1-based counter numbers; per counter the entries listing it."""
    rng = np.random.default_rng(8)
    for _ in range(20):
        counters = [(f"b{i % 2}", f"s{i}|st") for i in range(int(rng.integers(1, 12)))]
        entries = []
        for e in range(int(rng.integers(1, 15))):
            listed = sorted(rng.choice(len(counters), int(rng.integers(0, len(counters) + 1)), replace=False).tolist())
            entries.append((f"pred:{e}", f"v{e}", listed))
        u = StateUpdate("t:0", 0, 1, 0)
        u.set_once_counted(entries, 60, counters)
        ((op, args),) = split_ops(u.ops)
        keys = u.keys
        expected: list[object] = [60, len(entries), 3 * len(entries) + 3 * len(counters)]
        for key, value, listed in entries:
            expected += [keys.index(key) + 5, value, ",".join(str(c + 1) for c in listed)]
        for c, (counter_key, name) in enumerate(counters):
            expected += [keys.index(counter_key) + 5, name, sum(c in listed for _, _, listed in entries)]
        assert (op, args) == (Op.SET_ONCE_COUNTED, expected)

"""The window-state operations, declared once.

A :class:`~stream_guard.state.update.StateUpdate` is a list of these operations, encoded
as the flat argument list (ARGV) of the apply script: an op letter followed by its
arguments. Three readers agree on this table: the builder (``StateUpdate``), the Lua
dispatch of :class:`~stream_guard.state.window_store.WindowStore` (generated per op and
checked complete at import) and the Python interpreter of
:class:`~stream_guard.state.memory.MemoryState`. A *key* argument is the index of the key
in the script's ``KEYS`` (1-4 are the fixed keys of the update's fence, its own keys
follow from 5).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from stream_guard.state.exceptions import StateOpUnknownError


class Op(StrEnum):
    """One operation; the value is its letter in the script's arguments."""

    #: ``start``: add a window start to the open set (the fence's fourth key).
    OPEN_WINDOW = "W"
    #: ``key field amount``: ``HINCRBY``.
    INCR = "H"
    #: ``key field amount``: ``HINCRBYFLOAT``.
    INCR_FLOAT = "F"
    #: ``key fields``: ``fields`` is ``f1\\na1\\nf2\\na2..`` (one argument, newline-separated): each
    #: amount added to its field of the hash, by ``HINCRBY`` if it is an integer (digits), else by
    #: ``HINCRBYFLOAT``. One argument for a batch's counters of a hash, read with one ``HMGET``.
    INCR_MANY = "M"
    #: ``key field value``: ``HSET``.
    SET = "S"
    #: ``key json cap``: ``RPUSH`` unless the list already holds ``cap`` items.
    ADD_EXAMPLE = "L"
    #: ``key n v1..vn``: ``PFADD``.
    ADD_DISTINCT = "P"
    #: ``key ttl_s``: the key's own TTL instead of the retention.
    EXPIRE = "E"
    #: ``key value ttl_s counter n f1..fn``: ``SET NX EX``; if new, ``HINCRBY`` each field of counter.
    SET_ONCE = "X"
    #: ``ttl_s m n k1 v1 d1 .. km vm dm c1 f1 a1 .. cp fp ap``: ``SET k v EX ttl_s NX`` for each
    #: of the ``m`` keys, then ``HINCRBY`` of each counter triple (hash ``c``, field ``f``) by ``a``
    #: less one per key not new that lists the triple in its ``d`` (comma-separated 1-based
    #: triple numbers). ``a`` is the number of keys listing the triple, so the counters count
    #: each new key once, as ``X`` would, with one increment per triple instead of per key.
    #: ``n`` counts the arguments after it (``3m + 3p``).
    SET_ONCE_COUNTED = "O"
    #: ``key``: ``DEL`` (the key keeps no TTL).
    DELETE = "D"
    #: ``n k1..kn``: ``DEL`` of every key (they keep no TTL).
    DELETE_ALL = "K"
    #: ``key score member``: ``ZADD``.
    ZADD = "Z"
    #: ``key min_score``: remove members scored below ``min_score``.
    ZTRIM_BELOW = "R"
    #: ``key field amount cap overflow overflow_detail_field overflow_detail detail_field detail
    #: examples_key example_cap n x1..xn``: a finding counted in a window hash capped at
    #: ``cap`` distinct finding fields (counted in the hash's ``fk``). A field already there,
    #: or one that fits, is incremented, gets its detail (unless empty) and up to
    #: ``example_cap`` examples; otherwise ``amount`` goes to the ``overflow`` field, which
    #: gets its own detail.
    FINDING = "C"
    #: ``index counter m n k1 also1 member1 .. km alsom memberm f1 a1 .. fp ap``: of the ``m``
    #: keys ``k``, each that still exists is deleted with its ``also`` and its ``member``
    #: dropped from ``index``; then each amount, times the keys taken, is added to its field
    #: of the hash ``counter`` (an integer amount by ``HINCRBY``, any other by ``HINCRBYFLOAT``
    #: once per key taken). ``n`` counts the arguments after it (``3m + 2p``). A key already
    #: gone counts nothing: whoever takes a held label counts it, once.
    TAKE = "T"


@dataclass(frozen=True)
class OpShape:
    """How many arguments follow an op letter."""

    #: Fixed arguments after the letter.
    fixed: int
    #: The last fixed argument counts the variable arguments that follow it.
    counted: bool = False


SHAPES: dict[Op, OpShape] = {
    Op.OPEN_WINDOW: OpShape(1),
    Op.INCR: OpShape(3),
    Op.INCR_FLOAT: OpShape(3),
    Op.INCR_MANY: OpShape(2),
    Op.SET: OpShape(3),
    Op.ADD_EXAMPLE: OpShape(3),
    Op.ADD_DISTINCT: OpShape(2, counted=True),
    Op.EXPIRE: OpShape(2),
    Op.SET_ONCE: OpShape(5, counted=True),
    Op.SET_ONCE_COUNTED: OpShape(3, counted=True),
    Op.DELETE: OpShape(1),
    Op.DELETE_ALL: OpShape(1, counted=True),
    Op.ZADD: OpShape(3),
    Op.ZTRIM_BELOW: OpShape(2),
    Op.FINDING: OpShape(12, counted=True),
    Op.TAKE: OpShape(4, counted=True),
}

#: Ops whose first argument is not a key index.
KEYLESS = frozenset({Op.OPEN_WINDOW, Op.SET_ONCE_COUNTED, Op.DELETE_ALL})


_BY_LETTER = {op.value: op for op in Op}


def split_ops(argv: Sequence[Any]) -> Iterator[tuple[Op, list[Any]]]:
    """The ops of a flat argument list, each with its arguments (variable ones included)."""
    i = 0
    while i < len(argv):
        letter = argv[i]
        op = _BY_LETTER.get(letter)
        if op is None:
            raise StateOpUnknownError(f"unknown op {letter}")
        shape = SHAPES[op]
        end = i + 1 + shape.fixed
        if shape.counted:
            end += int(argv[end - 1])
        yield op, list(argv[i + 1 : end])
        i = end

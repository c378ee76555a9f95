"""The worker process's collector settings (:mod:`stream_guard.heap`)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from stream_guard.heap import OLDER_THRESHOLDS, YOUNG_THRESHOLD, settle_heap


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restored_gc")
def test_settle_heap_freezes_the_start_up_heap_and_raises_the_thresholds() -> None:
    gc.unfreeze()
    before = gc.get_freeze_count()
    settle_heap()
    assert gc.get_freeze_count() > before + 1000  # the interpreter's own objects at least
    assert gc.get_threshold() == (YOUNG_THRESHOLD, *OLDER_THRESHOLDS)


@pytest.mark.usefixtures("restored_gc")
def test_a_cycle_made_after_the_freeze_is_still_collected() -> None:
    settle_heap()

    class Node:
        other: object = None

    a, b = Node(), Node()
    a.other, b.other = b, a
    gone = weakref.ref(a)
    del a, b
    gc.collect()
    assert gone() is None

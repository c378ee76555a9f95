"""CommitAhead: one batch's commit on a thread, results handed back in order, failures kept for the rewind."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import pytest

from stream_guard.commit_ahead import CommitAhead


@dataclass
class _Batch:
    messages: list[str] = field(default_factory=list)


def test_a_commit_runs_on_its_own_thread_and_settles_with_its_batch() -> None:
    ahead: CommitAhead[_Batch, str] = CommitAhead()
    release = threading.Event()
    threads: list[str] = []

    def commit() -> str:
        threads.append(threading.current_thread().name)
        release.wait(5)
        return "committed"

    batch = _Batch(["m1"])
    assert ahead.settle() is None and not ahead.busy
    ahead.start(batch, commit)
    assert ahead.busy
    with pytest.raises(RuntimeError, match="settle it first"):
        ahead.start(_Batch(), commit)
    release.set()
    assert ahead.settle() == (batch, "committed")
    assert threads[0].startswith("stream-guard-commit") and threads[0] != threading.current_thread().name
    assert not ahead.busy and ahead.failed_messages() == []
    ahead.close()


def test_a_failed_commit_raises_at_settle_and_its_records_are_read_again() -> None:
    ahead: CommitAhead[_Batch, str] = CommitAhead()

    def boom() -> str:
        raise ConnectionError("reset")

    ahead.start(_Batch(["a", "b"]), boom)
    with pytest.raises(ConnectionError, match="reset"):
        ahead.settle()
    ahead.start(_Batch(["c"]), lambda: "ok")
    settled = ahead.settle()
    assert settled is not None
    ahead.failed(settled[0])  # its settling failed after the commit returned
    assert ahead.failed_messages() == ["a", "b", "c"]
    assert ahead.failed_messages() == [], "forgotten once handed out"
    ahead.close()
    ahead.close()

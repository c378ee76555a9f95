"""The commit protocol's order, without Kafka or Redis: each step runs only after the one before it held."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pytest

from stream_guard.checkpoint import Checkpoint, Rejected, Sinks
from stream_guard.errors import DeliveryError, UndecodablePayloadError
from stream_guard.metrics.holding import ReleaseResult
from stream_guard.metrics.labels import JoinResult, Label
from stream_guard.source import Source
from stream_guard.state.window_store import StateUpdate


@dataclass
class Journal:
    """Records what each sink was asked to do, in order; ``fail`` names a step that raises."""

    steps: list[tuple[str, object]] = field(default_factory=list)
    fail: str = ""

    def _do(self, step: str, what: object) -> None:
        if step == self.fail:
            raise DeliveryError(f"{step} failed")
        self.steps.append((step, what))

    def dead_letter(self, rejected: Rejected) -> None:
        self.steps.append(("dead_letter", rejected.model))

    def flush(self) -> None:
        self._do("flush", None)

    def apply(self, updates: Mapping[str, Sequence[StateUpdate]], now_ms: int) -> None:
        self._do("apply", sorted(updates))

    def join(self, topic: str, labels: Sequence[Label], now_ms: int) -> JoinResult:
        self._do("join", topic)
        return JoinResult(matched=len(labels), last_offsets={f"{topic}:0": labels[-1].offset})

    def release(self, updates: Mapping[str, Sequence[StateUpdate]], now_ms: int) -> dict[str, ReleaseResult]:
        self._do("release", sorted(updates))
        return {model: ReleaseResult() for model in updates}

    def commit(self, offsets: Mapping[Source, int]) -> None:
        self._do("commit", dict(offsets))

    def sinks(self) -> Sinks:
        return Sinks(dead_letters=self, state=self, labels=self, offsets=self)


def _checkpoint() -> Checkpoint:
    checkpoint = Checkpoint()
    checkpoint.reject(object(), UndecodablePayloadError("garbage"), "fraud")
    checkpoint.add_updates("fraud", [StateUpdate("events:0", 10, 19, 0), StateUpdate("events:1", 5, 7, 0)])
    checkpoint.add_labels("labels", [Label("e1", 1, "labels:0", 3), Label("e2", 0, "labels:0", 4)])
    return checkpoint


def test_steps_run_in_the_documented_order() -> None:
    """Dead letters acked, then Redis, then labels, then held labels released, then the offsets."""
    journal = Journal()
    result = _checkpoint().commit(journal.sinks(), now_ms=1)
    offsets = {Source("events", 0): 20, Source("events", 1): 8, Source("labels", 0): 5}
    assert journal.steps == [
        ("dead_letter", "fraud"),
        ("flush", None),
        ("apply", ["fraud"]),
        ("join", "labels"),
        ("release", ["fraud"]),
        ("commit", offsets),
    ]
    assert result.offsets == offsets
    assert result.applied == {("fraud", Source("events", 0)): 19, ("fraud", Source("events", 1)): 7}
    assert result.joins["labels"].matched == 2


@pytest.mark.parametrize("failing", ["flush", "apply", "join", "release", "commit"])
def test_a_failing_step_stops_every_later_one(failing: str) -> None:
    """Nothing after a failed step runs, so no offset is committed past state that is not durable."""
    journal = Journal(fail=failing)
    with pytest.raises(DeliveryError):
        _checkpoint().commit(journal.sinks(), now_ms=1)
    done = [step for step, _ in journal.steps]
    order = ["dead_letter", "flush", "apply", "join", "release", "commit"]
    assert done == order[: order.index(failing)]


def test_an_empty_checkpoint_commits_nothing() -> None:
    """A batch of redeliveries only (all fenced out) writes nothing and commits nothing."""
    journal = Journal()
    result = Checkpoint().commit(journal.sinks(), now_ms=1)
    assert journal.steps == [("flush", None)]
    assert result.offsets == {}

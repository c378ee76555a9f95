"""The exactly-once turn without Kafka or Redis: what runs before the commit, what after, and what recovery does."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
from confluent_kafka import TopicPartition

from stream_guard.checkpoint import Checkpoint, Sinks
from stream_guard.delivery import TransactionOffsets
from stream_guard.errors import DeliveryError, WindowLeaseLostError
from stream_guard.source import Source
from stream_guard.state.update import StateUpdate, WindowSnapshot
from stream_guard.transactions import (
    CRASH_POINT_ENV,
    AtLeastOnce,
    Outcome,
    PendingSteps,
    RedisStep,
    Transaction,
    crash_point,
)

WINDOW_MS = 10_000
PROBE = ("alerts", 0, 41)


@dataclass
class World:
    """The producer, consumer, pending store and window stores of a turn, journaling every call in order."""

    calls: list[tuple[str, Any]] = field(default_factory=list)
    pending: dict[tuple[str, str], PendingSteps] = field(default_factory=dict)
    fail: str = ""
    transactional_id: str = "sg-g-w1"
    first_position: tuple[str, int, int] | None = PROBE
    #: Windows whose lease another worker holds now.
    lost: set[int] = field(default_factory=set)

    def _do(self, name: str, what: Any = None) -> None:
        if name == self.fail:
            raise DeliveryError(f"{name} failed")
        self.calls.append((name, what))

    # the transactional producer
    def init(self) -> None:
        self._do("init")

    def begin(self) -> None:
        self._do("begin")

    def flush(self) -> None:
        self._do("flush")

    def send_offsets(self, offsets: list[TopicPartition], group_metadata: Any) -> None:
        self._do("send_offsets", ({f"{tp.topic}:{tp.partition}": tp.offset for tp in offsets}, group_metadata))

    def commit(self) -> None:
        self._do("commit")

    def abort(self) -> None:
        self._do("abort")

    # the consumer
    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition("events", 0), TopicPartition("events", 1)]

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [TopicPartition("events", 0, 120), TopicPartition("events", 1, -1001)]

    def consumer_group_metadata(self) -> str:
        return "generation-7"

    # the pending store
    def write(self, entries: Mapping[str, PendingSteps]) -> None:
        self._do("write_pending", sorted(entries))
        for model, entry in entries.items():
            self.pending[(model, entry.name)] = entry

    def remove(self, models: Iterable[str], pending: PendingSteps) -> None:
        models = sorted(models)
        self._do("remove_pending", models)
        for model in models:
            self.pending.pop((model, pending.name), None)

    def read(self, model: str) -> list[PendingSteps]:
        return [entry for (m, _), entry in self.pending.items() if m == model]

    # a window store
    def finish(self, snapshot: WindowSnapshot) -> None:
        self._do("finish", (snapshot.start_ms, snapshot.fields["n"]))

    def close_incident(self, incident_id: str, window_end: int, members: Sequence[str] = ()) -> bool:
        self._do("close_incident", (incident_id, window_end, list(members)))
        return True

    def early_delivered(self, incident_id: str, window_end: int) -> None:
        self._do("early_delivered", (incident_id, window_end))

    def renew(self, start_ms: int, lease_ms: int) -> bool:
        self._do("renew", start_ms)
        return start_ms not in self.lost

    def transaction(self, outcome: Outcome = Outcome.COMMITTED) -> Transaction:
        return Transaction(
            self,  # type: ignore[arg-type]
            self,  # type: ignore[arg-type]
            self,
            {"fraud": self},
            window_ms=WINDOW_MS,
            lease_ms=30_000,
            outcome=lambda probe: outcome,
        )


STEPS = [
    RedisStep("close", "fraud", 20_000, "inc-1", members=("m1",)),
    RedisStep("finish", "fraud", 10_000, events="300"),
]


def _names(world: World) -> list[str]:
    return [name for name, _ in world.calls]


def test_a_step_survives_json_and_runs_its_write() -> None:
    """Each kind of step, written to the pending record and read back, makes the same write."""
    world = World()
    steps = [*STEPS, RedisStep("early", "fraud", 20_000, "inc-2")]
    entry = PendingSteps.from_json("sg-g-w1@5", PendingSteps("sg-g-w1", 5, PROBE, steps).to_json())
    assert entry == PendingSteps("sg-g-w1", 5, PROBE, steps)
    for step in entry.steps:
        step.run(world, WINDOW_MS)
    assert world.calls == [
        ("close_incident", ("inc-1", 20_000, ["m1"])),
        ("finish", (10_000, "300")),
        ("early_delivered", ("inc-2", 20_000)),
    ]


def test_at_least_once_runs_the_steps_once_the_broker_acknowledged() -> None:
    """Flush first; a flush that fails leaves the action unrun (the window is closed again)."""
    world = World()
    AtLeastOnce(world).after_delivery(lambda: world.calls.append(("action", None)), STEPS)  # type: ignore[arg-type]
    assert _names(world) == ["flush", "action"]
    failing = World(fail="flush")
    with pytest.raises(DeliveryError):
        AtLeastOnce(failing).after_delivery(lambda: failing.calls.append(("action", None)), STEPS)  # type: ignore[arg-type]
    assert _names(failing) == []


def test_a_turn_commits_its_offsets_and_writes_its_steps_before_running_them() -> None:
    """Flush, offsets (positions and the batch's) with the group metadata, steps pending, commit, steps run, pending removed."""
    world = World()
    transaction = world.transaction()
    transaction.begin()
    transaction.add_offsets({Source("labels", 0): 9})
    transaction.after_delivery(lambda: world.calls.append(("action", None)), STEPS)
    assert world.pending == {}
    transaction.commit()
    names = ["begin", "flush", "send_offsets", "renew", "write_pending", "commit", "action", "remove_pending"]
    assert _names(world) == names
    assert world.calls[2][1] == ({"events:0": 120, "labels:0": 9}, "generation-7")
    assert world.pending == {}


def test_a_turn_without_steps_writes_nothing_pending() -> None:
    """The common turn (a batch, no window closed) costs no Redis round trip of its own."""
    world = World()
    transaction = world.transaction()
    transaction.begin()
    transaction.commit()
    assert _names(world) == ["begin", "flush", "send_offsets", "commit"]


def test_an_idle_turn_sends_no_offsets_and_a_turn_that_produced_sends_them_again() -> None:
    """Offsets unchanged and nothing produced: nothing to commit. Records produced: the offsets go along (fencing)."""
    world = World(first_position=None)
    transaction = world.transaction()
    for _ in range(2):
        transaction.begin()
        transaction.commit()
    assert _names(world) == ["begin", "flush", "send_offsets", "commit", "begin", "flush", "commit"]
    world.calls, world.first_position = [], PROBE
    transaction.begin()
    transaction.commit()
    assert "send_offsets" in _names(world)


@pytest.mark.parametrize("failing", ["flush", "send_offsets", "renew", "write_pending", "commit"])
def test_a_turn_that_fails_before_its_commit_runs_no_step(failing: str) -> None:
    """The actions never run; an abort drops them, and the next turn starts clean."""
    world = World(fail=failing)
    transaction = world.transaction()
    transaction.begin()
    transaction.after_delivery(lambda: world.calls.append(("action", None)), STEPS)
    with pytest.raises(DeliveryError):
        transaction.commit()
    assert "action" not in _names(world)
    transaction.abort()
    assert _names(world)[-1] == "abort"
    world.fail, world.calls = "", []
    transaction.begin()
    transaction.commit()
    assert "action" not in _names(world)


def test_steps_that_fail_on_redis_after_the_commit_stay_pending_and_do_not_raise() -> None:
    """A committed batch must not be read again: the failure is logged, the steps wait for the next resolve."""
    world = World()
    transaction = world.transaction()
    transaction.begin()

    def redis_down() -> None:
        raise redis.ConnectionError("down")

    transaction.after_delivery(redis_down, STEPS)
    transaction.commit()
    assert [entry.steps for entry in world.pending.values()] == [STEPS]
    assert transaction.resolve("fraud", min_age_ms=60_000) == set()
    assert ("finish", (10_000, "300")) in world.calls
    assert world.pending == {}


@pytest.mark.parametrize(
    ("outcome", "runs"), [(Outcome.COMMITTED, True), (Outcome.ABORTED, False), (Outcome.UNDECIDED, False)]
)
def test_own_pending_steps_run_only_if_their_transaction_committed(outcome: Outcome, runs: bool) -> None:
    """At start-up (after the fence): committed, the steps run; aborted, they are dropped; undecided, they wait."""
    world = World()
    world.pending[("fraud", "sg-g-w1@0")] = PendingSteps("sg-g-w1", 0, PROBE, list(STEPS))
    transaction = world.transaction(outcome)
    transaction.start()
    assert ("finish", (10_000, "300")) in world.calls if runs else "finish" not in _names(world)
    assert bool(world.pending) == (outcome is Outcome.UNDECIDED)


def test_another_workers_steps_block_their_windows_until_old_enough() -> None:
    """Younger than the lease: its worker is committing them, its windows do not close; older: resolved."""
    world = World()
    foreign = PendingSteps("sg-g-w2", 0, PROBE, list(STEPS))
    world.pending[("fraud", "sg-g-w2@0")] = foreign
    transaction = world.transaction(Outcome.COMMITTED)
    transaction.start()  # another id's steps are not resolved at start-up
    assert world.pending
    foreign.written_ms = 2**62  # written "now"
    assert transaction.resolve("fraud", min_age_ms=30_000) == {10_000}
    foreign.written_ms = 0
    assert transaction.resolve("fraud", min_age_ms=30_000) == set()
    assert ("finish", (10_000, "300")) in world.calls
    assert world.pending == {}


def test_steps_of_a_transaction_without_records_run_without_a_probe() -> None:
    """Nothing was produced (a window without alerts): the steps are safe to run whatever the outcome."""
    world = World()
    world.pending[("fraud", "sg-g-w1@0")] = PendingSteps("sg-g-w1", 0, None, list(STEPS))
    world.transaction(Outcome.UNDECIDED).start()
    assert ("finish", (10_000, "300")) in world.calls


class Redis:
    """The state and label sinks of a batch without labels: every update applies."""

    def apply(self, updates: object, now_ms: int) -> None:
        return None

    def release(self, updates: object, now_ms: int) -> dict[str, object]:
        return {}


def test_the_checkpoint_sends_its_offsets_with_the_transaction() -> None:
    """Step 4 of the commit protocol hands the offsets to the turn's transaction, not to the consumer."""
    world = World()
    transaction = world.transaction()
    transaction.begin()
    checkpoint = Checkpoint()
    checkpoint.add_updates("fraud", [StateUpdate("events:1", 10, 19, 0)])

    sinks = Sinks(dead_letters=world, state=Redis(), labels=Redis(), offsets=TransactionOffsets(transaction))  # type: ignore[arg-type]
    checkpoint.commit(sinks, now_ms=1)
    assert "commit" not in _names(world)
    transaction.commit()
    assert world.calls[-2] == ("send_offsets", ({"events:0": 120, "events:1": 20}, "generation-7"))


def test_a_crash_point_exits_the_nth_time_it_is_reached(monkeypatch: pytest.MonkeyPatch) -> None:
    """``<point>@<n>``: the n-th time; other points and an unset variable do nothing."""
    exits: list[int] = []
    monkeypatch.setattr("os._exit", exits.append)
    crash_point("applied")
    monkeypatch.setenv(CRASH_POINT_ENV, "applied@2")
    crash_point("committed")
    crash_point("applied")
    assert exits == []
    crash_point("applied")
    assert exits == [137]


def test_resolving_an_old_entry_keeps_a_newer_one_of_the_same_worker() -> None:
    """Each commit's entry has its own field: a worker resuming meanwhile does not lose its new steps."""
    world = World()
    world.pending[("fraud", "sg-g-w2@0")] = PendingSteps("sg-g-w2", 0, PROBE, list(STEPS))
    newer = PendingSteps("sg-g-w2", 2**62, PROBE, [STEPS[0]])  # written "now": not resolved yet
    world.pending[("fraud", newer.name)] = newer
    assert world.transaction(Outcome.ABORTED).resolve("fraud", min_age_ms=30_000) == set()
    assert list(world.pending) == [("fraud", newer.name)]


def test_a_window_whose_lease_expired_aborts_the_turn_before_anything_is_committed() -> None:
    """Another worker may have closed it meanwhile: its alerts must not be committed a second time."""
    world = World(lost={10_000})
    transaction = world.transaction()
    transaction.begin()
    transaction.after_delivery(lambda: world.calls.append(("action", None)), STEPS)
    with pytest.raises(WindowLeaseLostError, match="10000"):
        transaction.commit()
    assert "commit" not in _names(world) and world.pending == {}

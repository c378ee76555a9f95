"""Delivery of alerts and dead letters: at least once, or exactly once in Kafka transactions.

A window's close and an early alert change Redis twice: *decisions* before their alerts are
produced (the incident records: an alert published, a resolution marked, an early alert
pending) and *settling steps* after the alerts are delivered for good (:class:`RedisStep`:
the window finished, a resolved incident closed, an early alert marked delivered). Until a
step runs, a retry decides and publishes the same alerts again (same ``alert_id``): that
is what makes a failure before delivery harmless. The two modes differ in when "delivered
for good" is.

``[kafka] delivery = "at_least_once"`` (:class:`AtLeastOnce`): once the broker acknowledged
them. A crash between the acknowledgement and the steps publishes them again.

``[kafka] delivery = "exactly_once"`` (:class:`Transaction`): each loop turn is one Kafka
transaction holding its dead letters, early and window alerts, and the consumer offsets
(``send_offsets_to_transaction`` with the group's metadata, KIP-447). Delivered for good
is *committed*. The Redis updates of the batch are applied before the commit, fenced by
offset as in at-least-once mode. What happens on each failure:

* before the commit (a crash, a failed step, an abort): the transaction's records are
  never visible to ``read_committed`` consumers and its offsets are not committed. The
  batch is read again; the counts it applied to Redis are skipped by the fences, but its
  dead letters and early alerts are produced again (records at or below the fence are
  *replayed*: staged for their outputs only). The windows it closed were not finished
  (their lease expires), so they are closed again and publish the same alerts;
* after the commit, before the steps ran: a re-close would publish the alerts a second
  time. So before committing, the turn writes its steps to Redis (``sg:{m}:txn``, one
  field per commit) with the position of the transaction's first record
  (the *probe*), and removes them once they ran. Steps left behind are resolved by
  reading the probe back with ``read_committed`` (:func:`read_outcome`): the record there
  means committed, and the steps run; offsets past it without it mean aborted, and the
  steps are dropped (the decisions stay: the next close publishes again). The windows of
  steps not resolved yet do not close. A worker resolves its own transactional id's steps
  at start-up, after ``init_transactions`` fenced its predecessor (whose open transaction
  the broker then aborts); another id's steps once they are ``lease_ms`` old (younger:
  their worker is committing them now).

A zombie (a worker paused past its session or its lease, then resumed) cannot commit:
the group metadata sent with the offsets is of a generation that lost its partitions,
and a restarted instance with the same transactional id fences the old producer
(``PRODUCER_FENCED``: :class:`~stream_guard.errors.ProducerFencedError`, the worker stops).
Two workers racing for one window: the lease lets one close it; just before committing a
window's alerts its closer renews the lease, and a lease that expired meanwhile (a worker
slow for longer than ``lease_ms``, another one may have closed the window) aborts the
turn (:class:`~stream_guard.errors.WindowLeaseLostError`).
Every transaction that produced anything sends the offsets of every assigned partition
(their positions), so a turn that only closes windows is fenced the same way; a turn that
read and produced nothing commits an empty transaction (no request to the broker).

Limits: a worker that dies after a commit that fired an early alert, before its steps ran,
leaves that alert pending until its steps are resolved (at its restart, or ``lease_ms``
later by another worker): a batch of the same window read by another worker meanwhile fires
it again. A worker stalled for longer than the lease between renewing it and its commit
(milliseconds apart) may still race another one. The broker must support transactions
(Apache Kafka 2.5+ for KIP-447).

:func:`crash_point` is a test hook: with ``SG_CRASH_AT=<point>`` (or ``<point>@<n>``) in
the environment the process exits at once (like SIGKILL) the first (n-th) time it reaches
that point; unset, it does nothing.
"""

from __future__ import annotations

import enum
import json
import os
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from stream_guard.errors import ProducerFencedError, TransactionUnavailableError, WindowLeaseLostError
from stream_guard.kafka import DeliveryTracker, TransactionalProducer
from stream_guard.source import Source
from stream_guard.state.client import REDIS_ERRORS, RedisClient, pipeline
from stream_guard.state.keys import ModelKeys
from stream_guard.state.update import WindowSnapshot

if TYPE_CHECKING:
    from stream_guard.alerts.model import Alert
    from stream_guard.checkpoint import Checkpoint
    from stream_guard.model import ModelRuntime
    from stream_guard.pipeline import Pipeline
    from stream_guard.state.window_store import WindowStore

log = structlog.get_logger("stream_guard.transactions")

CRASH_POINT_ENV = "SG_CRASH_AT"
#: Named moments :func:`crash_point` can stop the process at (the crash tests use them):
#: a batch's Redis updates applied, its transaction open; a window's decisions taken in
#: Redis, its alerts not produced yet; a transaction with settling steps committed, the
#: steps not run yet.
CRASH_POINTS = ("applied", "closing", "committed")


_reached: dict[str, int] = defaultdict(int)


def crash_point(name: str) -> None:
    """Exit at once (status 137, no clean-up) if ``SG_CRASH_AT`` names this point.

    ``<point>`` exits the first time the point is reached, ``<point>@<n>`` the n-th time.
    """
    wanted = os.environ.get(CRASH_POINT_ENV)
    if not wanted:
        return
    point, _, nth = wanted.partition("@")
    if point == name:
        _reached[name] += 1
        if _reached[name] >= int(nth or 1):
            os._exit(137)


class StepTarget(Protocol):
    """What settling steps write: a model's window store (its incidents included)."""

    def finish(self, snapshot: WindowSnapshot) -> None: ...

    def renew(self, start_ms: int, lease_ms: int) -> bool: ...

    def close_incident(self, incident_id: str, window_end: int, members: Sequence[str] = ()) -> bool: ...

    def early_delivered(self, incident_id: str, window_end: int) -> None: ...


@dataclass(frozen=True)
class RedisStep:
    """One settling write of a model's state, runnable again at no harm (every step is idempotent).

    ``action`` is ``finish`` (the window at ``window_ms`` closed with ``events`` counted),
    ``close`` (the incident resolved by the window ending at ``window_ms``, with ``members``)
    or ``early`` (the incident's early alert for the window ending at ``window_ms`` delivered).
    """

    action: str
    model: str
    window_ms: int
    incident_id: str = ""
    events: str = "0"
    members: tuple[str, ...] = ()

    def run(self, target: StepTarget, window_ms: int) -> None:
        if self.action == "finish":
            target.finish(WindowSnapshot(self.window_ms, self.window_ms + window_ms, {"n": self.events}))
        elif self.action == "close":
            target.close_incident(self.incident_id, self.window_ms, list(self.members))
        elif self.action == "early":
            target.early_delivered(self.incident_id, self.window_ms)
        else:
            raise ValueError(f"unknown settling step {self.action!r}")

    def to_json(self) -> list[Any]:
        return [self.action, self.model, self.window_ms, self.incident_id, self.events, list(self.members)]

    @classmethod
    def from_json(cls, item: Sequence[Any]) -> RedisStep:
        action, model, window_ms, incident_id, events, members = item
        return cls(str(action), str(model), int(window_ms), str(incident_id), str(events), tuple(members))


class Settlement(Protocol):
    """When the settling steps of what was produced so far may run."""

    def after_delivery(self, action: Callable[[], None], steps: Sequence[RedisStep]) -> None:
        """Run ``action`` once the messages produced so far are delivered for good.

        ``steps`` are the Redis writes ``action`` makes, in a form that survives the process.
        """


class AtLeastOnce:
    """Delivered for good = acknowledged: flush the producer, then run the action."""

    def __init__(self, producer: DeliveryTracker) -> None:
        self._producer = producer

    def after_delivery(self, action: Callable[[], None], steps: Sequence[RedisStep]) -> None:
        self._producer.flush()
        action()


class Outcome(enum.Enum):
    COMMITTED = "committed"
    ABORTED = "aborted"
    UNDECIDED = "undecided"


def read_outcome(settings: Mapping[str, Any], probe: tuple[str, int, int], timeout_s: float = 5.0) -> Outcome:
    """Whether the transaction whose first record is at ``probe`` (topic, partition, offset) committed.

    A ``read_committed`` consumer reads from the probe's offset: the record there means
    committed; a later record, or the end of the partition past the offset, means aborted
    (aborted records are skipped); the end at or before the offset (a transaction still
    open holds the last stable offset there) or nothing within ``timeout_s``: undecided.
    """
    topic, partition, offset = probe
    consumer = Consumer(
        {
            **settings,
            "group.id": f"stream-guard-probe-{uuid.uuid4().hex}",
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        consumer.assign([TopicPartition(topic, partition, offset)])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is None:
                continue
            error = message.error()
            if error is None:
                return Outcome.COMMITTED if message.offset() == offset else Outcome.ABORTED
            if error.code() == KafkaError._PARTITION_EOF and (message.offset() or 0) > offset:
                return Outcome.ABORTED
        return Outcome.UNDECIDED
    finally:
        consumer.close()


@dataclass
class PendingSteps:
    """One transaction's steps in one model's ``sg:{m}:txn``, written before its commit."""

    transactional_id: str
    written_ms: int
    probe: tuple[str, int, int] | None
    steps: list[RedisStep] = field(default_factory=list)

    @property
    def name(self) -> str:
        """Its field: a later transaction of the same id has its own, which removing this one keeps."""
        return f"{self.transactional_id}@{self.written_ms}"

    def to_json(self) -> str:
        probe = list(self.probe) if self.probe is not None else None
        return json.dumps({"at": self.written_ms, "probe": probe, "steps": [s.to_json() for s in self.steps]})

    @classmethod
    def from_json(cls, name: str, text: str) -> PendingSteps:
        record = json.loads(text)
        probe = record["probe"]
        steps = [RedisStep.from_json(item) for item in record["steps"]]
        position = (str(probe[0]), int(probe[1]), int(probe[2])) if probe is not None else None
        return cls(name.rpartition("@")[0], int(record["at"]), position, steps)


class PendingStore(Protocol):
    """Where the steps of a transaction wait for its outcome, per model and transactional id."""

    def write(self, entries: Mapping[str, PendingSteps]) -> None:
        """Each model's entry (one round trip)."""

    def remove(self, models: Iterable[str], pending: PendingSteps) -> None:
        """The entry named like ``pending`` in each of ``models`` (one round trip)."""

    def read(self, model: str) -> list[PendingSteps]:
        """Every entry of ``model``."""


class RedisPendingSteps:
    """Pending steps in each model's hash ``sg:{m}:txn`` (field: ``<transactional id>@<written ms>``)."""

    def __init__(self, client: RedisClient, keys: Mapping[str, ModelKeys]) -> None:
        self._client = client
        self._keys = keys

    def write(self, entries: Mapping[str, PendingSteps]) -> None:
        pipe = pipeline(self._client)
        for model, pending in entries.items():
            pipe.hset(self._keys[model].transaction_steps, pending.name, pending.to_json())
        pipe.execute()

    def remove(self, models: Iterable[str], pending: PendingSteps) -> None:
        pipe = pipeline(self._client)
        for model in models:
            pipe.hdel(self._keys[model].transaction_steps, pending.name)
        pipe.execute()

    def read(self, model: str) -> list[PendingSteps]:
        raw = self._client.hgetall(self._keys[model].transaction_steps)
        return [PendingSteps.from_json(str(name), str(text)) for name, text in raw.items()]


class Transaction:
    """Delivered for good = committed: one Kafka transaction per loop turn (module docstring).

    Parameters
    ----------
    producer
        The transactional producer of alerts and dead letters.
    consumer
        The worker's consumer: its group metadata and positions go with every commit.
    pending
        Where the steps wait for the commit (:class:`RedisPendingSteps`).
    targets
        Each model's window store, which the steps write.
    window_ms
        The window length (a finish step names the window by its start).
    lease_ms
        The windows' lease: renewed just before a commit that closes them.
    outcome
        How a pending transaction's fate is read (:func:`read_outcome` on the consumer's settings).
    """

    def __init__(
        self,
        producer: TransactionalProducer,
        consumer: Consumer,
        pending: PendingStore,
        targets: Mapping[str, StepTarget],
        *,
        window_ms: int,
        lease_ms: int,
        outcome: Callable[[tuple[str, int, int]], Outcome],
    ) -> None:
        self._producer = producer
        self._lease_ms = lease_ms
        self._consumer = consumer
        self._pending = pending
        self._targets = targets
        self._window_ms = window_ms
        self._outcome = outcome
        self._open = False
        self._actions: list[Callable[[], None]] = []
        self._steps: list[RedisStep] = []
        self._offsets: dict[Source, int] = {}
        #: The offsets of the last commit: a turn that read and produced nothing sends none.
        self._committed: dict[Source, int] = {}

    @property
    def transactional_id(self) -> str:
        return self._producer.transactional_id

    def start(self) -> None:
        """Fence every earlier producer of this transactional id, then resolve its pending steps."""
        self._producer.init()
        for model in self._targets:
            self.resolve(model, min_age_ms=0, own_only=True)

    def begin(self) -> None:
        if not self._open:
            self._producer.begin()
            self._open = True
            self._actions, self._steps, self._offsets = [], [], {}

    def after_delivery(self, action: Callable[[], None], steps: Sequence[RedisStep]) -> None:
        self._actions.append(action)
        self._steps.extend(steps)

    def add_offsets(self, offsets: Mapping[Source, int]) -> None:
        """The batch's next offsets, committed with the transaction."""
        self._offsets.update(offsets)

    def commit(self) -> None:
        """Send the offsets, write the pending steps, commit, then run the steps and remove them."""
        if not self._open:
            return
        self._producer.flush()
        offsets = {**self._positions(), **self._offsets}
        produced = self._producer.first_position is not None or bool(self._steps)
        if offsets and (produced or offsets != self._committed):  # an idle turn commits nothing
            tps = [TopicPartition(s.topic, s.partition, o) for s, o in sorted(offsets.items())]
            self._producer.send_offsets(tps, self._consumer.consumer_group_metadata())
        by_model: dict[str, list[RedisStep]] = defaultdict(list)
        for step in self._steps:
            by_model[step.model].append(step)
        self._renew_leases()
        if by_model:
            now_ms, probe = int(time.time() * 1000), self._producer.first_position
            written = {
                model: PendingSteps(self.transactional_id, now_ms, probe, steps) for model, steps in by_model.items()
            }
            self._pending.write(written)
        self._producer.commit()
        self._open = False
        self._committed = offsets
        actions, self._actions, self._steps = self._actions, [], []
        if by_model:
            crash_point("committed")
        try:
            for action in actions:
                action()
            if by_model:
                self._pending.remove(by_model, next(iter(written.values())))
        except REDIS_ERRORS as exc:
            # Committed: the batch must not be read again. The pending steps are this
            # worker's own, resolved (run) before its next window close.
            log.warning("steps of a committed transaction left pending", error=str(exc))

    def abort(self) -> None:
        """Abort the open transaction (its steps never run: the decisions are taken again).

        An abort that fails leaves the transaction open: it is aborted again after the
        next failure (every turn of an open transaction fails until then).
        """
        if not self._open:
            return
        self._actions, self._steps, self._offsets = [], [], {}
        try:
            self._producer.abort()
        except (KafkaException, ProducerFencedError, TransactionUnavailableError) as exc:
            log.warning("aborting the transaction failed", error=str(exc))
            return
        self._open = False

    def _renew_leases(self) -> None:
        """The turn's windows are still this worker's for a lease; else abort (another may have closed them)."""
        for step in self._steps:
            if step.action == "finish" and not self._targets[step.model].renew(step.window_ms, self._lease_ms):
                raise WindowLeaseLostError(
                    f"the lease on window {step.window_ms} of {step.model} expired before its alerts were committed"
                )

    def _positions(self) -> dict[Source, int]:
        """The next offset of every assigned partition read so far (a zombie's commit then fails)."""
        assigned = self._consumer.assignment()
        if not assigned:
            return {}
        return {Source(tp.topic, tp.partition): tp.offset for tp in self._consumer.position(assigned) if tp.offset >= 0}

    def resolve(self, model: str, *, min_age_ms: int, own_only: bool = False) -> set[int]:
        """Resolve ``model``'s pending steps; the window starts of those left pending (not to be closed).

        This worker's own (left by a failure after a commit, or by its predecessor) are
        resolved at any age, another transactional id's once ``min_age_ms`` old.
        """
        blocked: set[int] = set()
        now_ms = int(time.time() * 1000)
        for pending in self._pending.read(model):
            own = pending.transactional_id == self.transactional_id
            if (own_only and not own) or (not own and now_ms - pending.written_ms < min_age_ms):
                outcome = Outcome.UNDECIDED
            else:
                outcome = Outcome.COMMITTED if pending.probe is None else self._outcome(pending.probe)
            if outcome is Outcome.UNDECIDED:
                blocked.update(s.window_ms for s in pending.steps if s.action == "finish")
                continue
            if outcome is Outcome.COMMITTED:
                for step in pending.steps:
                    step.run(self._targets[model], self._window_ms)
            self._pending.remove([model], pending)
            log.info(
                "pending transaction steps resolved",
                model=model,
                transactional_id=pending.transactional_id,
                outcome=outcome.value,
                steps=len(pending.steps),
            )
        return blocked


def stage_replayed(
    pipeline: Pipeline,
    models: Mapping[str, ModelRuntime],
    stores: Mapping[str, WindowStore],
    replayed: Mapping[str, list[Any]],
    checkpoint: Checkpoint,
) -> dict[str, list[Alert]]:
    """Stage the records at or below the fences again, for their dead letters and early alerts.

    Their counts are in Redis already (their state updates are dropped), but their outputs
    went with an aborted transaction. Staging fed the online detectors records they had
    seen: the partitions are restored from their checkpoints before the batch's other
    records are staged. Returns the early alerts by model.
    """
    early: dict[str, list[Alert]] = {}
    if not replayed:
        return early
    checkpointer = pipeline.stages.checkpointer
    for name, messages in replayed.items():
        staged = pipeline.stage(models[name], messages, stores[name].keys)
        for letter in staged.dead:
            checkpoint.reject(letter.message, letter.error, name)
        if staged.early:
            early[name] = list(staged.early)
        if checkpointer is not None:
            for source in {Source(m.topic(), m.partition()) for m in messages}:
                checkpointer.skipped(name, str(source))
    if checkpointer is not None:
        checkpointer.restore_pending(stores)
    return early

"""Checkpoints of the online detectors, per model and input partition, that move with the fence.

The River detectors of :class:`~stream_guard.drift.online.OnlineDrift` learn the stream: once
ADWIN has seen a drift it holds the new regime, and does not report it again. A worker
that restarted with fresh detectors (seeded from the baseline) would see the same drift
again, and open a second incident. So every batch writes, for each input partition it
read, the state of that partition's detectors (the River objects, the offset they were
fed to, the detections remembered for redeliveries) as one field of the hash
``sg:{m}:detectors``, by an op of the batch's own fenced update
(:class:`~stream_guard.state.update.StateUpdate`):

* the checkpoint and the applied-offset fence are written by the same script, so they
  move together: a checkpoint reflects exactly the records the fence says were applied,
  a batch the fence skips writes no checkpoint, and a batch that fails writes neither;
* on assignment (any worker), a partition's checkpoint is restored before the first of its
  records is staged (:meth:`DetectorCheckpointer.restore_pending`; Redis unreachable: the
  batch is rewound and retried like any batch that meets an outage). The records up to the
  fence are skipped by the worker, the ones after it are fed: each record is fed to a
  partition's detectors exactly once, across restarts and rebalances;
* a batch the fence skipped (another worker applied those offsets: a zombie, or a fence
  read too early) may have advanced the detectors beyond what Redis holds, or along
  another path: the partition is restored again from Redis before its next batch.

A checkpoint is ``sgdrift|<format>|<offset>|<base64 of zlib of pickle>``. A blob of an
unknown format, a corrupt one, or one written with another River version, detector or
baseline profile is logged once and ignored: the partition starts from the baseline.

Pickle runs code chosen by whoever wrote the blob: the Redis instance must be trusted (it
already decides every count and alert). A checkpoint is about 1.1-1.5 KB per monitored
feature (ADWIN after 10k values), written with each batch.
"""

from __future__ import annotations

import base64
import pickle
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from stream_guard.aggregation import WindowGroups
from stream_guard.batch import EventBatch
from stream_guard.errors import DriftCheckpointUnusableError
from stream_guard.state.keys import ModelKeys

__all__ = [
    "FORMAT_VERSION",
    "CheckpointReader",
    "DetectorCheckpointer",
    "PartitionCheckpoint",
    "PartitionDetectors",
    "decode_checkpoint",
    "encode_checkpoint",
]

log = structlog.get_logger("stream_guard.drift.checkpoint")

#: The format written; a blob of any other is ignored (the partition starts afresh).
FORMAT_VERSION = 1
_MAGIC = "sgdrift"


@dataclass(frozen=True)
class PartitionCheckpoint:
    """One partition's detector state and the last input offset it reflects."""

    offset: int
    state: Mapping[str, Any]


def encode_checkpoint(offset: int, state: Mapping[str, Any]) -> str:
    """The checkpoint text (ASCII: the Redis client decodes responses)."""
    payload = base64.b64encode(zlib.compress(pickle.dumps(dict(state), protocol=pickle.HIGHEST_PROTOCOL)))
    return f"{_MAGIC}|{FORMAT_VERSION}|{int(offset)}|{payload.decode('ascii')}"


def decode_checkpoint(text: str | bytes) -> PartitionCheckpoint:
    """Parse :func:`encode_checkpoint`'s text.

    Raises
    ------
    DriftCheckpointUnusableError
        (a ``ValueError``) On another format version, or anything that is not such a checkpoint.
    """
    if isinstance(text, bytes):
        text = text.decode("ascii", errors="replace")
    parts = text.split("|", 3)
    if len(parts) != 4 or parts[0] != _MAGIC:
        raise DriftCheckpointUnusableError("not a detector checkpoint")
    if parts[1] != str(FORMAT_VERSION):
        raise DriftCheckpointUnusableError(
            f"detector checkpoint of format {parts[1]!r}, this version reads {FORMAT_VERSION}"
        )
    try:
        offset = int(parts[2])
        state = pickle.loads(zlib.decompress(base64.b64decode(parts[3], validate=True)))
    except Exception as exc:  # unpickling can raise anything: the blob is unusable then
        raise DriftCheckpointUnusableError(f"corrupt detector checkpoint: {type(exc).__name__}: {exc}") from exc
    if not isinstance(state, dict):
        raise DriftCheckpointUnusableError("corrupt detector checkpoint: not a mapping")
    return PartitionCheckpoint(offset, state)


class PartitionDetectors(Protocol):
    """A stage whose state per (model, partition) can be exported and restored (``OnlineDrift``)."""

    def export_partition(self, model: str, source: str) -> dict[str, Any] | None:
        """The state of ``source``'s detectors of ``model`` (None: it has none)."""

    def restore_partition(self, model: str, source: str, offset: int, state: Mapping[str, Any]) -> None:
        """Replace that state by ``state``, fed up to ``offset``; raise DriftCheckpointUnusableError if unusable."""

    def forget(self, sources: Iterable[str]) -> None:
        """Drop every state of these partitions."""


class CheckpointReader(Protocol):
    """Where a model's checkpoints are read (a :class:`~stream_guard.state.window_store.WindowStore`)."""

    def detector_checkpoints(self, sources: Sequence[str]) -> dict[str, str]:
        """The checkpoint of each of ``sources`` that has one."""


class DetectorCheckpointer:
    """Writes each batch's detector checkpoints into its updates; restores them on assignment.

    A :class:`~stream_guard.stages.CounterContributor` (it runs after the row checks, so the
    detectors have seen the batch) and a :class:`~stream_guard.stages.PartitionState`.
    """

    def __init__(self, detectors: PartitionDetectors) -> None:
        self._detectors = detectors
        #: (model, source) whose checkpoint is to be read before their next batch is staged.
        self._pending: set[tuple[str, str]] = set()
        #: Write cost, for the operator: checkpoints written and their total size (characters).
        self.written = 0
        self.written_chars = 0

    # -- writing: a contributor of every batch ------------------------------------------------

    def contribute(self, batch: EventBatch, groups: WindowGroups, keys: ModelKeys) -> None:
        """Set each partition's checkpoint (at its update's last offset) in the batch's fenced update."""
        for source, update in groups.updates.items():
            state = self._detectors.export_partition(batch.model, source)
            if state is None:
                continue
            text = encode_checkpoint(update.last_offset, state)
            update.set(keys.detectors, source, text)
            update.expire(keys.detectors, 0)  # no TTL, as the fence it moves with
            self.written += 1
            self.written_chars += len(text)

    # -- restoring ---------------------------------------------------------------------------

    def assigned(self, model: str, sources: Iterable[str]) -> None:
        """These partitions are (again) this worker's: restore them before their next batch."""
        self._detectors.forget(sources)
        self._pending.update((model, s) for s in sources)

    def skipped(self, model: str, source: str) -> None:
        """The fence skipped a batch of ``source``: what its detectors saw may not be what Redis holds."""
        self.assigned(model, [source])

    @property
    def pending(self) -> bool:
        return bool(self._pending)

    def restore_pending(self, stores: Mapping[str, CheckpointReader]) -> None:
        """Read and restore the pending partitions' checkpoints; a Redis error propagates (retry later)."""
        by_model: dict[str, list[str]] = {}
        for model, source in sorted(self._pending):
            by_model.setdefault(model, []).append(source)
        for model, sources in by_model.items():
            store = stores.get(model)
            found = store.detector_checkpoints(sources) if store is not None else {}
            for source in sources:
                self._restore(model, source, found.get(source))
                self._pending.discard((model, source))

    def _restore(self, model: str, source: str, text: str | None) -> None:
        if text is None:
            log.debug("no detector checkpoint, starting from the baseline", model=model, source=source)
            return
        try:
            checkpoint = decode_checkpoint(text)
            self._detectors.restore_partition(model, source, checkpoint.offset, checkpoint.state)
        except DriftCheckpointUnusableError as exc:
            self._detectors.forget([source])
            log.warning(
                "detector checkpoint ignored, starting from the baseline", model=model, source=source, reason=str(exc)
            )
            return
        log.info("detectors restored", model=model, source=source, offset=checkpoint.offset, chars=len(text))

    def forget(self, sources: Iterable[str]) -> None:
        """Revoked or lost partitions: nothing left to restore (the next owner reads them)."""
        gone = set(sources)
        self._pending = {(m, s) for m, s in self._pending if s not in gone}

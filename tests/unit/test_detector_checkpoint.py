"""Checkpoints of the online detectors per partition (stream_guard.drift.checkpoint): codec, restore, fence."""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Sequence

import numpy as np
import pytest
from river import drift as river_drift
from structlog.testing import capture_logs
from test_drift_online import MODEL, PARTITIONS, TOPIC, feed, make_batch, model, profile, records, state

from stream_guard.aggregation import group_rows
from stream_guard.drift import OnlineDrift
from stream_guard.drift.checkpoint import (
    FORMAT_VERSION,
    DetectorCheckpointer,
    decode_checkpoint,
    encode_checkpoint,
)
from stream_guard.errors import DriftCheckpointUnusableError
from stream_guard.model import ModelRuntime
from stream_guard.profile import BaselineProfile
from stream_guard.state.keys import ModelKeys
from stream_guard.state.memory import MemoryState

__all__ = ["model", "profile"]  # fixtures, imported for pytest

KEYS = ModelKeys("sg", MODEL)
SOURCES = [f"{TOPIC}:{p}" for p in range(PARTITIONS)]
N, SHIFT, STOP = 24_000, 12_000, 19_200  # the stop lands at 60 % of the drift


# --------------------------------------------------------------------------- the codec


def test_codec_round_trip_keeps_the_offset_and_the_state() -> None:
    text = encode_checkpoint(41, {"a": [1, 2.5], "b": None})
    assert text.isascii() and text.startswith(f"sgdrift|{FORMAT_VERSION}|41|")
    checkpoint = decode_checkpoint(text)
    assert (checkpoint.offset, dict(checkpoint.state)) == (41, {"a": [1, 2.5], "b": None})
    assert decode_checkpoint(text.encode()).offset == 41


@pytest.mark.parametrize(
    "text",
    [
        "",
        "hello",
        "sgdrift|1|7",
        f"sgdrift|{FORMAT_VERSION + 1}|7|" + encode_checkpoint(7, {}).split("|", 3)[3],
        "sgdrift|1|seven|" + encode_checkpoint(7, {}).split("|", 3)[3],
        "sgdrift|1|7|not base64!",
        "sgdrift|1|7|" + encode_checkpoint(7, {"x": 1}).split("|", 3)[3][:-8],
        "sgdrift|1|7|" + __import__("base64").b64encode(__import__("zlib").compress(b"garbage")).decode(),
        "sgdrift|1|7|" + __import__("base64").b64encode(__import__("zlib").compress(pickle.dumps([1]))).decode(),
    ],
    ids=[
        "empty",
        "other",
        "no-payload",
        "unknown-version",
        "bad-offset",
        "bad-base64",
        "truncated",
        "not-pickle",
        "list",
    ],
)
def test_an_unknown_version_or_a_corrupt_blob_is_refused(text: str) -> None:
    with pytest.raises(DriftCheckpointUnusableError):
        decode_checkpoint(text)


@pytest.mark.parametrize(
    "detector",
    [
        river_drift.ADWIN(delta=1e-5),
        river_drift.KSWIN(alpha=0.005, window_size=100, seed=1),
        river_drift.PageHinkley(threshold=5.0),
        river_drift.binary.DDM(),
    ],
    ids=lambda d: type(d).__name__,
)
def test_river_detectors_continue_exactly_after_a_pickle_round_trip(detector: object) -> None:
    rng = np.random.default_rng(3)
    binary = isinstance(detector, river_drift.binary.DDM)
    first = rng.random(3000) < 0.1 if binary else rng.random(3000)
    second = rng.random(3000) < 0.4 if binary else rng.random(3000) * 0.5 + 0.4
    for x in first:
        detector.update(x)  # type: ignore[attr-defined]
    copy = pickle.loads(pickle.dumps(detector, protocol=pickle.HIGHEST_PROTOCOL))
    hits, copy_hits = [], []
    for i, x in enumerate(second):
        detector.update(x)  # type: ignore[attr-defined]
        copy.update(x)
        hits += [i] if detector.drift_detected else []  # type: ignore[attr-defined]
        copy_hits += [i] if copy.drift_detected else []
    assert hits == copy_hits and hits


# --------------------------------------------------------------------------- restoring a partition


def _checkpoints(drift: OnlineDrift) -> dict[str, str]:
    out = {}
    for source in SOURCES:
        exported = drift.export_partition(MODEL, source)
        assert exported is not None
        out[source] = encode_checkpoint(drift._fed[(MODEL, source)], exported)
    return out


class _Reader:
    def __init__(self, stored: dict[str, str]) -> None:
        self.stored = stored
        self.asked: list[list[str]] = []

    def detector_checkpoints(self, sources: Sequence[str]) -> dict[str, str]:
        self.asked.append(list(sources))
        return {s: self.stored[s] for s in sources if s in self.stored}


def test_a_restored_worker_continues_exactly_and_does_not_detect_the_drift_again(
    profile: BaselineProfile, model: ModelRuntime
) -> None:
    """The bug: fresh detectors at 60 % of a sustained drift detect it again; restored ones do not."""
    stream = records(N, seed=17, shift_from=SHIFT)
    before = OnlineDrift({MODEL: profile})
    first_hits = feed(before, model, stream[:STOP])
    assert first_hits and min(i for _, i in first_hits) >= SHIFT

    restored = OnlineDrift({MODEL: profile})
    checkpointer = DetectorCheckpointer(restored)
    checkpointer.assigned(MODEL, SOURCES)
    checkpointer.restore_pending({MODEL: _Reader(_checkpoints(before))})
    assert not checkpointer.pending
    assert state(restored) == state(before)

    rest = stream[STOP:]
    assert feed(restored, model, rest, STOP) == feed(before, model, rest, STOP)
    assert state(restored) == state(before)
    fresh = feed(OnlineDrift({MODEL: profile}), model, rest, STOP)
    assert fresh, "a fresh detector sees the sustained drift again (what the checkpoint prevents)"


def test_restored_detections_are_repeated_for_a_redelivered_batch(
    profile: BaselineProfile, model: ModelRuntime
) -> None:
    stream = records(N, seed=17, shift_from=SHIFT)
    before = OnlineDrift({MODEL: profile})
    hits = feed(before, model, stream[:STOP])
    restored = OnlineDrift({MODEL: profile})
    checkpointer = DetectorCheckpointer(restored)
    checkpointer.assigned(MODEL, SOURCES)
    checkpointer.restore_pending({MODEL: _Reader(_checkpoints(before))})
    # A redelivery of what was fed (rows at or below the restored offsets) repeats, never feeds.
    again = feed(restored, model, stream[:STOP])
    assert sorted(again) == sorted(hits)
    assert state(restored) == state(before)


def test_checkpoints_are_written_by_the_fenced_update_and_skipped_with_it(
    profile: BaselineProfile, model: ModelRuntime
) -> None:
    drift = OnlineDrift({MODEL: profile})
    checkpointer = DetectorCheckpointer(drift)
    memory = MemoryState(KEYS, window_ms=60_000, lateness_ms=0)
    stream = records(6000, seed=5)

    def stage(first: int, n: int) -> list:  # type: ignore[type-arg]
        batch = make_batch(stream[first : first + n], first)
        drift.findings(model, batch)
        groups = group_rows(batch, 60_000)
        checkpointer.contribute(batch, groups, KEYS)
        return list(groups.updates.values())

    assert memory.apply(stage(0, 3000), now_ms=0) == [1, 1, 1]
    written = memory.detector_checkpoints(SOURCES)
    assert {s: decode_checkpoint(t).offset for s, t in written.items()} == memory.applied_offsets(SOURCES)
    assert KEYS.detectors == "sg:{fraud}:detectors"
    assert KEYS.detectors not in memory._deadlines  # no TTL: it lives as long as the fence
    assert checkpointer.written == 3 and checkpointer.written_chars == sum(map(len, written.values()))

    # A redelivered batch is skipped by the fence: its checkpoint is not written either.
    assert memory.apply(stage(0, 3000), now_ms=0) == [0, 0, 0]
    assert memory.detector_checkpoints(SOURCES) == written

    assert memory.apply(stage(3000, 3000), now_ms=0) == [1, 1, 1]
    later = memory.detector_checkpoints(SOURCES)
    assert {s: decode_checkpoint(t).offset for s, t in later.items()} == {s: 1999 for s in SOURCES}

    other = OnlineDrift({MODEL: profile})
    restorer = DetectorCheckpointer(other)
    restorer.assigned(MODEL, SOURCES)
    restorer.restore_pending({MODEL: memory})
    assert state(other) == state(drift)


def test_an_unusable_checkpoint_is_logged_once_and_the_partition_starts_from_the_baseline(
    profile: BaselineProfile, model: ModelRuntime
) -> None:
    before = OnlineDrift({MODEL: profile})
    feed(before, model, records(6000, seed=5))
    stored = _checkpoints(before)
    stored[SOURCES[0]] = "sgdrift|99|1999|AAAA"  # a later format
    stored[SOURCES[1]] = stored[SOURCES[1]][:-40]  # corrupt
    other_profile = dataclasses.replace(profile, source="another reference")
    restored = OnlineDrift({MODEL: other_profile})
    checkpointer = DetectorCheckpointer(restored)
    checkpointer.assigned(MODEL, SOURCES)
    with capture_logs() as logs:
        checkpointer.restore_pending({MODEL: _Reader(stored)})
    ignored = [e for e in logs if e["event"] == "detector checkpoint ignored, starting from the baseline"]
    assert [e["source"] for e in ignored] == SOURCES  # the third: written with another baseline profile
    assert all(e["log_level"] == "warning" for e in ignored)
    assert "baseline profile" in ignored[2]["reason"]
    assert not checkpointer.pending and restored._fed == {}
    # Fresh detectors then, as if there had been no checkpoint.
    assert feed(restored, model, records(3000, seed=6)) == []


def test_a_missing_checkpoint_starts_from_the_baseline(profile: BaselineProfile, model: ModelRuntime) -> None:
    restored = OnlineDrift({MODEL: profile})
    checkpointer = DetectorCheckpointer(restored)
    checkpointer.assigned(MODEL, SOURCES)
    reader = _Reader({})
    checkpointer.restore_pending({MODEL: reader})
    assert reader.asked == [sorted(SOURCES)] and not checkpointer.pending and restored._fed == {}


def test_assignment_skips_and_revocations(profile: BaselineProfile, model: ModelRuntime) -> None:
    """An assigned partition drops what it had here; a skipped batch restores it again; a revoked one is not read."""
    drift = OnlineDrift({MODEL: profile})
    feed(drift, model, records(3000, seed=5))
    checkpointer = DetectorCheckpointer(drift)
    checkpointer.skipped(MODEL, SOURCES[0])
    assert checkpointer.pending and (MODEL, SOURCES[0]) not in drift._fed
    checkpointer.assigned(MODEL, SOURCES[1:])
    checkpointer.forget([SOURCES[1]])
    reader = _Reader({})
    checkpointer.restore_pending({MODEL: reader})
    assert reader.asked == [[SOURCES[0], SOURCES[2]]]

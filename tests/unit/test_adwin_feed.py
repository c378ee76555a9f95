"""The batch loop over ADWIN signals where River's own ``update`` does, and leaves the same state."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from river.drift import ADWIN

from stream_guard.drift.detectors import _feed_adwin


def by_update(detector: ADWIN, values: list[float]) -> list[int]:
    out = []
    for i, v in enumerate(values):
        detector.update(v)
        if detector.drift_detected:
            out.append(i)
    return out


def stream(seed: int) -> list[float]:
    """Shifts in the mean every few hundred values: ADWIN signals several times."""
    rng = np.random.default_rng(seed)
    parts = [rng.normal(mean, 1.0, int(rng.integers(100, 600))) for mean in (0, 3, 3, -2, 5, 5, 0)]
    return np.concatenate(parts).tolist()


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("batch", [1, 7, 64, 5000])
def test_batches_signal_where_update_does(seed: int, batch: int) -> None:
    values = stream(seed)
    reference, fed = ADWIN(), ADWIN()
    want = by_update(reference, values)
    got = []
    for start in range(0, len(values), batch):
        got += [start + i for i in _feed_adwin(fed, values[start : start + batch])]
    assert len(want) >= 3  # the stream does drift
    assert got == want
    assert state(fed) == state(reference)
    assert pickle.loads(pickle.dumps(fed)).drift_detected == reference.drift_detected


def state(detector: ADWIN) -> tuple[bool, int, float, float]:
    return (detector.drift_detected, detector.width, detector.total, detector.variance)


def test_a_signal_on_a_batch_last_value_resets_on_the_next_batch() -> None:
    values = stream(0)
    reference = ADWIN()
    want = by_update(reference, values)
    cut = want[0] + 1  # the first batch ends on a detection
    fed = ADWIN()
    first = _feed_adwin(fed, values[:cut])
    assert first[-1] == cut - 1 and fed.drift_detected
    assert _feed_adwin(fed, []) == [] and fed.drift_detected  # nothing fed: nothing reset
    rest = [cut + i for i in _feed_adwin(fed, values[cut:])]
    assert first + rest == want
    assert state(fed) == state(reference)

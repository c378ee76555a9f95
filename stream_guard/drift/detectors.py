"""Online drift detection with River detectors whose state survives restarts.

River detectors are fed one value at a time and keep their own state; this
module keeps one detector per key (e.g. ``(feature, partition)``), can seed
them with values drawn from the baseline profile, and pickles them for
checkpointing.
"""

from __future__ import annotations

import pickle
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import river
from numpy.typing import ArrayLike
from river import base as river_base
from river.drift import ADWIN

from stream_guard.errors import BaselineSampleUnavailableError, DriftCheckpointUnusableError
from stream_guard.settings.detectors import Detector, DetectorSpec

__all__ = ["DetectorSpec", "OnlineDriftMonitor", "reference_sample"]

_CHECKPOINT_FORMAT = 1


def _feed_adwin(detector: ADWIN, values: Sequence[float]) -> list[int]:
    """Indices of ``values`` at which ADWIN signalled, fed one by one as :meth:`ADWIN.update` does.

    ``ADWIN.update`` resets the detector if the last value signalled, then hands the value
    to its window (``_helper``, River's compiled ``AdaptiveWindowing``) and keeps the flag;
    this loop does the same steps without the two Python calls per value (the method and
    the ``drift_detected`` property), most of ADWIN's cost on a wide model. Pinned against
    ``update`` by tests/unit/test_adwin_feed.py.
    """
    detections: list[int] = []
    if values and detector.drift_detected:
        detector._reset()  # type: ignore[no-untyped-call]  # River leaves it unannotated
    helper = detector._helper
    for i, value in enumerate(values):
        if helper.update(value):
            detections.append(i)
            # The next value (of this batch or the next) starts a fresh window, as update() would.
            detector._drift_detected = True
            if i + 1 < len(values):
                detector._reset()  # type: ignore[no-untyped-call]  # River leaves it unannotated
                helper = detector._helper
    return detections


class OnlineDriftMonitor:
    """One River detector per key (e.g. ``(feature, partition)``), state kept across batches.

    A key's detector is created from ``spec`` on first use. As in River, a
    detector that reported drift resets itself on its next update, so after
    an alarm it learns the new regime instead of alarming on every event.

    Parameters
    ----------
    spec
        The detector to run for every key; built once here so a bad spec
        fails at construction.
    seed_values
        Optional reference values per key, passed to :meth:`seed`.
    """

    def __init__(self, spec: DetectorSpec, *, seed_values: Mapping[Hashable, ArrayLike] | None = None) -> None:
        self.spec = spec
        self._binary = isinstance(spec.build(), river_base.BinaryDriftDetector)
        self._detectors: dict[Hashable, Detector] = {}
        for key, values in (seed_values or {}).items():
            self.seed(key, values)

    def _detector(self, key: Hashable) -> Detector:
        detector = self._detectors.get(key)
        if detector is None:
            detector = self._detectors[key] = self.spec.build()
        return detector

    def _finite(self, values: ArrayLike) -> tuple[list[int], list[float] | list[int]]:
        """Positions and values of the finite entries; binary detectors get 0/1 ints."""
        x = np.asarray(values, dtype=float)
        if x.ndim != 1:
            raise ValueError(f"values must be 1-D, got shape {x.shape}")
        positions = np.flatnonzero(np.isfinite(x))
        kept = x[positions]
        if self._binary:
            if not np.isin(kept, (0.0, 1.0)).all():
                raise ValueError(f"{self.spec.kind} is a binary detector; values must be 0 or 1")
            return positions.tolist(), kept.astype(int).tolist()
        return positions.tolist(), kept.tolist()

    def seed(self, key: Hashable, values: ArrayLike) -> None:
        """Feed reference values to ``key``'s detector without reporting drift.

        Seeding before live data lets a drift present from the very first live
        event be caught: an unseeded detector would take the drifted data as
        its reference. Call it before any live data for ``key``. Non-finite
        values are skipped.

        Detections while seeding are never reported. As River resets a
        detector on the update after a detection, only the seed values after
        the last such detection count; if the very last value detects, the key
        gets a fresh, unseeded detector (so the seed's own change cannot fire
        on the first live event).
        """
        detector = self._detector(key)
        _, kept = self._finite(values)
        for value in kept:
            detector.update(value)  # type: ignore[arg-type]  # River's binary detectors annotate x as bool; 0/1 work
        if detector.drift_detected:
            # Clearing only the flag would keep a window that still straddles the seed's change,
            # and ADWIN then re-detects on the first live value; a fresh detector is what River's
            # own reset would give at that point.
            self._detectors[key] = self.spec.build()

    def update_batch(self, key: Hashable, values: ArrayLike) -> list[int]:
        """Feed values in order to ``key``'s detector.

        Parameters
        ----------
        key
            Detector key; a fresh (unseeded) detector is created if unknown.
        values
            1-D values in stream order; NaN and +-inf are skipped. Binary
            detectors (DDM, EDDM, HDDM...) take 0/1 (1 = error).

        Returns
        -------
        list of int
            Positions in ``values`` at which drift was detected.

        Raises
        ------
        ValueError
            If ``values`` is not 1-D, or not 0/1 for a binary detector.
        """
        detector = self._detector(key)
        positions, kept = self._finite(values)
        # Positions in ``kept`` first (drift is rare), then mapped to positions in ``values``.
        if type(detector) is ADWIN and hasattr(detector, "_helper"):
            detections = _feed_adwin(detector, kept)
        else:
            detections = []
            update = detector.update
            for i, value in enumerate(kept):
                update(value)  # type: ignore[arg-type]  # River's binary detectors annotate x as bool; 0/1 work
                if detector.drift_detected:
                    detections.append(i)
        return [positions[i] for i in detections]

    def keys(self) -> list[Hashable]:
        """Keys that have a detector, in creation order."""
        return list(self._detectors)

    def to_bytes(self) -> bytes:
        """Pickle the spec and every detector's state (for checkpointing).

        The bytes are only loadable with the same River version.
        """
        payload = {
            "format": _CHECKPOINT_FORMAT,
            "river": river.__version__,
            "kind": self.spec.kind,
            "params": dict(self.spec.params),
            "detectors": self._detectors,
        }
        return pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)

    @classmethod
    def from_bytes(cls, data: bytes) -> OnlineDriftMonitor:
        """Restore a monitor saved by :meth:`to_bytes`; it continues exactly where that one was.

        Unpickling runs code chosen by whoever wrote ``data``: load only
        checkpoints from the service's own trusted store.

        Raises
        ------
        DriftCheckpointUnusableError
            (a ``ValueError``) If ``data`` is not such a checkpoint, or was written with another
            River version (reseed from the baseline instead).
        """
        try:
            payload = pickle.loads(data)
        except Exception as exc:
            raise DriftCheckpointUnusableError("data is not an OnlineDriftMonitor checkpoint") from exc
        if not isinstance(payload, dict) or payload.get("format") != _CHECKPOINT_FORMAT:
            raise DriftCheckpointUnusableError("data is not an OnlineDriftMonitor checkpoint (unknown format)")
        if payload["river"] != river.__version__:
            raise DriftCheckpointUnusableError(
                f"checkpoint was written with river {payload['river']}, this process runs river {river.__version__}"
            )
        monitor = cls(DetectorSpec(payload["kind"], payload["params"]))
        monitor._detectors = dict(payload["detectors"])
        return monitor


def reference_sample(
    bin_edges: Sequence[float],
    bin_freqs: Sequence[float],
    quantiles: Mapping[str, float],
    n: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Draw values resembling the reference distribution of a baseline profile.

    Inverse-CDF sampling through ``quantiles`` (keys are probabilities as
    strings, e.g. ``"0.001"`` ... ``"0.999"``), linear between them. Below the
    lowest and above the highest quantile the draw is clamped to that
    quantile, so tails beyond them are not reproduced. Non-finite quantile
    values are ignored and values are forced non-decreasing.

    With fewer than two usable quantiles, draws come from the histogram
    instead: a bin by ``bin_freqs``, then uniform within it (the infinite
    outer bins collapse onto their finite edge).

    Parameters
    ----------
    bin_edges, bin_freqs
        The profile's histogram (outer edges may be -inf/+inf).
    quantiles
        The profile's quantiles.
    n
        Number of values to draw (0 gives an empty array).
    rng
        Source of randomness.

    Raises
    ------
    ValueError
        On a negative ``n``.
    BaselineSampleUnavailableError
        (a ``ValueError``) On a quantile key that is not a probability, or a
        profile with neither two quantiles nor a usable histogram.
    """
    if n < 0:
        raise ValueError("n must be non-negative")
    probs, values = [], []
    for key, value in quantiles.items():
        try:
            prob = float(key)
        except ValueError:
            raise BaselineSampleUnavailableError(f"quantile key {key!r} is not a probability") from None
        if not 0.0 <= prob <= 1.0:
            raise BaselineSampleUnavailableError(f"quantile key {key!r} is not a probability")
        if np.isfinite(value):
            probs.append(prob)
            values.append(float(value))
    if len(set(probs)) >= 2:
        order = np.argsort(probs, kind="stable")
        p = np.asarray(probs)[order]
        q = np.maximum.accumulate(np.asarray(values)[order])
        p, first = np.unique(p, return_index=True)
        return np.interp(rng.random(n), p, q[first])
    return _histogram_sample(bin_edges, bin_freqs, n, rng)


def _histogram_sample(
    bin_edges: Sequence[float], bin_freqs: Sequence[float], n: int, rng: np.random.Generator
) -> np.ndarray:
    edges = np.asarray(bin_edges, dtype=float)
    freqs = np.asarray(bin_freqs, dtype=float)
    finite = edges[np.isfinite(edges)]
    if edges.size < 2 or freqs.size != edges.size - 1 or finite.size == 0:
        raise BaselineSampleUnavailableError("profile has neither two quantiles nor a usable histogram")
    if (freqs < 0).any() or not freqs.sum() > 0:
        raise BaselineSampleUnavailableError("bin_freqs must be non-negative with a positive sum")
    lo = np.clip(edges[:-1], finite.min(), finite.max())
    hi = np.clip(edges[1:], finite.min(), finite.max())
    bins = rng.choice(freqs.size, size=n, p=freqs / freqs.sum())
    sample: np.ndarray = lo[bins] + rng.random(n) * (hi[bins] - lo[bins])
    return sample

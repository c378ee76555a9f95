"""Persistence of drift verdicts: a field's drift is alerted once it lasted ``k`` consecutive windows.

A drift lasts; a chance exceedance of a window statistic rarely repeats in the next
window. Requiring ``k`` consecutive drifted windows turns a clean field's chance ``p``
of a drifted window into about ``p ** k`` per window (independent windows), at the
cost of ``k - 1`` windows of delay (see
:func:`~stream_guard.settings.drift.false_alarms_per_week`).
"""

from __future__ import annotations

from collections.abc import Hashable

#: Verdicts kept per field beyond the run (windows closed a little out of order).
KEPT_WINDOWS = 8


class DriftRuns:
    """The recent verdicts of each field, by window start, and whether a run is long enough.

    The verdicts are remembered by the process that closes the windows. A window that
    was not judged (too few values) breaks a run; so does one this process did not
    close (closed by another worker, or before a restart): the alert then waits for a
    run of windows this process closed. They are not checkpointed: the windows close
    under a lease, away from the batches whose fenced updates carry the detectors'
    checkpoints, so a restart costs a drift up to ``persistence - 1`` windows of delay; its
    incident, kept in Redis, takes the alert in when it comes, so it is not published twice.

    >>> runs = DriftRuns(2)
    >>> [runs.observe("amount", start, start + 60, drifted) for start, drifted in [(0, True), (60, True), (120, False)]]
    [False, True, False]
    """

    def __init__(self, persistence: int) -> None:
        self.persistence = persistence
        self._verdicts: dict[Hashable, dict[int, bool]] = {}

    def observe(self, key: Hashable, start_ms: int, end_ms: int, drifted: bool) -> bool:
        """Record a window's verdict on ``key``; True if it and the ``persistence - 1`` windows before drifted."""
        k = self.persistence
        history = self._verdicts.setdefault(key, {})
        history[start_ms] = drifted
        width = end_ms - start_ms
        horizon = max(history) - (k + KEPT_WINDOWS) * width
        for start in [s for s in history if s < horizon]:
            del history[start]
        return drifted and all(history.get(start_ms - i * width, False) for i in range(1, k))

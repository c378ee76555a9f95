"""When a period's label-based checks may run: once the label watermark passed it.

The label-based evaluators (:class:`~stream_guard.metrics.slice_alerts.PerformanceEvaluator`,
:class:`~stream_guard.metrics.concept.ConceptDriftEvaluator`) run when a window on the
``performance_every_s`` cadence closes, and read the label counters of the periods before
its end. Whether those labels were consumed by then used to depend on how the events and
labels topics interleave (a backlog delivers both at once). So such a window closes only
once the *label watermark* (the largest label time applied, smallest over the active labels
partitions: :meth:`~stream_guard.state.protocol.LabelState.label_watermark`) has passed the
window's end plus ``performance_label_delay_s``. By then every label within that delay of
its prediction has been consumed, and joined (held ones too, as the events' watermark
passed the window end as well): two replays of the same backlog evaluate the same counters.

A window that waits holds the windows after it too: windows still close in start order, so
the incidents see them in the same order on every replay (and decide the same). The final
drain (``drain_on_exit``) closes every window whatever the watermarks. A labels partition
with nothing more to read goes idle (``worker.idle_partition_s``) and stops holding the
gate; one with a backlog is kept active by the worker, as events partitions are.
"""

from __future__ import annotations

from stream_guard.state.protocol import LabelState


class LabelGate:
    """Whether a model's window may close yet, as far as its label-based checks are concerned.

    Parameters
    ----------
    state
        The model's state (its label watermark).
    window_ms
        Length of an event-time window.
    every_ms
        ``performance_every_s``: windows starting on a multiple of it run the label-based checks.
    delay_ms
        ``performance_label_delay_s``: how far the label watermark must pass the window's end.
    """

    def __init__(self, state: LabelState, *, window_ms: int, every_ms: int, delay_ms: int = 0) -> None:
        self.state = state
        self.window_ms = window_ms
        self.every_ms = every_ms
        self.delay_ms = delay_ms

    def evaluates_labels(self, window_start: int) -> bool:
        return self.every_ms > 0 and window_start % self.every_ms == 0

    def ready(self, window_start: int, now_ms: int) -> bool:
        """True for a window off the cadence, else once the label watermark passed its end plus the delay."""
        if not self.evaluates_labels(window_start):
            return True
        return self.state.label_watermark(now_ms) >= window_start + self.window_ms + self.delay_ms

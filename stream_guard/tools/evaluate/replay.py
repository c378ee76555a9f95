"""The worker's stages for one model replayed on a :class:`~stream_guard.state.memory.MemoryState`."""

from __future__ import annotations

import copy

from stream_guard.alerts.model import Alert
from stream_guard.assembly import build_pipeline
from stream_guard.batch import EventBatch
from stream_guard.model import ModelRuntime
from stream_guard.profile import BaselineProfile
from stream_guard.settings import Config
from stream_guard.state.closing import close_due_windows
from stream_guard.state.keys import ModelKeys
from stream_guard.state.memory import MemoryState
from stream_guard.state.update import WindowSnapshot


class Replay:
    """The worker's per-batch and per-window stages for one model, on a :class:`MemoryState`.

    Runs the worker's own :class:`~stream_guard.pipeline.Pipeline`, without Kafka, Redis,
    dead letters, slice metrics or the incident lifecycle.
    The clock of the state is the event time: sources never go idle in a replay.
    """

    def __init__(self, config: Config, model: ModelRuntime, profile: BaselineProfile) -> None:
        self.config, self.model = config, model
        self.profiles = {model.name: profile}
        self.pipeline = build_pipeline(config, [model], self.profiles)
        w = config.worker
        self.keys = ModelKeys(config.redis.key_prefix, model.name)
        self.state = MemoryState(
            self.keys,
            window_ms=w.window_s * 1000,
            lateness_ms=w.allowed_lateness_s * 1000,
            retention_s=w.retention_s,
        )
        self.clock_ms = 0
        self.windows_closed = 0

    def process(self, batch: EventBatch) -> None:
        """Findings, window counters and their application, as :meth:`Worker.process` does."""
        updates, _findings = self.pipeline.batch_updates(self.model, batch, self.keys, {})
        self.clock_ms = max(self.clock_ms, int(batch.event_time_ms.max()))
        self.state.apply(updates, self.clock_ms)

    def close_due(self, *, final: bool = False) -> list[Alert]:
        """Alerts of the windows the watermark has passed (all open windows if ``final``)."""
        closed = close_due_windows(self.state, self._window_alerts, now_ms=self.clock_ms, lease_ms=0, final=final)
        self.windows_closed += len(closed.starts)
        return [alert for alerts in closed.outputs for alert in alerts]

    def _window_alerts(self, window: WindowSnapshot) -> list[Alert]:
        return self.pipeline.window_alerts(self.model, window)

    def fork(self) -> Replay:
        """An independent copy of the stages' state; the model and the profile are shared."""
        profile = self.profiles[self.model.name]
        # Pre-seeded memo: deepcopy returns these objects themselves instead of copies.
        memo = {id(self.config): self.config, id(self.model): self.model, id(profile): profile}
        return copy.deepcopy(self, memo)

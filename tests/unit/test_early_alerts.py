"""Early alerts: a batch's critical findings fire once per incident, before their window closes.

Pipeline.early_alerts (the batch's counts), IncidentTracker.early on the in-memory store (the
rule), and how the window's close then publishes the update with the full counts. No servers;
``tests/state/test_conformance.py`` holds the Redis scripts to the same decisions.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from messages import KAFKA_EPOCH_MS, Message

from stream_guard.alerts.lifecycle import IncidentTracker, LifecycleSettings
from stream_guard.alerts.model import Alert, Severity
from stream_guard.decoding import JsonDecoder
from stream_guard.errors import ConfigError
from stream_guard.model import ModelRuntime
from stream_guard.pipeline import Pipeline
from stream_guard.schemas import record_fields
from stream_guard.settings import Config, ModelConfig, load_config
from stream_guard.state import MemoryState
from stream_guard.state.incident import Observation
from stream_guard.state.keys import ModelKeys

SCHEMA = {
    "type": "record",
    "name": "Event",
    "fields": [{"name": "id", "type": "string"}, {"name": "x", "type": "double"}],
}
KEYS = ModelKeys("sg", "m")
WINDOW_MS = 60_000
START = KAFKA_EPOCH_MS - KAFKA_EPOCH_MS % WINDOW_MS  # the window of the messages' Kafka timestamps
LIFECYCLE = LifecycleSettings(cooldown_s=600, resolve_after_s=120, remind_after_s=3600)


def _model() -> ModelRuntime:
    return ModelRuntime(
        config=ModelConfig(name="m", topics=["events"]),
        reader_schema=SCHEMA,
        fields=record_fields(SCHEMA),
        decoder=JsonDecoder(SCHEMA),
        numeric_features=["x"],
    )


def _batch(first: int, valid: int, garbage: int, *, minute: int = 0) -> list[Message]:
    """``valid`` good records then ``garbage`` undecodable ones, offsets from ``first``, in window ``minute``."""
    kafka_ms = START + minute * WINDOW_MS + 1_000
    good = [Message(json.dumps({"id": f"e{first + i}", "x": 1.0}).encode(), first + i, kafka_ms) for i in range(valid)]
    bad = [Message(b"\x00garbage", first + valid + i, kafka_ms) for i in range(garbage)]
    return [*good, *bad]


class World:
    """One model's pipeline and state; a tracker per worker; closing a window as the worker does."""

    def __init__(self, config: Config | None = None) -> None:
        self.pipeline = Pipeline(config or Config())
        self.model = _model()
        self.state = MemoryState(KEYS, window_ms=WINDOW_MS, lateness_ms=0)
        self.now_ms = KAFKA_EPOCH_MS

    def tracker(self) -> IncidentTracker:
        return IncidentTracker(self.state, settings=LIFECYCLE)

    def batch(self, tracker: IncidentTracker, messages: list[Message], *, deliver: bool = True) -> list[Alert]:
        """Stage a batch, fire its early alerts (acknowledged unless ``deliver`` is False), apply it."""
        staged = self.pipeline.stage(self.model, messages, KEYS)
        fired = tracker.early(staged.early)
        if not deliver:
            return fired  # the worker died before the broker's ack: nothing applied, nothing committed
        tracker.early_delivered()
        self.now_ms += 1
        self.state.apply(staged.updates, self.now_ms)
        return fired

    def close(self, tracker: IncidentTracker, minute: int) -> list[Alert]:
        snapshot = self.state.snapshot(START + minute * WINDOW_MS)
        raised = self.pipeline.window_alerts(self.model, snapshot)
        published = tracker.publishable(raised)
        published += tracker.resolved(snapshot.end_ms, {a.incident_id for a in raised})
        tracker.delivered(snapshot.end_ms)
        return published


def test_the_batch_s_undecodable_records_are_an_alert_of_their_window_with_the_batch_s_counts() -> None:
    world = World()
    staged = world.pipeline.stage(world.model, _batch(0, 7, 3), KEYS)
    (early,) = staged.early
    assert (early.kind, early.window_start, early.window_end) == ("undecodable", START, START + WINDOW_MS)
    assert (early.count, early.total, early.severity, early.status) == (3, 10, Severity.CRITICAL, "FIRING")
    assert early.message.startswith("early alert, the first 3 in this batch (the window alert follows")
    assert [e.offset for e in early.examples] == [7, 8, 9]
    # The same finding as the window's close raises, so the same alert id.
    world.state.apply(staged.updates, world.now_ms)
    (closed,) = world.pipeline.window_alerts(world.model, world.state.snapshot(START))
    assert dataclasses.replace(early, message=closed.message) == closed
    assert early.alert_id == closed.alert_id


def test_no_early_alerts_when_early_kinds_is_empty_or_the_batch_is_clean() -> None:
    config = Config()
    config.alerts.early_kinds = []
    assert World(config).pipeline.stage(_model(), _batch(0, 2, 3), KEYS).early == []
    assert World().pipeline.stage(_model(), _batch(0, 5, 0), KEYS).early == []


def test_severity_overrides_apply_to_early_alerts() -> None:
    config = Config()
    config.alerts.severity = {"undecodable": Severity.WARNING}
    (early,) = World(config).pipeline.stage(_model(), _batch(0, 1, 2), KEYS).early
    assert early.severity is Severity.WARNING


def test_an_incident_fires_early_once_then_its_window_alert_updates_it_with_the_full_counts() -> None:
    world = World()
    worker, other = world.tracker(), world.tracker()
    (early,) = world.batch(worker, _batch(0, 7, 3))
    assert early.cause_id == early.incident_id and early.count == 3
    assert world.batch(worker, _batch(10, 5, 4)) == []  # the incident is open
    assert world.batch(other, _batch(19, 1, 6)) == []  # another worker, the same incident: nothing
    assert world.batch(other, _batch(26, 0, 2, minute=1)) == []  # a later window of the open incident
    (update,) = world.close(worker, 0)
    assert update.alert_id == early.alert_id and update.status == "FIRING"
    assert (update.count, update.total) == (13, 26)
    assert update.cause_id == early.cause_id
    assert world.close(other, 0) == [update]  # closed again (a retry): the same update again
    assert world.close(worker, 1) == []  # within the cooldown
    # Absent for resolve_after: RESOLVED once, counting the full windows.
    (resolved,) = world.close(worker, 4)
    assert (resolved.status, resolved.count, resolved.cause_id) == ("RESOLVED", 15, early.incident_id)
    assert world.close(worker, 5) == []
    # The problem back in a later window: a new incident, fired early again.
    (again,) = world.batch(worker, _batch(28, 1, 1, minute=6))
    assert again.window_start == START + 6 * WINDOW_MS and again.alert_id != early.alert_id


def test_a_batch_retried_before_the_broker_acknowledged_fires_the_same_alert_again() -> None:
    world = World()
    worker = world.tracker()
    (early,) = world.batch(worker, _batch(0, 2, 3), deliver=False)
    assert world.batch(world.tracker(), _batch(0, 2, 3), deliver=False) == [early]  # a successor's retry
    assert world.batch(worker, _batch(0, 2, 3)) == [early]  # delivered this time
    assert world.batch(world.tracker(), _batch(0, 2, 3)) == []  # redelivered once more: not again
    (update,) = world.close(worker, 0)
    assert update.alert_id == early.alert_id and update.count == 3  # applied once (the fence)


def test_an_incident_opened_by_a_window_fires_nothing_early() -> None:
    world = World()
    worker = world.tracker()
    world.state.apply(world.pipeline.stage(world.model, _batch(0, 2, 3), KEYS).updates, world.now_ms)
    (opened,) = world.close(worker, 0)
    assert world.batch(worker, _batch(5, 2, 3, minute=1)) == []
    assert world.close(worker, 1) == []  # within the cooldown, as without early alerts
    assert opened.message.startswith("undecodable")


def test_the_early_window_closing_after_a_later_one_is_still_published() -> None:
    """Windows may close out of order: the early alert's window publishes its update regardless of the cooldown."""
    world = World()
    worker = world.tracker()
    (early,) = world.batch(worker, _batch(0, 2, 3, minute=1))
    world.state.apply(world.pipeline.stage(world.model, _batch(5, 2, 3), KEYS).updates, world.now_ms + 5)
    (onset,) = world.close(worker, 0)  # an older window of the cause closes first
    assert onset.window_start == START
    (update,) = world.close(worker, 1)
    assert update.alert_id == early.alert_id and update.count == 3


def test_an_incident_opened_early_is_not_resolved_before_its_window_closed() -> None:
    world = World()
    worker = world.tracker()
    (early,) = world.batch(worker, _batch(0, 2, 3))
    assert worker.resolved(START + 30 * WINDOW_MS, set()) == []  # a much later window closing first
    assert early.incident_id in world.state.open_incidents()
    (update,) = world.close(worker, 0)
    assert update.alert_id == early.alert_id


def test_replays_split_into_other_batches_give_the_same_alert_ids() -> None:
    """The early alert's id depends on the findings and their window, not on where the batches end."""

    def replay(sizes: list[int]) -> list[str]:
        world = World()
        worker = world.tracker()
        messages = _batch(0, 3, 1) + _batch(4, 2, 4)[2:] + _batch(10, 4, 0)
        ids, first = [], 0
        for size in sizes:
            ids += [a.alert_id for a in world.batch(worker, messages[first : first + size])]
            first += size
        return ids + [a.alert_id for a in world.close(worker, 0)]

    assert replay([12]) == replay([3, 9]) == replay([4, 1, 7]) == replay([1] * 12)
    assert len(set(replay([12]))) == 1


def _finding(kind: str, feature: str, minute: int = 0) -> Alert:
    start = START + minute * WINDOW_MS
    return Alert(
        model="m",
        kind=kind,
        feature=feature,
        slice="",
        severity=Severity.CRITICAL,
        window_start=start,
        window_end=start + WINDOW_MS,
        count=1,
        total=10,
        observed="o",
        expected="e",
        detector=f"schema.{kind}",
        message="m",
    )


def test_the_lead_of_an_early_cluster_does_not_depend_on_counts() -> None:
    """Several error classes in one burst: one alert, led by the first by name, the others related."""
    world = World()
    a, b = _finding("undecodable", "WireFormatError"), _finding("undecodable", "NotARecordError")
    (fired,) = world.tracker().early([dataclasses.replace(a, count=50), b])
    assert (fired.feature, [r.feature for r in fired.related]) == ("NotARecordError", ["WireFormatError"])


def test_two_workers_seeing_one_burst_in_one_window_open_one_incident() -> None:
    """The claim of the burst in the window: a racing worker whose lead differs fires nothing."""
    world = World()
    a, b = _finding("undecodable", "WireFormatError"), _finding("undecodable", "NotARecordError")
    seen = Observation(START, START + WINDOW_MS, 1, "{}", 2, members={b.incident_id: "undecodable|NotARecordError|"})
    assert world.state.fire_early(b.incident_id, seen, ["burst:0"]) == "fire"
    # The other worker read the open incidents before that: its own lead's claim fails.
    seen_a = dataclasses.replace(seen, members={a.incident_id: "undecodable|WireFormatError|"})
    assert world.state.fire_early(a.incident_id, seen_a, ["burst:0"]) == "claimed"
    assert list(world.state.open_incidents()) == [b.incident_id]
    assert world.tracker().early([a]) == []  # reading them now, it joins the open incident


def test_schema_findings_of_one_feature_fire_one_incident() -> None:
    world = World()
    worker = world.tracker()
    fired = worker.early(
        [_finding("schema_change", "x"), _finding("type_mismatch", "x"), _finding("missing_field", "y")]
    )
    assert [(a.kind, a.feature, [r.kind for r in a.related]) for a in fired] == [
        ("missing_field", "y", []),
        ("schema_change", "x", ["type_mismatch"]),
    ]


@pytest.mark.parametrize("kind", ["null_rate", "data_drift"])
def test_window_level_kinds_cannot_fire_early(kind: str, tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f'[alerts]\nearly_kinds = ["undecodable", "{kind}"]\n')
    with pytest.raises(ConfigError, match=f"'{kind}' cannot fire early"):
        load_config(path, environ={}, require_profiles=False)

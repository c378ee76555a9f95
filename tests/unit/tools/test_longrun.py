"""The long replay (stream_guard.tools.evaluate.longrun) at a small size: determinism, faults caught, clean quiet."""

from __future__ import annotations

import argparse
import dataclasses
import json

import numpy as np
import pytest

from stream_guard.alerts.model import Alert, Severity
from stream_guard.errors import EvaluationInputError
from stream_guard.settings import Config
from stream_guard.settings.kinds import KNOWN_BIAS, SLICE_UNDERPERFORMANCE
from stream_guard.tools.evaluate.command import add_evaluate_command
from stream_guard.tools.evaluate.longfaults import APP_RING_RISK, LONG_FAULTS, break_record, fault_named, plan_stretches
from stream_guard.tools.evaluate.longlabels import DelayedLabels
from stream_guard.tools.evaluate.longreport import LongReport, ReplayOutcome, build_report, render_long
from stream_guard.tools.evaluate.longrun import LongRunSettings, long_metrics, run_long_replay
from stream_guard.tools.wide import WideSimulator

#: Six faults of different kinds: value validity, a rate, a category, drift of a feature and of the score.
SMALL_FAULTS = tuple(
    fault_named(n)
    for n in ("string_number", "unit_x1000", "null_burst", "unseen_category", "gradual_mean_shift", "score_shift")
)
#: Without the label-free estimate: the labelled replays below run it, at the default rate and reference size.
SMALL = LongRunSettings(
    events_per_second=5.0,
    clean_s=360,
    fault_s=180,
    faults=SMALL_FAULTS,
    grace_s=120,
    reference_events=10_000,
    metrics=dataclasses.replace(long_metrics(), estimate_calibration="off"),
)


@pytest.fixture(scope="module")
def small_report() -> LongReport:
    return run_long_replay(Config(), SMALL)


def test_same_seed_gives_the_same_report(small_report: LongReport) -> None:
    """Two runs of one seed report the same alerts, delays and counts."""
    again = run_long_replay(Config(), SMALL)
    assert again.to_dict() == small_report.to_dict()
    assert render_long(again) == render_long(small_report)


def test_every_fault_is_caught_by_an_expected_kind(small_report: LongReport) -> None:
    """Each fault of the small script is named on its feature by one of its expected kinds."""
    for result in small_report.faults:
        assert result.injected > 0, result.fault
        assert result.caught and result.kind in result.expects, result.fault
        assert result.delay_windows is not None and 0 <= result.delay_windows <= 2, result.fault
        assert result.incidents_opened >= 1


def test_value_validity_faults_are_caught_in_their_first_window(small_report: LongReport) -> None:
    """type_mismatch and out_of_range stay immediate; drift kinds wait for their persistence."""
    delays = {r.fault: (r.kind, r.delay_windows) for r in small_report.faults}
    assert delays["string_number"] == ("type_mismatch", 0)
    assert delays["unit_x1000"] == ("out_of_range", 0)


def test_no_alert_on_clean_stretches_at_this_size(small_report: LongReport) -> None:
    """No FIRING alert outside the faults' stretches, not even raised before the lifecycle."""
    assert small_report.clean_hours > 0.3
    assert small_report.false_firing == {} and small_report.false_raised == {}
    assert small_report.false_per_week == 0.0
    assert small_report.firing >= len(SMALL_FAULTS)
    assert "0 false alarms" in render_long(small_report)


def test_stretches_start_on_window_boundaries_with_clean_traffic_between() -> None:
    """Onsets are whole windows apart, each stretch followed by clean_s of clean traffic."""
    stretches, end = plan_stretches(LONG_FAULTS, 0, clean_s=1200, fault_s=600, window_s=60)
    assert len(stretches) == 14 and len({s.fault.name for s in stretches}) == 14
    assert all(s.onset_ms % 60_000 == 0 and s.end_ms % 60_000 == 0 for s in stretches)
    gaps = [b.onset_ms - a.end_ms for a, b in zip(stretches, stretches[1:], strict=False)]
    assert min(gaps) == 1_200_000 and end - stretches[-1].end_ms == 1_200_000
    assert end >= 6 * 3_600_000


def test_default_script_is_six_hours_and_300k_events() -> None:
    """The default replay covers at least 6 h of event time and 300,000 events."""
    settings = LongRunSettings()
    _, end = plan_stretches(settings.faults, 0, clean_s=settings.clean_s, fault_s=settings.fault_s, window_s=60)
    assert end >= 6 * 3_600_000 and end / 1000 * settings.events_per_second >= 300_000


def test_faults_break_records_as_described() -> None:
    """A few injectors: a string number, a dropped field, a score shift with its prediction."""
    record = WideSimulator(seed=3).records(1, 0)[0]
    rng = np.random.default_rng(0)
    assert break_record(fault_named("string_number"), record, 0.5, rng)["term_months"] == str(record["term_months"])
    assert "inquiries_6m" not in break_record(fault_named("dropped_field"), record, 0.5, rng)
    shifted = break_record(fault_named("score_shift"), record, 0.5, rng)
    assert shifted["score"] == pytest.approx(min(1.0, record["score"] + 0.15))
    assert shifted["prediction"] == int(shifted["score"] >= 0.5)
    ramp = fault_named("gradual_mean_shift")
    assert break_record(ramp, record, 0.0, rng)["utilisation"] == record["utilisation"]
    assert break_record(ramp, record, 1.0, rng)["utilisation"] == pytest.approx(record["utilisation"] + 0.3)
    with pytest.raises(EvaluationInputError, match="unknown long-replay fault"):
        fault_named("meteor")


def test_cli_long_replay_prints_json(capsys: pytest.CaptureFixture[str]) -> None:
    """``evaluate --long-replay`` with a small script prints the report as JSON."""
    parser = argparse.ArgumentParser()
    add_evaluate_command(parser.add_subparsers())
    small = ["--faults", "string_number", "--clean-minutes", "3", "--fault-minutes", "2", "--events-per-second", "4"]
    args = parser.parse_args(["evaluate", "--long-replay", *small, "--json", "-q"])
    assert args.handler(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert [f["fault"] for f in out["faults"]] == ["string_number"]
    assert out["faults"][0]["caught"] and out["events"] > 0


#: One label fault (a slice-only recall drop) at the default rate, between 15 min of clean traffic: 40 min.
LABELLED = LongRunSettings(clean_s=900, fault_s=600, faults=(fault_named("slice_recall_drop"),))


@pytest.fixture(scope="module")
def labelled_report() -> LongReport:
    return run_long_replay(Config(), LABELLED)


def test_a_slice_only_recall_drop_is_named_on_its_slice_within_two_evaluations(labelled_report: LongReport) -> None:
    """The app channel's recall sinks (its labels only: the events are clean): a slice alert names channel=app
    within two label-based evaluations after the first that reads the onset's labels."""
    (result,) = labelled_report.faults
    assert result.injected > 0 and result.slice == "channel=app"
    assert result.caught and result.kind == SLICE_UNDERPERFORMANCE, result
    assert result.delay_evaluations is not None and 0 <= result.delay_evaluations <= 2
    assert labelled_report.labels["matched"] == labelled_report.events  # every label joined, none held or lost
    assert labelled_report.labels["unmatched"] == labelled_report.labels["expired"] == 0


def test_known_biases_are_listed_and_published_once(labelled_report: LongReport) -> None:
    """The wide model's noisier groups are known biases of the labelled reference: one INFO finding each, once."""
    assert "recall|channel=partner" in labelled_report.known_biases
    assert labelled_report.known_bias_published == {bias: 1 for bias in labelled_report.known_biases}
    assert labelled_report.known_bias_resolved == 0
    assert sum(KNOWN_BIAS in line for line in labelled_report.published) == len(labelled_report.known_biases)


def test_two_labelled_replays_publish_the_same_alerts(labelled_report: LongReport) -> None:
    """Label-based alerts included: the same alert ids, statuses and windows, in the same order."""
    again = run_long_replay(Config(), LABELLED)
    assert any(SLICE_UNDERPERFORMANCE in line for line in labelled_report.published)
    assert again.published == labelled_report.published
    assert again.to_dict() == labelled_report.to_dict()


def test_label_faults_change_the_true_risk_only() -> None:
    """The fraud ring raises the risk of the app events the model scores safe; the concept shift sets the base rate."""
    ring, shift = fault_named("slice_recall_drop"), fault_named("concept_shift")
    rng = np.random.default_rng(0)
    record = {**WideSimulator(seed=3).records(1, 0)[0], "channel": "app", "prediction": 0, "_p": 0.1}
    assert ring.breaks_labels and shift.breaks_labels and not fault_named("mix_shift").breaks_labels
    broken = break_record(ring, record, 0.5, rng)
    assert broken["_p"] == pytest.approx(1 - 0.9 * (1 - APP_RING_RISK))
    assert {k: v for k, v in broken.items() if k != "_p"} == {k: v for k, v in record.items() if k != "_p"}
    assert break_record(ring, {**record, "prediction": 1}, 0.5, rng)["_p"] == 0.1
    assert break_record(ring, {**record, "channel": "web"}, 0.5, rng)["_p"] == 0.1
    assert 0.1 < break_record(shift, record, 0.5, rng)["_p"] < 0.15


def test_delayed_labels_arrive_in_order_within_their_delay() -> None:
    """Labels arrive between the two delays after their event, in arrival order, with offsets per partition."""
    labels = DelayedLabels(2, min_delay_s=60, max_delay_s=120, seed=1)
    records = [{"event_id": f"e{i}", "ts": i * 1000, "_p": float(i % 2)} for i in range(200)]
    labels.add(records, [i % 2 for i in range(200)])
    assert labels.due(59_999) == []
    arrived = labels.due(10**9)
    assert labels.pending == 0 and len(arrived) == 200
    by_id = {x.event_id: x for x in arrived}
    for i, record in enumerate(records):
        label = by_id[record["event_id"]]
        assert 60_000 <= (label.ts_ms or 0) - record["ts"] <= 120_000
        assert label.label == i % 2 and label.source == f"wide.labels:{i % 2}"
    assert [x.ts_ms for x in arrived] == sorted(x.ts_ms for x in arrived)
    for partition in (0, 1):
        offsets = [x.offset for x in arrived if x.source.endswith(f":{partition}")]
        assert offsets == list(range(100))


def _alert(kind: str, start_min: int, end_min: int, slice_: str = "", feature: str = "recall") -> Alert:
    return Alert(
        model="wide",
        kind=kind,
        feature=feature,
        slice=slice_,
        severity=Severity.WARNING,
        window_start=start_min * 60_000,
        window_end=end_min * 60_000,
        count=1,
        total=1,
        rate=1.0,
        observed="o",
        expected="e",
        detector="d",
        message="m",
    )


def test_the_report_attributes_range_alerts_by_their_range_and_counts_known_biases_apart() -> None:
    """A window's alert belongs to a stretch within its grace; a label-based alert over a range only when the range
    overlaps the stretch itself; a known_bias finding is neither a fault's alert nor a false alarm."""
    (stretch,), end = plan_stretches((fault_named("slice_recall_drop"),), 0, clean_s=1200, fault_s=600, window_s=60)
    late_window = _alert("data_drift", 32, 33, feature="income")  # 2 min after the stretch: within the 5-min grace
    caught = _alert(SLICE_UNDERPERFORMANCE, 16, 26, "channel=app")  # rolled up 6 min of the stretch
    after = _alert(SLICE_UNDERPERFORMANCE, 31, 41, "channel=web")  # a range after the stretch, within the grace
    bias = _alert(KNOWN_BIAS, 0, 0, "channel=partner")
    published = [late_window, caught, after, bias]
    outcome = ReplayOutcome(
        [stretch], [1], published, published, {a.alert_id: a.window_end for a in published}, 1, 0, end
    )
    report = build_report(outcome, window_s=60, grace_s=300, every_s=300)
    (result,) = report.faults
    assert result.alerts == {"data_drift|income": 1, "slice_underperformance|recall": 1}
    assert result.caught and result.delay_evaluations == 1  # raised at 26 min; the first evaluation is at 20
    assert report.false_firing == {"slice_underperformance|recall": 1}
    assert report.known_bias_published == {"recall|channel=partner": 1}

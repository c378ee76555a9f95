"""The long replay (stream_guard.tools.evaluate.longrun) at a small size: determinism, faults caught, clean quiet."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from stream_guard.errors import EvaluationInputError
from stream_guard.settings import Config
from stream_guard.tools.evaluate.command import add_evaluate_command
from stream_guard.tools.evaluate.longfaults import LONG_FAULTS, break_record, fault_named, plan_stretches
from stream_guard.tools.evaluate.longrun import LongReport, LongRunSettings, render_long, run_long_replay
from stream_guard.tools.wide import WideSimulator

#: Six faults of different kinds: value validity, a rate, a category, drift of a feature and of the score.
SMALL_FAULTS = tuple(
    fault_named(n)
    for n in ("string_number", "unit_x1000", "null_burst", "unseen_category", "gradual_mean_shift", "score_shift")
)
SMALL = LongRunSettings(
    events_per_second=5.0, clean_s=360, fault_s=180, faults=SMALL_FAULTS, grace_s=120, reference_events=10_000
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
    assert len(stretches) == 12 and len({s.fault.name for s in stretches}) == 12
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

"""Unit tests for stream_guard.tools.evaluate: fault injection, the offline replay, the report and the CLI."""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from stream_guard.errors import EvaluationInputError
from stream_guard.learning import learn_from_frame
from stream_guard.model import ModelRuntime, build_models
from stream_guard.profile import BaselineProfile
from stream_guard.resources import schema_dir
from stream_guard.settings import Config, load_config
from stream_guard.tools.evaluate.command import add_evaluate_command
from stream_guard.tools.evaluate.events import Stream, event_times, simulated_events
from stream_guard.tools.evaluate.faults import FAULTS, MIX_SHARE, UNSEEN_VALUE, applies, faulty_values, inject, targets
from stream_guard.tools.evaluate.report import Evaluation, render
from stream_guard.tools.evaluate.scenarios import Scenario, evaluate, plan_injection, plan_scenarios
from stream_guard.tools.simulator import SAMPLE_FEATURES

EVENTS = 40_000  # half learns the profile, half is replayed
WINDOW_S = 10
RATE = 100  # events per second of the simulator's event times
FEATURES = SAMPLE_FEATURES


def write_config(directory: Path, sections: str = "") -> Path:
    """A config of the sample model (JSON encoding); evaluate needs no broker nor Redis."""
    text = f"""
[worker]
window_s = {WINDOW_S}
allowed_lateness_s = 2

{sections}

[[models]]
name = "fraud"
topics = ["fraud.inferences"]
schema = "{schema_dir() / "fraud_inference.avsc"}"
encoding = "json"
event_id_field = "event_id"
timestamp_field = "ts"
features = {FEATURES!r}
prediction_field = "prediction"
score_field = "score"
slice_fields = ["device_type", "country"]
"""
    path = directory / "config.toml"
    path.write_text(text.replace("'", '"'))
    return path


@dataclass
class Sample:
    config: Config
    config_path: Path
    model: ModelRuntime
    profile: BaselineProfile
    stream: Stream


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Sample:
    path = write_config(tmp_path_factory.mktemp("evaluate"))
    config = load_config(path, environ={})
    model = build_models(config)[0]
    events = simulated_events(EVENTS, seed=0, events_per_second=RATE)
    profile = learn_from_frame(model, events.frame.iloc[: EVENTS // 2].copy(), "first half")
    return Sample(config, path, model, profile, Stream(model, events.records[EVENTS // 2 :]))


@pytest.fixture(scope="module")
def report(sample: Sample) -> Evaluation:
    scenarios = [
        Scenario("amount", "scale_x150", 0.1),
        Scenario("merchant_category", "unseen_category", 0.1),
        Scenario("amount", "nan", 0.01),
        Scenario("score", "score_shift_+0.2", 1.0),
    ]
    return evaluate(sample.config, sample.model, sample.profile, sample.stream, scenarios)


def run_cli(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="stream-guard")
    add_evaluate_command(parser.add_subparsers(required=True))
    args = parser.parse_args(["evaluate", *argv])
    return int(args.handler(args))


# ----------------------------------------------------------------------------- detection


def test_unit_change_and_unseen_category_are_detected_within_one_window(report: Evaluation) -> None:
    by_fault = {(s.feature, s.fault): s for s in report.scenarios}
    scale = by_fault[("amount", "scale_x150")]
    unseen = by_fault[("merchant_category", "unseen_category")]
    assert (scale.detected, scale.kind) == (True, "out_of_range")
    assert (unseen.detected, unseen.kind) == (True, "unseen_category")
    for result in (scale, unseen):
        assert 0 < result.delay_s <= WINDOW_S
        assert 0 < result.delay_events <= WINDOW_S * RATE
        assert result.window_end == report.onset_ms + result.delay_s * 1000


def test_rare_nan_and_a_score_shift_are_detected(report: Evaluation) -> None:
    by_fault = {(s.feature, s.fault): s for s in report.scenarios}
    assert by_fault[("amount", "nan")].kind == "nan"
    assert by_fault[("amount", "nan")].injected == pytest.approx(0.01 * (report.events - report.onset_index), rel=0.2)
    assert by_fault[("score", "score_shift_+0.2")].kind in ("prediction_drift", "online_drift")


def test_the_clean_run_raises_no_false_alarm(report: Evaluation) -> None:
    assert report.false_alarms == []
    assert report.summary()["false_alarms_per_100k_events"] == 0.0


def test_the_clean_run_closes_every_window_of_the_stream(sample: Sample, report: Evaluation) -> None:
    starts = np.unique(sample.stream.event_time_ms // (WINDOW_S * 1000))
    assert report.windows == starts.size
    assert report.events == EVENTS // 2
    assert report.onset_index == 8_000  # 40 % of the replay, on a batch boundary


def test_the_configured_checks_are_the_ones_evaluated(sample: Sample, tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, "[checks.nan]\nenabled = false\n[drift]\nenabled = false"), environ={})
    model = build_models(config)[0]
    scenarios = [Scenario("amount", "nan", 1.0), Scenario("amount", "scale_x150", 1.0)]
    result = evaluate(config, model, sample.profile, sample.stream, scenarios)
    assert [s.detected for s in result.scenarios] == [False, True]
    assert result.scenarios[0].delay_s is None


# ----------------------------------------------------------------------------- injection


def test_injection_is_deterministic_for_a_seed(sample: Sample) -> None:
    target = targets(sample.model, sample.profile)["merchant_category"]
    scenario = Scenario("merchant_category", "cardinality_explosion", 0.1)
    first = plan_injection(sample.stream, target, scenario, 8_000, seed=3)
    again = plan_injection(sample.stream, target, scenario, 8_000, seed=3)
    other = plan_injection(sample.stream, target, scenario, 8_000, seed=4)
    assert np.array_equal(first.rows, again.rows) and first.values == again.values
    assert not np.array_equal(first.rows, other.rows)
    assert first.rows.min() >= 8_000
    assert len(first.rows) == pytest.approx(0.1 * 12_000, rel=0.15)
    assert len(set(first.values)) == len(first.values)


def test_every_row_from_the_onset_is_hit_at_rate_one(sample: Sample) -> None:
    target = targets(sample.model, sample.profile)["amount"]
    injection = plan_injection(sample.stream, target, Scenario("amount", "inf", 1.0), 8_000, seed=0)
    assert injection.rows.tolist() == list(range(8_000, EVENTS // 2))
    assert set(injection.values) == {math.inf}


def test_faulty_values_keep_the_field_type_and_nulls(sample: Sample) -> None:
    available = targets(sample.model, sample.profile)
    rng = np.random.default_rng(0)
    age, amount = available["age"], available["amount"]
    assert faulty_values("scale_x12", age, [40, None, 18], rng) == [480, None, 216]
    assert faulty_values("sentinel_-1", age, [40, None], rng) == [-1, -1]
    assert faulty_values("scale_x150", amount, [2.5], rng) == [375.0]
    assert faulty_values("null", amount, [2.5, 3.0], rng) == [None, None]
    assert all(math.isnan(v) for v in faulty_values("nan", amount, [1.0, 2.0], rng))
    shifted = faulty_values("shift_mean_1.5x", amount, [10.0, None], rng)
    assert shifted[0] == pytest.approx(10.0 + 0.5 * sample.profile.features["amount"].mean)  # type: ignore[union-attr]
    assert shifted[1] is None
    assert faulty_values("unseen_category", available["country"], ["US"], rng) == [UNSEEN_VALUE]


def test_mix_shift_gives_the_top_category_its_share(sample: Sample) -> None:
    target = targets(sample.model, sample.profile)["device_type"]
    values = [r["device_type"] for r in sample.stream.records]
    shifted = faulty_values("mix_shift", target, values, np.random.default_rng(0))
    assert shifted.count("android") / len(shifted) == pytest.approx(MIX_SHARE, abs=0.02)


def test_a_score_shift_is_capped_and_moves_the_prediction(sample: Sample) -> None:
    target = targets(sample.model, sample.profile)["score"]
    records = [{"score": 0.4, "prediction": 0}, {"score": 0.95, "prediction": 1}, {"score": 0.1, "prediction": 0}]
    shifted = inject("score_shift_+0.2", target, records, np.random.default_rng(0))
    assert [(r["score"], r["prediction"]) for r in shifted] == [
        (pytest.approx(0.6), 1),
        (1.0, 1),
        (pytest.approx(0.3), 0),
    ]
    assert records[0] == {"score": 0.4, "prediction": 0}  # the clean records are left alone


def test_a_null_in_a_non_nullable_field_is_a_type_mismatch_as_the_decoder_says(sample: Sample) -> None:
    record = dict(sample.stream.records[0], amount=None, age=None)
    decoded = sample.stream.decode(record)
    assert [(i.kind, i.field) for i in decoded.issues] == [("type_mismatch", "amount")]
    assert decoded.values["amount"] is None and decoded.values["age"] is None


def test_faults_apply_by_feature_type(sample: Sample) -> None:
    available = targets(sample.model, sample.profile)
    applicable = {name: [f for f in FAULTS if applies(FAULTS[f], t)] for name, t in available.items()}
    assert applicable["amount"] == [
        "scale_x150",
        "scale_x12",
        "nan",
        "inf",
        "null",
        "sentinel_-1",
        "shift_mean_1.5x",
    ]
    assert applicable["age"] == ["scale_x150", "scale_x12", "null", "sentinel_-1", "shift_mean_1.5x"]
    assert applicable["is_new_user"] == ["null"]
    assert applicable["country"] == ["null", "unseen_category", "cardinality_explosion", "mix_shift"]
    assert applicable["score"] == ["score_shift_+0.2"]
    assert "prediction" not in applicable


def test_scenarios_are_every_applicable_pair_at_every_rate(sample: Sample) -> None:
    scenarios = plan_scenarios(
        sample.model, sample.profile, features=["age", "country"], faults=["nan", "null"], rates=[0.1, 1.0]
    )
    assert scenarios == [
        Scenario("age", "null", 0.1),
        Scenario("age", "null", 1.0),
        Scenario("country", "null", 0.1),
        Scenario("country", "null", 1.0),
    ]
    assert len(plan_scenarios(sample.model, sample.profile)) == 36 * 3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"features": ["ghost"]}, "unknown features"),
        ({"faults": ["meteor"]}, "unknown faults"),
        ({"rates": [0.0]}, "rates must be in"),
        ({"features": ["is_new_user"], "faults": ["nan"]}, "none of the faults applies"),
    ],
)
def test_bad_scenario_choices_are_refused(sample: Sample, kwargs: dict[str, list[object]], message: str) -> None:
    with pytest.raises(EvaluationInputError, match=message):
        plan_scenarios(sample.model, sample.profile, **kwargs)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ event times


def test_event_times_come_from_the_timestamp_field_else_are_synthetic() -> None:
    stamped = [{"ts": 5_000}, {"ts": None}, {"ts": "1970-01-01T00:00:07+00:00"}]
    assert event_times(stamped, "ts", 100).tolist() == [5_000, 5_000, 7_000]
    synthetic = event_times([{}, {}, {}], "ts", 4).tolist()
    assert np.diff(synthetic).tolist() == [250, 250]


# ---------------------------------------------------------------------------------- output


def test_the_table_names_scenarios_false_alarms_and_a_summary(report: Evaluation) -> None:
    text = render(report)
    assert "amount" in text and "scale_x150" in text and "out_of_range" in text
    assert "false alarms on the clean stream (20,000 events" in text
    assert "summary: 4/4 scenarios detected" in text


def test_cli_json_output_parses(sample: Sample, capsys: pytest.CaptureFixture[str]) -> None:
    choice = ["--features", "amount,country", "--faults", "scale_x150,unseen_category", "--rates", "1"]
    code = run_cli(["-c", str(sample.config_path), "--simulate", "20000", *choice, "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["events"] == 10_000 and out["learn_events"] == 10_000
    assert [(s["feature"], s["fault"], s["detected"]) for s in out["scenarios"]] == [
        ("amount", "scale_x150", True),
        ("country", "unseen_category", True),
    ]
    assert out["summary"]["detected"] == 2
    assert set(out["runtime_s"]) == {"clean", "scenarios", "total"}


def test_cli_reads_a_file_and_a_given_profile(
    sample: Sample, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = simulated_events(6_000, seed=5, events_per_second=RATE)
    lines = [json.dumps({**r, "label": 0}) for r in events.records]  # a column that is no field
    (tmp_path / "events.jsonl").write_text("\n".join(lines))
    sample.profile.save(tmp_path / "profile.json")
    argv = ["-c", str(sample.config_path), "--from-file", str(tmp_path / "events.jsonl")]
    code = run_cli([*argv, "--profile", str(tmp_path / "profile.json"), "--features", "amount", "--faults", "inf"])
    assert code == 0
    text = capsys.readouterr().out
    assert "replayed 6,000 clean events" in text
    assert "summary: 3/3 scenarios detected" in text
    assert "unexpected_field" not in text


def test_cli_refuses_a_profile_of_another_model(sample: Sample, tmp_path: Path) -> None:
    other = BaselineProfile.from_dict({**sample.profile.to_dict(), "model": "churn"})
    other.save(tmp_path / "profile.json")
    with pytest.raises(EvaluationInputError, match="profile of model 'churn'"):
        run_cli(["-c", str(sample.config_path), "--simulate", "1000", "--profile", str(tmp_path / "profile.json")])


def test_a_csv_with_iso_times_replays_without_field_issues(sample: Sample, tmp_path: Path) -> None:
    from datetime import UTC, datetime

    import pandas as pd

    from stream_guard.tools.evaluate.events import file_events

    records = simulated_events(300, seed=6, events_per_second=RATE).records
    frame = pd.DataFrame(records)
    frame["ts"] = [datetime.fromtimestamp(r["ts"] / 1000, tz=UTC).isoformat() for r in records]
    frame.to_csv(tmp_path / "events.csv", index=False)
    events = file_events(tmp_path / "events.csv", sample.model)
    stream = Stream(sample.model, events.records)
    assert stream.event_time_ms.tolist() == [r["ts"] for r in records]
    assert [d.issues for d in stream.decoded] == [[]] * len(records)

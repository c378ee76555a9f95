"""``learn`` with labels: per-slice confusion counts and intervals, known biases, the profile file and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from labelled_frames import fraud_model, labelled_frame
from scipy import stats as sps

from stream_guard.cli import main
from stream_guard.errors import ProfileFormatError, ReferenceDataUnusableError
from stream_guard.learning import learn_from_frame, learn_reference_performance
from stream_guard.learning.summary import known_bias_marks, performance_summary
from stream_guard.profile import BaselineProfile
from stream_guard.profile_performance import mean_interval
from stream_guard.resources import schema_dir


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return labelled_frame(51, 12_000, android_misses=0.3)


def confusion(part: pd.DataFrame) -> tuple[int, int, int, int]:
    predicted, actual = part["score"] >= 0.5, part["label"] == 1
    return (
        int((predicted & actual).sum()),
        int((predicted & ~actual).sum()),
        int((~predicted & ~actual).sum()),
        int((~predicted & actual).sum()),
    )


def test_the_counts_per_slice_are_the_confusion_matrices_pandas_computes(reference: pd.DataFrame) -> None:
    """All traffic, every slice field and categorical value, and the crossing: (tp, fp, tn, fn) as pandas counts them.

    ``is_new_user`` is a boolean (numeric) feature: no slice of its own, but part of the configured crossing.
    """
    perf = learn_reference_performance(fraud_model(), reference, "label")
    expected = {"*": confusion(reference)}
    for field in ("device_type", "country", "merchant_category"):
        for value, part in reference.groupby(field):
            expected[f"{field}={value}"] = confusion(part)
    for (device, new), part in reference.groupby(["device_type", "is_new_user"]):
        expected[f"device_type={device},is_new_user={new}"] = confusion(part)
    got = {name: (s.tp, s.fp, s.tn, s.fn) for name, s in perf.slices.items()}
    assert got == expected
    assert perf.slices["*"].labelled == len(reference)


def test_the_intervals_are_wilson_intervals(reference: pd.DataFrame) -> None:
    """Each slice's recall/precision/accuracy interval matches scipy's Wilson interval at 95 %."""
    perf = learn_reference_performance(fraud_model(), reference, "label")
    for name in ("*", "device_type=android", "device_type=web,is_new_user=True"):
        s = perf.slices[name]
        ci = sps.binomtest(s.tp, s.tp + s.fn).proportion_ci(0.95, method="wilson")
        recall = s.intervals["recall"]
        assert (recall.low, recall.high) == pytest.approx((ci.low, ci.high), rel=1e-9)
        assert recall.value == pytest.approx(s.tp / (s.tp + s.fn)) and recall.support == s.tp + s.fn
        ci = sps.binomtest(s.tp + s.tn, s.labelled).proportion_ci(0.95, method="wilson")
        assert (s.intervals["accuracy"].low, s.intervals["accuracy"].high) == pytest.approx((ci.low, ci.high))


def test_the_mae_interval_is_the_normal_interval_of_the_mean() -> None:
    """mean +- 1.96 sd / sqrt(n) from the sums, as numpy computes it."""
    errors = np.abs(np.random.default_rng(3).normal(0, 2, 500))
    low, high = mean_interval(errors.sum(), (errors**2).sum(), len(errors))
    half = sps.norm.ppf(0.975) * errors.std() / np.sqrt(len(errors))
    assert (low, high) == pytest.approx((errors.mean() - half, errors.mean() + half))


def test_known_biases_need_significance_and_the_min_effect(reference: pd.DataFrame) -> None:
    """Android misses in the reference are a known bias of recall; with a min effect above the gap there is none."""
    model = fraud_model()
    perf = learn_reference_performance(model, reference, "label")
    android = perf.known_bias("recall", "device_type=android")
    assert android is not None and android.gap >= 0.05 and android.p < 0.01
    s = perf.slices["device_type=android"]
    rest_tp, rest_fn = perf.slices["*"].tp - s.tp, perf.slices["*"].fn - s.fn
    assert android.value == pytest.approx(s.tp / (s.tp + s.fn))
    assert android.rest_value == pytest.approx(rest_tp / (rest_tp + rest_fn))
    assert perf.known_bias("recall", "device_type=ios") is None
    strict = fraud_model(performance_min_effect=android.gap + 0.01)
    assert learn_reference_performance(strict, reference, "label").known_bias("recall", "device_type=android") is None
    clean = learn_reference_performance(model, labelled_frame(52, 12_000), "label")
    assert [b for b in clean.known_biases if b.metric == "recall"] == []


def test_the_profile_keeps_the_performance_and_old_profiles_still_load(reference: pd.DataFrame, tmp_path: Path) -> None:
    """Saved and loaded, the performance section is the same; a version-1 file without it loads with none."""
    model = fraud_model()
    profile = learn_from_frame(model, reference.copy(), "test")  # labels.label_field "label" is in the frame
    assert profile.performance is not None and profile.format_version == 2
    profile.save(tmp_path / "p.json")
    loaded = BaselineProfile.load(tmp_path / "p.json")
    assert loaded.performance == profile.performance
    old = profile.to_dict()
    del old["performance"]
    old["format_version"] = 1
    assert BaselineProfile.from_dict(old).performance is None
    broken = profile.to_dict()
    broken["performance"]["slices"]["*"]["tp"] = -1
    with pytest.raises(ProfileFormatError, match=r"^performance\.slices\.\*\.tp: expected a non-negative integer"):
        BaselineProfile.from_dict(broken)


def test_the_label_column_is_optional_but_must_exist_when_named(reference: pd.DataFrame) -> None:
    """Without a label column the profile has no performance; naming an absent one is a clear error."""
    model = fraud_model()
    assert learn_from_frame(model, reference.drop(columns=["label"]), "test").performance is None
    with pytest.raises(ReferenceDataUnusableError, match="label column 'fraud' is not in the reference data"):
        learn_from_frame(model, reference.copy(), "test", label_column="fraud")


def test_the_summary_lists_the_known_biases(reference: pd.DataFrame) -> None:
    """learn prints the overall interval and one line per known bias; metrics marks those slices."""
    perf = learn_reference_performance(fraud_model(), reference, "label")
    text = performance_summary(perf)
    assert "known biases (reported once as known_bias, not re-raised)" in text
    assert "device_type=android" in text and "recall" in text
    marks = known_bias_marks(perf.known_biases)
    assert marks["device_type=android"].startswith("known bias: ")
    assert "compared with their previous lookback" in performance_summary(None)


LEARN_CONFIG = """
[[models]]
name = "fraud"
topics = ["fraud.inferences"]
schema = "{schema}"
encoding = "json"
event_id_field = "event_id"
timestamp_field = "ts"
features = ["amount", "age", "account_age_days", "num_tx_24h", "merchant_category", "device_type", "country", "is_new_user"]
prediction_field = "prediction"
score_field = "score"
slice_fields = ["device_type", "country"]
profile = "fraud.json"
"""


def test_learn_command_records_and_prints_the_known_biases(
    reference: pd.DataFrame, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """stream-guard learn --label-column on a CSV: the profile holds the performance and the bias is printed."""
    config = tmp_path / "config.toml"
    config.write_text(LEARN_CONFIG.format(schema=schema_dir() / "fraud_inference.avsc"))
    reference.rename(columns={"label": "is_fraud"}).to_csv(tmp_path / "ref.csv", index=False)
    assert (
        main(["learn", "-c", str(config), "--from-file", str(tmp_path / "ref.csv"), "--label-column", "is_fraud"]) == 0
    )
    out = capsys.readouterr().out
    assert "known biases (reported once as known_bias, not re-raised)" in out and "device_type=android" in out
    saved = json.loads((tmp_path / "fraud.json").read_text())
    assert saved["format_version"] == 2 and saved["performance"]["label_column"] == "is_fraud"
    assert any(b["slice"] == "device_type=android" for b in saved["performance"]["known_biases"])
    web = reference["device_type"] == "web"
    assert saved["performance"]["slices"]["device_type=web"]["labelled"] == int(web.sum())

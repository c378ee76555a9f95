"""What the dashboard derives from Redis hashes and alerts, without Redis: drift per window, rates, the page."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import pytest

from stream_guard.dashboard.feed import AlertFeed
from stream_guard.dashboard.page import rate_series, render_page
from stream_guard.dashboard.views import DriftSeries, Incident, ModelView, window_counters, window_drift
from stream_guard.drift.stats import bin_counts, psi
from stream_guard.drift.window import profile_tag
from stream_guard.learning import learn_profile
from stream_guard.metrics.query import RankedSlice, SliceMetrics
from stream_guard.profile import BaselineProfile, NumericProfile
from stream_guard.settings import Config
from stream_guard.settings.drift import DriftSettings
from stream_guard.tools.simulator import Simulator

T0 = 1_700_000_040_000


@pytest.fixture(scope="module")
def profile() -> BaselineProfile:
    frame = pd.DataFrame(Simulator(encoding="json", seed=5).records(20_000, T0, 1))
    return learn_profile(frame, model="fraud", numeric=["amount"], categorical=["device_type"], source="seed 5")


def _window_fields(profile: BaselineProfile, records: list[dict[str, Any]]) -> dict[str, str]:
    """A window hash as the worker writes it: amount bin counts, device_type category counts, the profile tag."""
    amount = profile.features["amount"]
    assert isinstance(amount, NumericProfile)
    counts = bin_counts([r["amount"] for r in records], amount.bin_edges)
    fields = {f"h|amount|{i}": str(int(c)) for i, c in enumerate(counts) if c}
    for device, n in pd.Series([r["device_type"] for r in records]).value_counts().items():
        fields[f"c|device_type|{device}"] = str(int(n))
    fields[f"hp|{profile_tag(profile)}"] = str(len(records))
    fields["n"] = str(len(records))
    return fields


def test_window_counters_group_histogram_and_category_fields_by_feature() -> None:
    """h| and c| fields become feature -> slot -> count; other counters are ignored."""
    fields = {"n": "10", "h|amount|0": "3", "h|amount|2": "7.0", "c|device_type|ios": "4", "null|age": "1"}
    assert window_counters(fields) == {"amount": {"0": 3, "2": 7}, "device_type": {"ios": 4}}


def test_window_drift_recomputes_psi_and_js_against_the_profile(profile: BaselineProfile) -> None:
    """A stable window stays under the thresholds; doubled amounts push PSI over, as the worker's statistic."""
    settings = DriftSettings()
    stable = Simulator(encoding="json", seed=6).records(3000, T0, 1)
    result = window_drift(profile, settings, _window_fields(profile, stable))
    assert set(result) == {"amount", "device_type"}
    statistic, value, threshold = result["amount"]
    assert statistic == "psi" and threshold == settings.feature("amount").psi_threshold and value < threshold
    assert result["device_type"][0] == "js_distance" and result["device_type"][1] < result["device_type"][2]

    drifted = [{**r, "amount": r["amount"] * 2} for r in stable]
    fields = _window_fields(profile, drifted)
    statistic, value, threshold = window_drift(profile, settings, fields)["amount"]
    amount = profile.features["amount"]
    assert isinstance(amount, NumericProfile)
    current = np.zeros(len(amount.bin_freqs))
    for slot, count in window_counters(fields)["amount"].items():
        current[int(slot)] = count
    assert value == pytest.approx(psi(amount.bin_freqs, current)) and value > threshold


def test_window_drift_leaves_out_small_windows_and_bins_of_another_profile(profile: BaselineProfile) -> None:
    """Under min_count nothing is judged; numeric bins counted under another profile tag are not compared."""
    few = Simulator(encoding="json", seed=7).records(50, T0, 1)
    assert window_drift(profile, DriftSettings(), _window_fields(profile, few)) == {}
    many = Simulator(encoding="json", seed=7).records(3000, T0, 1)
    fields = {k: v for k, v in _window_fields(profile, many).items() if not k.startswith("hp|")}
    fields["hp|another-profile"] = "3000"
    assert set(window_drift(profile, DriftSettings(), fields)) == {"device_type"}


def _view(**overrides: Any) -> ModelView:
    buckets = [T0, T0 + 60_000, T0 + 120_000]
    overall = [
        (
            t,
            SliceMetrics(
                "*", {"n": 100, "null:age": k, "v:out_of_range": 2 * k, "pn": 100, "pv": 20 + k, "tp": 5, "fn": k}
            ),
        )
        for k, t in enumerate(buckets)
    ]
    values: dict[str, Any] = {
        "model": "fraud",
        "start_ms": T0,
        "end_ms": T0 + 180_000,
        "bucket_ms": 60_000,
        "task": "classification",
        "metric": "recall",
        "events": 300,
        "overall": overall,
        "slices": {"device_type=android": overall},
        "worst": [RankedSlice("device_type=android", 0.5, 120, 0.8)],
        "overall_value": 0.8,
        "slice_count": 7,
        "drift": [DriftSeries("amount", "psi", 0.2, [(T0, 0.05), (T0 + 60_000, 0.4)])],
        "incidents": [Incident("abc", "data_drift", "amount", "", "WARNING", T0, T0 + 60_000, 2, 200)],
    }
    values.update(overrides)
    return ModelView(**values)


def test_rate_series_has_a_line_per_null_feature_and_violation_kind() -> None:
    """Null and violation rates are shares of the bucket's events; a clean model gets one zero line."""
    series = {s.name: s for s in rate_series(_view())}
    assert set(series) == {"null age", "out_of_range"}
    assert [v for _, v in series["out_of_range"].points] == [0.0, 0.02, 0.04]
    clean = [(T0, SliceMetrics("*", {"n": 10}))]
    (only,) = rate_series(_view(overall=clean))
    assert [v for _, v in only.points] == [0.0]


def _alert(**overrides: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "alert_id": "a1",
        "incident_id": "abc",
        "status": "FIRING",
        "model": "fraud",
        "kind": "data_drift",
        "feature": "amount",
        "slice": "",
        "severity": "WARNING",
        "window_start": datetime.fromtimestamp(T0 / 1000, UTC),
        "window_end": datetime.fromtimestamp(T0 / 1000 + 60, UTC),
        "count": 1000,
        "total": 1000,
        "rate": 1.0,
        "observed": "PSI 0.475 <b>",
        "expected": "PSI <= 0.2",
        "value": 0.475,
        "threshold": 0.2,
        "detector": "psi",
        "examples": [{"partition": 2, "offset": 1199, "event_id": "e", "value": "223.08"}],
        "message": "m",
        "emitted_at": datetime.fromtimestamp(T0 / 1000 + 90, UTC),
    }
    record.update(overrides)
    return record


def test_page_shows_every_plot_the_tables_and_escaped_alert_evidence() -> None:
    """One section per model with its slice count, plots with points, a worst-slice row, an incident, the alert."""
    page = render_page([_view()], {"fraud": [_alert()]}, now_ms=T0 + 200_000)
    assert page.startswith("<!doctype html>")
    assert 'data-model="fraud" data-slices="7"' in page
    plots = [ET.fromstring(svg + "</svg>") for svg in _svgs(page)]
    ids = {p.get("data-plot"): int(p.get("data-points") or 0) for p in plots}
    assert ids == {
        "fraud-events": 3,
        "fraud-rates": 6,
        "fraud-prediction": 3,
        "fraud-performance": 6,  # all traffic and android, 3 buckets each
        "fraud-drift-amount": 2,
        "fraud-worst": 1,
    }
    assert page.count('<tr class="sg-worst">') == 1 and page.count('<tr class="sg-incident">') == 1
    assert page.count('<tr class="sg-alert">') == 1
    assert "PSI 0.475 &lt;b&gt;" in page and "p2@1199 223.08" in page and "threshold 0.2" in page


def test_a_calibrated_profile_adds_the_estimate_beside_the_realised_accuracy() -> None:
    """With per-bucket estimates the page draws them and the realised accuracy in one plot, a point each."""
    estimated = [(T0, 0.9), (T0 + 60_000, 0.85), (T0 + 120_000, None)]
    page = render_page([_view(estimated=estimated)], {}, now_ms=T0 + 200_000)
    plots = {p.get("data-plot"): p for p in (ET.fromstring(svg + "</svg>") for svg in _svgs(page))}
    assert int(plots["fraud-estimate"].get("data-points") or 0) == 2 + 3  # two estimates, three realised
    assert "label-free estimate vs realised" in page


def _svgs(page: str) -> list[str]:
    parts = page.split("<svg ")[1:]
    return ["<svg " + p.split("</svg>", 1)[0] for p in parts]


def test_alert_feed_keeps_the_newest_message_per_alert_newest_first_and_bounded() -> None:
    """A late update of an alert replaces it; recent() filters by model and kind; the oldest drop beyond limit."""
    feed = AlertFeed(Config(), limit=2)
    feed.add(_alert(alert_id="a1", count=1))
    feed.add(_alert(alert_id="a2", kind="out_of_range", emitted_at=datetime.fromtimestamp(T0 / 1000 + 95, UTC)))
    feed.add(_alert(alert_id="a1", count=5, emitted_at=datetime.fromtimestamp(T0 / 1000 + 99, UTC)))
    assert [(a["alert_id"], a["count"]) for a in feed.recent("fraud")] == [("a1", 5), ("a2", 1000)]
    assert [a["alert_id"] for a in feed.recent("fraud", frozenset({"out_of_range"}))] == ["a2"]
    assert feed.recent("other") == []
    feed.add(_alert(alert_id="a3"))
    assert {a["alert_id"] for a in feed.recent()} == {"a1", "a3"}

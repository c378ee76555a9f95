"""Unit tests for stream_guard.profile: the profile model, its bounds and thresholds, its JSON format."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from profile_frames import mixed_frame, numeric_profile

from stream_guard.errors import ProfileFormatError
from stream_guard.learning import learn_profile
from stream_guard.profile import (
    PROFILE_FORMAT_VERSION,
    BaselineProfile,
    RateVariability,
)

# --- bounds and thresholds ------------------------------------------------------------


def test_range_bounds_with_tolerance() -> None:
    """lower/upper_bound widen by tolerance*(max-min); constant columns use |min| or 1.0."""
    f = numeric_profile(pd.DataFrame({"x": [10.0, 20.0, 15.0]}), "x")
    assert (f.lower_bound(0.1), f.upper_bound(0.1)) == (9.0, 21.0)
    assert (f.lower_bound(0.0), f.upper_bound(0.0)) == (10.0, 20.0)
    const = numeric_profile(pd.DataFrame({"x": [-5.0] * 4}), "x")
    assert (const.lower_bound(0.1), const.upper_bound(0.1)) == (-5.5, -4.5)
    zero = numeric_profile(pd.DataFrame({"x": [0.0] * 4}), "x")
    assert (zero.lower_bound(0.1), zero.upper_bound(0.1)) == (-0.1, 0.1)
    empty = numeric_profile(pd.DataFrame({"x": [np.nan, np.nan]}), "x")
    assert (empty.min, empty.quantiles, empty.bin_freqs) == (None, {}, [0.0])
    assert (empty.lower_bound(0.1), empty.upper_bound(0.1)) == (-math.inf, math.inf)


def test_rate_thresholds_floor_std_and_clip() -> None:
    """upper_threshold is mean + z*std, std floored at 0.001, result clipped to [0, 1]."""
    assert RateVariability(0.0, 0.0, 10, 100).upper_threshold(3) == pytest.approx(0.003)
    assert RateVariability(0.1, 0.02, 10, 100).upper_threshold(3) == pytest.approx(0.16)
    assert RateVariability(0.9, 0.2, 10, 100).upper_threshold(3) == 1.0
    assert RateVariability(0.1, 0.02, 10, 100).lower_threshold(3) == pytest.approx(0.04)


# --- JSON -----------------------------------------------------------------------------


def _reject_constant(token: str) -> None:
    raise AssertionError(f"non-strict JSON token {token}")


def test_json_round_trip_equals_original(tmp_path, rng: np.random.Generator) -> None:
    """save/load reproduces the profile exactly (inf edges included) as strict JSON."""
    frame = mixed_frame(rng)
    frame.loc[:10, "amount"] = np.nan
    profile = learn_profile(
        frame, model="fraud", numeric=["amount", "count", "flag"], categorical=["country"], source="file:train.parquet"
    )
    path = tmp_path / "fraud.profile.json"
    profile.save(path)
    text = path.read_text()
    data = json.loads(text, parse_constant=_reject_constant)
    assert data["format_version"] == PROFILE_FORMAT_VERSION
    assert data["features"]["amount"]["bin_edges"][0] == "-inf"
    loaded = BaselineProfile.load(path)
    assert loaded == profile
    assert loaded.features["amount"].bin_edges[-1] == math.inf
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind
    assert BaselineProfile.from_dict(profile.to_dict()) == profile


def test_from_dict_rejects_wrong_format_version(rng: np.random.Generator) -> None:
    """A wrong or missing format_version raises ProfileFormatError naming the key."""
    d = learn_profile(mixed_frame(rng, 100), model="m", numeric=["amount"], categorical=[]).to_dict()
    d["format_version"] = 3
    with pytest.raises(ProfileFormatError, match="^format_version: unsupported value 3"):
        BaselineProfile.from_dict(d)
    del d["format_version"]
    with pytest.raises(ProfileFormatError, match="format_version"):
        BaselineProfile.from_dict(d)
    assert issubclass(ProfileFormatError, ValueError)


def test_from_dict_names_bad_nested_key(rng: np.random.Generator) -> None:
    """Hand-edit mistakes raise a one-line ProfileFormatError naming the nested key."""
    d = learn_profile(mixed_frame(rng, 100), model="m", numeric=["amount"], categorical=["country"]).to_dict()
    d["features"]["amount"]["bin_edges"][2] = "oops"
    with pytest.raises(ProfileFormatError, match=r"^features\.amount\.bin_edges\[2\]:") as info:
        BaselineProfile.from_dict(d)
    assert "\n" not in str(info.value)
    d = learn_profile(mixed_frame(rng, 100), model="m", numeric=["amount"], categorical=["country"]).to_dict()
    del d["features"]["country"]["null_rate_variability"]["std"]
    with pytest.raises(ProfileFormatError, match=r"^features\.country\.null_rate_variability\.std: missing"):
        BaselineProfile.from_dict(d)


def test_hand_widened_range_loads(tmp_path, rng: np.random.Generator) -> None:
    """A user may widen min/max in the JSON by hand and the bounds follow."""
    path = tmp_path / "p.json"
    learn_profile(pd.DataFrame({"x": [1.0, 2.0]}), model="m", numeric=["x"], categorical=[]).save(path)
    data = json.loads(path.read_text())
    data["features"]["x"]["min"] = -100
    path.write_text(json.dumps(data))
    assert BaselineProfile.load(path).features["x"].lower_bound(0.0) == -100.0


def test_load_rejects_invalid_json(tmp_path) -> None:
    """A file that is not JSON raises ProfileFormatError."""
    path = tmp_path / "p.json"
    path.write_text("{not json")
    with pytest.raises(ProfileFormatError, match="not valid JSON"):
        BaselineProfile.load(path)

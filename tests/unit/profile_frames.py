"""Reference frames and single-feature profiles shared by the profile and learning tests."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from stream_guard.learning import learn_profile
from stream_guard.profile import CategoricalProfile, NumericProfile


def numeric_profile(frame: pd.DataFrame, column: str, **kwargs: Any) -> NumericProfile:
    feature = learn_profile(frame, model="m", numeric=[column], categorical=[], **kwargs).features[column]
    assert isinstance(feature, NumericProfile)
    return feature


def categorical_profile(frame: pd.DataFrame, column: str, **kwargs: Any) -> CategoricalProfile:
    feature = learn_profile(frame, model="m", numeric=[], categorical=[column], **kwargs).features[column]
    assert isinstance(feature, CategoricalProfile)
    return feature


def mixed_frame(rng: np.random.Generator, n: int = 5000) -> pd.DataFrame:
    amount = rng.normal(100, 20, n)
    amount[rng.random(n) < 0.05] = -1.0
    amount[rng.random(n) < 0.01] = np.inf
    return pd.DataFrame(
        {
            "amount": amount,
            "count": rng.integers(0, 5, n),
            "flag": rng.random(n) < 0.2,
            "country": rng.choice(["FR", "DE", "US"], n),
        }
    )

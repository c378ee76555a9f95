"""Learning from reference files: values that are not numbers in numeric features are reported, not hidden."""

from __future__ import annotations

import pandas as pd
import pytest

from stream_guard.decoding import JsonDecoder
from stream_guard.errors import ReferenceDataUnusableError
from stream_guard.learning.sources import coerce_numeric_columns, learn_from_frame
from stream_guard.model import ModelRuntime
from stream_guard.profile import NumericProfile
from stream_guard.schemas import record_fields
from stream_guard.settings import ModelConfig

SCHEMA = {
    "type": "record",
    "name": "Event",
    "fields": [{"name": "amount", "type": ["null", "double"]}, {"name": "country", "type": "string"}],
}


def _model() -> ModelRuntime:
    return ModelRuntime(
        config=ModelConfig(name="m", topics=["t"], features=["amount", "country"]),
        reader_schema=SCHEMA,
        fields=record_fields(SCHEMA),
        decoder=JsonDecoder(SCHEMA),
        numeric_features=["amount"],
        categorical_features=["country"],
    )


def _frame() -> pd.DataFrame:
    amounts = ["12.5", "n/a", "7", None, "12,5", "n/a"] + [str(i) for i in range(200)]
    return pd.DataFrame({"amount": amounts, "country": ["FR"] * len(amounts)})


def test_non_numeric_values_are_counted_with_examples() -> None:
    """'n/a' and '12,5' are not numbers: counted (3), shown once each; a real null is not counted."""
    frame = _frame()
    (problem,) = coerce_numeric_columns(frame, ["amount"])
    assert (problem.column, problem.count, problem.examples) == ("amount", 3, ("n/a", "12,5"))
    assert frame["amount"].isna().sum() == 4 and frame["amount"].iloc[0] == 12.5
    assert "3 non-numeric values" in problem.describe()


def test_learn_logs_them_as_nulls_or_refuses_when_strict(capsys: pytest.CaptureFixture[str]) -> None:
    """Without --strict the profile is learned and the problem is a warning; with it, learning stops."""
    profile = learn_from_frame(_model(), _frame(), "file:ref.csv")
    assert isinstance(profile.features["amount"], NumericProfile)
    assert "non-numeric values learned as nulls" in capsys.readouterr().out + capsys.readouterr().err
    with pytest.raises(ReferenceDataUnusableError, match="column 'amount': 3 non-numeric values"):
        learn_from_frame(_model(), _frame(), "file:ref.csv", strict=True)

"""The faults of the long replay on the wide model, and the script that places them in time.

Each :class:`LongFault` breaks one field of the wide model (:mod:`stream_guard.tools.wide`)
in the way a real pipeline breaks: a producer writing a number as a string, a field
dropped, a unit changed... :func:`plan_stretches` places them one after another, each
in its own stretch of event time with clean traffic before and after, so that every
alert can be attributed to a fault or to clean traffic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from stream_guard.errors import EvaluationInputError
from stream_guard.tools.wide import WIDE_NUMERIC, category_values

#: A category the wide model's reference never had.
UNSEEN_PURPOSE = "sg-new-purpose"


@dataclass(frozen=True)
class LongFault:
    """One fault of the script: what it does to which field, and which alerts count as catching it.

    ``share`` is the share of the stretch's events hit; ``length`` is the stretch's
    duration as a share of the replay's fault duration (a burst is shorter).
    """

    name: str
    feature: str
    expects: tuple[str, ...]
    description: str
    share: float = 1.0
    length: float = 1.0


#: The script, in order of onset.
LONG_FAULTS: tuple[LongFault, ...] = (
    LongFault("string_number", "term_months", ("type_mismatch",), "term_months sent as a string ('36')", 0.2),
    LongFault("dropped_field", "inquiries_6m", ("missing_field",), "inquiries_6m left out of the payload", 0.3),
    LongFault("unit_x1000", "loan_amount", ("out_of_range", "data_drift", "online_drift"), "loan_amount x 1000"),
    LongFault("null_burst", "income", ("null_rate",), "income null (1 % in the reference)", 0.3),
    LongFault(
        "sentinel_-1",
        "credit_history_years",
        ("sentinel_spike", "out_of_range"),
        "-1 default instead of the value",
        0.3,
    ),
    LongFault("unseen_category", "purpose", ("unseen_category", "data_drift"), f"purpose {UNSEEN_PURPOSE!r}", 0.1),
    LongFault(
        "gradual_mean_shift",
        "utilisation",
        ("data_drift", "online_drift"),
        "utilisation drifts up, linearly to +1.5 std by the end of the stretch",
    ),
    LongFault("mix_shift", "channel", ("data_drift",), "channel 'web' takes 80 % of the events"),
    LongFault(
        "score_shift",
        "score",
        ("prediction_drift", "online_drift"),
        "score + 0.15, prediction recomputed at 0.5",
    ),
    LongFault("nan", "debt_to_income", ("nan",), "NaN instead of debt_to_income", 0.05),
    LongFault(
        "cardinality_explosion",
        "referral_source",
        ("cardinality", "unseen_category", "data_drift"),
        "a unique referral id per event",
        0.3,
    ),
    LongFault(
        "out_of_range_burst",
        "open_accounts",
        ("out_of_range",),
        "open_accounts 400 (a parser bug), a short burst",
        0.03,
        0.2,
    ),
)


def fault_named(name: str) -> LongFault:
    for fault in LONG_FAULTS:
        if fault.name == name:
            return fault
    raise EvaluationInputError(f"unknown long-replay fault {name!r}; known: {', '.join(f.name for f in LONG_FAULTS)}")


@dataclass(frozen=True)
class Stretch:
    """Where one fault is active in event time: ``[onset_ms, end_ms)``."""

    fault: LongFault
    onset_ms: int
    end_ms: int


def plan_stretches(
    faults: Sequence[LongFault], start_ms: int, *, clean_s: int, fault_s: int, window_s: int
) -> tuple[list[Stretch], int]:
    """Clean, fault, clean, fault, ..., clean: the stretches and the end of the replay.

    Onsets fall on window boundaries (``start_ms`` is one), so the onset's window is the
    first faulty one and a delay in windows is exact.
    """
    window_ms = window_s * 1000
    out, t = [], start_ms + clean_s * 1000
    for fault in faults:
        duration = max(window_ms, math.ceil(fault_s * fault.length / window_s) * window_ms)
        out.append(Stretch(fault, t, t + duration))
        t += duration + clean_s * 1000
    return out, t


def _with(record: dict[str, Any], name: str, value: Any) -> dict[str, Any]:
    record = dict(record)
    record[name] = value
    return record


def break_record(fault: LongFault, record: dict[str, Any], progress: float, rng: np.random.Generator) -> dict[str, Any]:
    """``record`` as ``fault`` turns it, ``progress`` (0 to 1) into the fault's stretch.

    The caller has already drawn whether the record is hit (``fault.share``).
    """
    name = fault.name
    value: Any = record.get(fault.feature)
    if name == "string_number":
        return _with(record, fault.feature, str(value))
    if name == "dropped_field":
        return {k: v for k, v in record.items() if k != fault.feature}
    if name == "unit_x1000":
        return _with(record, fault.feature, float(value) * 1000)
    if name == "null_burst":
        return _with(record, fault.feature, None)
    if name == "sentinel_-1":
        return _with(record, fault.feature, -1)
    if name == "unseen_category":
        return _with(record, fault.feature, UNSEEN_PURPOSE)
    if name == "gradual_mean_shift":
        std = WIDE_NUMERIC[fault.feature][1]
        return _with(record, fault.feature, float(value) + 1.5 * std * progress)
    if name == "mix_shift":
        top = category_values(fault.feature)[0]
        # The top value has about 40 % of the events; moving 2/3 of the others gives it 80 %.
        return _with(record, fault.feature, top) if rng.random() < 2 / 3 else record
    if name == "score_shift":
        score = min(1.0, float(value) + 0.15)
        return {**record, "score": score, "prediction": int(score >= 0.5)}
    if name == "nan":
        return _with(record, fault.feature, math.nan)
    if name == "cardinality_explosion":
        return _with(record, fault.feature, f"ref-{int(rng.integers(0, 1 << 48)):012x}")
    if name == "out_of_range_burst":
        return _with(record, fault.feature, 400)
    raise EvaluationInputError(f"the long replay cannot inject fault {name!r}")

"""The faults of the long replay on the wide model, and the script that places them in time.

Each :class:`LongFault` breaks one field of the wide model (:mod:`stream_guard.tools.wide`)
in the way a real pipeline breaks: a producer writing a number as a string, a field
dropped, a unit changed... The last faults break the *labels*: the events stay clean
and the ground truth changes (their true default risk, the simulator's ``_p``, from which
the delayed labels are drawn), so only the label-based checks can see them.
:func:`plan_stretches` places them one after another, each in its own stretch of event
time with clean traffic before and after, so that every alert can be attributed to a
fault or to clean traffic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from stream_guard.errors import EvaluationInputError
from stream_guard.settings.kinds import (
    CALIBRATION_DRIFT,
    CONCEPT_DRIFT,
    PERFORMANCE_DEGRADATION,
    SLICE_UNDERPERFORMANCE,
)
from stream_guard.tools.wide import WIDE_NUMERIC, category_values

#: A category the wide model's reference never had.
UNSEEN_PURPOSE = "sg-new-purpose"
#: The wide model's default rate (12.8 % of a 50k-event reference): the risk of an outcome
#: that no longer follows the model's features.
BASE_DEFAULT_RATE = 0.128
#: The extra default risk of the app applicants the model scores safe, during the fraud ring.
APP_RING_RISK = 0.08


@dataclass(frozen=True)
class LongFault:
    """One fault of the script: what it does to which field, and which alerts count as catching it.

    ``share`` is the share of the stretch's events hit; ``length`` is the stretch's
    duration as a share of the replay's fault duration (a burst is shorter). A fault with
    ``slice`` set breaks the labels (the true risk behind them), and an alert catches it
    when it is of an expected kind and names that slice (``*``: all traffic), whatever
    its metric; any other fault is caught by an alert of an expected kind on ``feature``.
    """

    name: str
    feature: str
    expects: tuple[str, ...]
    description: str
    share: float = 1.0
    length: float = 1.0
    slice: str | None = None

    @property
    def breaks_labels(self) -> bool:
        """Whether the fault changes the ground truth (the labels) rather than the events."""
        return self.slice is not None

    @property
    def target(self) -> str:
        """What an alert must name to catch the fault: its slice, or its feature."""
        return self.slice if self.slice is not None else self.feature


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
    LongFault(
        "slice_recall_drop",
        "channel",
        (SLICE_UNDERPERFORMANCE,),
        f"defaults among the app applicants the model scores safe: +{APP_RING_RISK:.0%} risk (a fraud ring "
        "in the app channel)",
        slice="channel=app",
    ),
    LongFault(
        "concept_shift",
        "label",
        (CONCEPT_DRIFT, PERFORMANCE_DEGRADATION, SLICE_UNDERPERFORMANCE, CALIBRATION_DRIFT),
        f"the outcomes of 80 % of the events stop following the model's risk: they default at the base rate "
        f"{BASE_DEFAULT_RATE:.1%} whatever their score",
        0.8,
        slice="*",
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

    The caller has already drawn whether the record is hit (``fault.share``). A label
    fault changes the record's true risk ``_p`` only, which its label is drawn from.
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
    if name == "slice_recall_drop":
        if record["channel"] != "app" or record["prediction"] != 0:
            return record
        # An independent second cause of default, which the model does not see.
        return _with(record, "_p", 1.0 - (1.0 - float(record["_p"])) * (1.0 - APP_RING_RISK))
    if name == "concept_shift":
        return _with(record, "_p", BASE_DEFAULT_RATE)
    raise EvaluationInputError(f"the long replay cannot inject fault {name!r}")

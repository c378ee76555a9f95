"""Unit tests of the checks' settings and of the row-level feature checks and counters."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import pytest

from stream_guard.aggregation import build_updates
from stream_guard.alerts.evaluate import finding_alerts
from stream_guard.alerts.model import Severity
from stream_guard.batch import EventBatch
from stream_guard.checks import ChecksConfig, FeatureChecks
from stream_guard.checks.row_checks import range_bounds
from stream_guard.decoding import Decoded, FieldIssue
from stream_guard.findings import RowFindings
from stream_guard.learning import learn_profile
from stream_guard.model import ModelRuntime
from stream_guard.profile import BaselineProfile, NumericProfile
from stream_guard.settings import ModelConfig
from stream_guard.state.keys import ModelKeys
from stream_guard.state.window_store import StateUpdate, WindowSnapshot

MODEL = "m"
WINDOW_MS = 60_000
T0 = 1_700_000_040_000
KEYS = ModelKeys("sg", MODEL)


def reference(rng: np.random.Generator, n: int = 5000) -> pd.DataFrame:
    x = rng.uniform(0, 100, n)
    x[0], x[1] = 0.0, 100.0  # an exact learned range
    k = rng.integers(0, 5, n).astype(float)  # 5 values at ~20 % each
    return pd.DataFrame({"x": x, "k": k, "c": rng.choice(["a", "b", "c"], n)})


@pytest.fixture(scope="module")
def profile() -> BaselineProfile:
    return learn_profile(reference(np.random.default_rng(1)), model=MODEL, numeric=["x", "k"], categorical=["c"])


def model() -> ModelRuntime:
    return ModelRuntime(
        config=ModelConfig(name=MODEL, topics=["t"]),
        reader_schema={},
        fields={},
        decoder=None,
        numeric_features=["x", "k"],
        categorical_features=["c"],
    )


def batch(
    rows: list[dict[str, Any]],
    *,
    failed: Sequence[int] = (),
    issues: dict[int, list[FieldIssue]] | None = None,
    times: list[int] | None = None,
) -> EventBatch:
    n = len(rows)
    mask = np.zeros(n, dtype=bool)
    mask[list(failed)] = True
    return EventBatch(
        model=MODEL,
        decoded=[Decoded(values=r, issues=(issues or {}).get(i, [])) for i, r in enumerate(rows)],
        topics=["t"] * n,
        partitions=np.zeros(n, dtype=np.int64),
        offsets=np.arange(n, dtype=np.int64),
        event_time_ms=np.array(times or [T0] * n, dtype=np.int64),
        event_ids=[f"e{i}" for i in range(n)],
        failed=mask,
    )


def clean_rows(n: int, seed: int = 2) -> list[dict[str, Any]]:
    frame = reference(np.random.default_rng(seed), n)
    return [{"x": float(r.x), "k": float(r.k), "c": str(r.c)} for r in frame.itertuples()]


def found(findings: list[RowFindings]) -> dict[tuple[str, str], RowFindings]:
    return {(f.kind, f.feature): f for f in findings}


def window_fields(updates: list[StateUpdate]) -> tuple[dict[str, dict[str, Any]], dict[str, set[str]]]:
    """Hash fields and HyperLogLog sets the updates leave in Redis (a minimal interpreter)."""
    hashes: dict[str, dict[str, Any]] = defaultdict(dict)
    sets: dict[str, set[str]] = defaultdict(set)
    for update in updates:
        ops, i = update.ops, 0
        while i < len(ops):
            op = ops[i]
            if op == "W":
                i += 2
                continue
            key = update.keys[int(ops[i + 1]) - 5]
            if op == "H":
                hashes[key][ops[i + 2]] = hashes[key].get(ops[i + 2], 0) + ops[i + 3]
            elif op == "M":
                parts = ops[i + 2].split("\n")
                for name, amount in zip(parts[::2], parts[1::2], strict=True):
                    hashes[key][name] = hashes[key].get(name, 0) + float(amount)
                i += 3
                continue
            elif op == "S":
                hashes[key][ops[i + 2]] = ops[i + 3]
            elif op == "P":
                n = ops[i + 2]
                sets[key].update(ops[i + 3 : i + 3 + n])
                i += 3 + n
                continue
            i += 4
    return hashes, sets


def run(
    checks: FeatureChecks, b: EventBatch
) -> tuple[list[RowFindings], dict[str, dict[str, Any]], dict[str, set[str]]]:
    findings = checks.findings(model(), b)
    updates = build_updates(b, findings, KEYS, window_ms=WINDOW_MS, max_examples=5, contributors=[checks.contribute])
    return findings, *window_fields(updates)


# ----------------------------------------------------------------------- row checks


def test_clean_batch_has_no_findings(profile: BaselineProfile) -> None:
    assert FeatureChecks({MODEL: profile}, ChecksConfig()).findings(model(), batch(clean_rows(2000))) == []


def test_out_of_range_and_its_tolerance(profile: BaselineProfile) -> None:
    rows = clean_rows(100)
    rows[3]["x"], rows[7]["x"], rows[9]["x"] = 150.0, 105.0, -40.0
    finding = found(FeatureChecks({MODEL: profile}, ChecksConfig()).findings(model(), batch(rows)))[
        ("out_of_range", "x")
    ]
    assert finding.rows.tolist() == [3, 9]  # 105 is within 25 % of the range (the default tolerance)
    assert finding.values == [150.0, -40.0]
    assert (finding.observed, finding.expected) == ("min -40, max 150", "[-25, 125]")
    exact = ChecksConfig.from_dict({"out_of_range": {"tolerance": 0}})
    assert found(FeatureChecks({MODEL: profile}, exact).findings(model(), batch(rows)))[
        ("out_of_range", "x")
    ].rows.tolist() == [3, 7, 9]
    wide = ChecksConfig.from_dict({"features": {"x": {"out_of_range": {"tolerance": 0.6}}}})
    assert ("out_of_range", "x") not in found(FeatureChecks({MODEL: profile}, wide).findings(model(), batch(rows)))


def test_range_widens_to_a_heavy_tail() -> None:
    rng = np.random.default_rng(3)
    amounts = pd.DataFrame({"a": rng.lognormal(3.5, 1.0, 100_000)})
    feature = learn_profile(amounts, model=MODEL, numeric=["a"], categorical=[]).features["a"]
    assert isinstance(feature, NumericProfile) and feature.max is not None
    _, hi = range_bounds(feature, 0.1)
    assert hi == pytest.approx(2 * feature.max - feature.quantiles["0.999"])
    assert hi > feature.upper_bound(0.1)
    assert range_bounds(feature, 0.0) == (feature.min, feature.max)


def test_disabled_check_per_feature(profile: BaselineProfile) -> None:
    rows = clean_rows(100)
    rows[0]["x"], rows[0]["k"] = 1e9, 1e9
    config = ChecksConfig.from_dict({"features": {"x": {"out_of_range": {"enabled": False}}}})
    assert set(found(FeatureChecks({MODEL: profile}, config).findings(model(), batch(rows)))) == {("out_of_range", "k")}


def test_nan_and_infinite(profile: BaselineProfile) -> None:
    rows = clean_rows(50)
    rows[1]["x"], rows[2]["x"], rows[3]["x"] = math.nan, math.inf, -math.inf
    f = found(FeatureChecks({MODEL: profile}, ChecksConfig()).findings(model(), batch(rows)))
    assert f[("nan", "x")].rows.tolist() == [1]
    assert f[("infinite", "x")].rows.tolist() == [2, 3]
    assert f[("infinite", "x")].observed == "+inf and -inf"
    assert ("out_of_range", "x") not in f


def test_nan_is_not_flagged_where_the_reference_had_nan() -> None:
    frame = reference(np.random.default_rng(1))
    frame.loc[::50, "x"] = np.nan
    profile = learn_profile(frame, model=MODEL, numeric=["x", "k"], categorical=["c"])
    rows = clean_rows(50)
    rows[1]["x"] = math.nan
    assert FeatureChecks({MODEL: profile}, ChecksConfig()).findings(model(), batch(rows)) == []


def test_unseen_category(profile: BaselineProfile) -> None:
    rows = clean_rows(50)
    rows[4]["c"] = "crypto"
    finding = found(FeatureChecks({MODEL: profile}, ChecksConfig()).findings(model(), batch(rows)))[
        ("unseen_category", "c")
    ]
    assert finding.rows.tolist() == [4] and finding.values == ["crypto"]
    assert finding.observed == "unseen 'crypto'"


def test_unseen_category_is_skipped_when_the_reference_set_was_capped() -> None:
    frame = reference(np.random.default_rng(1))
    capped = learn_profile(frame, model=MODEL, numeric=["x"], categorical=["c"], max_categories=2)
    assert capped.features["c"].other_rate > 0  # type: ignore[union-attr]
    rows = clean_rows(50)
    rows[4]["c"] = "crypto"
    assert FeatureChecks({MODEL: capped}, ChecksConfig()).findings(model(), batch(rows)) == []


def test_type_mismatch(profile: BaselineProfile) -> None:
    rows = clean_rows(50)
    rows[5]["x"], rows[6]["c"], rows[7]["c"] = "12.5", 3, None
    checks = FeatureChecks({MODEL: profile}, ChecksConfig())
    findings, hashes, _ = run(checks, batch(rows))
    f = found(findings)
    assert f[("type_mismatch", "x")].rows.tolist() == [5]
    assert f[("type_mismatch", "x")].values == ["12.5"]
    assert (f[("type_mismatch", "x")].observed, f[("type_mismatch", "x")].expected) == ("str", "number")
    assert f[("type_mismatch", "c")].rows.tolist() == [6]
    assert set(f) == {("type_mismatch", "x"), ("type_mismatch", "c")}
    fields = hashes[KEYS.window(T0)]
    # A mismatched value is neither a null nor a value; a real null is a null.
    assert (fields.get("null|x", 0), fields["nv|x"]) == (0, 49)
    assert (fields["null|c"], fields["nv|c"]) == (1, 48)
    off = ChecksConfig.from_dict({"type_mismatch": {"enabled": False}})
    assert FeatureChecks({MODEL: profile}, off).findings(model(), batch(rows)) == []


def test_failed_rows_and_decoder_issues_are_left_out(profile: BaselineProfile) -> None:
    rows = clean_rows(20)
    rows[0] = {}
    rows[1]["x"] = None  # the decoder replaced a wrong-typed value
    issue = FieldIssue("type_mismatch", "x", "string", "double", "abc")
    checks = FeatureChecks({MODEL: profile}, ChecksConfig())
    findings, hashes, _ = run(checks, batch(rows, failed=[0], issues={1: [issue]}))
    assert findings == []
    fields = hashes[KEYS.window(T0)]
    assert fields["n"] == 19 and fields["dl"] == 1
    assert fields.get("null|x", 0) == 0 and fields["nv|x"] == 18
    assert fields["nv|c"] == 19


def test_model_without_profile_is_not_checked() -> None:
    checks = FeatureChecks({}, ChecksConfig())
    rows = clean_rows(10)
    rows[0]["x"] = math.nan
    findings, hashes, sets = run(checks, batch(rows))
    assert findings == [] and sets == {}
    assert set(hashes[KEYS.window(T0)]) == {"n"}


# -------------------------------------------------------------------------- counters


def test_counters_per_window(profile: BaselineProfile) -> None:
    rows = clean_rows(1000)
    for r in rows[:10]:
        r["x"] = None
    for r in rows[500:530]:  # a new default: 3 % of the batch
        r["k"] = -1.0
    rows[600]["k"] = 123.0  # once: not a candidate
    times = [T0] * 500 + [T0 + WINDOW_MS] * 500
    checks = FeatureChecks({MODEL: profile}, ChecksConfig())
    _, hashes, sets = run(checks, batch(rows, times=times))
    first, second = hashes[KEYS.window(T0)], hashes[KEYS.window(T0 + WINDOW_MS)]
    assert (first["null|x"], first["nv|x"], first["nv|k"]) == (10, 490, 500)
    assert "null|x" not in second and second["nv|x"] == 500
    assert sum(v for k, v in first.items() if k.startswith("top|k|")) == 500
    assert second["top|k|-1.0"] == 30 and "top|k|-1.0" not in first
    assert not any(k.startswith("top|k|123") for k in second)
    assert not any(k.startswith("top|x|") for k in first)  # continuous: no repeated value
    assert first["hll|card|c"] == f"{KEYS.window(T0)}:card:c"
    assert sets[first["hll|card|c"]] == {"a", "b", "c"}


def test_new_value_is_spotted_across_small_batches(profile: BaselineProfile) -> None:
    """At low traffic a batch is too small to show a 5 % value; the recent values do."""
    rows = clean_rows(1000)
    for r in rows[::20]:
        r["k"] = -1.0
    checks = FeatureChecks({MODEL: profile}, ChecksConfig())
    counted = 0
    for first in range(0, 1000, 20):
        _, hashes, _ = run(checks, batch(rows[first : first + 20]))
        counted += hashes[KEYS.window(T0)].get("top|k|-1.0", 0)
    assert 35 <= counted <= 50  # counted from the first decision (after 250 rows) on


def test_counters_follow_enabled_checks(profile: BaselineProfile) -> None:
    config = ChecksConfig.from_dict(
        {"null_rate": {"enabled": False}, "sentinel_spike": {"enabled": False}, "cardinality": {"enabled": False}}
    )
    _, hashes, sets = run(FeatureChecks({MODEL: profile}, config), batch(clean_rows(100)))
    assert set(hashes[KEYS.window(T0)]) == {"n"} and sets == {}


# ---------------------------------------------------------------- finding severities


def _finding_alert_severity(config: ChecksConfig, profile: BaselineProfile) -> Severity:
    rows = clean_rows(100)
    rows[0]["x"] = 1e9
    _, hashes, _ = run(FeatureChecks({MODEL: profile}, config), batch(rows))
    fields = {k: str(v) for k, v in hashes[KEYS.window(T0)].items()}
    snapshot = WindowSnapshot(T0, T0 + WINDOW_MS, fields)
    (alert,) = finding_alerts(MODEL, snapshot, config.finding_severities())
    assert (alert.kind, alert.feature, alert.count) == ("out_of_range", "x", 1)
    return alert.severity


def test_row_check_severity_per_check(profile: BaselineProfile) -> None:
    assert _finding_alert_severity(ChecksConfig(), profile) == Severity.CRITICAL
    config = ChecksConfig.from_dict({"out_of_range": {"severity": "WARNING"}})
    assert _finding_alert_severity(config, profile) == Severity.WARNING


def test_row_check_severity_per_feature(profile: BaselineProfile) -> None:
    """A per-feature severity of a row check reaches its alert."""
    config = ChecksConfig.from_dict({"features": {"x": {"out_of_range": {"severity": "INFO"}}}})
    assert _finding_alert_severity(config, profile) == Severity.INFO


def test_a_column_of_right_types_converts_as_a_mixed_one() -> None:
    """A column whose values all have a right type (the fast path) gets the masks and numbers a mixed one gets."""
    from stream_guard.checks.row_checks import _convert

    rng = np.random.default_rng(9)
    for numeric in (True, False):
        for _ in range(20):
            n = int(rng.integers(1, 30))
            pick = [int(rng.integers(4)) for _ in range(n)]
            if numeric:
                values: list[Any] = [[None, 1, 2.5, True][k] for k in pick]
            else:
                values = [[None, "a", "b", "c"][k] for k in pick]
            typed = batch([{"x": v, "c": v} for v in values])
            typed.failed = rng.random(n) < 0.2
            mixed = batch([{"x": v, "c": v} for v in [*values, b"bytes"]])  # one wrong type: the general path
            mixed.failed = np.append(typed.failed, False)
            name = "x" if numeric else "c"
            fast, slow = _convert(typed, name, numeric, None), _convert(mixed, name, numeric, None)
            for attr in ("null", "present", "wrong_type"):
                assert getattr(fast, attr).tolist() == getattr(slow, attr)[:n].tolist()
            if numeric:
                assert np.array_equal(fast.numbers, slow.numbers[:n], equal_nan=True)
            else:
                assert fast.uniques[fast.codes].tolist() == slow.uniques[slow.codes[:n]].tolist()

"""A wide sample model: 22 features (14 categorical, 2 to 50 values), a score, delayed labels.

The loan-approval model of a fictitious lender, the test bed of throughput and of slice
alerts on realistic data. Unlike the 8-feature fraud model it is *not* equally good on
every group: its score is noisier for some segments (``channel=partner``,
``region=r40``...``r49``, ``device_os=other``), so their recall is lower from the start,
already in any reference drawn from it. That is a known bias, not a fault.

    >>> sim = WideSimulator(seed=3)
    >>> records = sim.records(4, start_ms=0)
    >>> len(WIDE_FEATURES), len(WIDE_CATEGORICAL)
    (22, 14)
    >>> sorted(sim.labels(records)[0])
    ['event_id', 'label', 'ts']
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from stream_guard.decoding import confluent_frame, encode_avro
from stream_guard.resources import schema_dir
from stream_guard.schemas import parse_schema

WIDE_SCHEMA = "wide_inference.avsc"
WIDE_LABEL_SCHEMA = "wide_label.avsc"
#: Schema id of the wide model's writer schema in the local registry it writes.
WIDE_SCHEMA_ID = 11

#: Numeric features: name -> (mean, standard deviation, rounded to int).
WIDE_NUMERIC: dict[str, tuple[float, float, bool]] = {
    "income": (52_000.0, 18_000.0, False),
    "loan_amount": (14_000.0, 6_000.0, False),
    "term_months": (36.0, 12.0, True),
    "debt_to_income": (0.32, 0.12, False),
    "credit_history_years": (11.0, 6.0, True),
    "open_accounts": (6.0, 3.0, True),
    "inquiries_6m": (1.2, 1.1, True),
    "utilisation": (0.45, 0.2, False),
}
#: Categorical features: name -> cardinality (values ``<prefix><i>`` or named).
WIDE_CARDINALITY: dict[str, int] = {
    "has_cosigner": 2,
    "home_ownership": 3,
    "channel": 4,
    "employment_type": 5,
    "device_os": 6,
    "education": 7,
    "marital_status": 4,
    "purpose": 10,
    "income_band": 12,
    "branch_tier": 15,
    "employer_sector": 20,
    "age_band": 25,
    "referral_source": 30,
    "region": 50,
}
WIDE_CATEGORICAL = list(WIDE_CARDINALITY)
WIDE_FEATURES = [*WIDE_NUMERIC, *WIDE_CATEGORICAL]
#: Slice fields of the wide model's sample configuration.
WIDE_SLICE_FIELDS = ["channel", "region", "device_os"]

#: Groups the model serves worse from day one: extra score noise (in logits) for them.
_NOISY_GROUPS = {"channel": {"partner": 1.5}, "device_os": {"other": 1.0}}
_NOISY_REGION_FROM = 40  # regions r40..r49


def category_values(feature: str) -> list[str]:
    """The values of a categorical feature, most frequent first."""
    named = {
        "has_cosigner": ["no", "yes"],
        "home_ownership": ["rent", "mortgage", "own"],
        "channel": ["web", "app", "branch", "partner"],
        "device_os": ["android", "ios", "windows", "macos", "linux", "other"],
    }
    if feature in named:
        return named[feature]
    prefix = "".join(part[0] for part in feature.split("_"))
    return [f"{prefix}{i}" for i in range(WIDE_CARDINALITY[feature])]


def _weights(k: int) -> np.ndarray:
    # Zipf-like: a few common values and a long tail, like real categorical features.
    w = 1.0 / np.arange(1, k + 1) ** 0.8
    return np.asarray(w / w.sum())


def wide_schema_json() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((schema_dir() / WIDE_SCHEMA).read_text())
    return schema


def write_wide_registry(directory: Path) -> Path:
    """Write ``<WIDE_SCHEMA_ID>.avsc`` for ``schema_registry.local_dir`` (beside other models' ids)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{WIDE_SCHEMA_ID}.avsc").write_text(json.dumps(wide_schema_json(), indent=2))
    return directory


class WideSimulator:
    """Clean events of the wide model, Confluent-framed Avro, and their labels.

    Parameters
    ----------
    seed
        Same seed, same stream.
    """

    def __init__(self, seed: int = 7) -> None:
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self._schema = parse_schema(wide_schema_json())
        self._counter = 0
        self._values = {f: np.array(category_values(f)) for f in WIDE_CATEGORICAL}

    def records(self, n: int, start_ms: int, step_ms: float = 1.0) -> list[dict[str, Any]]:
        """``n`` events with event times from ``start_ms``, ``step_ms`` apart; ``_p`` is their true risk."""
        rng = self._rng
        numeric: dict[str, np.ndarray] = {}
        for name, (mean, sd, as_int) in WIDE_NUMERIC.items():
            x = np.abs(rng.normal(mean, sd, n))
            numeric[name] = np.round(x).astype(np.int64) if as_int else np.round(x, 4)
        codes = {f: rng.choice(WIDE_CARDINALITY[f], size=n, p=_weights(WIDE_CARDINALITY[f])) for f in WIDE_CATEGORICAL}
        cats = {f: self._values[f][codes[f]] for f in WIDE_CATEGORICAL}
        # True default risk: driven by a few numbers and groups.
        logit = (
            -2.2
            + 3.0 * (numeric["debt_to_income"] - 0.32)
            + 2.0 * (numeric["utilisation"] - 0.45)
            + 0.35 * numeric["inquiries_6m"]
            - 0.04 * numeric["credit_history_years"]
            + 0.3 * (codes["employment_type"] >= 3)
        )
        noise_sd = np.full(n, 0.6)
        for feature, groups in _NOISY_GROUPS.items():
            for value, extra in groups.items():
                noise_sd += extra * (cats[feature] == value)
        noise_sd += 1.2 * (codes["region"] >= _NOISY_REGION_FROM)
        truth = 1 / (1 + np.exp(-logit))
        score = 1 / (1 + np.exp(-(logit + 2.2 + rng.normal(0, 1, n) * noise_sd)))
        null_income = rng.random(n) < 0.01
        ids = range(self._counter, self._counter + n)
        self._counter += n
        out = []
        for i, event_no in enumerate(ids):
            record: dict[str, Any] = {
                "event_id": f"wide-{self.seed}-{event_no}",
                "ts": int(start_ms + i * step_ms),
                "model_version": "w1.4",
            }
            for name, (_, _, as_int) in WIDE_NUMERIC.items():
                record[name] = int(numeric[name][i]) if as_int else float(numeric[name][i])
            if null_income[i]:
                record["income"] = None
            for name in WIDE_CATEGORICAL:
                record[name] = str(cats[name][i])
            record["score"] = float(round(score[i], 6))
            record["prediction"] = int(score[i] >= 0.5)
            record["_p"] = float(truth[i])
            out.append(record)
        return out

    def labels(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Ground truth of ``records`` (defaulted or not), drawn from their true risk."""
        p = np.array([r["_p"] for r in records])
        default = self._rng.random(len(records)) < p
        return [
            {"event_id": r["event_id"], "ts": r["ts"], "label": int(d)} for r, d in zip(records, default, strict=True)
        ]

    def encode(self, record: dict[str, Any]) -> bytes:
        """Confluent-framed Avro of ``record`` (its ``_p`` is not part of the event)."""
        return confluent_frame(WIDE_SCHEMA_ID, encode_avro(self._schema, record))

"""A simulator of the sample card-fraud model's inference events, with injectable faults.

The clean stream is drawn from fixed distributions (so a baseline learned from it is
the reference). Faults turn a share of the events bad in the ways real pipelines do.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stream_guard.decoding import confluent_frame, encode_avro
from stream_guard.errors import SimulatorFaultUnknownError
from stream_guard.resources import schema_dir
from stream_guard.schemas import parse_schema

INFERENCE_SCHEMA = "fraud_inference.avsc"
#: The features of the sample model, as its configs declare them.
SAMPLE_FEATURES = [
    "amount",
    "age",
    "account_age_days",
    "num_tx_24h",
    "merchant_category",
    "device_type",
    "country",
    "is_new_user",
]

DEVICE_TYPES = (("android", 0.45), ("ios", 0.40), ("web", 0.15))
COUNTRIES = (("US", 0.5), ("GB", 0.15), ("DE", 0.1), ("FR", 0.1), ("BR", 0.08), ("IN", 0.07))
MERCHANTS = (
    ("grocery", 0.3),
    ("restaurants", 0.2),
    ("electronics", 0.15),
    ("fashion", 0.15),
    ("travel", 0.1),
    ("gaming", 0.1),
)

#: Byte-level faults: the payload cannot be decoded and must be dead-lettered.
PAYLOAD_FAULTS = ("garbage", "truncated", "wrong_magic", "unknown_schema")
#: Schema-level faults: the record decodes, but not as the model expects.
SCHEMA_FAULTS = ("amount_as_string", "dropped_field")
#: Value faults: a valid record whose values are wrong (what the baseline checks catch).
VALUE_FAULTS = (
    "amount_in_yen",  # a unit change: dollars to yen
    "age_in_months",  # years to months
    "amount_nan",
    "amount_inf",
    "age_null",  # a null-rate spike
    "age_sentinel",  # a default that changed from null to -1
    "unseen_merchant",  # a category never seen in training
    "merchant_explosion",  # ids leaking into a categorical
)
#: Distribution shifts: each hit event is moved; at a rate of 1.0 the whole stream drifts.
#: A hit event is moved; rates of several faults add up to at most 1 (one fault per event).
DRIFT_FAULTS = ("amount_drift", "device_shift", "score_shift")
FAULTS = PAYLOAD_FAULTS + SCHEMA_FAULTS + VALUE_FAULTS + DRIFT_FAULTS

#: Schema ids of the local registry the simulator writes (Confluent encoding).
SCHEMA_ID_EXPECTED = 1
SCHEMA_ID_AMOUNT_STRING = 2
SCHEMA_ID_DROPPED = 3
SCHEMA_ID_UNKNOWN = 999


def inference_schema_json() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((schema_dir() / INFERENCE_SCHEMA).read_text())
    return schema


def writer_variants() -> dict[int, dict[str, Any]]:
    """The expected schema and the two broken producers' writer schemas, by schema id."""
    base = inference_schema_json()
    retyped = copy.deepcopy(base)
    for f in retyped["fields"]:
        if f["name"] == "amount":
            f["type"] = "string"
    dropped = copy.deepcopy(base)
    dropped["fields"] = [f for f in dropped["fields"] if f["name"] != "num_tx_24h"]
    return {SCHEMA_ID_EXPECTED: base, SCHEMA_ID_AMOUNT_STRING: retyped, SCHEMA_ID_DROPPED: dropped}


def write_local_registry(directory: Path) -> Path:
    """Write ``<id>.avsc`` files for ``schema_registry.local_dir``."""
    directory.mkdir(parents=True, exist_ok=True)
    for schema_id, schema in writer_variants().items():
        (directory / f"{schema_id}.avsc").write_text(json.dumps(schema, indent=2))
    return directory


def _choice(rng: np.random.Generator, options: tuple[tuple[str, float], ...], n: int) -> np.ndarray:
    names = np.array([o[0] for o in options])
    return names[rng.choice(len(options), size=n, p=[o[1] for o in options])]


@dataclass
class Simulator:
    """Generates events; ``faults`` maps a fault name to the share of events it hits."""

    encoding: str = "confluent"
    seed: int = 7
    faults: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = set(self.faults) - set(FAULTS)
        if unknown:
            raise SimulatorFaultUnknownError(f"Simulator: unknown faults {sorted(unknown)}; known: {', '.join(FAULTS)}")
        self._rng = np.random.default_rng(self.seed)
        self._schemas = {i: parse_schema(s) for i, s in writer_variants().items()}
        self._counter = 0

    def records(self, n: int, start_ms: int, step_ms: float = 1.0) -> list[dict[str, Any]]:
        """``n`` clean events with event times from ``start_ms``, ``step_ms`` apart."""
        rng = self._rng
        new_user = rng.random(n) < 0.1
        amount = np.round(rng.lognormal(3.5, 1.0, n), 2)
        age = np.clip(rng.normal(40, 12, n), 18, 90).astype(int)
        age_null = rng.random(n) < 0.02
        account_age = np.where(new_user, rng.integers(0, 30, n), rng.exponential(400, n).astype(int) + 30)
        tx = rng.poisson(2, n)
        device = _choice(rng, DEVICE_TYPES, n)
        country = _choice(rng, COUNTRIES, n)
        merchant = _choice(rng, MERCHANTS, n)
        # The score depends on no slice field: a calibrated model that is equally good on
        # every slice, until a fault says otherwise.
        logit = -3.5 + 0.5 * np.log1p(amount) + 0.2 * tx + rng.normal(0, 1.3, n)
        score = 1 / (1 + np.exp(-logit))
        ids = range(self._counter, self._counter + n)
        self._counter += n
        out = []
        for i, event_no in enumerate(ids):
            out.append(
                {
                    "event_id": f"evt-{self.seed}-{event_no}",
                    "ts": int(start_ms + i * step_ms),
                    "model_version": "v3.2",
                    "user_id": f"u{int(rng.integers(0, 50_000))}",
                    "amount": float(amount[i]),
                    "age": None if age_null[i] else int(age[i]),
                    "account_age_days": int(account_age[i]),
                    "num_tx_24h": int(tx[i]),
                    "merchant_category": str(merchant[i]),
                    "device_type": str(device[i]),
                    "country": str(country[i]),
                    "is_new_user": bool(new_user[i]),
                    "score": float(round(score[i], 6)),
                    "prediction": int(score[i] >= 0.5),
                }
            )
        return out

    def fault_for(self) -> str | None:
        """Pick the fault of the next event (``None`` for a clean one)."""
        draw = self._rng.random()
        for fault, rate in self.faults.items():
            if draw < rate:
                return fault
            draw -= rate
        return None

    def corrupt(self, record: dict[str, Any], fault: str | None) -> dict[str, Any]:
        """Apply a value or drift fault to a record (other faults act on the bytes)."""
        if fault is None or fault not in VALUE_FAULTS + DRIFT_FAULTS:
            return record
        record = dict(record)
        if fault == "amount_in_yen":
            record["amount"] = round(record["amount"] * 150, 0)
        elif fault == "age_in_months" and record["age"] is not None:
            record["age"] = record["age"] * 12
        elif fault == "amount_nan":
            record["amount"] = float("nan")
        elif fault == "amount_inf":
            record["amount"] = float("inf")
        elif fault == "age_null":
            record["age"] = None
        elif fault == "age_sentinel":
            record["age"] = -1
        elif fault == "unseen_merchant":
            record["merchant_category"] = "crypto"
        elif fault == "merchant_explosion":
            record["merchant_category"] = f"m-{int(self._rng.integers(0, 1 << 40)):010x}"
        elif fault == "amount_drift":
            record["amount"] = round(record["amount"] * 2, 2)
        elif fault == "device_shift":
            record["device_type"] = "android"
        elif fault == "score_shift":
            record["score"] = round(min(1.0, record["score"] + 0.2), 6)
            record["prediction"] = int(record["score"] >= 0.5)
        return record

    def labels(self, records: list[dict[str, Any]], *, android_misses: float = 0.0) -> list[dict[str, Any]]:
        """Ground truth for ``records``: fraud with probability ``score`` (a calibrated model).

        ``android_misses`` adds that probability of fraud to android events the model
        predicted negative: the model's recall sinks for ``device_type=android`` only.
        """
        score = np.array([r["score"] for r in records])
        android_negative = np.array([r["device_type"] == "android" and r["prediction"] == 0 for r in records])
        p = np.clip(score + android_misses * android_negative, 0, 1)
        fraud = self._rng.random(len(records)) < p
        return [
            {"event_id": r["event_id"], "ts": r["ts"], "label": int(f)} for r, f in zip(records, fraud, strict=True)
        ]

    def encode(self, record: Mapping[str, Any], fault: str | None = None) -> bytes:
        """Serialize ``record`` in the simulator's encoding, broken as ``fault`` says."""
        record = dict(record)
        schema_id = SCHEMA_ID_EXPECTED
        if fault == "amount_as_string":
            record["amount"] = str(record["amount"])
            schema_id = SCHEMA_ID_AMOUNT_STRING
        elif fault == "dropped_field":
            del record["num_tx_24h"]
            schema_id = SCHEMA_ID_DROPPED
        if self.encoding == "json":
            payload = json.dumps(record).encode()
        else:
            body = encode_avro(self._schemas[schema_id], record)
            payload = confluent_frame(schema_id, body) if self.encoding == "confluent" else body
        if fault == "garbage":
            return bytes(self._rng.integers(0, 256, 40, dtype=np.uint8))
        if fault == "truncated":
            return payload[: len(payload) // 2]
        if fault == "wrong_magic":
            return b"\x07" + payload[1:] if self.encoding == "confluent" else b"\x07garbage" + payload
        if fault == "unknown_schema":
            if self.encoding == "confluent":
                return confluent_frame(SCHEMA_ID_UNKNOWN, payload[5:])
            return payload[:-3]
        return payload

    def stream(self, n: int, start_ms: int, step_ms: float = 1.0) -> Iterator[tuple[dict[str, Any], bytes, str | None]]:
        """``n`` events as (record, payload, fault) triples."""
        for record in self.records(n, start_ms, step_ms):
            fault = self.fault_for()
            record = self.corrupt(record, fault)
            yield record, self.encode(record, fault), fault

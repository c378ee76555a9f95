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
from stream_guard.resources import schema_dir
from stream_guard.schemas import parse_schema

INFERENCE_SCHEMA = "fraud_inference.avsc"

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
FAULTS = PAYLOAD_FAULTS + SCHEMA_FAULTS

#: Schema ids of the local registry the simulator writes (Confluent encoding).
SCHEMA_ID_EXPECTED = 1
SCHEMA_ID_AMOUNT_STRING = 2
SCHEMA_ID_DROPPED = 3
SCHEMA_ID_UNKNOWN = 999


def inference_schema_json() -> dict[str, Any]:
    return json.loads((schema_dir() / INFERENCE_SCHEMA).read_text())


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
            raise ValueError(f"unknown faults {sorted(unknown)}; known: {', '.join(FAULTS)}")
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
        logit = -4.0 + 0.6 * np.log1p(amount) / 2 + 1.2 * new_user + 0.15 * tx + rng.normal(0, 1.0, n)
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
            yield record, self.encode(record, fault), fault

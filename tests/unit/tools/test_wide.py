"""Unit tests for stream_guard.tools.wide: the wide sample model and its known biases."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stream_guard.decoding import ConfluentDecoder, LocalWriterSchemas
from stream_guard.schemas import load_schema_file, record_fields
from stream_guard.tools.wide import (
    WIDE_CARDINALITY,
    WIDE_CATEGORICAL,
    WIDE_FEATURES,
    WIDE_SCHEMA_ID,
    WideSimulator,
    category_values,
    wide_schema_json,
    write_wide_registry,
)


def test_wide_model_shape() -> None:
    """At least 20 features, at least 12 categorical with 2 to 50 values, all of them schema fields."""
    fields = record_fields(wide_schema_json())
    assert len(WIDE_FEATURES) >= 20 and len(WIDE_CATEGORICAL) >= 12
    assert min(WIDE_CARDINALITY.values()) == 2 and max(WIDE_CARDINALITY.values()) == 50
    assert set(WIDE_FEATURES) | {"event_id", "ts", "score", "prediction"} <= set(fields)
    assert all(len(category_values(f)) == k for f, k in WIDE_CARDINALITY.items())


def test_same_seed_same_stream() -> None:
    """Two simulators with one seed produce the same records and labels."""
    a, b = WideSimulator(seed=5), WideSimulator(seed=5)
    ra, rb = a.records(200, 0), b.records(200, 0)
    assert ra == rb and a.labels(ra) == b.labels(rb)


def test_payloads_decode_with_the_written_registry(tmp_path: Path) -> None:
    """The Confluent-framed payloads decode against the local registry the module writes."""
    write_wide_registry(tmp_path)
    decoder = ConfluentDecoder(wide_schema_json(), LocalWriterSchemas(str(tmp_path), load_schema_file))
    sim = WideSimulator(seed=2)
    record = sim.records(1, 1_000)[0]
    decoded = decoder.decode(sim.encode(record))
    assert decoded.writer_schema_id == WIDE_SCHEMA_ID and not decoded.issues
    assert decoded.values == {k: v for k, v in record.items() if k != "_p"}


def test_partner_channel_has_lower_recall_from_the_start() -> None:
    """A known bias is built in: recall of channel=partner is below that of channel=web."""
    sim = WideSimulator(seed=1)
    records = sim.records(40_000, 0)
    labels = np.array([x["label"] for x in sim.labels(records)])
    predicted = np.array([r["prediction"] for r in records])
    channel = np.array([r["channel"] for r in records])
    recall = {c: predicted[(channel == c) & (labels == 1)].mean() for c in ("web", "partner")}
    assert recall["partner"] < recall["web"] - 0.05

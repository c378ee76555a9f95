"""Property-based: no payload crashes decoding and validation, and every record is accounted for.

Thousands of generated payloads (random bytes, truncated and bit-flipped Avro, wrong magic
bytes, unknown schema ids, deep or huge JSON, NaN and infinities, extreme numbers, invalid
UTF-8 and lone surrogates) go through the worker's own stages, in the Avro (Confluent
framing) and the JSON encodings: each batch decodes, or dead-letters record by record, and
its window and metric updates apply to the state. ``decoded + dead-lettered == consumed``.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from messages import Message

from stream_guard.assembly import build_stages
from stream_guard.learning import learn_from_frame
from stream_guard.metrics.slices import SliceRecorder
from stream_guard.model import build_models
from stream_guard.pipeline import Pipeline
from stream_guard.resources import schema_dir
from stream_guard.settings import Config, load_config
from stream_guard.state.keys import ModelKeys
from stream_guard.state.memory import MemoryState
from stream_guard.tools.evaluate.events import simulated_events
from stream_guard.tools.simulator import SAMPLE_FEATURES, SCHEMA_ID_EXPECTED, Simulator, write_local_registry

START_MS = 1_700_000_000_000
KEYS = ModelKeys("sg", "fraud")
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class Guarded:
    """One model's decoding, checks, drift and slice metrics, as the worker builds them."""

    def __init__(self, directory: Path, encoding: str) -> None:
        registry = write_local_registry(directory / "registry")
        text = f"""
[schema_registry]
local_dir = "{registry}"

[[models]]
name = "fraud"
topics = ["events"]
schema = "{schema_dir() / "fraud_inference.avsc"}"
encoding = "{encoding}"
event_id_field = "event_id"
timestamp_field = "ts"
features = {list(SAMPLE_FEATURES)!r}
prediction_field = "prediction"
score_field = "score"
slice_fields = ["device_type", "country"]
"""
        path = directory / "config.toml"
        path.write_text(text.replace("'", '"'))
        self.config: Config = load_config(path, environ={})
        (self.model,) = build_models(self.config)
        events = simulated_events(4_000, seed=3, events_per_second=100)
        profile = learn_from_frame(self.model, events.frame, "simulated")
        stages = build_stages(self.config, {"fraud": profile})
        stages.slice_recorders["fraud"] = SliceRecorder.for_model(
            self.model, self.model.config.metrics, profile, prediction_ttl_s=3_600
        )
        self.pipeline = Pipeline(self.config, stages)
        self.state = MemoryState(KEYS, window_ms=60_000, lateness_ms=10_000)
        self.simulator = Simulator(encoding=encoding, seed=5)
        self.records = self.simulator.records(50, START_MS, step_ms=100)
        self.offset = 0

    def run(self, payloads: list[bytes]) -> None:
        """Stage one batch and apply it; assert every record is decoded or dead-lettered, with a reason."""
        messages = [Message(p, self.offset + i) for i, p in enumerate(payloads)]
        self.offset += len(messages)
        staged = self.pipeline.stage(self.model, messages, KEYS)
        assert staged.decoded + len(staged.dead) == len(messages)
        assert len({d.row for d in staged.dead}) == len(staged.dead)
        for letter in staged.dead:
            assert str(letter.error), letter
        self.state.apply(staged.updates, now_ms=START_MS)


@pytest.fixture(scope="module")
def avro(tmp_path_factory: pytest.TempPathFactory) -> Guarded:
    return Guarded(tmp_path_factory.mktemp("avro"), "confluent")


@pytest.fixture(scope="module")
def plain_json(tmp_path_factory: pytest.TempPathFactory) -> Guarded:
    return Guarded(tmp_path_factory.mktemp("json"), "json")


# -- payload strategies -------------------------------------------------------------------

EXTREME_NUMBERS = st.sampled_from(
    [0, -1, 2**31, 2**63 - 1, 2**63, -(2**63) - 1, 10**20, 10**400, 1e308, -1e308, 5e-324, math.nan, math.inf]
)
ODD_STRINGS = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["\ud800", "\udfff", "123", "", " " * 1_000, "\x00", "null", "NaN", "x" * 70_000]),
)
JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), EXTREME_NUMBERS, st.floats(), ODD_STRINGS),
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(ODD_STRINGS, children, max_size=4)),
    max_leaves=12,
)


def _json_bytes(value: object) -> bytes:
    """JSON as a producer might write it: NaN/Infinity literals allowed, surrogates escaped."""
    text = json.dumps(value, allow_nan=True, ensure_ascii=True)
    return text.encode()


@st.composite
def mutated_records(draw: st.DrawFn, guarded: Guarded) -> bytes:
    """A real record of the model with one field replaced by a hostile value, or a field removed."""
    record = dict(draw(st.sampled_from(guarded.records)))
    name = draw(st.sampled_from(sorted(record)))
    if draw(st.booleans()):
        record[name] = draw(JSON_VALUES)
    else:
        del record[name]
    return _json_bytes(record)


@st.composite
def broken_avro(draw: st.DrawFn, guarded: Guarded) -> bytes:
    """A valid framed record truncated, bit-flipped, with a wrong magic byte or an unknown schema id."""
    payload = bytearray(guarded.simulator.encode(draw(st.sampled_from(guarded.records))))
    how = draw(st.sampled_from(["truncate", "flip", "magic", "schema_id", "append", "valid"]))
    if how == "truncate":
        return bytes(payload[: draw(st.integers(0, len(payload) - 1))])
    if how == "flip":
        at = draw(st.integers(0, len(payload) - 1))
        payload[at] ^= 1 << draw(st.integers(0, 7))
    elif how == "magic":
        payload[0] = draw(st.integers(1, 255))
    elif how == "schema_id":
        unknown = draw(st.integers(0, 2**31 - 1).filter(lambda i: i != SCHEMA_ID_EXPECTED))
        payload[1:5] = struct.pack(">I", unknown)
    elif how == "append":
        payload += draw(st.binary(min_size=1, max_size=64))
    return bytes(payload)


NESTED = st.integers(1, 5_000).map(lambda depth: b'{"event_id": ' + b"[" * depth + b"]" * depth + b"}")
HUGE_INTEGER = st.integers(4_000, 6_000).map(lambda digits: b'{"amount": 1' + b"0" * digits + b"}")
INVALID_UTF8 = st.binary(min_size=1, max_size=64).map(lambda b: b'{"device_type": "' + b + b'\xff\xfe"}')
RANDOM_BYTES = st.binary(max_size=256)


# -- properties -----------------------------------------------------------------------------


@SETTINGS
@given(data=st.data())
def test_no_json_payload_crashes_a_batch(plain_json: Guarded, data: st.DataObject) -> None:
    hostile = st.one_of(
        mutated_records(plain_json), JSON_VALUES.map(_json_bytes), NESTED, HUGE_INTEGER, INVALID_UTF8, RANDOM_BYTES
    )
    batch = data.draw(st.lists(hostile, min_size=1, max_size=8))
    clean = [plain_json.simulator.encode(r) for r in plain_json.records[:3]]
    plain_json.run([*clean, *batch])


@SETTINGS
@given(data=st.data())
def test_no_avro_payload_crashes_a_batch(avro: Guarded, data: st.DataObject) -> None:
    hostile = st.one_of(broken_avro(avro), RANDOM_BYTES, NESTED)
    batch = data.draw(st.lists(hostile, min_size=1, max_size=8))
    clean = [avro.simulator.encode(r) for r in avro.records[:3]]
    avro.run([*clean, *batch])

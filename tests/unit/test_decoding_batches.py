"""decode_payloads: a batch decodes to what decoding its payloads one by one gives, errors included."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from stream_guard.decoding import (
    VALUE_SCHEMA_ID_HEADER,
    ConfluentDecoder,
    Decoded,
    Decoder,
    Headers,
    JsonDecoder,
    LocalWriterSchemas,
    PlainAvroDecoder,
    confluent_frame,
    decode_payload,
    decode_payloads,
    encode_avro,
)
from stream_guard.errors import DecodeError, RegistryUnavailableError
from stream_guard.resources import schema_dir
from stream_guard.schemas import load_schema_file
from stream_guard.tools.simulator import FAULTS, SCHEMA_ID_EXPECTED, Simulator, writer_variants

START_MS = 1_700_000_000_000
MAX_BYTES = 400
SCHEMA_ID_EVOLVED = 5


def _reader() -> dict[str, Any]:
    return load_schema_file(schema_dir() / "fraud_inference.avsc")


def _evolved_writer() -> dict[str, Any]:
    schema = copy.deepcopy(writer_variants()[SCHEMA_ID_EXPECTED])
    schema["fields"].append({"name": "channel", "type": ["null", "string"], "default": None})
    return schema


@pytest.fixture
def registry_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "registry"
    directory.mkdir()
    for schema_id, schema in {**writer_variants(), SCHEMA_ID_EVOLVED: _evolved_writer()}.items():
        (directory / f"{schema_id}.avsc").write_text(json.dumps(schema))
    return directory


def _outcome(result: Decoded | DecodeError) -> Any:
    """What a caller can see of one result: the record (its repr: NaN values compare), or the error's class and reason."""
    if isinstance(result, DecodeError):
        return (type(result), str(result))
    return repr(result)


def _one_by_one(
    decoder: Decoder, payloads: list[bytes | None], headers: list[Headers | None] | None = None
) -> list[Any]:
    out = []
    for i, payload in enumerate(payloads):
        try:
            out.append(_outcome(decode_payload(decoder, payload, MAX_BYTES, headers[i] if headers else None)))
        except DecodeError as error:
            out.append(_outcome(error))
    return out


def _confluent_mix() -> list[bytes | None]:
    """Clean, faulty (every simulator fault), evolved, oversized, trailing and empty payloads, interleaved."""
    rates = {fault: 1 / (len(FAULTS) + 1) for fault in FAULTS}
    sim = Simulator(encoding="confluent", seed=41, faults=rates)
    payloads: list[bytes | None] = [payload for _rec, payload, _fault in sim.stream(600, START_MS)]
    clean = Simulator(encoding="confluent", seed=42)
    records = clean.records(40, START_MS)
    evolved = _evolved_writer()
    for i, rec in enumerate(records):
        good = clean.encode(rec)
        extra: list[bytes | None] = [
            confluent_frame(SCHEMA_ID_EVOLVED, encode_avro(evolved, {**rec, "channel": "web"})),
            good + b"\x00\x01",  # trailing bytes
            good + b"x" * MAX_BYTES,  # oversized
            good[: len(good) // 2],  # truncated
            None if i % 2 else b"",  # tombstones
            good[:3],  # shorter than the frame
        ]
        at = 15 * i
        payloads[at:at] = extra
    return payloads


def test_confluent_batch_agrees_with_record_by_record(registry_dir: Path) -> None:
    """Good, truncated, trailing, oversized, unknown-schema, retyped, dropped-field, evolved and empty records."""
    payloads = _confluent_mix()

    def decoder() -> ConfluentDecoder:
        return ConfluentDecoder(_reader(), LocalWriterSchemas(str(registry_dir), load_schema_file))

    batched = [_outcome(r) for r in decode_payloads(decoder(), payloads, MAX_BYTES)]
    expected = _one_by_one(decoder(), payloads)
    assert batched == expected
    kinds = {o[0].__name__ for o in expected if isinstance(o, tuple)}
    assert {"RecordTooLargeError", "UnknownSchemaIdError", "UndecodablePayloadError", "WireFormatError"} <= kinds
    assert any(isinstance(o, str) and "type_mismatch" in o for o in expected)  # an unresolvable writer's fallback


def test_confluent_batch_reads_headers_as_one_record_does(registry_dir: Path) -> None:
    """A record with headers takes the client's path: an unrelated header reads the prefix, a bad id header fails."""
    payloads = _confluent_mix()[:120]
    headers: list[Headers | None] = [
        [("trace", b"1")] if i % 3 == 0 else [(VALUE_SCHEMA_ID_HEADER, b"\x07")] if i % 3 == 1 else None
        for i in range(len(payloads))
    ]

    def decoder() -> ConfluentDecoder:
        return ConfluentDecoder(_reader(), LocalWriterSchemas(str(registry_dir), load_schema_file))

    batched = [_outcome(r) for r in decode_payloads(decoder(), payloads, MAX_BYTES, headers)]
    assert batched == _one_by_one(decoder(), payloads, headers)


def test_plain_avro_batch_agrees_with_record_by_record() -> None:
    """Plain Avro: good, truncated, trailing, oversized and empty payloads."""
    reader = _reader()
    sim = Simulator(encoding="avro", seed=43)
    payloads: list[bytes | None] = []
    for rec in sim.records(50, START_MS):
        good = encode_avro(reader, rec)
        payloads += [good, good[:-3], good + b"\x02", good * 8, None, b""]
    batched = [_outcome(r) for r in decode_payloads(PlainAvroDecoder(reader, reader), payloads, MAX_BYTES)]
    assert batched == _one_by_one(PlainAvroDecoder(reader, reader), payloads)


def test_json_batch_agrees_with_record_by_record() -> None:
    """A decoder without a batch path decodes each payload as decode_payload does."""
    reader = _reader()
    payloads: list[bytes | None] = [
        b'{"amount": 1.5}',
        b"[1]",
        b"{",
        None,
        b'{"amount": "x"}',
        b"{}" + b" " * MAX_BYTES,
    ]
    batched = [_outcome(r) for r in decode_payloads(JsonDecoder(reader), payloads, MAX_BYTES)]
    assert batched == _one_by_one(JsonDecoder(reader), payloads)


class _RegistryDown:
    def get(self, schema_id: int) -> dict[str, Any]:
        raise RegistryUnavailableError("registry down")

    def get_by_guid(self, guid: str) -> dict[str, Any]:
        raise RegistryUnavailableError("registry down")


def test_confluent_batch_raises_a_registry_outage() -> None:
    """A registry outage is not a record's fault: it fails the batch, as with one record."""
    sim = Simulator(encoding="confluent", seed=44)
    payload = sim.encode(sim.records(1, START_MS)[0])
    with pytest.raises(RegistryUnavailableError):
        decode_payloads(ConfluentDecoder(_reader(), _RegistryDown()), [payload], MAX_BYTES)

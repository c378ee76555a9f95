"""Everything a worker knows about one monitored model, built and validated at start-up."""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stream_guard.batch import EventBatch, event_time_of, to_epoch_ms
from stream_guard.decoded import ColumnarRead
from stream_guard.decoding import (
    DEFAULT_MAX_RECORD_BYTES,
    ConfluentDecoder,
    Decoded,
    Decoder,
    JsonDecoder,
    LocalWriterSchemas,
    PlainAvroDecoder,
    RegistryWriterSchemas,
    decode_payloads,
    read_columns,
    registered_schema,
)
from stream_guard.errors import ConfigError, DecodeError, ProfileFormatError, SchemaLoadError, StreamGuardError
from stream_guard.profile import BaselineProfile
from stream_guard.schemas import FieldType, load_schema_file, parse_schema, record_fields
from stream_guard.settings import Config, ModelConfig


@dataclass
class DeadLetter:
    row: int
    message: Any
    error: DecodeError


@dataclass
class ModelRuntime:
    config: ModelConfig
    reader_schema: dict[str, Any]
    fields: dict[str, FieldType]
    decoder: Decoder
    numeric_features: list[str] = field(default_factory=list)
    categorical_features: list[str] = field(default_factory=list)
    profile: BaselineProfile | None = None
    profile_path: Path | None = None
    #: Larger records are dead-lettered without being decoded.
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
    _profile_mtime: float = 0.0

    @property
    def name(self) -> str:
        return self.config.name

    def load_profile(self) -> bool:
        """(Re)load the baseline profile if its file changed; True when a new one was loaded.

        A missing file leaves the model without a profile (schema checks only); a file
        that is not a valid profile raises ProfileFormatError.
        """
        if self.profile_path is None or not self.profile_path.is_file():
            return False
        mtime = self.profile_path.stat().st_mtime
        if mtime == self._profile_mtime:
            return False
        profile = BaselineProfile.load(self.profile_path)
        if profile.model != self.name:
            raise ProfileFormatError(f"{self.profile_path} is a profile of model {profile.model!r}, not {self.name!r}")
        self.profile, self._profile_mtime = profile, mtime
        return True

    def decode(self, messages: Sequence[Any]) -> tuple[EventBatch, list[DeadLetter]]:
        """Decode ``messages``; the batch has one row per message, dead letters included.

        Rows of dead-lettered messages carry empty values and are marked in
        ``batch.failed`` so that they count in their window but not in any feature check.
        """
        n = len(messages)
        # Only Confluent-serialized values may name their schema in a header.
        headers = [m.headers() for m in messages] if isinstance(self.decoder, ConfluentDecoder) else None
        payloads = [m.value() for m in messages]
        kafka_ms = [m.timestamp()[1] for m in messages]
        read = read_columns(self.decoder, payloads, self.max_record_bytes, headers)
        if read is not None:
            batch = self._batch_of_columns(messages, read, kafka_ms)
            if batch is not None:
                return batch, []
        decoded: list[Decoded] = []
        dead: list[DeadLetter] = []
        failed = np.zeros(n, dtype=bool)
        event_time: list[int] = []
        event_ids: list[str | None] = []
        ts_field, id_field = self.config.timestamp_field, self.config.event_id_field
        results = decode_payloads(self.decoder, payloads, self.max_record_bytes, headers)
        for i, record in enumerate(results):
            if not isinstance(record, DecodeError):
                try:
                    stamp = to_epoch_ms(record.values.get(ts_field)) if ts_field else None
                    event_time.append(event_time_of(stamp, kafka_ms[i]))
                except DecodeError as error:
                    record = error
            if isinstance(record, DecodeError):
                dead.append(DeadLetter(i, messages[i], record))
                failed[i] = True
                record = Decoded({}, [])
                event_time.append(kafka_ms[i])
            decoded.append(record)
            event_id = record.values.get(id_field) if id_field else None
            event_ids.append(None if event_id is None else str(event_id))
        batch = EventBatch(
            model=self.name,
            decoded=decoded,
            topics=[m.topic() for m in messages],
            partitions=np.fromiter((m.partition() for m in messages), dtype=np.int64, count=n),
            offsets=np.fromiter((m.offset() for m in messages), dtype=np.int64, count=n),
            event_time_ms=np.array(event_time, dtype=np.int64).reshape(n),
            event_ids=event_ids,
            failed=failed,
        )
        return batch, dead

    def _batch_of_columns(self, messages: Sequence[Any], read: ColumnarRead, kafka_ms: list[int]) -> EventBatch | None:
        """The batch of records read by columns; None where a row's event time is out of range (the
        record-by-record path dead-letters it)."""
        n, columns = len(messages), read.columns
        ts_field, id_field = self.config.timestamp_field, self.config.event_id_field
        fallback = np.array(kafka_ms, dtype=np.int64).reshape(n)
        if not ts_field or ts_field not in columns:
            event_time = fallback
        elif (ms := columns.epoch_ms(ts_field)) is not None:
            event_time = np.where(columns.null_mask(ts_field), fallback, ms)
        else:
            try:
                stamps = [to_epoch_ms(v) for v in columns.values(ts_field)]
                event_time = np.array([event_time_of(t, k) for t, k in zip(stamps, kafka_ms, strict=True)], np.int64)
            except DecodeError:
                return None
        if not id_field or id_field not in columns:
            event_ids: list[str | None] = [None] * n
        elif columns.value_types(id_field) == {str}:
            event_ids = list(columns.values(id_field))
        else:
            event_ids = [None if v is None else str(v) for v in columns.values(id_field)]
        return EventBatch(
            model=self.name,
            decoded=read.records,
            topics=[m.topic() for m in messages],
            partitions=np.fromiter((m.partition() for m in messages), dtype=np.int64, count=n),
            offsets=np.fromiter((m.offset() for m in messages), dtype=np.int64, count=n),
            event_time_ms=event_time.reshape(n),
            event_ids=event_ids,
            failed=np.zeros(n, dtype=bool),
            columns=columns,
        )


def build_models(config: Config, registry_client: Any = None) -> list[ModelRuntime]:
    """Load schemas and check every model's field roles; raise ConfigError listing all problems."""
    problems: list[str] = []
    models = []
    for model in config.models:
        try:
            runtime = _build_model(config, model, registry_client, problems)
            runtime.load_profile()
            models.append(runtime)
        except (SchemaLoadError, ProfileFormatError) as exc:
            problems.append(f"model {model.name}: {exc}")
    if problems:
        raise ConfigError(problems)
    return models


def _build_model(config: Config, model: ModelConfig, registry_client: Any, problems: list[str]) -> ModelRuntime:
    if model.schema:
        reader = load_schema_file(config.resolve_path(model.schema))
    else:
        latest = registry_client.get_latest_version(model.schema_subject).schema
        reader = registered_schema(registry_client, latest, parse_schema)
    fields = record_fields(reader)
    roles = {
        "event_id_field": [model.event_id_field],
        "timestamp_field": [model.timestamp_field],
        "prediction_field": [model.prediction_field],
        "score_field": [model.score_field],
        "features": model.features,
        "slice_fields": model.slice_fields,
    }
    for role, names in roles.items():
        for name in names:
            if name and name not in fields:
                problems.append(f"model {model.name}: {role} {name!r} is not a field of the schema")
    kwargs = {"report_unexpected": model.report_unexpected_fields}
    decoder: Decoder
    if model.encoding == "json":
        decoder = JsonDecoder(reader, **kwargs)
    elif model.encoding == "avro":
        writer = load_schema_file(config.resolve_path(model.writer_schema)) if model.writer_schema else reader
        decoder = PlainAvroDecoder(reader, writer, **kwargs)
    elif registry_client is not None:
        decoder = ConfluentDecoder(reader, RegistryWriterSchemas(registry_client, parse_schema), **kwargs)
    else:
        local_dir = str(config.resolve_path(config.schema_registry.local_dir))
        decoder = ConfluentDecoder(reader, LocalWriterSchemas(local_dir, load_schema_file), **kwargs)
    features = [f for f in model.features if f in fields]
    return ModelRuntime(
        config=model,
        reader_schema=reader,
        fields=fields,
        decoder=decoder,
        numeric_features=[f for f in features if fields[f].is_numeric],
        categorical_features=[f for f in features if not fields[f].is_numeric],
        profile_path=config.resolve_path(model.profile) if model.profile else None,
        max_record_bytes=config.worker.max_record_bytes,
    )


def reload_profiles(
    models: Mapping[str, ModelRuntime], profiles: MutableMapping[str, BaselineProfile], logger: Any
) -> None:
    """Each model's profile file read again if it changed (into ``profiles``, which the stages
    share); one that does not load is logged and the previous one kept."""
    for name, model in models.items():
        try:
            if model.load_profile():
                assert model.profile is not None
                profiles[name] = model.profile
                logger.info("profile reloaded", model=name, path=str(model.profile_path))
        except StreamGuardError as exc:
            logger.error("profile not reloaded, keeping the previous one", model=name, error=str(exc))

"""Delayed labels: joining ground truth to the stored predictions, fenced per labels partition.

The join works on any :class:`~stream_guard.state.protocol.LabelState` (the Redis
:class:`~stream_guard.state.window_store.WindowStore` or the in-memory
:class:`~stream_guard.state.memory.MemoryState`). On Redis a labels batch costs two round
trips: one pipelined read (:meth:`~stream_guard.state.protocol.LabelState.label_inputs`: the
labels partitions' fences and one ``MGET`` each of the stored predictions and the held
labels), then one
:class:`~stream_guard.state.update.StateUpdate` per labels partition on the labels' fence
(:attr:`~stream_guard.state.keys.Fence.LABELS`) that adds the label-based counters to the
*prediction's* bucket and slices and deletes the joined predictions. The fence
(``sg:{m}:m:labels_applied``) makes a redelivered labels batch a no-op, so nothing is
counted twice; a deleted prediction makes a second label for the same event count as
unmatched (or, holding, held until it expires) instead of matching twice.

With ``hold_s`` > 0, a label whose prediction is not stored yet is held for it in the same
update, and :meth:`LabelJoiner.release` joins it once the prediction arrives
(:mod:`stream_guard.metrics.holding`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import redis

from stream_guard.batch import event_time_of, to_epoch_ms
from stream_guard.decoding import (
    DEFAULT_MAX_RECORD_BYTES,
    ConfluentDecoder,
    Decoded,
    Decoder,
    JsonDecoder,
    LocalWriterSchemas,
    PlainAvroDecoder,
    RegistryWriterSchemas,
    decode_payload,
    load_json,
)
from stream_guard.errors import ConfigError, DecodeError, UndecodablePayloadError
from stream_guard.metrics import holding
from stream_guard.metrics import store as s
from stream_guard.metrics.holding import ReleaseResult
from stream_guard.profile import category_key
from stream_guard.schemas import load_schema_file, parse_schema
from stream_guard.settings.metrics import LabelSettings, MetricsSettings
from stream_guard.state.keys import Fence, ModelKeys
from stream_guard.state.protocol import LabelState
from stream_guard.state.update import StateUpdate
from stream_guard.state.window_store import WindowStore

if TYPE_CHECKING:
    from stream_guard.settings import Config


@dataclass(frozen=True)
class Label:
    """One decoded label message. ``event_id`` is ``None`` when it carries no usable label."""

    event_id: str | None
    label: Any
    source: str
    offset: int
    ts_ms: int | None = None


@dataclass
class JoinResult:
    """What a labels batch did. Redelivered labels are in ``skipped`` and nowhere else."""

    matched: int = 0
    unmatched: int = 0
    #: Labels held for a prediction not stored yet (:mod:`stream_guard.metrics.holding`).
    held: int = 0
    skipped: int = 0
    invalid: int = 0
    #: Matched event ids, in label order.
    event_ids: list[str] = field(default_factory=list)
    #: Per matched label, in label order: 1 = wrong (classification; regression: abs error > tolerance).
    errors: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int8))
    #: Per matched label: absolute error (regression) or the 0/1 error (classification).
    abs_errors: np.ndarray = field(default_factory=lambda: np.zeros(0))
    #: Labels partition -> last offset of this batch (commit ``+ 1``).
    last_offsets: dict[str, int] = field(default_factory=dict)


def _label_key(value: Any) -> str:
    return category_key(int(value) if isinstance(value, (bool, np.bool_)) else value)


def _to_number(value: Any) -> float:
    if isinstance(value, (bool, np.bool_)):
        return float(value)
    if isinstance(value, (int, float, np.number)):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def as_label(item: Label | Mapping[str, Any]) -> Label:
    """A :class:`Label` from itself or a dict with ``event_id``, ``label``, ``topic``/``partition``
    (or ``source``), ``offset`` and optionally ``ts``."""
    if isinstance(item, Label):
        return item
    source = item.get("source") or f"{item['topic']}:{item['partition']}"
    event_id = item.get("event_id")
    return Label(
        None if event_id is None else str(event_id),
        item.get("label"),
        str(source),
        int(item["offset"]),
        to_epoch_ms(item.get("ts")),
    )


class LabelJoiner:
    """Joins labels to stored predictions and records the label-based counters.

    Parameters
    ----------
    keys
        The model's keys.
    settings
        Bucket size, retention, task, threshold and positive label.
    error_tolerance
        Regression only: an absolute error above it counts as an error in the 0/1 stream.
    hold_s
        How long (event time, on the events' watermark) a label whose prediction is not stored
        yet is held for it (:mod:`stream_guard.metrics.holding`); 0 counts it unmatched at once.
    """

    def __init__(
        self,
        keys: ModelKeys,
        settings: MetricsSettings | None = None,
        *,
        error_tolerance: float = 0.0,
        hold_s: int = 0,
    ) -> None:
        self.keys = s.MetricKeys(keys)
        self.settings = settings or MetricsSettings()
        self.bucket_ms = self.settings.bucket_s * 1000
        self.error_tolerance = error_tolerance
        self.hold_ms = hold_s * 1000

    def state(self, store: LabelState | redis.Redis) -> LabelState:
        """``store`` itself, or a Redis store on the model's keys for a plain client."""
        if isinstance(store, redis.Redis):
            return WindowStore.for_client(store, self.keys.model_keys, self.settings.retention_s)
        return store

    def applied_offsets(self, store: LabelState | redis.Redis, sources: Sequence[str]) -> dict[str, int]:
        """Last applied offset of each labels ``topic:partition``."""
        return self.state(store).applied_offsets(list(sources), Fence.LABELS)

    def join(
        self, labels: Sequence[Label | Mapping[str, Any]], store: LabelState | redis.Redis, *, now_ms: int | None = None
    ) -> JoinResult:
        """Join a labels batch: one read, one fenced update per labels partition.

        Parameters
        ----------
        labels
            In partition order; see :func:`as_label` for the dict form.
        store
            The model's state (or a Redis client, for a Redis store on the model's keys).
        now_ms
            Wall clock (default: now); the bucket of unmatched labels without a time.
        """
        state = self.state(store)
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        items = [as_label(x) for x in labels]
        result = JoinResult()
        if not items:
            return result
        frame = pd.DataFrame(
            {
                "event_id": [x.event_id for x in items],
                "label": [x.label for x in items],
                "src": [x.source for x in items],
                "offset": np.array([x.offset for x in items], dtype=np.int64),
                "ts": [now_ms if x.ts_ms is None else x.ts_ms for x in items],
            }
        )
        result.last_offsets = frame.groupby("src")["offset"].max().astype(int).to_dict()
        sources = sorted(result.last_offsets)
        ids = sorted({x.event_id for x in items if x.event_id is not None})
        fences, predictions, held = state.label_inputs(sources, ids)
        stored = dict(zip(ids, predictions, strict=True))
        held_before = {x for x, value in zip(ids, held, strict=True) if value is not None}

        fence = frame["src"].map(lambda src: fences.get(src, -1)).to_numpy()
        fresh = frame[frame["offset"].to_numpy() > fence].copy()
        result.skipped = len(frame) - len(fresh)
        if fresh.empty:
            return result
        fresh["valid"] = fresh["event_id"].notna() & fresh["label"].notna()
        if self.settings.task == "regression":
            fresh["y"] = fresh["label"].map(_to_number)
            fresh["valid"] &= np.isfinite(fresh["y"].to_numpy(dtype=float))
        pairs = zip(fresh["event_id"], fresh["valid"], strict=True)
        fresh["pred"] = [s.decode_prediction(stored.get(e)) if valid else None for e, valid in pairs]
        # A prediction joins its first label only: it is deleted by the same script.
        first = ~fresh["event_id"].where(fresh["pred"].notna()).duplicated() | fresh["pred"].isna()
        fresh["matched"] = fresh["pred"].notna() & first
        # A prediction not stored yet: its first label waits for it, unless one already does.
        waiting = fresh["valid"] & fresh["pred"].isna() & ~fresh["event_id"].isin(held_before)
        waiting &= ~fresh["event_id"].where(waiting).duplicated()
        fresh["held"] = waiting.to_numpy(dtype=bool) & (self.hold_ms > 0)

        updates = self._updates(fresh)
        applied = dict(zip([u.source for u in updates], state.apply(updates, now_ms), strict=True))
        done = fresh[fresh["src"].map(lambda src: bool(applied.get(src, 0))).to_numpy(dtype=bool)]
        # Another consumer applied a partition between our read and our script: it counted them.
        result.skipped += len(fresh) - len(done)
        matched = done[done["matched"].to_numpy(dtype=bool)]
        result.invalid = int((~done["valid"]).sum())
        result.matched = len(matched)
        result.held = int(done["held"].sum())
        result.unmatched = int((done["valid"] & ~done["matched"] & ~done["held"]).sum())
        result.event_ids = matched["event_id"].tolist()
        errors, abs_errors = self._errors(matched)
        result.errors, result.abs_errors = errors, abs_errors
        return result

    def release(self, event_ids: Sequence[str], store: LabelState | redis.Redis, *, now_ms: int) -> ReleaseResult:
        """After an events batch stored the predictions of ``event_ids``: join their held labels,
        and expire the holds that ran out (:func:`~stream_guard.metrics.holding.release_held`)."""
        if self.hold_ms <= 0:
            return ReleaseResult()
        return holding.release_held(
            event_ids,
            self.state(store),
            keys=self.keys,
            outcomes=self._outcomes,
            regression=self.settings.task == "regression",
            hold_ms=self.hold_ms,
            bucket_ms=self.bucket_ms,
            retention_s=self.settings.retention_s,
            now_ms=now_ms,
        )

    # -- internals -----------------------------------------------------------------------

    def _outcomes(self, matched: pd.DataFrame) -> pd.DataFrame:
        """Per matched label: its prediction's bucket, slices and label-based counters."""
        preds = matched["pred"].tolist()
        out = pd.DataFrame(
            {
                "src": matched["src"].to_numpy(),
                "bucket": np.array([int(p["bucket"]) for p in preds], dtype=np.int64),
                s.MATCHED: np.ones(len(preds), dtype=np.int64),
            }
        )
        out["slices"] = [[s.ALL, *p.get("slices", [])] for p in preds]
        if self.settings.task == "regression":
            y_hat = np.array([_to_number(p.get("prediction")) for p in preds])
            err = np.abs(y_hat - matched["y"].to_numpy(dtype=float))
            err = np.where(np.isfinite(err), err, 0.0)
            out[s.ABS_ERR], out[s.SQ_ERR] = err, err * err
        else:
            pos_pred = self._predicted_positive(preds)
            pos_true = matched["label"].map(_label_key).to_numpy() == _label_key(self.settings.positive_label)
            out[s.TP], out[s.FP] = pos_pred & pos_true, pos_pred & ~pos_true
            out[s.TN], out[s.FN] = ~pos_pred & ~pos_true, ~pos_pred & pos_true
        return out

    def _predicted_positive(self, preds: list[dict[str, Any]]) -> np.ndarray:
        score = np.array([_to_number(p.get("score")) if p.get("score") is not None else np.nan for p in preds])
        value = np.where(np.isfinite(score), score, [_to_number(p.get("prediction")) for p in preds])
        return np.nan_to_num(value, nan=-np.inf) >= self.settings.threshold

    def _errors(self, matched: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        if matched.empty:
            return np.zeros(0, dtype=np.int8), np.zeros(0)
        out = self._outcomes(matched)
        if self.settings.task == "regression":
            abs_err = out[s.ABS_ERR].to_numpy(dtype=float)
            return (abs_err > self.error_tolerance).astype(np.int8), abs_err
        wrong = (out[s.FP] | out[s.FN]).to_numpy().astype(np.int8)
        return wrong, wrong.astype(float)

    def _updates(self, fresh: pd.DataFrame) -> list[StateUpdate]:
        updates: dict[str, StateUpdate] = {}
        for src, part in fresh.groupby("src", sort=True):
            max_ts = int(part["ts"].max())
            updates[src] = StateUpdate(
                src,
                int(part["offset"].min()),
                int(part["offset"].max()),
                max_ts,
                fence=Fence.LABELS,
                ttl_s=self.settings.retention_s,
            )
        matched = fresh[fresh["matched"].to_numpy(dtype=bool)]
        if not matched.empty:
            outcomes = self._outcomes(matched).explode("slices").rename(columns={"slices": "slice"})
            sums = outcomes.groupby(["src", "bucket", "slice"], sort=True).sum()
            metrics = list(sums.columns)
            for (src, bucket, slice_), row in zip(sums.index.tolist(), sums.to_numpy(dtype=float), strict=True):
                key = self.keys.bucket(bucket)
                for metric, amount in zip(metrics, row.tolist(), strict=True):
                    if metric in s.FLOAT_METRICS:
                        updates[src].incr_float(key, s.field_name(slice_, metric), amount)
                    else:
                        updates[src].incr(key, s.field_name(slice_, metric), round(amount))
            for (src, bucket), _ in outcomes.groupby(["src", "bucket"]):
                s.register_bucket(updates[src], self.keys, int(bucket), self.settings.retention_s)
            for src, event_id in zip(matched["src"], matched["event_id"], strict=True):
                updates[src].delete(self.keys.prediction(event_id))
        waiting = fresh[fresh["held"].to_numpy(dtype=bool)]
        for src, part in waiting.groupby("src", sort=True):
            holding.hold_labels(updates[str(src)], self.keys, part, self.bucket_ms, self.settings.retention_s)
        lost = fresh[(fresh["valid"] & ~fresh["matched"] & ~fresh["held"]).to_numpy(dtype=bool)]
        if not lost.empty:
            buckets = (lost["ts"].to_numpy(dtype=np.int64) // self.bucket_ms) * self.bucket_ms
            counts = pd.DataFrame({"src": lost["src"].to_numpy(), "bucket": buckets}).value_counts()
            for (src, bucket), count in counts.items():
                updates[src].incr(self.keys.bucket(bucket), s.field_name(s.ALL, s.UNMATCHED), int(count))
                s.register_bucket(updates[src], self.keys, int(bucket), self.settings.retention_s)
        return list(updates.values())


class _PlainJson:
    """JSON labels without a schema: any object, values as sent."""

    def decode(self, payload: bytes | None) -> Decoded:
        raw = load_json(payload)
        if not isinstance(raw, dict):
            raise UndecodablePayloadError("label is not a JSON object")
        return Decoded(raw, [])


def make_label_decoder(config: Config, settings: LabelSettings, registry_client: Any = None) -> Decoder:
    """A decoder of the labels topic, built like the model's own (the existing decoders)."""
    if not settings.schema:
        if settings.encoding != "json":
            raise ConfigError(
                [
                    f"labels.schema: required for {settings.encoding} labels; set [models.labels] schema "
                    "to the label record's .avsc file"
                ]
            )
        return _PlainJson()
    reader = load_schema_file(config.resolve_path(settings.schema))
    if settings.encoding == "json":
        return JsonDecoder(reader, report_unexpected=False)
    if settings.encoding == "avro":
        writer = load_schema_file(config.resolve_path(settings.writer_schema)) if settings.writer_schema else reader
        return PlainAvroDecoder(reader, writer, report_unexpected=False)
    if registry_client is not None:
        return ConfluentDecoder(reader, RegistryWriterSchemas(registry_client, parse_schema), report_unexpected=False)
    local_dir = str(config.resolve_path(config.schema_registry.local_dir))
    return ConfluentDecoder(reader, LocalWriterSchemas(local_dir, load_schema_file), report_unexpected=False)


def labels_from_messages(
    messages: Sequence[Any],
    decoder: Decoder,
    settings: LabelSettings,
    dead: list[tuple[Any, DecodeError]] | None = None,
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
) -> list[Label]:
    """Decode label messages; an undecodable one or one without id/label keeps its offset (``event_id=None``).

    Undecodable messages are also appended to ``dead`` with their error, for the dead-letter topic.
    """
    out = []
    for m in messages:
        source = f"{m.topic()}:{m.partition()}"
        try:
            values = decode_payload(decoder, m.value(), max_record_bytes).values
            stamp = to_epoch_ms(values.get(settings.timestamp_field)) if settings.timestamp_field else None
            stamp = event_time_of(stamp, m.timestamp()[1])
        except DecodeError as error:
            if dead is not None:
                dead.append((m, error))
            out.append(Label(None, None, source, m.offset(), None))
            continue
        event_id = values.get(settings.event_id_field)
        event_id = None if event_id is None else str(event_id)
        out.append(Label(event_id, values.get(settings.label_field), source, m.offset(), stamp))
    return out


class LabelStream:
    """One model's labels topic, for the worker: decode a batch of its messages and join it."""

    def __init__(
        self,
        model: str,
        joiner: LabelJoiner,
        decoder: Decoder,
        settings: LabelSettings,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
    ) -> None:
        self.model = model
        self.joiner = joiner
        self.decoder = decoder
        self.settings = settings
        self.max_record_bytes = max_record_bytes

    @property
    def topic(self) -> str:
        return self.settings.topic

    def decode(self, messages: Sequence[Any]) -> tuple[list[Label], list[tuple[Any, DecodeError]]]:
        """The labels of ``messages``, and the undecodable messages with their errors."""
        dead: list[tuple[Any, DecodeError]] = []
        return labels_from_messages(messages, self.decoder, self.settings, dead, self.max_record_bytes), dead

    def process(
        self, messages: Sequence[Any], store: LabelState | redis.Redis, now_ms: int | None = None
    ) -> JoinResult:
        return self.joiner.join(labels_from_messages(messages, self.decoder, self.settings), store, now_ms=now_ms)

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

import math
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from stream_guard.batch import to_epoch_ms
from stream_guard.metrics import holding
from stream_guard.metrics import store as s
from stream_guard.metrics.holding import Outcomes, ReleaseResult
from stream_guard.profile import category_key
from stream_guard.settings.metrics import MetricsSettings
from stream_guard.state.client import REDIS_CLIENTS, RedisClient
from stream_guard.state.keys import Fence, ModelKeys
from stream_guard.state.protocol import LabelState
from stream_guard.state.update import StateUpdate
from stream_guard.state.window_store import WindowStore


class Label(NamedTuple):
    """One decoded label message. ``event_id`` is ``None`` when it carries no usable label.

    A named tuple: a batch makes one per label message, and a frozen dataclass costs
    several times as much to build."""

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

    def state(self, store: LabelState | RedisClient) -> LabelState:
        """``store`` itself, or a Redis store on the model's keys for a plain client."""
        if isinstance(store, REDIS_CLIENTS):
            return WindowStore.for_client(store, self.keys.model_keys, self.settings.retention_s)
        return store

    def applied_offsets(self, store: LabelState | RedisClient, sources: Sequence[str]) -> dict[str, int]:
        """Last applied offset of each labels ``topic:partition``."""
        return self.state(store).applied_offsets(list(sources), Fence.LABELS)

    def join(
        self, labels: Sequence[Label | Mapping[str, Any]], store: LabelState | RedisClient, *, now_ms: int | None = None
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
        for x in items:
            result.last_offsets[x.source] = max(x.offset, result.last_offsets.get(x.source, x.offset))
        sources = sorted(result.last_offsets)
        ids = sorted({x.event_id for x in items if x.event_id is not None})
        fences, predictions, held = state.label_inputs(sources, ids)
        stored = dict(zip(ids, predictions, strict=True))
        held_before = {x for x, value in zip(ids, held, strict=True) if value is not None}
        fresh = [x for x in items if x.offset > fences.get(x.source, -1)]
        result.skipped = len(items) - len(fresh)
        if not fresh:
            return result
        rows, table = self._classify(fresh, stored, held_before, now_ms)
        joined = [r for r in rows if r.matched]
        outcomes = self._row_outcomes(table, joined) if joined else None
        updates = self._updates(rows, joined, outcomes)
        applied = dict(zip([u.source for u in updates], state.apply(updates, now_ms), strict=True))
        done = [r for r in rows if applied.get(r.label.source, 0)]
        # Another consumer applied a partition between our read and our script: it counted them.
        result.skipped += len(rows) - len(done)
        matched = [r for r in done if r.matched]
        result.invalid = sum(not r.valid for r in done)
        result.matched = len(matched)
        result.held = sum(r.held for r in done)
        result.unmatched = sum(r.valid and not r.matched and not r.held for r in done)
        result.event_ids = [str(r.label.event_id) for r in matched]
        if outcomes is not None:
            counted = np.array([bool(applied.get(r.label.source, 0)) for r in joined], dtype=bool)
            result.errors, result.abs_errors = self._errors(outcomes.values[counted], outcomes.metrics)
        return result

    def release(self, event_ids: Sequence[str], store: LabelState | RedisClient, *, now_ms: int) -> ReleaseResult:
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

    def _classify(
        self, fresh: Sequence[Label], stored: Mapping[str, str | None], held_before: set[str], now_ms: int
    ) -> tuple[list[_Row], s.PredictionTable]:
        """Each fresh label's fate: matched (a prediction's first label), held (the first label of
        an event not stored yet, unless one already waits), or unmatched; or invalid."""
        regression = self.settings.task == "regression"
        hold = self.hold_ms > 0
        checked: list[tuple[Label, bool, float]] = []
        for x in fresh:
            valid = x.event_id is not None and not _missing(x.label)
            y = _to_number(x.label) if regression and valid else math.nan
            if regression:
                valid = valid and math.isfinite(y)
            checked.append((x, valid, y))
        # The stored predictions of the valid labels, each read once.
        wanted = [
            i for i in dict.fromkeys(str(x.event_id) for x, valid, _ in checked if valid) if stored.get(i) is not None
        ]
        table = s.decode_prediction_table([stored[i] for i in wanted])
        row_of = {event_id: i for i, event_id in enumerate(wanted) if table.found[i]}
        rows: list[_Row] = []
        joined: set[str] = set()
        waiting: set[str] = set()
        for x, valid, y in checked:
            event_id = str(x.event_id)
            pred = row_of.get(event_id, -1) if valid else -1
            row = _Row(x, now_ms if x.ts_ms is None else x.ts_ms, valid, y, pred)
            if pred >= 0:
                # A prediction joins its first label only: it is deleted by the same script.
                row.matched = event_id not in joined
                joined.add(event_id)
            elif valid and event_id not in held_before and event_id not in waiting:
                # A prediction not stored yet: its first label waits for it, unless one already does.
                waiting.add(event_id)
                row.held = hold
            rows.append(row)
        return rows, table

    def _outcomes(self, preds: Sequence[dict[str, Any]], labels: Sequence[Any], ys: Sequence[float]) -> Outcomes:
        """Per joined label: its prediction's bucket, slices and label-based counters."""
        return self._table_outcomes(s.PredictionTable.of(preds), np.arange(len(preds)), labels, ys)

    def _table_outcomes(
        self, table: s.PredictionTable, at: np.ndarray, labels: Sequence[Any], ys: Sequence[float]
    ) -> Outcomes:
        """:meth:`_outcomes` of the predictions in rows ``at`` of ``table``."""
        buckets = table.buckets[at]
        slices = table.slices_with_all(at)
        ones = np.ones(len(at))
        predictions = [table.predictions[i] for i in at.tolist()]
        if self.settings.task == "regression":
            y_hat = np.array([_to_number(p) for p in predictions]).reshape(len(at))
            err = np.abs(y_hat - np.asarray(ys, dtype=float))
            err = np.where(np.isfinite(err), err, 0.0)
            return Outcomes(buckets, slices, [s.MATCHED, s.ABS_ERR, s.SQ_ERR], np.column_stack([ones, err, err * err]))
        pos_pred = self._predicted_positive(table.scores[at], predictions)
        pos_true = _is_positive(labels, _label_key(self.settings.positive_label))
        columns = [pos_pred & pos_true, pos_pred & ~pos_true, ~pos_pred & ~pos_true, ~pos_pred & pos_true]
        values = np.column_stack([ones, *columns]).astype(float)
        return Outcomes(buckets, slices, [s.MATCHED, s.TP, s.FP, s.TN, s.FN], values)

    def _predicted_positive(self, scores: np.ndarray, predictions: Sequence[Any]) -> np.ndarray:
        """The score at or above the threshold; without a finite score, the prediction."""
        value = scores.copy()
        unscored = np.flatnonzero(~np.isfinite(value))
        if len(unscored):
            value[unscored] = [_to_number(predictions[i]) for i in unscored.tolist()]
        positive: np.ndarray = np.nan_to_num(value, nan=-np.inf) >= self.settings.threshold
        return positive

    def _row_outcomes(self, table: s.PredictionTable, matched: Sequence[_Row]) -> Outcomes:
        at = np.fromiter((r.pred for r in matched), dtype=np.int64, count=len(matched))
        return self._table_outcomes(table, at, [r.label.label for r in matched], [r.y for r in matched])

    def _errors(self, values: np.ndarray, metrics: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Per joined label (its row of :attr:`Outcomes.values`): 1 = wrong, and its absolute error."""
        if self.settings.task == "regression":
            abs_err: np.ndarray = values[:, metrics.index(s.ABS_ERR)]
            return (abs_err > self.error_tolerance).astype(np.int8), abs_err
        wrong = ((values[:, metrics.index(s.FP)] + values[:, metrics.index(s.FN)]) > 0).astype(np.int8)
        return wrong, wrong.astype(float)

    def _updates(self, rows: Sequence[_Row], matched: Sequence[_Row], outcomes: Outcomes | None) -> list[StateUpdate]:
        by_source: dict[str, list[_Row]] = {}
        for row in rows:
            by_source.setdefault(row.label.source, []).append(row)
        updates: dict[str, StateUpdate] = {}
        for src in sorted(by_source):
            offsets = [r.label.offset for r in by_source[src]]
            updates[src] = StateUpdate(
                src,
                min(offsets),
                max(offsets),
                max(r.ts for r in by_source[src]),
                fence=Fence.LABELS,
                ttl_s=self.settings.retention_s,
            )
        if outcomes is not None:
            sums = outcomes.sums([r.label.source for r in matched])
            sums.add_to(updates, self.keys, outcomes.metrics)
            for src, bucket in sorted(sums.places):
                s.register_bucket(updates[src], self.keys, bucket, self.settings.retention_s)
            joined: dict[str, list[str]] = {}
            for r in matched:
                joined.setdefault(r.label.source, []).append(str(r.label.event_id))
            for src in sorted(joined):
                updates[src].delete_all(self.keys.predictions(joined[src]))
        for src in sorted(by_source):
            part = [r for r in by_source[src] if r.held]
            if part:
                holding.hold_labels(
                    updates[src],
                    self.keys,
                    [(str(r.label.event_id), r.label.label, r.ts, src, r.label.offset) for r in part],
                    self.bucket_ms,
                    self.settings.retention_s,
                )
        lost = Counter(
            (r.label.source, (r.ts // self.bucket_ms) * self.bucket_ms)
            for r in rows
            if r.valid and not r.matched and not r.held
        )
        for (src, bucket), count in sorted(lost.items()):
            updates[src].incr(self.keys.bucket(bucket), s.field_name(s.ALL, s.UNMATCHED), count)
            s.register_bucket(updates[src], self.keys, bucket, self.settings.retention_s)
        return list(updates.values())


@dataclass(slots=True)
class _Row:
    """One fresh label of a batch, classified."""

    label: Label
    ts: int
    valid: bool
    y: float
    #: Its prediction's row of the batch's :class:`~stream_guard.metrics.store.PredictionTable`, or -1.
    pred: int
    matched: bool = False
    held: bool = False


def _missing(value: Any) -> bool:
    """None or NaN: a label without a value."""
    return value is None or (isinstance(value, float) and math.isnan(value))


#: Label types whose category key follows from (type, value): a batch keys each distinct one once.
_PLAIN_LABELS = frozenset({int, float, str, bool, type(None)})


def _is_positive(labels: Sequence[Any], positive: str) -> np.ndarray:
    """Per label: its category key is ``positive``'s."""
    kinds = list(map(type, labels))
    if not _PLAIN_LABELS.issuperset(kinds):
        return np.array([_label_key(v) == positive for v in labels], dtype=bool)
    if len(set(kinds)) == 1:  # one type: the values alone key them
        by_value = {v: _label_key(v) == positive for v in dict.fromkeys(labels)}
        return np.fromiter(map(by_value.__getitem__, labels), dtype=bool, count=len(labels))
    pairs = list(zip(kinds, labels, strict=True))
    table = {pair: _label_key(pair[1]) == positive for pair in dict.fromkeys(pairs)}
    return np.fromiter(map(table.__getitem__, pairs), dtype=bool, count=len(pairs))

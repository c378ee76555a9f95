"""Labels that arrive before their prediction: held, then joined when it arrives, or expired.

A backlog delivers the labels topic and the events topic at once, so a label is often read
before the event whose prediction it judges. Instead of counting it unmatched,
:class:`~stream_guard.metrics.labels.LabelJoiner` *holds* it: ``sg:{m}:held:<event_id>``
keeps its label, time and source offset, ``sg:{m}:m:held`` indexes it by label time, and
``*|lh`` counts it in the bucket of its time. Holding is part of the labels batch's fenced
update, so a redelivered labels batch holds nothing twice.

A hold ends one of two ways, each through the take op (``T``), which counts only if the
held label is still there, so whichever worker or retry ends it first counts it, once:

* **released**: after an events batch stored its predictions, the held labels of that batch's
  event ids are joined (:func:`release_held`): the label-based counters go to the prediction's
  bucket and slices (``lm``, the confusion counts or errors, and ``lr``), and both the held
  label and the prediction are deleted. One small read per events batch while no label is
  held, whatever its size; otherwise a read of the batch's held labels, one of their
  predictions (when some are held for its events) and one script;
* **expired**: once the events' global watermark passed a held label's time plus ``hold_s``,
  its prediction is not coming (events arrive in event-time order within the allowed
  lateness, and a prediction is not later than its label): the label is deleted and counted
  ``*|lx`` in the bucket of its time. Its prediction is looked up once more first: one
  stored while the label was being held (two workers at the same moment, or a worker that
  stopped between storing predictions and releasing) joins it then, released late. An idle
  events stream (watermark ``inf``) expires nothing: the holds wait for events to flow again.

Expiry runs in event time, so a replay of the same backlog expires the same labels however
the two topics interleave.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from stream_guard.metrics import store as s
from stream_guard.state.keys import Fence
from stream_guard.state.protocol import LabelState
from stream_guard.state.update import StateUpdate


class Outcomes(NamedTuple):
    """Per joined label: its prediction's bucket and slices (``*`` first), and its label-based
    counters (``values[i, j]`` is label ``i``'s amount of ``metrics[j]``)."""

    buckets: np.ndarray
    #: Per label, its slices: lists, or a 2-D object array when every label has as many.
    slices: list[list[str]] | np.ndarray
    metrics: list[str]
    values: np.ndarray

    def sums(self, sources: Sequence[str]) -> SliceSums:
        """The counters summed per (source, bucket, slice); ``sources[i]`` is label ``i``'s labels partition."""
        places = dict.fromkeys(zip(sources, self.buckets.tolist(), strict=True))
        place_code = {place: i for i, place in enumerate(places)}
        if isinstance(self.slices, np.ndarray):
            # Slice names in order of first appearance, as below, hashed in one call.
            codes, uniques = pd.factorize(self.slices.reshape(-1))
            slice_codes, names = codes.astype(np.int64), list(uniques)
            rows = np.repeat(np.arange(self.slices.shape[0]), self.slices.shape[1])
        else:
            flat = list(chain.from_iterable(self.slices))
            names = list(dict.fromkeys(flat))
            slice_code = {name: i for i, name in enumerate(names)}
            slice_codes = np.fromiter(map(slice_code.__getitem__, flat), np.int64, len(flat))
            rows = np.repeat(np.arange(len(self.slices)), [len(x) for x in self.slices])
        label_place = np.fromiter(
            map(place_code.__getitem__, zip(sources, self.buckets.tolist(), strict=True)), np.int64
        )
        cells = label_place[rows] * len(names) + slice_codes
        present, at = s.distinct_cells(cells, len(places) * len(names))
        spread = self.values[rows]
        totals = np.column_stack(
            [
                np.bincount(at.reshape(-1), weights=spread[:, j], minlength=len(present))
                for j in range(len(self.metrics))
            ]
        )
        slice_names = np.array(names, dtype=object)
        return SliceSums(list(places), present // len(names), slice_names[present % len(names)], totals)


class SliceSums(NamedTuple):
    """Counters summed per (place, slice): row ``r`` is ``slices[r]`` in ``places[place[r]]``
    (source, bucket), ``sums[r, j]`` its amount of the outcomes' ``metrics[j]``."""

    places: list[tuple[str, int]]
    place: np.ndarray
    slices: np.ndarray
    sums: np.ndarray

    def add_to(self, updates: dict[str, StateUpdate], keys: s.MetricKeys, metrics: Sequence[str]) -> None:
        """One ``incr_many`` per (source, bucket) (:func:`~stream_guard.metrics.store.add_slice_sums`)."""
        s.add_slice_sums(updates, keys, self.places, self.place, self.slices, self.sums, metrics)


#: Per joined label (predictions, labels, regression targets): its :class:`Outcomes`, as
#: ``LabelJoiner._outcomes`` computes them.
OutcomesOf = Callable[[Sequence[dict[str, Any]], Sequence[Any], Sequence[float]], Outcomes]


@dataclass
class ReleaseResult:
    """What one events batch did to the held labels."""

    #: Held labels joined to a prediction this batch stored.
    released: int = 0
    #: Held labels whose hold ran out.
    expired: int = 0
    #: Released event ids, in the order asked.
    event_ids: list[str] = field(default_factory=list)


def encode_held(label: Any, ts_ms: int, source: str, offset: int) -> str:
    return json.dumps({"label": label, "ts": int(ts_ms), "src": source, "offset": int(offset)}, default=str)


def decode_held(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return None
    return value if isinstance(value, dict) and "ts" in value else None


def hold_labels(
    update: StateUpdate, keys: s.MetricKeys, rows: Sequence[tuple[str, Any, int, str, int]], bucket_ms: int, ttl_s: int
) -> None:
    """Hold each row's label (``event_id``, ``label``, ``ts``, ``src``, ``offset``) in ``update``."""
    for event_id, label, ts, src, offset in rows:
        bucket = (int(ts) // bucket_ms) * bucket_ms
        value = encode_held(_plain(label), int(ts), str(src), int(offset))
        update.set_once(keys.held(event_id), value, ttl_s, keys.bucket(bucket), [s.field_name(s.ALL, s.HELD)])
        update.zadd(keys.held_index, int(ts), str(event_id))
        s.register_bucket(update, keys, bucket, ttl_s)


def stored_event_ids(updates: Sequence[StateUpdate], keys: s.MetricKeys) -> list[str]:
    """The event ids whose predictions ``updates`` store (their ``pred:`` keys), sorted."""
    prefix = keys.prediction("")
    return sorted({key[len(prefix) :] for u in updates for key in u.keys if key.startswith(prefix)})


def release_held(
    event_ids: Sequence[str],
    state: LabelState,
    *,
    keys: s.MetricKeys,
    outcomes: OutcomesOf,
    regression: bool,
    hold_ms: int,
    bucket_ms: int,
    retention_s: int,
    now_ms: int,
) -> ReleaseResult:
    """Join the held labels of ``event_ids`` to their just stored predictions, and expire the
    holds the events' watermark has passed by ``hold_ms``: one read, one script.

    Only when the oldest hold has run out, two more reads: the holds that ran out, and their
    predictions, looked up once more before they expire. A prediction stored while its label
    was being held (by another worker at the same moment, or before a worker stopped between
    storing it and releasing) joins its label then instead.
    """
    result = ReleaseResult()
    ids = list(event_ids)
    inputs = state.held_inputs(ids, now_ms)
    found = _joinable(ids, inputs.held, inputs.predictions)
    ran_out: list[tuple[str, int]] = []
    horizon = inputs.events_watermark - hold_ms
    if math.isfinite(horizon) and inputs.oldest_ms is not None and inputs.oldest_ms <= horizon:
        taken = {x[0] for x in found}
        ran_out = [(event_id, ts) for event_id, ts in state.held_until(int(horizon)) if event_id not in taken]
    if ran_out:
        late = [event_id for event_id, _ in ran_out]
        again = state.held_inputs(late, now_ms)
        joinable = _joinable(late, again.held, again.predictions)
        joined = {x[0] for x in joinable}
        found += joinable
        ran_out = [(event_id, ts) for event_id, ts in ran_out if event_id not in joined]
    update = StateUpdate("", 0, 0, 0, fence=Fence.LABELS, ttl_s=retention_s)
    if found:
        labels = [x[1]["label"] for x in found]
        ys = [_number(v) if regression else math.nan for v in labels]
        _take_joined(update, keys, [x[0] for x in found], outcomes([x[2] for x in found], labels, ys), retention_s)
        result.event_ids = [x[0] for x in found]
        result.released = len(found)
    by_bucket: dict[int, list[tuple[str, str, str]]] = defaultdict(list)
    for event_id, ts in ran_out:
        by_bucket[(ts // bucket_ms) * bucket_ms].append((keys.held(event_id), keys.held(event_id), event_id))
    for bucket, group in sorted(by_bucket.items()):
        update.take(group, keys.held_index, keys.bucket(bucket), [(s.field_name(s.ALL, s.EXPIRED), 1)])
        s.register_bucket(update, keys, bucket, retention_s)
        result.expired += len(group)
    if update.ops:
        state.apply([update], now_ms)
    return result


def _joinable(
    event_ids: Sequence[str], held: Sequence[str | None], predictions: Sequence[str | None]
) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(event id, held label, prediction) of the event ids that have both."""
    return [
        (event_id, label, pred)
        for event_id, text, stored in zip(event_ids, held, predictions, strict=True)
        if (label := decode_held(text)) is not None and (pred := s.decode_prediction(stored)) is not None
    ]


def _take_joined(
    update: StateUpdate, keys: s.MetricKeys, event_ids: Sequence[str], outcome: Outcomes, retention_s: int
) -> None:
    """One take per (bucket, increments): labels that add the same counters are taken together."""
    metrics = outcome.metrics
    groups: dict[tuple[int, tuple[tuple[str, float], ...]], list[tuple[str, str, str]]] = defaultdict(list)
    for event_id, bucket, slices, row in zip(
        event_ids, outcome.buckets.tolist(), outcome.slices, outcome.values, strict=True
    ):
        amounts: list[tuple[str, float]] = []
        for slice_ in slices:
            for metric, amount in zip(metrics, row.tolist(), strict=True):
                if amount and metric in s.FLOAT_METRICS:
                    amounts.append((s.field_name(slice_, metric), float(amount)))
                elif amount:
                    amounts.append((s.field_name(slice_, metric), round(amount)))
            amounts.append((s.field_name(slice_, s.RELEASED), 1))
        groups[(int(bucket), tuple(amounts))].append((keys.held(event_id), keys.prediction(event_id), event_id))
    for (bucket, amounts_), taken in groups.items():
        update.take(taken, keys.held_index, keys.bucket(bucket), amounts_)
    for bucket in sorted({bucket for bucket, _ in groups}):
        s.register_bucket(update, keys, bucket, retention_s)


def _plain(value: Any) -> Any:
    """A label value JSON keeps as it is (numpy scalars as Python ones)."""
    return value.item() if isinstance(value, np.generic) else value


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")

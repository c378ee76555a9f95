"""Redis layout of the rolling slice metrics and of the stored predictions.

Every key carries the model's hash tag (``{m}``, from :attr:`ModelKeys.base`), so a
model's metric buckets, stored predictions and fences live in one Redis Cluster slot and
one Lua script may touch them all.

======================================  =====  =============================================================
key                                     type   content
======================================  =====  =============================================================
``sg:{m}:m:<bucket_start_ms>``          hash   ``<slice>|<metric>`` -> counter or float sum (TTL: retention)
``sg:{m}:m:index``                      zset   bucket starts (ms), score = start; trimmed to the retention
``sg:{m}:m:sum:<tile>:<start>``         hash   a rollup cache's sums of a whole hour of tiles (fields as in a
                                               bucket), ``_sig`` / ``_n``: the versions summed, buckets present
                                               (TTL: retention; :mod:`~stream_guard.metrics.rollups`)
``sg:{m}:pred:<event_id>``              str    lines: bucket, score, prediction (JSON), slices (TTL: lookback),
                                               deleted when its label is joined
``sg:{m}:m:labels_applied``             hash   labels ``topic:partition`` -> last applied offset (fence)
``sg:{m}:m:labels_wm``                  hash   labels ``topic:partition`` -> max label time (ms)
``sg:{m}:m:labels_seen``                hash   labels ``topic:partition`` -> wall clock of last update
``sg:{m}:held:<event_id>``              str    JSON ``{label, ts, src, offset}``: a label that came before its
                                               prediction (TTL: lookback), deleted when joined or expired
``sg:{m}:m:held``                       zset   held event ids, score = label time (ms)
======================================  =====  =============================================================

A slice is ``*`` (all traffic), ``field=value`` or a crossing ``f1=v1,f2=v2`` with the
fields in sorted order. Metrics of a slice in a bucket hash:

==================  ======================================================================
field               meaning
==================  ======================================================================
``<s>|n``           decoded events
``<s>|v:<kind>``    events with at least one finding of check ``kind``
``<s>|null:<f>``    events where feature ``f`` is null or absent
``<s>|pn``          events with a numeric prediction; ``pv`` / ``pq``: their sum / sum of squares
``<s>|h:<i>``       events whose score falls in histogram bin ``i``; ``sv``: sum of the scores
``<s>|pp``          scored events at or above the threshold, written only when the threshold lies
                    inside a score bin (the label-free estimate splits that bin with it)
``<s>|st``          predictions stored for a later label
``<s>|lm``          labels joined to a stored prediction of this bucket and slice
``*|lu``            labels without a stored prediction that could not be held (a second label of
                    an event already held or joined in the same batch, or holding is off), in the
                    bucket of the label's own time
``*|lh``            labels held for a prediction not stored yet, in the bucket of the label's time
``<s>|lr``          held labels joined when their prediction arrived (also counted in ``lm``),
                    in the prediction's bucket and slices
``*|lx``            held labels expired without their prediction, in the bucket of the label's time
``<s>|tp fp tn fn`` confusion counts at the threshold (classification)
``<s>|ae`` / ``se`` sum of absolute / squared errors (regression)
``_v``              the bucket's version: how many updates wrote it (no slice's counter)
==================  ======================================================================

Labels pending = ``st - lm``; labels held now = ``lh - lr - lx`` (summed over every bucket).
Event counters are written by the events' fenced updates
(source: the events partition); the label counters by updates on the labels' fence
(:attr:`~stream_guard.state.keys.Fence.LABELS`, source: the labels partition), into the
bucket and slices of the *prediction*. Every key name comes from
:class:`~stream_guard.state.keys.ModelKeys`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from stream_guard.state.keys import ModelKeys
from stream_guard.state.update import StateUpdate

ALL = "*"
OTHER = "other"
NULL = "null"

EVENTS = "n"
PRED_N, PRED_SUM, PRED_SQ = "pn", "pv", "pq"
SCORE_SUM = "sv"
STORED = "st"
MATCHED = "lm"
UNMATCHED = "lu"
HELD, RELEASED, EXPIRED = "lh", "lr", "lx"
TP, FP, TN, FN = "tp", "fp", "tn", "fn"
ABS_ERR, SQ_ERR = "ae", "se"
VIOLATION = "v:"
NULLS = "null:"
HIST = "h:"
SCORE_POSITIVE = "pp"

#: The bucket hash's version field: bumped by every update that writes the bucket, so a reader
#: that summed the bucket before knows whether it changed since (:mod:`~stream_guard.metrics.rollups`).
#: It has no ``|``, so it is no slice's counter.
VERSION = "_v"

#: Metrics summed as floats (HINCRBYFLOAT); every other metric is an integer count.
FLOAT_METRICS = frozenset({PRED_SUM, PRED_SQ, SCORE_SUM, ABS_ERR, SQ_ERR})


@dataclass(frozen=True)
class MetricKeys:
    """Key names of one model's metrics, from :class:`~stream_guard.state.keys.ModelKeys`."""

    model_keys: ModelKeys

    @property
    def base(self) -> str:
        return self.model_keys.base

    def bucket(self, start_ms: int) -> str:
        return self.model_keys.bucket(start_ms)

    @property
    def index(self) -> str:
        return self.model_keys.metrics_index

    def prediction(self, event_id: str) -> str:
        return self.model_keys.prediction(event_id)

    def predictions(self, event_ids: Iterable[str]) -> list[str]:
        return self.model_keys.predictions(event_ids)

    @property
    def labels_applied(self) -> str:
        return self.model_keys.labels_applied

    def held(self, event_id: str) -> str:
        return self.model_keys.held(event_id)

    def helds(self, event_ids: Iterable[str]) -> list[str]:
        return self.model_keys.helds(event_ids)

    @property
    def held_index(self) -> str:
        return self.model_keys.held_index


def field_name(slice_: str, metric: str) -> str:
    return f"{slice_}|{metric}"


def split_field(name: str) -> tuple[str, str]:
    """``<slice>|<metric>`` -> (slice, metric); slices never contain ``|``."""
    slice_, _, metric = name.partition("|")
    return slice_, metric


def register_bucket(update: StateUpdate, keys: MetricKeys, start_ms: int, retention_s: int) -> None:
    """Index a bucket, bump its :data:`VERSION` and give its hash (and the index) the metrics retention.

    Every update that writes a bucket registers it, in the same script as its writes.
    """
    update.zadd(keys.index, start_ms, str(int(start_ms)))
    update.incr(keys.bucket(start_ms), VERSION, 1)
    update.expire(keys.bucket(start_ms), retention_s)


def trim_index(update: StateUpdate, keys: MetricKeys, newest_ms: int, retention_s: int) -> None:
    """Forget index entries older than the retention, counted in event time (replays stay deterministic)."""
    update.ztrim_below(keys.index, int(newest_ms) - retention_s * 1000)
    update.expire(keys.index, retention_s)


def add_slice_sums(
    updates: dict[str, StateUpdate],
    keys: MetricKeys,
    places: Sequence[tuple[str, int]],
    place: np.ndarray,
    slices: np.ndarray,
    sums: np.ndarray,
    metrics: Sequence[str],
) -> None:
    """Add summed counters to bucket hashes: one ``incr_many`` per (source, bucket).

    Row ``r`` adds ``sums[r, j]`` to the field ``<slices[r]>|<metrics[j]>`` of the bucket
    of ``places[place[r]]`` (source, bucket start), in ``updates[source]``; rows are unique
    per (place, slice). Fields go in the order of (source, bucket, slice), then of
    ``metrics``, zeros left out; :data:`FLOAT_METRICS` as floats, the rest rounded to
    integers. Vectorised: no Python work per row or field but the names' concatenation.
    """
    if len(place) == 0:
        return
    slice_rank = np.unique(slices, return_inverse=True)[1].reshape(-1)
    place_rank = np.empty(len(places), dtype=np.int64)
    place_rank[sorted(range(len(places)), key=places.__getitem__)] = np.arange(len(places))
    order = np.lexsort((slice_rank, place_rank[place]))
    metric_names = np.array(["|" + m for m in metrics], dtype=object)
    is_float = np.array([m in FLOAT_METRICS for m in metrics], dtype=bool)
    rows, cols = np.nonzero(np.where(is_float, sums, np.rint(sums))[order])
    if len(rows) == 0:
        return
    names = (slices[order][rows] + metric_names[cols]).tolist()
    amounts = sums[order][rows, cols]
    floats = is_float[cols]
    at_place = place[order][rows]
    bounds = np.flatnonzero(np.diff(at_place)) + 1
    for lo, hi in zip([0, *bounds.tolist()], [*bounds.tolist(), len(rows)], strict=True):
        source, bucket = places[int(at_place[lo])]
        updates[source].incr_array(keys.bucket(bucket), names[lo:hi], amounts[lo:hi], floats[lo:hi])


def encode_prediction(bucket: int, slices: Sequence[str], prediction: Any, score: float | None) -> str:
    """A stored prediction: lines of its bucket, score (empty: none), prediction (JSON) and slices.

    Slices and JSON hold no raw newline; lines cost less to store, send and read back than a
    JSON object (:func:`decode_prediction` still reads that older form).
    """
    return _prediction_lines(bucket, slices, json.dumps(prediction, default=str), score)


def _prediction_lines(bucket: int, slices: Sequence[str], prediction_json: str, score: float | None) -> str:
    head = f"{int(bucket)}\n{'' if score is None else repr(float(score))}\n{prediction_json}"
    return "\n".join([head, *slices])


class PredictionEncoder:
    """:func:`encode_prediction` with the JSON of each distinct class label written once.

    Classification predictions repeat: an encoder (one per batch) keeps the JSON of ints,
    strings, booleans and None by type and value (``True == 1`` but their JSON differs);
    floats (``0.0 == -0.0``) and other values are written each time.
    """

    def __init__(self) -> None:
        self._json: dict[tuple[type, Any], str] = {}

    def encode(self, bucket: int, slices: Sequence[str], prediction: Any, score: float | None) -> str:
        return _prediction_lines(bucket, slices, self._json_of(prediction), score)

    def _json_of(self, prediction: Any) -> str:
        kind = type(prediction)
        if kind not in _REPEATED:
            return json.dumps(prediction, default=str)
        text = self._json.get((kind, prediction))
        if text is None:
            text = self._json[(kind, prediction)] = json.dumps(prediction)
        return text


_REPEATED = frozenset({int, str, bool, type(None)})


def encode_predictions(
    buckets: Sequence[int], slices: Sequence[Sequence[str]], predictions: Sequence[Any], scores: Sequence[float | None]
) -> list[str]:
    """:func:`encode_prediction` of each row, from columns: ``slices`` holds one column of
    slice names per dimension (row ``i``'s slices are ``[c[i] for c in slices]``).

    The JSON of each distinct class label (by type and value, as :class:`PredictionEncoder`
    keeps it) is written once and each row's lines joined in one call; a column with other
    values (floats, lists) encodes those rows one by one.
    """
    bucket_text = [str(int(b)) for b in buckets]
    score_text = ["" if x is None else repr(float(x)) for x in scores]
    kinds = list(map(type, predictions))
    if _REPEATED.issuperset(kinds):
        # Hashable by (type, value): True and 1, say, keep their own JSON.
        pairs = list(zip(kinds, predictions, strict=True))
        table = {key: json.dumps(key[1]) for key in dict.fromkeys(pairs)}
        prediction_text = list(map(table.__getitem__, pairs))
    else:
        encode = PredictionEncoder()._json_of
        prediction_text = list(map(encode, predictions))
    return list(map("\n".join, zip(bucket_text, score_text, prediction_text, *slices, strict=True)))


#: The JSON of the commonest class labels, read without the JSON parser (immutable values).
_CLASS_JSON: dict[str, Any] = {"0": 0, "1": 1, "true": True, "false": False, "null": None}


def decode_prediction(text: str | bytes | None) -> dict[str, Any] | None:
    """``{bucket, slices, prediction, score}`` of a stored prediction; None if absent or unreadable."""
    if text is None:
        return None
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    if not text.startswith("{"):
        lines = text.split("\n")
        try:
            head = lines[2]
            prediction = _CLASS_JSON[head] if head in _CLASS_JSON else json.loads(head)
            bucket, score = int(lines[0]), lines[1]
            return {
                "bucket": bucket,
                "slices": lines[3:],
                "prediction": prediction,
                "score": float(score) if score else None,
            }
        except (ValueError, IndexError):
            return None
    try:
        value = json.loads(text)
    except (ValueError, TypeError):
        return None
    return value if isinstance(value, dict) and "bucket" in value else None


def decode_predictions(texts: Sequence[str | bytes | None]) -> list[dict[str, Any] | None]:
    """:func:`decode_prediction` of each of ``texts``: the line form read in one loop, any other
    (bytes, the older JSON objects, an unreadable text) by :func:`decode_prediction` itself."""
    out: list[dict[str, Any] | None] = []
    append, classes = out.append, _CLASS_JSON
    for text in texts:
        if not isinstance(text, str) or text[:1] == "{":
            append(decode_prediction(text))
            continue
        lines = text.split("\n")
        if len(lines) < 3:
            append(None)
            continue
        head, score = lines[2], lines[1]
        try:
            prediction = classes[head] if head in classes else json.loads(head)  # first, as decode_prediction
            append(
                {
                    "bucket": int(lines[0]),
                    "slices": lines[3:],
                    "prediction": prediction,
                    "score": float(score) if score else None,
                }
            )
        except ValueError:
            append(None)
    return out


@dataclass
class PredictionTable:
    """Stored predictions decoded together (:func:`decode_prediction_table`): row ``i`` is text ``i``'s."""

    #: Where the text held a readable prediction (the other rows' values are placeholders).
    found: np.ndarray
    buckets: np.ndarray
    #: NaN where the prediction has no score.
    scores: np.ndarray
    predictions: list[Any]
    #: Each row's slice names: a 2-D object array when every text has as many, else lists.
    slices: np.ndarray | list[list[str]]

    @classmethod
    def of(cls, preds: Sequence[dict[str, Any] | None]) -> PredictionTable:
        """The table of predictions decoded one by one (None: not found)."""
        return _table_of(preds)

    def slices_with_all(self, at: np.ndarray) -> np.ndarray | list[list[str]]:
        """The slices of rows ``at``, ``*`` first: a 2-D object array, or lists."""
        if isinstance(self.slices, np.ndarray):
            out = np.empty((len(at), self.slices.shape[1] + 1), dtype=object)
            out[:, 0] = ALL
            out[:, 1:] = self.slices[at]
            return out
        return [[ALL, *self.slices[i]] for i in at.tolist()]


def decode_prediction_table(texts: Sequence[str | bytes | None]) -> PredictionTable:
    """:func:`decode_predictions` of ``texts`` as columns.

    Texts of the line form with as many lines each (one model's slices) are split in one
    call and their columns converted at once; if any of them does not convert, or the texts
    differ in form, each goes through :func:`decode_predictions`, which reads what it can.
    """
    table = _line_table(texts)
    return table if table is not None else _table_of(decode_predictions(texts))


def _line_table(texts: Sequence[str | bytes | None]) -> PredictionTable | None:
    n = len(texts)
    if n == 0 or not all(isinstance(t, str) and t[:1] != "{" for t in texts):
        return None
    lines = cast("list[str]", texts)
    width = lines[0].count("\n") + 1
    if width < 3 or any(t.count("\n") != width - 1 for t in lines):
        return None
    cells = np.array("\n".join(lines).split("\n"), dtype=object).reshape(n, width)
    classes = _CLASS_JSON
    try:
        buckets = np.fromiter(map(int, cells[:, 0]), dtype=np.int64, count=n)
        scores = np.fromiter((float(x) if x else math.nan for x in cells[:, 1]), dtype=np.float64, count=n)
        predictions = [classes[x] if x in classes else json.loads(x) for x in cells[:, 2].tolist()]
    except ValueError:
        return None
    return PredictionTable(np.ones(n, dtype=bool), buckets, scores, predictions, cells[:, 3:])


def _number_or_nan(value: Any) -> float:
    """A stored score as a float: NaN for none, or one that is not a number (the prediction decides then)."""
    if value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _table_of(preds: Sequence[dict[str, Any] | None]) -> PredictionTable:
    found = np.array([p is not None for p in preds], dtype=bool).reshape(len(preds))
    rows = [p or {} for p in preds]
    return PredictionTable(
        found,
        np.array([int(p.get("bucket", 0)) for p in rows], dtype=np.int64).reshape(len(rows)),
        np.array([_number_or_nan(p.get("score")) for p in rows], dtype=np.float64).reshape(len(rows)),
        [p.get("prediction") for p in rows],
        [list(p.get("slices", [])) for p in rows],
    )


def distinct_cells(cells: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(cells, return_inverse=True)`` of cells in ``range(size)``: by counting, not
    sorting, when the range is not much larger than the cells."""
    if size > max(4 * len(cells), 1 << 16):
        present, at = np.unique(cells, return_inverse=True)
        return present, at.reshape(-1)
    present = np.flatnonzero(np.bincount(cells, minlength=size))
    rank = np.zeros(size, dtype=np.int64)
    rank[present] = np.arange(len(present))
    return present, rank[cells]


def grouped_sums(cells: np.ndarray, size: int, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct ``cells`` (in ``range(size)``, sorted) and the sums of ``values``' rows in each,
    added in row order (one ``np.add.reduceat`` over the rows sorted by cell)."""
    present, inverse = distinct_cells(cells, size)
    # A stable sort of small codes: radix sort on 16 bits where they fit.
    narrow = inverse.astype(np.int16) if len(present) <= np.iinfo(np.int16).max else inverse
    order = np.argsort(narrow, kind="stable")
    starts = np.searchsorted(inverse[order], np.arange(len(present)))
    return present, np.add.reduceat(values[order], starts, axis=0)

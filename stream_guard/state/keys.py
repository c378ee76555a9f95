"""The Redis key layout, in one place (README documents the same table).

Every key of a model carries the model name as a hash tag (``{fraud}``), so all of a
model's keys live in one Redis Cluster slot and one Lua script may touch them all.
No other module builds a key name: they all ask :class:`ModelKeys`.

=================================================  =====  =================================================
key                                                type   content
=================================================  =====  =================================================
``sg:{m}:applied``                                 hash   events ``topic:partition`` -> last applied offset
``sg:{m}:wm``                                      hash   events ``topic:partition`` -> max event time (ms)
``sg:{m}:wm_seen``                                 hash   events ``topic:partition`` -> wall clock of last update
``sg:{m}:windows``                                 zset   open window starts (ms), score = start
``sg:{m}:detectors``                               hash   events ``topic:partition`` -> online detectors' checkpoint
``sg:{m}:w:<start>``                               hash   counters of one event-time window
``sg:{m}:w:<start>:x:<kind>|<feature>|<slice>``    list   example JSON objects of one finding
``sg:{m}:w:<start>:card:<feature>``                hll    distinct values of a categorical feature
``sg:{m}:w:<start>:lease``                         str    worker id holding the right to close it
``sg:{m}:incidents``                               zset   open incident ids, score = end of their last window
``sg:{m}:incident:<incident_id>``                  hash   ``opened_start``, ``last_seen_end``,
                                                          ``last_published_end``, ``windows``, ``events``, ``alert``,
                                                          ``pub|<end>``, ``peak_*``, ``m|<id>``/``s|<id>`` per finding,
                                                          ``early``/``early_pending`` if it opened early
``sg:{m}:early:<start>:<group>``                   str    incident id that fired early for a burst or feature
``sg:{m}:txn``                                     hash   ``<transactional id>@<ms>`` -> steps awaiting that transaction
``sg:{m}:m:<bucket_start_ms>``                     hash   slice metrics ``<slice>|<metric>`` of one bucket
``sg:{m}:m:index``                                 zset   metric bucket starts (ms), score = start
``sg:{m}:m:sum:<tile_ms>:<start>``                 hash   an evaluator's sums of a whole hour of tiles, ``_sig``
                                                          the versions they were summed at, ``_n`` buckets present
``sg:{m}:pred:<event_id>``                         str    a stored prediction, waiting for its label
``sg:{m}:m:labels_applied``                        hash   labels ``topic:partition`` -> last applied offset
``sg:{m}:m:labels_wm``                             hash   labels ``topic:partition`` -> max label time (ms)
``sg:{m}:m:labels_seen``                           hash   labels ``topic:partition`` -> wall clock of last update
``sg:{m}:held:<event_id>``                         str    a label waiting for its prediction (JSON)
``sg:{m}:m:held``                                  zset   held event ids, score = label time (ms)
=================================================  =====  =================================================

An update is fenced on one of two sets of four fixed keys (:meth:`ModelKeys.fenced`):
events on ``applied``, ``wm``, ``wm_seen`` and ``windows``; labels on ``m:labels_applied``,
``m:labels_wm``, ``m:labels_seen`` and ``m:index``, so labels partitions never hold back
(or release) the events' windows.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum


class Fence(StrEnum):
    """Which partitions an update comes from, and so which fence and watermarks it moves."""

    EVENTS = "events"
    LABELS = "labels"


@dataclass(frozen=True)
class ModelKeys:
    prefix: str
    model: str

    @property
    def base(self) -> str:
        return f"{self.prefix}:{{{self.model}}}"

    # -- the events' fence and windows ----------------------------------------------------

    @property
    def applied(self) -> str:
        return f"{self.base}:applied"

    @property
    def watermarks(self) -> str:
        return f"{self.base}:wm"

    @property
    def watermarks_seen(self) -> str:
        return f"{self.base}:wm_seen"

    @property
    def windows(self) -> str:
        return f"{self.base}:windows"

    @property
    def detectors(self) -> str:
        """Checkpoints of the online drift detectors, one field per events partition (no TTL, like the fence)."""
        return f"{self.base}:detectors"

    def window(self, start_ms: int) -> str:
        return f"{self.base}:w:{start_ms}"

    def examples(self, start_ms: int, finding_key: str) -> str:
        return f"{self.base}:w:{start_ms}:x:{finding_key}"

    def cardinality(self, start_ms: int, feature: str) -> str:
        """The HyperLogLog of a categorical feature's distinct values in one window."""
        return f"{self.window(start_ms)}:card:{feature}"

    def lease(self, start_ms: int) -> str:
        return f"{self.base}:w:{start_ms}:lease"

    # -- incidents ---------------------------------------------------------------------------

    @property
    def incidents(self) -> str:
        return f"{self.base}:incidents"

    def incident(self, incident_id: str) -> str:
        return f"{self.base}:incident:{incident_id}"

    @property
    def transaction_steps(self) -> str:
        """``exactly_once``: per transactional id, the Redis steps waiting for its open transaction (JSON)."""
        return f"{self.base}:txn"

    def early_claim(self, start_ms: int, group: str) -> str:
        """Which cause fired early for a burst or a feature (``group``) in the window at ``start_ms``."""
        return f"{self.base}:early:{start_ms}:{group}"

    # -- slice metrics, stored predictions and the labels' fence ----------------------------

    def bucket(self, start_ms: int) -> str:
        return f"{self.base}:m:{int(start_ms)}"

    @property
    def metrics_index(self) -> str:
        return f"{self.base}:m:index"

    def rollup_sum(self, tile_ms: int, start_ms: int) -> str:
        """The stored sums of the buckets of a whole hour of ``tile_ms`` tiles from ``start_ms``."""
        return f"{self.base}:m:sum:{int(tile_ms)}:{int(start_ms)}"

    def prediction(self, event_id: str) -> str:
        return f"{self.base}:pred:{event_id}"

    def predictions(self, event_ids: Iterable[str]) -> list[str]:
        """:meth:`prediction` of each event id, the common part formatted once."""
        prefix = self.prediction("")
        return [f"{prefix}{x}" for x in event_ids]

    @property
    def labels_applied(self) -> str:
        return f"{self.base}:m:labels_applied"

    @property
    def labels_watermarks(self) -> str:
        return f"{self.base}:m:labels_wm"

    @property
    def labels_seen(self) -> str:
        return f"{self.base}:m:labels_seen"

    def held(self, event_id: str) -> str:
        """A label that arrived before its prediction, waiting for it."""
        return f"{self.base}:held:{event_id}"

    def helds(self, event_ids: Iterable[str]) -> list[str]:
        """:meth:`held` of each event id, the common part formatted once."""
        prefix = self.held("")
        return [f"{prefix}{x}" for x in event_ids]

    @property
    def held_index(self) -> str:
        return f"{self.base}:m:held"

    def fenced(self, fence: Fence) -> tuple[str, str, str, str]:
        """The four fixed keys of an update's script: fence, watermarks, clocks, and the set ``W`` adds to."""
        if fence is Fence.LABELS:
            return (self.labels_applied, self.labels_watermarks, self.labels_seen, self.metrics_index)
        return (self.applied, self.watermarks, self.watermarks_seen, self.windows)

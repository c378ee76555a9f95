"""The Redis key layout, in one place (README documents the same table).

Every key of a model carries the model name as a hash tag (``{fraud}``), so all of a
model's keys live in one Redis Cluster slot and one Lua script may touch them all.

=============================================  =====  ==========================================
key                                            type   content
=============================================  =====  ==========================================
``sg:{m}:applied``                             hash   ``topic:partition`` -> last applied offset
``sg:{m}:wm``                                  hash   ``topic:partition`` -> max event time (ms)
``sg:{m}:wm_seen``                             hash   ``topic:partition`` -> wall clock of last update
``sg:{m}:windows``                             zset   open window starts (ms), score = start
``sg:{m}:w:<start>``                           hash   counters of one event-time window
``sg:{m}:w:<start>:x:<kind>|<feature>|<slice>``  list   example JSON objects of one finding
``sg:{m}:w:<start>:lease``                     str    worker id holding the right to close it
=============================================  =====  ==========================================
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelKeys:
    prefix: str
    model: str

    @property
    def base(self) -> str:
        return f"{self.prefix}:{{{self.model}}}"

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

    def window(self, start_ms: int) -> str:
        return f"{self.base}:w:{start_ms}"

    def examples(self, start_ms: int, finding_key: str) -> str:
        return f"{self.base}:w:{start_ms}:x:{finding_key}"

    def lease(self, start_ms: int) -> str:
        return f"{self.base}:w:{start_ms}:lease"

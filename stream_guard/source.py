"""Where records come from: one partition of one topic."""

from __future__ import annotations

from typing import NamedTuple


class Source(NamedTuple):
    """A topic partition; ``str(source)`` is its name in Redis (``topic:partition``)."""

    topic: str
    partition: int

    def __str__(self) -> str:
        return f"{self.topic}:{self.partition}"

    @classmethod
    def parse(cls, name: str) -> Source:
        """The source named ``topic:partition`` (topic names may not contain ':')."""
        topic, _, partition = name.rpartition(":")
        if not topic or not partition.isdigit():
            raise ValueError(f"{name!r} is not a topic:partition name")
        return cls(topic, int(partition))

"""Progress of long work (``learn`` on a large file or from a topic): one redrawn line on a TTY, else log lines.

On a terminal the line is redrawn in place on stderr (at most five times a second) and
ends with a newline when the work is done; elsewhere (a pod's log, a CI job) a structured
``progress`` log line is written at most every ``interval_s`` seconds, plus one per stage
and one when done, so a log shows the work moving without a line per record.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

import structlog

#: Seconds between redraws of the line on a terminal.
TTY_REFRESH_S = 0.2


class Progress:
    """The progress of one task: :meth:`stage` names a step, :meth:`update` counts, :meth:`done` ends it."""

    def __init__(
        self,
        task: str,
        *,
        unit: str = "rows",
        stream: TextIO | None = None,
        interval_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._task = task
        self._unit = unit
        self._stream = stream if stream is not None else sys.stderr
        self._tty = self._stream.isatty()
        self._interval_s = interval_s
        self._clock = clock
        self._started = self._last = clock()
        self._stage = ""
        self._total: int | None = None
        self._count = 0
        # A logger of its own: with structlog's cache_logger_on_first_use, one of the module
        # would keep writing to the stderr of the first task (a test's, closed since).
        self._log = structlog.get_logger("stream_guard.progress")

    def stage(self, name: str, *, total: int | None = None, unit: str | None = None) -> None:
        """Start a step (``reading file``, ``profiling fields``...) of ``total`` units, if known."""
        self._stage, self._total, self._count = name, total, 0
        self._unit = unit or self._unit
        self._emit(force=True)

    def update(self, count: int) -> None:
        """``count`` units of the current stage are done; shown when it is time to."""
        self._count = count
        self._emit(force=False)

    def done(self, summary: str = "") -> None:
        """End the task: the final line on a TTY, a ``progress done`` log line otherwise."""
        elapsed = self._clock() - self._started
        if self._tty:
            self._draw(f"{self._task}: done in {elapsed:.1f}s{f' ({summary})' if summary else ''}")
            self._stream.write("\n")
            self._stream.flush()
        else:
            self._log.info("progress done", task=self._task, elapsed_s=round(elapsed, 1), summary=summary or None)

    def text(self) -> str:
        """The current progress as one line: task, stage, count of total, share, elapsed time."""
        elapsed = self._clock() - self._started
        parts = [f"{self._task}: {self._stage}"]
        if self._count or self._total:
            of = f"/{self._total:,}" if self._total else ""
            share = f" ({100 * self._count / self._total:.0f}%)" if self._total else ""
            parts.append(f"{self._count:,}{of} {self._unit}{share}")
        return ", ".join(parts) + f" [{elapsed:.1f}s]"

    def _emit(self, *, force: bool) -> None:
        now = self._clock()
        if not force and now - self._last < (TTY_REFRESH_S if self._tty else self._interval_s):
            return
        self._last = now
        if self._tty:
            self._draw(self.text())
            return
        share = round(100 * self._count / self._total, 1) if self._total else None
        self._log.info(
            "progress",
            task=self._task,
            stage=self._stage,
            done=self._count,
            total=self._total,
            percent=share,
            unit=self._unit,
            elapsed_s=round(now - self._started, 1),
        )

    def _draw(self, line: str) -> None:
        # Erase the previous line (\r, then clear to its end) and write the new one without a newline.
        self._stream.write(f"\r\x1b[K{line}")
        self._stream.flush()

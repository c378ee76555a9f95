"""Recent alerts for the dashboard: a background reader of the alerts topic, as ``stream-guard alerts --since``.

It starts at the first alert produced within ``lookback_s`` (broker time) and keeps the
newest message per ``alert_id`` (a late update of a window supersedes the earlier one),
at most ``limit`` of them, in a thread of its own: a page request never waits for Kafka.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any

import structlog
from confluent_kafka import KafkaException

from stream_guard.alerts.reader import alert_decoder, alerts_consumer, kinds_of, positions_since
from stream_guard.errors import StreamGuardError
from stream_guard.settings import Config

log = structlog.get_logger("stream_guard.dashboard")


class AlertFeed:
    """The latest alerts of the topic, by ``alert_id``; :meth:`recent` is safe from any thread."""

    def __init__(self, config: Config, *, lookback_s: float = 24 * 3600, limit: int = 500, poll_s: float = 0.5) -> None:
        self._config = config
        self._lookback_s = lookback_s
        self._limit = limit
        self._poll_s = poll_s
        self._alerts: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stream-guard-dashboard-alerts", daemon=True)
        #: Why the topic cannot be read right now (shown on the page), or None.
        self.problem: str | None = None
        self.undecodable = 0

    def start(self) -> AlertFeed:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def add(self, record: dict[str, Any]) -> None:
        """Keep ``record``, replacing an older message of the same alert."""
        with self._lock:
            self._alerts.pop(record["alert_id"], None)
            self._alerts[record["alert_id"]] = record
            while len(self._alerts) > self._limit:
                self._alerts.popitem(last=False)

    def recent(self, model: str | None = None, kinds: frozenset[str] | None = None) -> list[dict[str, Any]]:
        """Alerts of ``model`` (all models when None) and of ``kinds`` (as primary or evidence), newest first."""
        with self._lock:
            records = list(self._alerts.values())
        chosen = [
            r for r in records if (model is None or r["model"] == model) and (kinds is None or kinds & kinds_of(r))
        ]
        return sorted(chosen, key=lambda r: r["emitted_at"], reverse=True)

    def _run(self) -> None:
        topic = self._config.kafka.alerts_topic
        decode = alert_decoder(self._config)
        while not self._stop.is_set():
            consumer = alerts_consumer(self._config, group_id=None, from_beginning=True)
            try:
                since_ms = int((time.time() - self._lookback_s) * 1000)
                consumer.assign(positions_since(consumer, topic, since_ms))
                self.problem = None
                while not self._stop.is_set():
                    message = consumer.poll(self._poll_s)
                    if message is None or message.error() is not None or message.value() is None:
                        continue
                    try:
                        self.add(decode(message.value()))
                    except (ValueError, TypeError, KeyError, EOFError) as exc:
                        self.undecodable += 1
                        log.warning("undecodable alert", offset=message.offset(), error=str(exc))
            except (StreamGuardError, KafkaException) as exc:
                self.problem = str(exc)
                log.warning("alerts topic not readable; retrying", topic=topic, error=str(exc))
                self._stop.wait(5.0)
            finally:
                consumer.close()

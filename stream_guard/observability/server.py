"""The worker's HTTP endpoint: ``/metrics`` (Prometheus), ``/healthz`` (liveness), ``/readyz`` (readiness).

* live: the poll loop turned within ``liveness_timeout_s`` (a stuck worker is restarted);
* ready: subscribed (partitions assigned, or waiting for an assignment), the broker and
  Redis answered the last time they were used, and not retrying a failed batch.

Both answer ``200`` with a JSON body saying why, or ``503``. ``stream-guard health`` asks
``/readyz`` and exits 0 or 1, for the Dockerfile's HEALTHCHECK and Kubernetes probes.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from stream_guard.observability.http import Response, Route, RouteServer
from stream_guard.observability.metrics import WorkerMetrics


@dataclass
class WorkerHealth:
    """What the probes read; the worker updates it as it runs."""

    liveness_timeout_s: float = 120.0
    subscribed: bool = False
    assigned: int = 0
    broker_ok: bool = True
    redis_ok: bool = True
    retrying: bool = False
    last_loop: float = field(default_factory=time.monotonic)

    def loop_turned(self) -> None:
        self.last_loop = time.monotonic()

    def live(self) -> tuple[bool, dict[str, Any]]:
        idle = time.monotonic() - self.last_loop
        return idle <= self.liveness_timeout_s, {"loop_idle_s": round(idle, 3)}

    def ready(self) -> tuple[bool, dict[str, Any]]:
        state = {k: v for k, v in asdict(self).items() if k not in ("last_loop", "liveness_timeout_s")}
        live, detail = self.live()
        ok = live and self.subscribed and self.broker_ok and self.redis_ok and not self.retrying
        return ok, {**state, **detail}


class HealthServer(RouteServer):
    """Serves the endpoints in a daemon thread; ``port=0`` picks a free port (see :attr:`port`)."""

    def __init__(self, metrics: WorkerMetrics, health: WorkerHealth, *, bind: str = "0.0.0.0", port: int = 0) -> None:
        def probe_route(check: Callable[[], tuple[bool, dict[str, Any]]]) -> Route:
            def answer() -> Response:
                ok, detail = check()
                return 200 if ok else 503, json.dumps({"ok": ok, **detail}).encode(), "application/json"

            return answer

        routes: dict[str, Route] = {
            "/metrics": lambda: (200, generate_latest(metrics.registry), CONTENT_TYPE_LATEST),
            "/healthz": probe_route(health.live),
            "/readyz": probe_route(health.ready),
        }
        super().__init__(routes, name="stream-guard-http", bind=bind, port=port)


def probe(url: str, timeout_s: float = 3.0) -> tuple[bool, str]:
    """GET ``url``: (whether it answered 200, the body or the reason it did not)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status == 200, response.read().decode()
    except urllib.error.HTTPError as exc:
        return False, exc.read().decode() or str(exc)
    except (urllib.error.URLError, OSError) as exc:
        return False, f"no answer from {url}: {exc}"

"""``stream-guard dashboard``: the page over HTTP (the standard library's server, as the worker's probes).

``/`` renders the page from Redis on each request, with the alerts the background
:class:`~stream_guard.dashboard.feed.AlertFeed` has read; ``/healthz`` answers ``ok``.
Redis down is a 503 page saying so, not a traceback.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from stream_guard.dashboard.feed import AlertFeed
from stream_guard.dashboard.page import render_page
from stream_guard.dashboard.views import read_model_view
from stream_guard.observability.http import Response, RouteServer
from stream_guard.settings import Config
from stream_guard.state.client import REDIS_ERRORS, RedisClient, connect

log = structlog.get_logger("stream_guard.dashboard")


@dataclass(frozen=True)
class DashboardOptions:
    #: Event-time range shown, ending at each model's newest bucket.
    window_ms: int = 3_600_000
    #: Label-based metric ranked and plotted per slice (default: recall, or MAE for regression).
    metric: str | None = None
    min_support: int = 100
    refresh_s: int = 30


class Dashboard:
    """Renders the page of every configured model."""

    def __init__(self, config: Config, client: RedisClient, feed: AlertFeed, options: DashboardOptions) -> None:
        self.config, self.client, self.feed, self.options = config, client, feed, options

    def render(self) -> str:
        o = self.options
        views = [
            read_model_view(
                self.config, m.name, self.client, window_ms=o.window_ms, metric=o.metric, min_support=o.min_support
            )
            for m in self.config.models
        ]
        alerts = {v.model: self.feed.recent(v.model) for v in views}
        problems = [f"alerts topic: {self.feed.problem}"] if self.feed.problem else []
        return render_page(views, alerts, now_ms=int(time.time() * 1000), problems=problems, refresh_s=o.refresh_s)


class DashboardServer(RouteServer):
    """Serves ``render()`` at ``/`` in a daemon thread; ``port=0`` picks a free port (see :attr:`port`)."""

    def __init__(self, render: Callable[[], str], *, bind: str = "127.0.0.1", port: int = 0) -> None:
        def page() -> Response:
            try:
                return 200, render().encode(), "text/html; charset=utf-8"
            except REDIS_ERRORS as exc:
                body = f"<!doctype html><p>stream-guard dashboard: Redis unavailable: {exc}</p>"
                return 503, body.encode(), "text/html; charset=utf-8"

        super().__init__(
            {"/": page, "/healthz": lambda: (200, b"ok\n", "text/plain")},
            name="stream-guard-dashboard",
            bind=bind,
            port=port,
            headers={"Cache-Control": "no-store"},
            on_request=lambda line: log.debug("dashboard request", line=line),
        )


def start_dashboard(
    config: Config, options: DashboardOptions, *, bind: str = "127.0.0.1", port: int = 0
) -> tuple[DashboardServer, AlertFeed]:
    """The alert feed and the HTTP server of ``config``, both running."""
    client = connect(config.redis)
    feed = AlertFeed(config).start()
    server = DashboardServer(Dashboard(config, client, feed, options).render, bind=bind, port=port).start()
    log.info("dashboard listening", url=f"http://{bind}:{server.port}/", models=[m.name for m in config.models])
    return server, feed

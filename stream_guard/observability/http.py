"""A small HTTP server of fixed routes in a daemon thread, for the worker's probes and the dashboard.

Each route is a function returning ``(status, body, content type)``; an unknown path is a
404. The standard library's threading server is enough for a page and a few probes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

#: A route's answer: status, body, content type.
Response = tuple[int, bytes, str]
Route = Callable[[], Response]


class RouteServer:
    """Serves ``routes`` (path without query -> handler); ``port=0`` picks a free port (see :attr:`port`).

    Parameters
    ----------
    routes
        The paths served; anything else is ``404``.
    name
        The serving thread's name.
    headers
        Extra headers of every response (e.g. ``Cache-Control``).
    on_request
        Called with each request's log line (default: nothing is logged, as probes every
        few seconds would flood a log).
    """

    def __init__(
        self,
        routes: Mapping[str, Route],
        *,
        name: str,
        bind: str = "127.0.0.1",
        port: int = 0,
        headers: Mapping[str, str] | None = None,
        on_request: Callable[[str], None] | None = None,
    ) -> None:
        routes_, headers_ = dict(routes), dict(headers or {})

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                route = routes_.get(self.path.split("?", 1)[0])
                status, body, content_type = route() if route else (404, b"not found\n", "text/plain")
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for header, value in headers_.items():
                    self.send_header(header, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                if on_request is not None:
                    on_request(format % args)

        self._server = ThreadingHTTPServer((bind, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name=name, daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

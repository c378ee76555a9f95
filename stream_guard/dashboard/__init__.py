"""``stream-guard dashboard``: a web page of each model's slice metrics, drift, incidents and alerts.

* :mod:`~stream_guard.dashboard.views` reads what one model shows from Redis;
* :mod:`~stream_guard.dashboard.feed` reads recent alerts from the alerts topic;
* :mod:`~stream_guard.dashboard.plots` draws inline SVG, :mod:`~stream_guard.dashboard.page` the HTML;
* :mod:`~stream_guard.dashboard.server` serves it with the standard library's HTTP server.
"""

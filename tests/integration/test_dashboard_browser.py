"""The dashboard in a real browser: a real worker fills redis-server and the alerts topic, headless Chromium reads the page."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from streamtest import learn_simulated_profile, new_worker, produce, run_until, write_config

from stream_guard.assembly import metrics_reader
from stream_guard.dashboard.server import DashboardOptions, start_dashboard
from stream_guard.tools.embedded import create_topics
from stream_guard.tools.simulator import Simulator

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REPO = Path(__file__).resolve().parents[2]
SCREENSHOT = REPO / "tests" / "artifacts" / "dashboard.png"
WINDOW_MS = 60_000
START_MS = 1_700_000_000_000 - 1_700_000_000_000 % WINDOW_MS
STEP_MS = 60  # 1000 events per window (and per one-minute metrics bucket)
WINDOWS, DRIFTED = 6, 3
N_EVENTS = WINDOWS * WINDOW_MS // STEP_MS
CHANGE_MS = START_MS + (WINDOWS - DRIFTED) * WINDOW_MS


def _wait_for(condition: Any, what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _fill(tmp_path: Path, bootstrap: str, redis_url: str, unique: str) -> Any:
    """A worker with a profile and labels: metrics with labels, drift after CHANGE_MS, alerts on the topic."""
    labels_topic = f"labels-{unique}"
    config = write_config(
        tmp_path,
        bootstrap=bootstrap,
        redis_url=redis_url,
        unique=unique,
        window_s=WINDOW_MS // 1000,
        model_extra=f"""profile = "profile.json"

[models.labels]
topic = "{labels_topic}"
encoding = "json"
timestamp_field = "ts"
""",
    )
    learn_simulated_profile(config, tmp_path / "profile.json", n=20_000, seed=1234)
    create_topics(bootstrap, [labels_topic], partitions=1)
    sim = Simulator(seed=61)
    records = []
    for record in sim.records(N_EVENTS, START_MS, step_ms=STEP_MS):
        if record["ts"] >= CHANGE_MS:
            record = sim.corrupt(record, "amount_drift")
        elif int(record["event_id"].rsplit("-", 1)[1]) % 40 == 0:
            record = sim.corrupt(record, "age_sentinel")  # out_of_range findings before the change
        records.append(record)
    labels = sim.labels(records, android_misses=0.5)
    worker = new_worker(config)
    stages: list[str] = []
    failure: list[BaseException] = []

    def drive() -> None:
        try:
            produce(bootstrap, config.models[0].topics[0], ((None, sim.encode(r), r["ts"]) for r in records), 3)
            _wait_for(lambda: worker.stats.decoded >= N_EVENTS, "the events")  # predictions stored before labels
            produce(bootstrap, labels_topic, ((None, json.dumps(x).encode(), x["ts"]) for x in labels))
            _wait_for(lambda: worker.stats.labels_matched >= N_EVENTS, "the labels")
            stages.append("labelled")
        except Exception as exc:  # noqa: BLE001 - reported by the main thread
            failure.append(exc)

    driver = threading.Thread(target=drive)
    driver.start()
    run_until([worker], lambda: bool(failure) or bool(stages), timeout_s=150)
    driver.join(30)
    assert not failure, failure
    assert worker.stats.decoded == N_EVENTS and worker.stats.labels_matched == N_EVENTS
    return config


def test_dashboard_in_chromium_draws_every_plot_with_data_from_a_real_worker(
    tmp_path: Path, bootstrap: str, redis_url: str, unique: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every plot has points, drift crosses its threshold after the change, android is a worst slice, alerts listed."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} missing: `make chromium` installs the Debian packages chromium and chromium-driver")
    from playwright.sync_api import sync_playwright  # the dev extra; an ImportError fails the test too

    config = _fill(tmp_path, bootstrap, redis_url, unique)
    reader = metrics_reader(config, "fraud")
    newest = reader.buckets()[-1] + reader.bucket_ms
    expected_slices = len(reader.rollup(newest - 3_600_000, newest).select())
    server, feed = start_dashboard(config, DashboardOptions(min_support=30))
    url = f"http://127.0.0.1:{server.port}/"
    try:
        # amount's shift opens one incident (led by out_of_range or a drift kind); its other findings join it.
        _wait_for(
            lambda: [a for a in feed.recent("fraud") if a["feature"] == "amount"], "amount's alert in the feed", 30
        )
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.goto(url, wait_until="load")
                plots = page.eval_on_selector_all(
                    "svg.sg-plot",
                    """els => els.map(e => ({
                        id: e.dataset.plot, points: Number(e.dataset.points),
                        circles: e.querySelectorAll('circle.sg-point').length,
                        over: e.querySelectorAll('circle.sg-point.sg-over').length,
                        lines: e.querySelectorAll('path.sg-line').length,
                        bars: [...e.querySelectorAll('rect.sg-bar')].map(b => b.dataset.label),
                        threshold: e.querySelectorAll('line.sg-threshold').length,
                        width: e.getBoundingClientRect().width,
                    }))""",
                )
                section = page.locator("section.sg-model[data-model=fraud]")
                shown_slices = int(section.get_attribute("data-slices") or 0)
                alert_rows = page.locator("tr.sg-alert").all_inner_texts()
                incident_rows = page.locator("tr.sg-incident").all_inner_texts()
                worst_rows = page.locator("tr.sg-worst").count()
                SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(SCREENSHOT), full_page=True)
            finally:
                browser.close()
    finally:
        server.stop()
        feed.stop()
    with capsys.disabled():
        print(f"\ndashboard screenshot: {SCREENSHOT}")

    by_id = {p["id"]: p for p in plots}
    for name in ("events", "rates", "prediction", "performance", "drift-amount", "worst"):
        assert f"fraud-{name}" in by_id, sorted(by_id)
    for plot in plots:
        assert plot["points"] > 0 and plot["width"] > 0, plot
        if plot["id"] == "fraud-worst":
            assert len(plot["bars"]) == plot["points"], plot
        else:
            assert plot["circles"] == plot["points"] and plot["lines"] > 0, plot
    assert by_id["fraud-events"]["circles"] == WINDOWS  # one point per one-minute bucket
    assert by_id["fraud-performance"]["lines"] >= 2  # all traffic and the worst slices
    amount = by_id["fraud-drift-amount"]
    assert amount["threshold"] == 1 and amount["circles"] == WINDOWS
    assert amount["over"] == DRIFTED, amount  # PSI above the threshold in the drifted windows only
    assert "device_type=android" in by_id["fraud-worst"]["bars"], by_id["fraud-worst"]
    assert shown_slices == expected_slices > 0
    assert worst_rows == len(by_id["fraud-worst"]["bars"])
    assert any("amount" in row for row in alert_rows), alert_rows
    # The window statistics' data_drift on amount is evidence of amount's open incident.
    assert any("amount" in row and "data_drift amount" in row for row in incident_rows), incident_rows
    assert SCREENSHOT.stat().st_size > 10_000

    # The command serves the same page and stops cleanly on SIGTERM.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "stream_guard", "dashboard", "-c", str(tmp_path / "config.toml")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    log = (tmp_path / "dashboard.log").open("w")
    process = subprocess.Popen([*command, "--port", str(port)], cwd=REPO, env=env, stdout=log, stderr=log)
    try:
        body = ""
        deadline = time.monotonic() + 30
        while 'data-plot="fraud-events"' not in body and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                    body = response.read().decode()
            except OSError:
                time.sleep(0.3)
        assert 'data-plot="fraud-events"' in body, (tmp_path / "dashboard.log").read_text()
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0, (tmp_path / "dashboard.log").read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        log.close()

"""Progress of long work: a line redrawn in place on a terminal, rate-limited log lines elsewhere."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
from structlog.testing import capture_logs

from stream_guard.decoding import JsonDecoder
from stream_guard.learning.sources import learn_from_file
from stream_guard.model import ModelRuntime
from stream_guard.progress import Progress
from stream_guard.schemas import record_fields
from stream_guard.settings import ModelConfig


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_on_a_terminal_one_line_is_redrawn_at_most_five_times_a_second() -> None:
    """Each stage draws at once; counts redraw after 0.2 s; done ends the line with a newline."""
    out, clock = _Terminal(), _Clock()
    progress = Progress("learn fraud", stream=out, clock=clock)
    progress.stage("reading fraud.inferences", total=50_000, unit="events")
    progress.update(1_000)  # too soon: not drawn
    clock.now += 0.5
    progress.update(25_000)
    clock.now += 1.0
    progress.done("50,000 rows, 8 fields")
    frames = out.getvalue().split("\r\x1b[K")[1:]
    assert frames == [
        "learn fraud: reading fraud.inferences, 0/50,000 events (0%) [0.0s]",
        "learn fraud: reading fraud.inferences, 25,000/50,000 events (50%) [0.5s]",
        "learn fraud: done in 1.5s (50,000 rows, 8 fields)\n",
    ]


def test_elsewhere_progress_is_log_lines_every_interval() -> None:
    """Not a terminal: a ``progress`` log line per stage and per interval, one ``progress done`` at the end."""
    clock = _Clock()
    with capture_logs() as logs:
        progress = Progress("learn fraud", stream=io.StringIO(), interval_s=10, clock=clock)
        progress.stage("reading t", total=1_000, unit="events")
        for done in range(100, 1_001, 100):
            clock.now += 3
            progress.update(done)
        progress.done()
    lines = [(e["event"], e.get("done"), e.get("percent")) for e in logs]
    assert lines == [
        ("progress", 0, 0.0),
        ("progress", 400, 40.0),  # 12 s in
        ("progress", 800, 80.0),  # 24 s in
        ("progress done", None, None),
    ]
    assert logs[-1]["elapsed_s"] == 30.0 and logs[1]["stage"] == "reading t" and logs[1]["total"] == 1_000


def test_learn_from_a_file_reports_its_stages(tmp_path: Path) -> None:
    """learn --from-file: reading (with the file's size), profiling field by field, done."""
    schema = {
        "type": "record",
        "name": "E",
        "fields": [{"name": "amount", "type": "double"}, {"name": "country", "type": "string"}],
    }
    model = ModelRuntime(
        config=ModelConfig(name="m", topics=["t"], features=["amount", "country"]),
        reader_schema=schema,
        fields=record_fields(schema),
        decoder=JsonDecoder(schema),
        numeric_features=["amount"],
        categorical_features=["country"],
    )
    path = tmp_path / "ref.csv"
    pd.DataFrame({"amount": [float(i) for i in range(3000)], "country": ["FR", "DE"] * 1500}).to_csv(path, index=False)
    out = _Terminal()
    progress = Progress("learn m", stream=out, clock=_Clock())
    learn_from_file(model, path, progress=progress)
    progress.done()
    frames = out.getvalue().split("\r\x1b[K")[1:]
    assert frames[0].startswith(f"learn m: reading {path} (0.0 MB)")
    assert frames[1] == "learn m: profiling 3,000 rows, 0/2 fields (0%) [0.0s]"
    assert frames[-1] == "learn m: done in 0.0s\n"

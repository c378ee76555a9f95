"""Cost of the label join and of held labels, on a real redis-server.

Per batch of ``--batch`` labels (and as many events storing their predictions, on two
slices besides ``*``), the median over ``--batches`` batches of:

* ``join``: :meth:`LabelJoiner.join` (one read, one fenced script per labels partition);
* ``release``: :meth:`LabelJoiner.release` after the events batch (one read; one script
  when something was held).

Three orders: holding off (``hold_s = 0``) with events first (the old path), holding on
with events first (labels join directly; release only reads), and holding on with labels
first (every label held, then released by its events batch: a backlog's worst case).

    python bench/labels.py [--batch 500] [--batches 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from stream_guard.metrics import store as s  # noqa: E402
from stream_guard.metrics.holding import stored_event_ids  # noqa: E402
from stream_guard.metrics.labels import Label, LabelJoiner  # noqa: E402
from stream_guard.settings.metrics import MetricsSettings  # noqa: E402
from stream_guard.state import ModelKeys, StateUpdate, WindowStore  # noqa: E402
from stream_guard.tools.embedded import start_redis  # noqa: E402

BASE_MS = 1_700_000_000_000


def measure(client: redis.Redis, *, hold_s: int, labels_first: bool, batch: int, batches: int) -> tuple[float, float]:
    """Median milliseconds of (join, release) per batch."""
    keys = ModelKeys("bench", f"labels-{hold_s}-{labels_first}-{time.time_ns()}")
    store = WindowStore(
        client, keys, window_ms=600_000, lateness_ms=0, idle_ms=10**9, retention_s=86_400, worker_id="b"
    )
    joiner = LabelJoiner(keys, MetricsSettings(), hold_s=hold_s)
    joins: list[float] = []
    releases: list[float] = []
    bucket = BASE_MS // 60_000 * 60_000
    for b in range(batches):
        ids = [f"e{b}-{i}" for i in range(batch)]
        labels = [Label(x, i % 2, "labels:0", b * batch + i, BASE_MS + b * 1000) for i, x in enumerate(ids)]
        events = StateUpdate("events:0", b * batch, (b + 1) * batch - 1, BASE_MS + b * 1000)
        for i, x in enumerate(ids):
            prediction = s.encode_prediction(bucket, ["a=1", f"b={i % 3}"], 1, 0.7)
            events.set_once(keys.prediction(x), prediction, 3600, keys.bucket(bucket), ["*|st", "a=1|st"])

        def join(labels: list[Label] = labels) -> None:
            started = time.perf_counter()
            joiner.join(labels, store, now_ms=0)
            joins.append(time.perf_counter() - started)

        def store_and_release(events: StateUpdate = events) -> None:
            store.apply([events], 0)
            started = time.perf_counter()
            joiner.release(stored_event_ids([events], joiner.keys), store, now_ms=0)
            releases.append(time.perf_counter() - started)

        for step in (join, store_and_release) if labels_first else (store_and_release, join):
            step()
    return statistics.median(joins) * 1000, statistics.median(releases) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--batches", type=int, default=20)
    args = parser.parse_args()
    server = start_redis()
    try:
        client = redis.Redis(host="127.0.0.1", port=server.port, decode_responses=True)
        for hold_s, labels_first in ((0, False), (3600, False), (3600, True)):
            join, release = measure(
                client, hold_s=hold_s, labels_first=labels_first, batch=args.batch, batches=args.batches
            )
            order = "labels first" if labels_first else "events first"
            print(
                f"hold_s={hold_s:<5} {order}: join {join:6.1f} ms, release {release:6.1f} ms "
                f"per batch of {args.batch} ({(join + release) / args.batch * 1000:.0f} us per label)"
            )
    finally:
        server.stop()


if __name__ == "__main__":
    main()

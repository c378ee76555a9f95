"""The wide model's ingest path alone: CPU of :meth:`stream_guard.pipeline.Pipeline.stage` per event.

No broker, no Redis: pre-built Confluent-framed messages (``bench.wide_replay.Message``)
go through decoding, the row checks, online and window drift and the slice metrics'
counters, batch by batch, and the CPU of each part is printed per event.

    python bench/ingest_stage.py [--events 60000] [--batch 5000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.wide import EVENTS_TOPIC, learn_profile, write_config  # noqa: E402
from bench.wide_replay import Message  # noqa: E402


def timed(totals: dict[str, float], name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn``, adding its CPU time to ``totals[name]``."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            totals[name] += time.process_time() - started

    return wrapper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3, help="passes over the events (best one printed)")
    args = parser.parse_args()

    from stream_guard.assembly import build_stages
    from stream_guard.metrics import SliceRecorder
    from stream_guard.model import build_models
    from stream_guard.pipeline import Pipeline
    from stream_guard.settings import load_config
    from stream_guard.state.keys import ModelKeys
    from stream_guard.tools.wide import WideSimulator, write_wide_registry

    workdir = Path(tempfile.mkdtemp(prefix="sg-ingest-"))
    write_wide_registry(workdir / "registry")
    config_path = write_config(workdir, "ingest", "127.0.0.1:1", "redis://127.0.0.1:1/0", args.batch)
    learn_profile(workdir, config_path)
    config = load_config(config_path, environ={})
    sim = WideSimulator(seed=1)
    records = sim.records(args.events, 1_700_000_000_000, 1.0)
    by_partition: list[list[Message]] = [[] for _ in range(args.partitions)]
    for i, record in enumerate(records):
        p = i % args.partitions
        by_partition[p].append(Message(EVENTS_TOPIC, p, i // args.partitions, sim.encode(record), record["ts"]))
    longest = max(map(len, by_partition))
    work = [part[i : i + args.batch] for i in range(0, longest, args.batch) for part in by_partition if part[i:]]

    best: dict[str, float] | None = None
    for _ in range(args.repeat):
        (model,) = build_models(config)
        profiles = {model.name: model.profile} if model.profile else {}
        stages = build_stages(config, profiles)  # type: ignore[arg-type]
        stages.slice_recorders = {model.name: SliceRecorder.for_model(model, model.config.metrics, model.profile)}
        totals: dict[str, float] = defaultdict(float)
        model.decode = timed(totals, "decode", model.decode)  # type: ignore[method-assign]
        for check in stages.row_checks:
            check.findings = timed(totals, f"{type(check).__name__}.findings", check.findings)  # type: ignore[method-assign]
        for contributor in stages.contributors:
            name = f"{type(contributor).__name__}.contribute"
            contributor.contribute = timed(totals, name, contributor.contribute)  # type: ignore[method-assign]
        recorder = stages.slice_recorders[model.name]
        recorder.contribute_with_findings = timed(  # type: ignore[method-assign]
            totals, "SliceRecorder.contribute", recorder.contribute_with_findings
        )
        pipeline = Pipeline(config, stages)
        keys = ModelKeys(config.redis.key_prefix, model.name)
        started = time.process_time()
        for messages in work:
            pipeline.stage(model, messages, keys)
        totals["stage (total)"] = time.process_time() - started
        if best is None or totals["stage (total)"] < best["stage (total)"]:
            best = dict(totals)
    assert best is not None
    n = args.events
    for name, seconds in sorted(best.items(), key=lambda kv: -kv[1]):
        print(f"{name:32s} {seconds / n * 1e6:8.1f} µs/event")


if __name__ == "__main__":
    main()

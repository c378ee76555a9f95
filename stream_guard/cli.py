"""The ``stream-guard`` command line."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from stream_guard import __version__
from stream_guard.errors import ConfigError, StreamGuardError

if TYPE_CHECKING:
    from stream_guard.settings import Config


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"stream-guard: config error: {problem}", file=sys.stderr)
        return 2
    except StreamGuardError as exc:
        print(f"stream-guard: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # an outage is one line, not a traceback; anything else stays a traceback
        reason = _outage(exc)
        if reason is None:
            raise
        print(f"stream-guard: {reason}", file=sys.stderr)
        return 1


def _outage(exc: Exception) -> str | None:
    """A readable line for a Redis or Kafka outage, None for anything else."""
    from confluent_kafka import KafkaException

    from stream_guard.state.client import describe_error

    redis_reason = describe_error(exc)
    if redis_reason is not None:
        return redis_reason
    if isinstance(exc, KafkaException):
        return f"Kafka error: {exc.args[0].str() if exc.args else exc}; check [kafka] bootstrap_servers"
    return None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stream-guard", description="Guard ML models on their live Kafka streams.")
    parser.add_argument("--version", action="version", version=f"stream-guard {__version__}")
    sub = parser.add_subparsers(required=True, metavar="command")

    run = sub.add_parser("run", help="run a worker (add workers with the same group id to scale)")
    run.add_argument("-c", "--config", help="TOML config file (env STREAM_GUARD_* overrides it)")
    run.add_argument("--duration", type=float, help="stop after this many seconds")
    run.add_argument(
        "--drain-on-exit", action="store_true", help="close all open windows before exiting (finite replays)"
    )
    run.set_defaults(handler=_run)

    health = sub.add_parser("health", help="ask a running worker's readiness probe; exit 0 if ready (HEALTHCHECK)")
    health.add_argument("--url", default="http://127.0.0.1:9108/readyz", help="probe URL (default: %(default)s)")
    health.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for an answer")
    health.set_defaults(handler=_health)

    check = sub.add_parser("check-config", help="validate the config and the models' schemas, then exit")
    check.add_argument("-c", "--config")
    check.set_defaults(handler=_check_config)

    demo = sub.add_parser("demo", help="local broker + redis + simulator with faults + worker, printing alerts")
    demo.add_argument("--duration", type=float, default=80.0, help="seconds of simulated traffic (default 80)")
    demo.add_argument("--rate", type=int, default=400, help="events per second (default 400)")
    demo.set_defaults(handler=_demo)

    learn = sub.add_parser("learn", help="learn a model's baseline profile from reference data or the stream")
    learn.add_argument("-c", "--config")
    learn.add_argument("-m", "--model", help="model name (default: the only configured model)")
    source = learn.add_mutually_exclusive_group(required=True)
    source.add_argument("--from-file", metavar="PATH", help="Parquet, CSV or JSON-lines reference data")
    source.add_argument("--from-topic", action="store_true", help="the first --events events of the model's topics")
    learn.add_argument("--events", type=int, default=50_000, help="events to read with --from-topic (default 50000)")
    learn.add_argument("--since", help="with --from-topic: only events at or after this ISO-8601 time")
    learn.add_argument("--until", help="with --from-topic: only events before this ISO-8601 time")
    learn.add_argument("-o", "--output", help="profile file to write (default: the model's configured profile)")
    learn.add_argument(
        "--strict", action="store_true", help="refuse reference data with non-numeric values in numeric features"
    )
    learn.add_argument(
        "-q", "--quiet", action="store_true", help="no progress (a redrawn line on a TTY, else log lines)"
    )
    learn.add_argument(
        "--label-column",
        metavar="NAME",
        help="label column of the reference: records per-slice performance and known biases "
        "(default: the model's labels.label_field, if the reference has it)",
    )
    learn.set_defaults(handler=_learn)

    metrics = sub.add_parser("metrics", help="rolling slice metrics of a model, from Redis")
    metrics.add_argument("-c", "--config")
    metrics.add_argument("-m", "--model", help="model name (default: the only configured model)")
    metrics.add_argument("--window", default="1h", help="range to roll up: 5m, 1h, 24h, 7d... (default 1h)")
    metrics.add_argument(
        "--end", default="latest", help="end of the range: 'latest' (newest bucket, event time), 'now', or ISO-8601"
    )
    metrics.add_argument("--slice", action="append", help="only these slices or dimensions (repeatable)")
    metrics.add_argument("--worst", metavar="METRIC", help="also rank the worst slices on METRIC (recall, f1, mae...)")
    metrics.add_argument("--min-support", type=int, default=100, help="events behind a slice to rank it (default 100)")
    metrics.add_argument("--json", action="store_true")
    metrics.set_defaults(handler=_metrics)

    from stream_guard.tools.evaluate.command import add_evaluate_command

    add_evaluate_command(sub)

    alerts = sub.add_parser("alerts", help="print alerts from the alerts topic as they arrive")
    alerts.add_argument("-c", "--config")
    alerts.add_argument("--from-beginning", action="store_true", help="from the oldest alert kept by the topic")
    alerts.add_argument("--since", metavar="TIME", help="from the first alert produced at or after this ISO-8601 time")
    alerts.add_argument("--model", action="append", help="only this model's alerts (repeatable)")
    alerts.add_argument("--kind", action="append", help="only alerts of this kind (repeatable)")
    alerts.add_argument(
        "--severity", choices=["info", "warning", "critical"], help="only alerts of this severity or more severe"
    )
    alerts.add_argument("--group", help="consumer group id: the group remembers where it stopped (default: none)")
    alerts.add_argument("--max", type=int, default=0, help="exit after this many alerts (default: run until stopped)")
    alerts.add_argument("--json", action="store_true", help="one JSON object per alert, times in ISO-8601")
    alerts.set_defaults(handler=_alerts)

    dashboard = sub.add_parser("dashboard", help="serve a web page of slice metrics, drift, incidents and alerts")
    dashboard.add_argument("-c", "--config")
    dashboard.add_argument("--port", type=int, default=8050, help="HTTP port (default %(default)s; 0 picks a free one)")
    dashboard.add_argument("--bind", default="127.0.0.1", help="address to listen on (default %(default)s)")
    dashboard.add_argument("--window", default="1h", help="event-time range shown, to each model's newest bucket")
    dashboard.add_argument("--metric", help="label-based metric per slice (default: recall, or mae for regression)")
    dashboard.add_argument("--min-support", type=int, default=100, help="events behind a slice to rank it")
    dashboard.set_defaults(handler=_dashboard)
    return parser


def _load(args: argparse.Namespace, *, require_profiles: bool = True, extra_checks: Sequence[Any] = ()) -> Any:
    from stream_guard.logs import configure_logging
    from stream_guard.settings import load_config

    config = load_config(args.config, require_profiles=require_profiles, extra_checks=extra_checks)
    configure_logging(config.worker.log_level, config.worker.log_format)
    return config


def _registry_client(config: Any) -> Any:
    from stream_guard.assembly import registry_client

    return registry_client(config)


def _run(args: argparse.Namespace) -> int:
    """Serve the probes, wait for Redis (a Cluster before the worker is built), run the worker.

    A signal while waiting ends the run without an error; while running, it stops the
    worker after its batch.
    """
    import threading

    import structlog

    from stream_guard.assembly import build_worker, start_http_endpoint, worker_health
    from stream_guard.heap import settle_heap
    from stream_guard.observability.metrics import WorkerMetrics
    from stream_guard.state.client import connect_when_reachable
    from stream_guard.worker import Worker

    config = _load(args)
    stopping = threading.Event()
    workers: list[Worker] = []

    def stop(*_: Any) -> None:
        stopping.set()
        for worker in workers:
            worker.stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    metrics, health = WorkerMetrics(), worker_health(config)

    def waiting() -> None:
        health.redis_ok = False
        health.loop_turned()

    endpoint = start_http_endpoint(config, metrics, health)
    try:
        client = connect_when_reachable(config.redis, stopping, structlog.get_logger("stream_guard.cli"), waiting)
        if client is None:
            return 0
        health.redis_ok = True
        worker = build_worker(config, client, metrics=metrics, health=health)
        workers.append(worker)
        if stopping.is_set():  # signalled while it was built: it closes its clients and leaves
            worker.stop()
        settle_heap()
        worker.run(args.duration, drain_on_exit=args.drain_on_exit)
    finally:
        if endpoint is not None:
            endpoint.stop()
    return 0


def _health(args: argparse.Namespace) -> int:
    from stream_guard.observability.server import probe

    ok, body = probe(args.url, timeout_s=args.timeout)
    print(body.strip() or ("ok" if ok else "not ready"))
    return 0 if ok else 1


def _check_config(args: argparse.Namespace) -> int:
    from stream_guard.kafka import client_property_problems
    from stream_guard.model import build_models

    config = _load(args, extra_checks=[lambda c: client_property_problems(c.kafka)])
    models = build_models(config, _registry_client(config))
    for model in models:
        print(
            f"model {model.name}: topics {', '.join(model.config.topics)}; {model.config.encoding}; "
            f"numeric {model.numeric_features}; categorical {model.categorical_features}"
        )
    print(_alerts_summary(config))
    return 0


def _alerts_summary(config: Any) -> str:
    """One line: where alerts go and in which encoding (with the subject a confluent one registers under)."""
    from stream_guard.alerts.codec import alert_encoding, alert_subject

    encoding = alert_encoding(config)
    topic = config.kafka.alerts_topic
    subject = f", schema alert.avsc under subject {alert_subject(topic)}" if encoding == "confluent" else ""
    return f"alerts: topic {topic}; {encoding}{subject}"


def _epoch_ms(text: str | None) -> int | None:
    if text is None:
        return None
    from datetime import UTC, datetime

    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise StreamGuardError(f"not an ISO-8601 time: {text!r}") from None
    return int((moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp() * 1000)


def _learn(args: argparse.Namespace) -> int:
    from stream_guard.learning import learn_from_file, learn_from_topic
    from stream_guard.learning.summary import performance_summary
    from stream_guard.model import build_models
    from stream_guard.progress import Progress

    config = _load(args, require_profiles=False)  # learn writes the profile
    models = {m.name: m for m in build_models(config, _registry_client(config))}
    if args.model is None and len(models) != 1:
        raise StreamGuardError(f"several models are configured; pick one with --model ({', '.join(models)})")
    if args.model and args.model not in models:
        raise StreamGuardError(f"unknown model {args.model!r} (configured: {', '.join(models)})")
    model = models[args.model] if args.model else next(iter(models.values()))
    output = args.output or (str(model.profile_path) if model.profile_path else None)
    if output is None:
        raise StreamGuardError(f"model {model.name} has no profile path configured: pass --output")
    progress = None if args.quiet else Progress(f"learn {model.name}")
    if args.from_file:
        profile = learn_from_file(
            model, args.from_file, strict=args.strict, label_column=args.label_column, progress=progress
        )
    else:
        if args.label_column:
            raise StreamGuardError("--label-column needs --from-file: events on the topic carry no labels")
        profile = learn_from_topic(
            config,
            model,
            events=args.events,
            since_ms=_epoch_ms(args.since),
            until_ms=_epoch_ms(args.until),
            progress=progress,
        )
    if progress is not None:
        progress.done(f"{profile.row_count:,} rows, {len(profile.features)} fields")
    profile.save(output)
    print(f"profile of model {model.name}: {profile.row_count} rows, {len(profile.features)} fields -> {output}")
    print(performance_summary(profile.performance))
    return 0


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration_ms(text: str) -> int:
    try:
        return int(float(text[:-1]) * _UNITS[text[-1]] * 1000) if text[-1] in _UNITS else int(float(text) * 1000)
    except (ValueError, IndexError):
        raise StreamGuardError(f"not a duration: {text!r} (use e.g. 300s, 5m, 1h, 7d)") from None


def _pick_model(config: Config, name: str | None) -> str:
    names = [m.name for m in config.models]
    if name is None:
        if len(names) != 1:
            raise StreamGuardError(f"several models are configured; pick one with --model ({', '.join(names)})")
        return names[0]
    if name not in names:
        raise StreamGuardError(f"unknown model {name!r} (configured: {', '.join(names)})")
    return name


def _metrics(args: argparse.Namespace) -> int:
    import json
    import time

    from stream_guard.assembly import metrics_reader
    from stream_guard.learning.summary import known_bias_marks
    from stream_guard.metrics import slice_underperformance
    from stream_guard.metrics.estimate import estimate_json, with_estimate_columns
    from stream_guard.metrics.label_counts import LabelCounts
    from stream_guard.metrics.table import format_table
    from stream_guard.profile import BaselineProfile

    config = _load(args)
    name = _pick_model(config, args.model)
    reader = metrics_reader(config, name)
    profile_file = config.model(name).profile
    profile_path = config.resolve_path(profile_file) if profile_file else None
    profile = BaselineProfile.load(profile_path) if profile_path and profile_path.is_file() else None
    biases = profile.performance.known_biases if profile and profile.performance else []
    marks = known_bias_marks(biases)
    if args.end == "latest":
        buckets = reader.buckets()
        end_ms = (buckets[-1] + reader.bucket_ms) if buckets else int(time.time() * 1000)
    elif args.end == "now":
        end_ms = int(time.time() * 1000)
    else:
        end_ms = _epoch_ms(args.end) or 0
    rollup = reader.rollup(end_ms - _duration_ms(args.window), end_ms, args.slice)
    estimation = profile.performance.estimation if profile and profile.performance else None
    band_z = config.model(name).metrics.estimate_band_z
    worst = rollup.worst_slices(args.worst, min_support=args.min_support) if args.worst else []
    biased = slice_underperformance(rollup, args.worst, min_support=args.min_support) if args.worst else []
    if args.json:
        out = json.loads(rollup.to_json())
        out["labels"] = LabelCounts.of(rollup).to_dict()
        out["known_biases"] = [vars(b) for b in biases]
        if estimation is not None:
            out["estimate"] = estimate_json(rollup, estimation.calibration, band_z)
        for slice_name, entry in out["slices"].items():
            entry["known_bias"] = sorted(b.metric for b in biases if b.slice == slice_name)
        if args.worst:
            out["worst"] = [r._asdict() for r in worst]
            out["underperforming"] = [
                {"slice": u.slice, "value": u.value, "rest": u.rest_value, "p": u.p} for u in biased
            ]
        print(json.dumps(out, indent=2))
        return 0
    if estimation is None:
        print(rollup.to_table(marks))
    else:
        frame = with_estimate_columns(rollup.to_frame(), rollup, estimation.calibration, band_z)
        print(format_table(frame, rollup.start_ms, rollup.end_ms, rollup.buckets, marks))
        print(
            f"est_*: label-free estimate from the calibrated scores, band +/- {band_z:g} std; "
            "acc_minus_est: realised - estimate"
        )
    print(LabelCounts.of(rollup).line())
    if biases:
        print(f"\nknown biases of the reference (published once as known_bias, not re-raised): {len(biases)}")
        for b in biases:
            print(f"  {b.slice:<40} {b.metric} {b.value:.3f} vs rest {b.rest_value:.3f} (gap {b.gap:.3f})")
    if args.worst:
        print(f"\nworst slices on {args.worst} (support >= {args.min_support}):")
        for rank in worst:
            print(f"  {rank.slice:<40} {rank.value:.3f}  (support {rank.support}, overall {rank.overall})")
        for u in biased:
            print(f"  significantly worse: {u.slice} {u.value:.3f} vs rest {u.rest_value:.3f} (p={u.p:.2g})")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from stream_guard.logs import configure_logging
    from stream_guard.tools.demo import run_demo

    configure_logging("warning", "console")
    summary = run_demo(args.duration, args.rate)
    return 0 if summary["accounted_for"] else 1


def _alerts(args: argparse.Namespace) -> int:
    import json

    from stream_guard.alerts.reader import (
        AlertFilter,
        alert_decoder,
        alerts_consumer,
        iter_alerts,
        positions_since,
        with_iso_times,
    )
    from stream_guard.alerts.render import render_alert
    from stream_guard.settings.kinds import Severity

    config = _load(args)
    accepts = AlertFilter(
        models=frozenset(args.model or ()),
        kinds=frozenset(args.kind or ()),
        min_severity=Severity(args.severity.upper()) if args.severity else None,
    )
    consumer = alerts_consumer(config, group_id=args.group, from_beginning=args.from_beginning)
    since_ms = _epoch_ms(args.since)
    if since_ms is not None:
        consumer.assign(positions_since(consumer, config.kafka.alerts_topic, since_ms))
    else:
        consumer.subscribe([config.kafka.alerts_topic])
    stopping = False

    def _stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    shown = 0
    try:
        decode = alert_decoder(config)
        for record in iter_alerts(consumer, accepts=accepts, stop=lambda: stopping, decode=decode):
            print(json.dumps(with_iso_times(record)) if args.json else render_alert(record), flush=True)
            shown += 1
            if args.max and shown >= args.max:
                break
    finally:
        consumer.close()
    return 0


def _dashboard(args: argparse.Namespace) -> int:
    import threading

    from stream_guard.dashboard.server import DashboardOptions, start_dashboard

    config = _load(args)
    options = DashboardOptions(_duration_ms(args.window), args.metric, args.min_support)
    server, feed = start_dashboard(config, options, bind=args.bind, port=args.port)
    print(f"stream-guard dashboard on http://{args.bind}:{server.port}/", flush=True)
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    stopping.wait()
    server.stop()
    feed.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

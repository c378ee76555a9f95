"""``stream-guard evaluate``: its arguments and the handler that runs an evaluation and prints it."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from stream_guard.errors import EvaluationInputError
from stream_guard.tools.evaluate.faults import DEFAULT_RATES, FAULTS

if TYPE_CHECKING:
    from stream_guard.model import ModelRuntime


def add_evaluate_command(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``stream-guard evaluate`` on the CLI's subparsers."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "evaluate",
        help="replay clean events with faults injected: detection delay per check, false alarms",
        description=(
            "Replay clean events of a model through the worker's checks, once clean and once per "
            "(fault, feature, rate) scenario, and report detection delays and false alarms. "
            "Needs neither Kafka nor Redis."
        ),
        epilog="fault classes (applies to: alerts that count as detection):\n"
        + "\n".join(
            f"  {f.name:<22} {f.description} ({f.applies_to}: {', '.join(f.expects)})" for f in FAULTS.values()
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-c", "--config", help="TOML config file (its [checks] and [drift] are evaluated)")
    parser.add_argument("-m", "--model", help="model name (default: the only configured model)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--from-file", metavar="PATH", help="clean events: Parquet, CSV or JSON lines")
    source.add_argument("--simulate", type=int, metavar="N", help="N simulated events of the sample fraud model")
    source.add_argument(
        "--long-replay",
        action="store_true",
        help="hours of the wide sample model with a dozen faults, through the incident lifecycle: "
        "faults caught, alerts published, false alarms per week of clean traffic",
    )
    parser.add_argument("--profile", metavar="PATH", help="baseline profile to use (default: learn it from the data)")
    parser.add_argument(
        "--learn-fraction",
        metavar="SHARE",
        type=float,
        default=0.5,
        help="share of the events that learns the profile (default 0.5)",
    )
    parser.add_argument(
        "--events-per-second",
        metavar="RATE",
        type=float,
        default=None,
        help="synthetic event rate without timestamps (default 100; 14 for --long-replay)",
    )
    parser.add_argument(
        "--clean-minutes",
        metavar="M",
        type=float,
        default=20.0,
        help="--long-replay: clean traffic before, between and after the faults (default 20)",
    )
    parser.add_argument(
        "--fault-minutes",
        metavar="M",
        type=float,
        default=10.0,
        help="--long-replay: duration of each fault's stretch (default 10; bursts are shorter)",
    )
    parser.add_argument("--features", metavar="LIST", help="comma-separated features to inject into (default: all)")
    parser.add_argument(
        "--faults",
        metavar="LIST",
        help=f"comma-separated fault classes (default: all of {', '.join(FAULTS)}; "
        "--long-replay has its own, see the README)",
    )
    parser.add_argument(
        "--rates",
        metavar="LIST",
        default=",".join(map(str, DEFAULT_RATES)),
        help="comma-separated shares of events hit (default 0.01,0.1,1.0)",
    )
    parser.add_argument(
        "--onset",
        metavar="SHARE",
        type=float,
        default=0.4,
        help="where faults start, as a share of the replay (default 0.4)",
    )
    parser.add_argument("--batch-size", metavar="N", type=int, default=500, help="events per micro-batch (default 500)")
    parser.add_argument(
        "--partitions", metavar="N", type=int, default=3, help="pseudo-partitions, round-robin (default 3)"
    )
    parser.add_argument(
        "--seed", metavar="N", type=int, default=0, help="seed of the simulator and the injectors (default 0)"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    parser.set_defaults(handler=run_evaluate)
    return parser


def _names(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def _pick(models: list[ModelRuntime], name: str | None) -> ModelRuntime:
    by_name = {m.name: m for m in models}
    if name is None:
        if len(models) != 1:
            raise EvaluationInputError(f"several models are configured; pick one with --model ({', '.join(by_name)})")
        return models[0]
    if name not in by_name:
        raise EvaluationInputError(f"unknown model {name!r} (configured: {', '.join(by_name)})")
    return by_name[name]


def run_evaluate(args: argparse.Namespace) -> int:
    """The ``evaluate`` command: returns the exit code (0 once the report is printed)."""
    # Imported here so that building the CLI's parser (``--help``) stays fast.
    from stream_guard.assembly import registry_client
    from stream_guard.learning import learn_from_frame, profiled_fields
    from stream_guard.model import build_models
    from stream_guard.profile import BaselineProfile
    from stream_guard.settings import Config, load_config
    from stream_guard.tools.evaluate.events import Stream, file_events, simulated_events
    from stream_guard.tools.evaluate.report import render
    from stream_guard.tools.evaluate.scenarios import evaluate, plan_scenarios

    if args.long_replay:
        # The long replay brings its own model; a config file lends it checks, drift and alerts.
        return _run_long_replay(load_config(args.config, require_profiles=False) if args.config else Config(), args)
    config = load_config(args.config, require_profiles=False)  # evaluate may learn the profile itself
    args.events_per_second = 100.0 if args.events_per_second is None else args.events_per_second
    model = _pick(build_models(config, registry_client(config)), args.model)
    try:
        rates = [float(r) for r in args.rates.split(",") if r.strip()]
    except ValueError:
        raise EvaluationInputError(f"--rates: expected comma-separated numbers, got {args.rates!r}") from None
    for name, value, ok in (
        ("--learn-fraction", args.learn_fraction, 0 < args.learn_fraction < 1),
        ("--onset", args.onset, 0 <= args.onset < 1),
        ("--events-per-second", args.events_per_second, args.events_per_second > 0),
        ("--batch-size", args.batch_size, args.batch_size > 0),
        ("--partitions", args.partitions, args.partitions > 0),
        ("--simulate", args.simulate, args.simulate is None or args.simulate > 1),
    ):
        if not ok:
            raise EvaluationInputError(f"{name}: {value} is out of range")
    if args.simulate is not None:
        events = simulated_events(args.simulate, seed=args.seed, events_per_second=args.events_per_second)
    else:
        events = file_events(args.from_file, model)
    needed = [f for f in [*profiled_fields(model)[0], *profiled_fields(model)[1]] if f not in events.frame.columns]
    if needed:
        raise EvaluationInputError(f"the events ({events.source}) lack the model's fields {needed}")
    if args.profile:
        profile = BaselineProfile.load(args.profile)
        if profile.model != model.name:
            raise EvaluationInputError(f"{args.profile} is a profile of model {profile.model!r}, not {model.name!r}")
        learn, replayed = 0, events.records
    else:
        learn = int(len(events.records) * args.learn_fraction)
        source = f"{events.source}, first {learn} rows"
        profile = learn_from_frame(model, events.frame.iloc[:learn].copy(), source)
        replayed = events.records[learn:]
    model.profile = profile
    stream = Stream(model, replayed, events_per_second=args.events_per_second, partitions=args.partitions)
    scenarios = plan_scenarios(model, profile, features=_names(args.features), faults=_names(args.faults), rates=rates)
    quiet = args.quiet or args.json

    def progress(text: str) -> None:
        print(f"\r\033[K{text}", end="", file=sys.stderr, flush=True)

    report = evaluate(
        config,
        model,
        profile,
        stream,
        scenarios,
        onset_fraction=args.onset,
        batch_size=args.batch_size,
        seed=args.seed,
        source=events.source,
        learn_events=learn,
        progress=None if quiet or not sys.stderr.isatty() else progress,
    )
    if not quiet and sys.stderr.isatty():
        print("\r\033[K", end="", file=sys.stderr, flush=True)
    print(json.dumps(report.to_dict(), indent=2) if args.json else render(report))
    return 0


def _run_long_replay(config: Any, args: argparse.Namespace) -> int:
    """``evaluate --long-replay``: the wide model under ``config``'s checks, drift and alerts."""
    from stream_guard.logs import configure_logging
    from stream_guard.tools.evaluate.longfaults import LONG_FAULTS, fault_named
    from stream_guard.tools.evaluate.longreport import render_long
    from stream_guard.tools.evaluate.longrun import LongRunSettings, timed_long_replay

    rate = 14.0 if args.events_per_second is None else args.events_per_second
    for name, value, ok in (
        ("--events-per-second", rate, rate > 0),
        ("--clean-minutes", args.clean_minutes, args.clean_minutes > 0),
        ("--fault-minutes", args.fault_minutes, args.fault_minutes > 0),
        ("--batch-size", args.batch_size, args.batch_size > 0),
        ("--partitions", args.partitions, args.partitions > 0),
    ):
        if not ok:
            raise EvaluationInputError(f"{name}: {value} is out of range")
    names = _names(args.faults)
    settings = LongRunSettings(
        events_per_second=rate,
        clean_s=round(args.clean_minutes * 60),
        fault_s=round(args.fault_minutes * 60),
        faults=tuple(fault_named(n) for n in names) if names else LONG_FAULTS,
        batch_size=args.batch_size,
        partitions=args.partitions,
        seed=args.seed,
    )
    configure_logging("warning", "console")
    quiet = args.quiet or args.json or not sys.stderr.isatty()

    def progress(text: str) -> None:
        print(f"\r\033[K{text}", end="", file=sys.stderr, flush=True)

    report, seconds = timed_long_replay(config, settings, None if quiet else progress)
    if not quiet:
        print("\r\033[K", end="", file=sys.stderr, flush=True)
    print(json.dumps(report.to_dict(), indent=2) if args.json else render_long(report))
    if not args.quiet:
        print(f"runtime: {seconds:.1f}s", file=sys.stderr)
    return 0

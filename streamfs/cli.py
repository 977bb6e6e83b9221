"""The `streamfs` command: parse arguments, call one library function, print its result.

Each command is one ``_add_<command>(subparsers)`` function that declares its arguments and
sets ``handler`` to a function ``(args) -> exit code``; the handler calls exactly one library
function. To add a command (``run``, ``backfill``, ``training-set`` …) write those two
functions and list the ``_add_`` function in :data:`COMMANDS`.

Errors streamfs raises on purpose (:class:`~streamfs.errors.StreamfsError`) are printed as a
short message on stderr with exit code 2, never as a traceback: they are for the operator to
act on, and the message says how.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

from streamfs import dev, services
from streamfs.errors import StreamfsError
from streamfs.settings import Settings

EXIT_OK = 0
EXIT_NOT_RUNNING = 1
EXIT_ERROR = 2
EXIT_MISMATCH = 1
"""verify: some feature's match rate is below the threshold."""
EXIT_INTERRUPTED = 130
"""Ctrl-C; for backfill, stopped by SIGINT/SIGTERM after a checkpoint (the same command resumes)."""

if TYPE_CHECKING:
    Subparsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]
Handler = Callable[[argparse.Namespace], int]


# --------------------------------------------------------------------------------------------
# streamfs dev up | down | status


def _add_dev(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "dev",
        help="start/stop local Kafka and Redis for development",
        description="Local services: an embedded Kafka-compatible broker (Tansu) and Redis on "
        "loopback, recorded in <state-dir>/dev.json so other commands find them.",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="{up,down,status}")

    up = actions.add_parser("up", help="start the services (no-op when already running)")
    _add_state_dir(up)
    up.add_argument("--kafka-port", type=int, default=0, help="broker port (default: a free one)")
    up.add_argument("--redis-port", type=int, default=0, help="Redis port (default: a free one)")
    up.add_argument(
        "--timeout", type=float, default=services.DEFAULT_TIMEOUT_S, help="seconds to wait for each service"
    )
    up.add_argument(
        "--docker", action="store_true", help=f"use `docker compose -f {dev.COMPOSE_FILE}` instead"
    )
    up.set_defaults(handler=_dev_up)

    down = actions.add_parser("down", help="stop the services")
    _add_state_dir(down)
    down.set_defaults(handler=_dev_down)

    status = actions.add_parser("status", help="show the services (exit 1 when none run)")
    _add_state_dir(status)
    status.set_defaults(handler=_dev_status)


def _add_state_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state-dir", type=Path, default=None, help="where dev.json lives (default: $STREAMFS_STATE_DIR)"
    )


def _state_dir(args: argparse.Namespace) -> Path:
    return args.state_dir if args.state_dir is not None else Settings.load().state_dir


def _dev_up(args: argparse.Namespace) -> int:
    if args.docker:
        report = dev.up_docker(_state_dir(args))
    else:
        report = dev.up(
            _state_dir(args), kafka_port=args.kafka_port, redis_port=args.redis_port, timeout_s=args.timeout
        )
    return _print_report(report, _state_dir(args))


def _dev_down(args: argparse.Namespace) -> int:
    _print_report(dev.down(_state_dir(args)), _state_dir(args))
    return EXIT_OK


def _dev_status(args: argparse.Namespace) -> int:
    return _print_report(dev.status(_state_dir(args)), _state_dir(args))


def _print_report(report: dev.DevReport, state_dir: Path) -> int:
    for message in report.messages:
        print(message)
    state = report.state
    if state is None:
        return EXIT_NOT_RUNNING
    pids = "" if state.kafka_pid is None else f" (pid {state.kafka_pid})"
    print(f"  kafka   {state.kafka_bootstrap}{pids}")
    pids = "" if state.redis_pid is None else f" (pid {state.redis_pid})"
    print(f"  redis   {state.redis_url}{pids}")
    print(f"  mode    {state.mode}, started {state.started_at.isoformat(timespec='seconds')}")
    print(f"  state   {dev.state_path(state_dir)}")
    return EXIT_OK


# --------------------------------------------------------------------------------------------
# streamfs run PIPELINE


def _add_run(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run a worker: Kafka -> features -> Redis + Parquet",
        description="Consume the pipeline's topics in the consumer group, compute its feature views, "
        "write the latest values to Redis and timestamped rows to Parquet, commit offsets after both.",
    )
    parser.add_argument("pipeline", help="import string, e.g. pipelines.payments or pipelines.payments:views")
    parser.add_argument(
        "--until-caught-up",
        action="store_true",
        help="stop (exit 0) once the end offsets seen at start are processed and committed",
    )
    parser.add_argument("--batch-size", type=int, default=5_000, help="records per consumed batch")
    parser.add_argument("--commit-interval", type=float, default=2.0, help="seconds between commits")
    parser.add_argument(
        "--checkpoint-interval", type=float, default=30.0, help="seconds between engine checkpoints"
    )
    parser.add_argument(
        "--foreground-checkpoints",
        action="store_true",
        help="write periodic checkpoints in the loop instead of a forked child process",
    )
    parser.add_argument("--no-metrics", action="store_true", help="do not serve /metrics, /healthz, /readyz")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from streamfs import logs
    from streamfs.runner import WorkerOptions, run_worker

    settings = Settings.load()
    logs.configure(settings.log_level)
    options = WorkerOptions(
        batch_size=args.batch_size,
        commit_interval_s=args.commit_interval,
        checkpoint_interval_s=args.checkpoint_interval,
        background_checkpoints=not args.foreground_checkpoints,
        until_caught_up=args.until_caught_up,
        serve_metrics=not args.no_metrics,
    )
    return run_worker(args.pipeline, settings, options)


# --------------------------------------------------------------------------------------------
# streamfs status PIPELINE


def _add_status(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "status",
        help="consumer lag per partition and freshness per view",
        description="Committed offsets vs end offsets of the worker group, and the newest event and "
        "write time per view in the online store.",
    )
    parser.add_argument("pipeline", help="import string, e.g. pipelines.payments")
    parser.set_defaults(handler=_status)


def _status(args: argparse.Namespace) -> int:
    from streamfs.status import pipeline_status

    print(pipeline_status(args.pipeline, Settings.load()))
    return EXIT_OK


# --------------------------------------------------------------------------------------------
# streamfs training-set --labels FILE --features REFS --out FILE --pipeline PIPELINE


def _add_training_set(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "training-set",
        help="point-in-time feature values for a label table, recomputed from the event archive",
        description="Add one column per requested feature to every label row: its value at the "
        "label's time, replayed from the event archive through the engine (docs/training.md).",
    )
    parser.add_argument("--labels", type=Path, required=True, help="label table (.parquet or .csv)")
    parser.add_argument(
        "--features", required=True, help="comma-separated refs: view:feature or a whole view"
    )
    parser.add_argument("--out", type=Path, required=True, help="output file (.parquet or .csv)")
    parser.add_argument("--pipeline", required=True, help="import string, e.g. pipelines.payments")
    parser.add_argument(
        "--mode",
        choices=("as_served", "event_time"),
        default="as_served",
        help="as_served: what the online store answered then (default); event_time: every event "
        "with event time <= the label time, however late it arrived",
    )
    parser.add_argument("--time-column", default="timestamp", help="label time column (default: timestamp)")
    parser.add_argument(
        "--exclusive",
        action="store_true",
        help="features from just before the label time (event-triggered labels)",
    )
    parser.set_defaults(handler=_training_set)


def _training_set(args: argparse.Namespace) -> int:
    from streamfs.training import training_set_command

    report = training_set_command(
        args.labels,
        _split(args.features),
        args.out,
        args.pipeline,
        args.mode,
        root=Settings.load().data_dir,
        time_column=args.time_column,
        inclusive=not args.exclusive,
    )
    print(
        f"wrote {report.rows:,} rows with {report.features} feature column(s) to {report.path} "
        f"in {report.seconds:.1f} s"
    )
    return EXIT_OK


# --------------------------------------------------------------------------------------------
# streamfs backfill PIPELINE


def _add_backfill(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "backfill",
        help="recompute views' feature rows (and Redis state) from the archive or Kafka",
        description="Replay the event archive (or the Kafka topics from the beginning) through the "
        "worker's engine up to the group's committed offsets and rewrite the views' feature log; "
        "with --online also their Redis serving state. Interrupt with Ctrl-C and run the same "
        "command again to resume (docs/backfill.md).",
    )
    parser.add_argument("pipeline", help="import string, e.g. pipelines.payments")
    parser.add_argument("--views", help="comma-separated view names (default: every view)")
    parser.add_argument(
        "--from", dest="start", type=_time_arg, help="write rows with event time >= this (ISO 8601 or date)"
    )
    parser.add_argument("--to", dest="end", type=_time_arg, help="... and < this")
    parser.add_argument("--source", choices=("archive", "kafka"), default="archive", help="default: archive")
    parser.add_argument("--online", action="store_true", help="also write the serving state to Redis")
    parser.add_argument(
        "--replace",
        action="store_true",
        help="rewrite the whole history of a view whose definition changed since its rows were written",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(handler=_backfill)


def _backfill(args: argparse.Namespace) -> int:
    from streamfs.backfill import backfill

    report = backfill(
        args.pipeline,
        Settings.load(),
        views=_split(args.views) if args.views else None,
        source=args.source,
        start=args.start,
        end=args.end,
        online=args.online,
        replace=args.replace,
        quiet=args.quiet,
    )
    print(report.summary())
    return EXIT_INTERRUPTED if report.interrupted else EXIT_OK


# --------------------------------------------------------------------------------------------
# streamfs verify PIPELINE


def _add_verify(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "verify",
        help="compare Redis and the feature log with a replay of the archive",
        description="Replay the archive through the engine; compare what the online store serves for "
        "a sample of keys (as of their newest event and now) and every feature-log row with it. "
        "Prints per-feature match rates and the largest differences; exit 1 below the threshold.",
    )
    parser.add_argument("pipeline", help="import string, e.g. pipelines.payments")
    parser.add_argument("--views", help="comma-separated view names (default: every view)")
    parser.add_argument("--sample", type=int, default=1_000, help="keys per view read online (default 1000)")
    parser.add_argument(
        "--threshold", type=float, default=1.0, help="lowest acceptable match rate, 0..1 (default 1.0)"
    )
    parser.set_defaults(handler=_verify)


def _verify(args: argparse.Namespace) -> int:
    from streamfs.verify import verify

    report = verify(
        args.pipeline,
        Settings.load(),
        views=_split(args.views) if args.views else None,
        sample=args.sample,
        threshold=args.threshold,
    )
    print(report.render())
    return EXIT_OK if report.ok else EXIT_MISMATCH


# --------------------------------------------------------------------------------------------
# argument types, the parser and the entry point


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _time_arg(text: str) -> int:
    """ISO 8601 with a UTC offset, a date (UTC midnight), or epoch milliseconds -> epoch ms."""
    from datetime import UTC, date, datetime

    from streamfs.durations import datetime_to_ms

    text = text.strip()
    if text.isdigit():
        return int(text)
    try:
        if len(text) == 10:
            return datetime_to_ms(datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC))
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time, a date or epoch ms") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no UTC offset; add Z or +HH:MM")
    return datetime_to_ms(moment)


COMMANDS: tuple[Callable[[Subparsers], None], ...] = (
    _add_dev,
    _add_run,
    _add_status,
    _add_training_set,
    _add_backfill,
    _add_verify,
)
"""One entry per top-level command, in the order `streamfs --help` lists them."""


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: one subparser per entry in :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="streamfs",
        description="streamfs: a streaming feature store (Kafka in; Redis and Parquet out).",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; StreamfsError becomes a one-paragraph message and exit code 2."""
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except StreamfsError as exc:
        print(f"streamfs: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("streamfs: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())

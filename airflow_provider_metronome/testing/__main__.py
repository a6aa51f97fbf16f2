"""Serve the Metronome simulator until SIGINT or SIGTERM: ``python -m airflow_provider_metronome.testing``."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

from airflow_provider_metronome.testing.data import parse_timestamp
from airflow_provider_metronome.testing.simulator import DEFAULT_TOKEN, MetronomeSimulator


def _timestamp(text: str) -> datetime:
    try:
        return parse_timestamp(text)
    except (ValueError, OverflowError) as error:
        raise argparse.ArgumentTypeError(f"not an RFC 3339 timestamp: {text!r}") from error


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m airflow_provider_metronome.testing",
        description="Serve a local fake of Metronome's API.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=0, help="port to listen on; 0 picks a free one (default)")
    parser.add_argument(
        "--token", default=DEFAULT_TOKEN, help="bearer token to accept (default: %(default)s)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the generated data (default: %(default)s)"
    )
    parser.add_argument("--customers", type=int, default=25, help="active customers (default: %(default)s)")
    parser.add_argument(
        "--archived-customers", type=int, default=3, help="archived customers (default: %(default)s)"
    )
    parser.add_argument(
        "--unique-metric-customers",
        type=int,
        default=2,
        help="active customers whose plan has a UNIQUE-type metric, refused by /costs (default: %(default)s)",
    )
    parser.add_argument(
        "--line-items-per-credit-type",
        type=int,
        default=4,
        help="line items in each credit type's breakdown (default: %(default)s)",
    )
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay added to every answer")
    parser.add_argument(
        "--availability-delay-hours",
        type=float,
        default=2.0,
        help="hours after a window ends before it is served (default: %(default)s)",
    )
    parser.add_argument("--now", type=_timestamp, help="freeze the clock at this RFC 3339 timestamp")
    parser.add_argument("--port-file", type=Path, help="write the bound port to this file once listening")
    return parser


def _write_port_file(path: Path, port: int) -> None:
    # Written aside then renamed, so a watcher never reads a half-written file.
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(f"{port}\n")
    os.replace(temporary, path)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the simulator until SIGINT or SIGTERM; returns the exit status."""
    args = _parser().parse_args(argv)
    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    simulator = MetronomeSimulator(
        token=args.token,
        seed=args.seed,
        customers=args.customers,
        archived_customers=args.archived_customers,
        unique_metric_customers=args.unique_metric_customers,
        line_items_per_credit_type=args.line_items_per_credit_type,
        port=args.port,
        host=args.host,
        latency=args.latency_ms / 1000,
        availability_delay=timedelta(hours=args.availability_delay_hours),
        now=args.now,
    )
    with simulator:
        if args.port_file is not None:
            _write_port_file(args.port_file, simulator.port)
        print(f"Metronome simulator listening on {simulator.url} (token: {simulator.token})", flush=True)
        # A timeout keeps the main thread waking up, so signal handlers run promptly everywhere.
        while not stopping.wait(timeout=0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Parquet against ``.jsonl.gz``: CPU per 100-day page, bytes per day object, peak RSS of a 90-day split run.

Both formats go through the operator's own sink (records, encoding, the atomic writer to a local
file), from the simulator's objects validated as the hook validates them:

- CPU: one customer's 100 days (``/costs``: one page; breakdowns: the same days), best of several
  repeats, ``line_items``, per source;
- bytes: one day object of :data:`DAY_CUSTOMERS` customers, per source;
- RSS: :mod:`tests.benchmarks.parquet_memory_child`, a 90-day ``split_by_day`` run of
  :data:`RSS_CUSTOMERS` customers against a simulator process, each format in a fresh process.
"""

from __future__ import annotations

import datetime as dt
import logging
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from airflow_provider_metronome.models import CostWindow, InvoiceBreakdown, SourceObject
from airflow_provider_metronome.output.sinks import ObjectSink, object_encoding
from airflow_provider_metronome.output.uris import storage_path
from airflow_provider_metronome.output.writers import AtomicObjectWriter
from airflow_provider_metronome.testing import MetronomeSimulator
from airflow_provider_metronome.vocabulary import SOURCES, Source
from tests.benchmarks.common import DAY, PAGE_SIZE, airflow_env, run_child
from tests.benchmarks.cpu_page import FIRST_DAY, best_seconds
from tests.benchmarks.simulator_process import FROZEN_NOW, SimulatorProcess

SUFFIXES = (".jsonl.gz", ".parquet")
DAY_CUSTOMERS = 1_000
RSS_CUSTOMERS = 1_000
TARGET_CPU_RATIO = 1.5
TARGET_RSS_MB = 30.0
Target = tuple[str, str, bool]
T = TypeVar("T")
DayObjects = list[tuple[dt.date, SourceObject]]


def _objects(
    sim: MetronomeSimulator, source: Source, customer_id: str, first: dt.date, days: int
) -> DayObjects:
    """The customer's objects of ``days`` days from ``first``, validated as the hook does."""
    objects: DayObjects = []
    for offset in range(days):
        day = first + dt.timedelta(days=offset)
        if source == "costs":
            window = sim.costs_for(customer_id, day)
            objects += [] if window is None else [(day, CostWindow.model_validate(window))]
        else:
            answers = sim.breakdowns_for(customer_id, day, day + dt.timedelta(days=1))
            objects += [(day, InvoiceBreakdown.model_validate(answer)) for answer in answers]
    return objects


def _write(path: Path, source: Source, customers: Sequence[tuple[str, DayObjects]]) -> int:
    """Write the customers' objects as the operator does into one object; its size in bytes."""
    url = f"file://{path}"
    # Every repeat writes anew: the comparison with the stored object is not the encoding's cost.
    writer = AtomicObjectWriter(storage_path(url), uri=url, keep_unchanged=False)
    with ObjectSink(object_encoding(url, "line_items", source), writer, logging.getLogger("bench")) as sink:
        for customer_id, objects in customers:
            sink.add(customer_id, sink.prepare(customer_id, objects))
    return writer.bytes_written


def _page_seconds(sim: MetronomeSimulator, folder: Path, source: Source) -> dict[str, float]:
    customer_id = sim.active_customer_ids[0]
    customers = [(customer_id, _objects(sim, source, customer_id, FIRST_DAY, PAGE_SIZE))]
    runs: dict[str, Callable[[], Any]] = {
        suffix: (lambda suffix=suffix: _write(folder / f"page{suffix}", source, customers))
        for suffix in SUFFIXES
    }
    return {suffix: best_seconds(run) for suffix, run in runs.items()}


def _day_bytes(sim: MetronomeSimulator, folder: Path, source: Source) -> dict[str, int]:
    customers = [(cid, _objects(sim, source, cid, DAY, 1)) for cid in sim.active_customer_ids[:DAY_CUSTOMERS]]
    return {suffix: _write(folder / f"day-{source}{suffix}", source, customers) for suffix in SUFFIXES}


def _split_rss() -> dict[str, dict[str, Any]]:
    results = {}
    with (
        tempfile.TemporaryDirectory(prefix="metronome-bench-") as tmp,
        SimulatorProcess(["--customers", str(RSS_CUSTOMERS)]) as sim,
    ):
        env = airflow_env(Path(tmp), sim.url, sim.token)
        for suffix in SUFFIXES:
            sim.reset()
            args = ["--out", f"{tmp}/{suffix.strip('.')}", "--suffix", suffix]
            results[suffix] = run_child("tests.benchmarks.parquet_memory_child", args, env)
    return results


def run(progress: Callable[[str], None], target: Callable[..., T]) -> tuple[list[str], list[T]]:
    """The section's lines and its targets, each made by ``target(name, measured, met)``."""
    seconds: dict[Source, dict[str, float]] = {}
    sizes: dict[Source, dict[str, int]] = {}
    now = dt.datetime.fromisoformat(FROZEN_NOW)
    with tempfile.TemporaryDirectory(prefix="metronome-bench-") as tmp:
        sim = MetronomeSimulator(customers=DAY_CUSTOMERS, unique_metric_customers=0, now=now)
        for source in SOURCES:
            progress(f"parquet: CPU per 100-day page and bytes per day object, {source}")
            seconds[source] = _page_seconds(sim, Path(tmp), source)
            sizes[source] = _day_bytes(sim, Path(tmp), source)
    progress(f"parquet: peak RSS of a 90-day split run of {RSS_CUSTOMERS:,} customers, each format")
    lines, found = _section(seconds, sizes, _split_rss())
    return lines, [target(*each) for each in found]


def _section(
    seconds: dict[Source, dict[str, float]],
    sizes: dict[Source, dict[str, int]],
    rss: dict[str, dict[str, Any]],
) -> tuple[list[str], list[Target]]:
    gz, pq = SUFFIXES
    lines = [
        "### Parquet against .jsonl.gz (line_items)",
        "",
        "| source | CPU per 100-day page, .jsonl.gz (ms) | .parquet (ms) | ratio | day object of "
        f"{DAY_CUSTOMERS:,} customers, .jsonl.gz (KB) | .parquet (KB) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    targets: list[Target] = []
    for source in SOURCES:
        ratio = seconds[source][pq] / seconds[source][gz]
        lines.append(
            f"| {source} | {seconds[source][gz] * 1e3:.1f} | {seconds[source][pq] * 1e3:.1f} | {ratio:.2f}x | "
            f"{sizes[source][gz] / 1024:,.0f} | {sizes[source][pq] / 1024:,.0f} |"
        )
        targets.append(
            (
                f"Parquet CPU per page within {TARGET_CPU_RATIO}x of .jsonl.gz ({source})",
                f"{ratio:.2f}x",
                ratio <= TARGET_CPU_RATIO,
            )
        )
        targets.append(
            (
                f"Parquet day object no larger than .jsonl.gz ({source})",
                f"{sizes[source][pq]:,} vs {sizes[source][gz]:,} bytes",
                sizes[source][pq] <= sizes[source][gz],
            )
        )
    lines += [
        "",
        f"| 90-day split run, {RSS_CUSTOMERS:,} customers, /costs | records | objects (MB) | wall (s) | "
        "RSS before the run (MB) | of which file-backed: libraries (MB) | private (MB) | peak RSS (MB) | "
        "growth (MB) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        *(
            f"| {suffix} | {result['records']:,} | {result['bytes'] / 2**20:,.1f} | {result['seconds']:.1f} | "
            f"{result['rss_before_kb'] / 1024:.1f} | {result['file_rss_before_kb'] / 1024:.1f} | "
            f"{result['anon_rss_before_kb'] / 1024:.1f} | {result['peak_rss_kb'] / 1024:.1f} | "
            f"{_growth_kb(result) / 1024:+.1f} |"
            for suffix, result in rss.items()
        ),
        "",
        "CPU: the operator's sink (records, encoding, compression, a local file) for one customer's 100 "
        "days, best of repeats. RSS: the peak of the measured run after a one-customer warm-up (which "
        "loads pyarrow's libraries in the Parquet run: the RSS before the run holds them, as file-backed "
        "pages of /proc/self/status's RssFile); growth: the peak less the RSS before the run.",
    ]
    peak = (rss[pq]["peak_rss_kb"] - rss[gz]["peak_rss_kb"]) / 1024
    growth = (_growth_kb(rss[pq]) - _growth_kb(rss[gz])) / 1024
    targets += [
        (
            f"Parquet split run RSS within {TARGET_RSS_MB:.0f} MB of JSON Lines",
            f"{peak:+.1f} MB",
            peak <= TARGET_RSS_MB,
        ),
        (
            f"Parquet split run's growth within {TARGET_RSS_MB:.0f} MB of JSON Lines' (pyarrow's libraries aside)",
            f"{growth:+.1f} MB",
            growth <= TARGET_RSS_MB,
        ),
    ]
    return lines, targets


def _growth_kb(result: dict[str, Any]) -> int:
    return int(result["peak_rss_kb"] - result["rss_before_kb"])

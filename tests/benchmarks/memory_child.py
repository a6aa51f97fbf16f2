"""Peak RSS of one all-customers day fetch by the operator, in this (fresh) process.

``python -m tests.benchmarks.memory_child --out DIR --record-format raw`` runs
``MetronomeCostsOperator.execute()`` for every active customer against the ``metronome_default``
connection and prints ``{"seconds", "customers", "records", "bytes", "rss_before_kb", "peak_rss_kb",
"peak_reset"}`` as one JSON line.

One-time costs (importing Airflow, modules imported on first use, the first connection lookup) can
need more memory than the fetch itself, and a peak that includes them would hide how the fetch grows
with customers. So one single-customer ``execute()`` runs first, then, where Linux allows it
(``/proc/self/clear_refs``), the peak is reset: ``peak_rss_kb`` is the peak of the measured fetch.
"""

from __future__ import annotations

import argparse
import gc
import resource
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.benchmarks.common import ENDING_BEFORE, STARTING_ON, emit

# The warm-up's requests: one customer-list page of one customer, and that customer's costs page.
WARM_UP_REQUESTS = 2


def _status_kb(field: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` (Linux), or None."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _peak_rss_kb() -> int:
    """This process's peak RSS in kB.

    ``VmHWM`` where Linux has it: ``ru_maxrss`` of a child process also counts the RSS its parent had
    when it forked (Linux keeps the larger across ``exec``), which would hide the child's own peak
    behind the benchmark runner's.
    """
    peak = _status_kb("VmHWM")
    # ru_maxrss is in kilobytes on Linux (bytes on macOS).
    return peak if peak is not None else int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def _reset_peak() -> bool:
    """Reset the peak RSS (``ru_maxrss`` too) to the current RSS; False where the OS does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return True


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--record-format", choices=("raw", "line_items"), default="raw")
    parser.add_argument("--uri-prefix", help="where the objects go; default file://OUT")
    args = parser.parse_args(argv)
    prefix = args.uri_prefix or f"file://{args.out}"

    from airflow_provider_metronome.hooks.metronome import MetronomeHook
    from airflow_provider_metronome.operators.costs import MetronomeCostsOperator

    def operator(name: str, customer_ids: list[str] | None) -> MetronomeCostsOperator:
        return MetronomeCostsOperator(
            task_id="costs",
            customer_ids=customer_ids,
            output_uri=f"{prefix}/{name}-{{date}}.jsonl",
            starting_on=STARTING_ON,
            ending_before=ENDING_BEFORE,
            record_format=args.record_format,
        )

    first_customer = next(MetronomeHook().iter_customers(page_size=1)).id
    operator("warm-up", [first_customer]).execute({})  # type: ignore[arg-type]
    emit(measure_run(operator("memory", None)))


def measure_run(operator: Any) -> dict[str, Any]:
    """Run ``operator`` once: its wall, its manifest's counts, and this process's RSS before and at the peak.

    ``file_rss_before_kb`` (file-backed pages: the libraries loaded) and ``anon_rss_before_kb``
    (private memory) split the RSS before the run, where Linux tells them.
    """
    gc.collect()
    peak_reset = _reset_peak()
    before = _status_kb("VmRSS") if peak_reset else None
    before = before if before is not None else _peak_rss_kb()
    file_before, anon_before = _status_kb("RssFile"), _status_kb("RssAnon")
    started = time.perf_counter()
    manifest = operator.execute({})
    return {
        "seconds": time.perf_counter() - started,
        "customers": manifest["customers"],
        "records": manifest["records"],
        "bytes": manifest["bytes"],
        "rss_before_kb": before,
        "file_rss_before_kb": file_before,
        "anon_rss_before_kb": anon_before,
        "peak_rss_kb": _peak_rss_kb(),
        "peak_reset": peak_reset,
    }


if __name__ == "__main__":
    main()

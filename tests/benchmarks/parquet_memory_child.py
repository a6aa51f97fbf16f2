"""Peak RSS of one 90-day ``split_by_day`` run for every customer, in this (fresh) process.

``python -m tests.benchmarks.parquet_memory_child --out DIR --suffix .parquet`` runs the operator
(``line_items``, ``/costs``) against ``metronome_default`` into ``DIR/date={date}/costs<suffix>`` and
prints what :func:`tests.benchmarks.memory_child.measure_run` measures as one JSON line. As in
:mod:`tests.benchmarks.memory_child`, a one-customer run first takes the one-time costs (imports,
pyarrow's first use), then the peak is reset.
"""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Sequence
from pathlib import Path

from tests.benchmarks.common import DAY, emit
from tests.benchmarks.memory_child import measure_run

SPLIT_DAYS = 90
# The 90 days up to the benchmark's fixed day, all finished for the frozen simulator.
ENDING_BEFORE = DAY + dt.timedelta(days=1)
STARTING_ON = ENDING_BEFORE - dt.timedelta(days=SPLIT_DAYS)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--suffix", choices=(".parquet", ".jsonl.gz"), required=True)
    args = parser.parse_args(argv)

    from airflow_provider_metronome.hooks.metronome import MetronomeHook
    from airflow_provider_metronome.operators.costs import MetronomeCostsOperator

    def operator(name: str, customer_ids: list[str] | None) -> MetronomeCostsOperator:
        return MetronomeCostsOperator(
            task_id="costs",
            customer_ids=customer_ids,
            output_uri=f"file://{args.out}/{name}/date={{date}}/costs{args.suffix}",
            starting_on=STARTING_ON.isoformat(),
            ending_before=ENDING_BEFORE.isoformat(),
            record_format="line_items",
            split_by_day=True,
        )

    first_customer = next(MetronomeHook().iter_customers(page_size=1)).id
    operator("warm-up", [first_customer]).execute({})  # type: ignore[arg-type]
    emit(measure_run(operator("memory", None)))


if __name__ == "__main__":
    main()

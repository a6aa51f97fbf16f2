"""Writing test objects through the atomic writer: incompressible lines, and a write that fails midway."""

from __future__ import annotations

import os

from airflow_provider_metronome.output.writers import AtomicObjectWriter

# A line that gzip cannot shrink much, so that compressed objects also outgrow one upload block.
LINE_BYTES = 1000


def line(index: int) -> bytes:
    return b'{"index":%d,"noise":"%s"}\n' % (index, os.urandom(LINE_BYTES // 2).hex().encode())


def write_then_crash(target: AtomicObjectWriter, size: int) -> None:
    """Write at least ``size`` stored bytes, then fail inside the writer's block."""
    with target:
        index = 0
        while target.bytes_written <= size:
            target.write(line(index))
            index += 1
        raise RuntimeError("crash")

"""Processes the tests start in their own process group, and stop with every child they left."""

from __future__ import annotations

import os
import signal
import subprocess
from contextlib import suppress

# Seconds a stopped process may take before it is killed.
STOP_TIMEOUT = 30.0


def stop_process_group(process: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT) -> None:
    """Stop ``process`` and its group (started with ``start_new_session=True``), forcibly if it lingers."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=timeout)
    # Workers of the group that outlived their parent.
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)

"""The benchmarks are a command (``python tests/benchmarks/run.py``), never part of the test run."""

collect_ignore_glob = ["*.py"]

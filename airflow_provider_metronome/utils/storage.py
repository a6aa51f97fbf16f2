"""Deprecated: ``iter_output`` and ``summarize_output`` live in :mod:`airflow_provider_metronome.output.reading`."""

from __future__ import annotations

import warnings

from airflow_provider_metronome._compat import AirflowProviderDeprecationWarning
from airflow_provider_metronome.output.reading import iter_output, summarize_output

warnings.warn(
    "airflow_provider_metronome.utils.storage is deprecated: import iter_output and summarize_output "
    "from airflow_provider_metronome.output.reading.",
    AirflowProviderDeprecationWarning,
    stacklevel=2,
)

__all__ = ["iter_output", "summarize_output"]

"""Deprecated: ``resolve_window`` lives in :mod:`airflow_provider_metronome.window`."""

from __future__ import annotations

import warnings

from airflow_provider_metronome._compat import AirflowProviderDeprecationWarning
from airflow_provider_metronome.window import resolve_window

warnings.warn(
    "airflow_provider_metronome.utils.window is deprecated: import resolve_window from "
    "airflow_provider_metronome.window.",
    AirflowProviderDeprecationWarning,
    stacklevel=2,
)

__all__ = ["resolve_window"]

"""The one place that knows Airflow 3 from Airflow 2.

Everything else imports Airflow's public names from here, so supporting another Airflow line means
changing this module only.
"""

from __future__ import annotations

try:  # Airflow 3: the task SDK is the public authoring interface.
    from airflow.sdk import (
        Asset,
        BaseHook,
        BaseOperator,
        BaseOperatorLink,
        BaseSensorOperator,
        ObjectStoragePath,
    )
    from airflow.sdk.exceptions import AirflowException, AirflowSkipException, TaskDeferred
    from airflow.sdk.log import mask_secret

    AIRFLOW_V3 = True
except ImportError:  # Airflow 2.10+
    from airflow.datasets import Dataset as Asset  # type: ignore[no-redef]
    from airflow.exceptions import (  # type: ignore[no-redef]
        AirflowException,
        AirflowSkipException,
        TaskDeferred,
    )
    from airflow.hooks.base import BaseHook  # type: ignore[no-redef,attr-defined]
    from airflow.io.path import ObjectStoragePath  # type: ignore[no-redef]
    from airflow.models.baseoperator import BaseOperator  # type: ignore[no-redef]
    from airflow.models.baseoperatorlink import BaseOperatorLink  # type: ignore[no-redef]
    from airflow.sensors.base import BaseSensorOperator  # type: ignore[no-redef]
    from airflow.utils.log.secrets_masker import mask_secret  # type: ignore[no-redef]

    AIRFLOW_V3 = False

try:
    from airflow.sdk import Context
except ImportError:
    from airflow.utils.context import Context  # type: ignore[no-redef,attr-defined]


__all__ = [
    "AIRFLOW_V3",
    "AirflowException",
    "AirflowSkipException",
    "Asset",
    "BaseHook",
    "BaseOperator",
    "BaseOperatorLink",
    "BaseSensorOperator",
    "Context",
    "ObjectStoragePath",
    "TaskDeferred",
    "mask_secret",
]

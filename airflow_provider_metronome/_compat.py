"""The one place that knows Airflow 3 from Airflow 2.

Everything else imports Airflow's public names from here, so supporting another Airflow line means
changing this module only.
"""

from __future__ import annotations

from typing import Any

try:  # Airflow 3: the task SDK is the public authoring interface.
    from airflow.sdk import (
        Asset,
        BaseHook,
        BaseOperator,
        BaseOperatorLink,
        BaseSensorOperator,
        ObjectStoragePath,
    )
    from airflow.sdk.exceptions import (
        AirflowException,
        AirflowFailException,
        AirflowSensorTimeout,
        AirflowSkipException,
        TaskDeferred,
    )
    from airflow.sdk.execution_time.xcom import XCom
    from airflow.sdk.log import mask_secret, redact

    AIRFLOW_V3 = True
except ImportError:  # Airflow 2.10+
    from airflow.datasets import Dataset as Asset  # type: ignore[no-redef]
    from airflow.exceptions import (  # type: ignore[no-redef]
        AirflowException,
        AirflowFailException,
        AirflowSensorTimeout,
        AirflowSkipException,
        TaskDeferred,
    )
    from airflow.hooks.base import BaseHook  # type: ignore[no-redef,attr-defined]
    from airflow.io.path import ObjectStoragePath  # type: ignore[no-redef]
    from airflow.models.baseoperator import BaseOperator  # type: ignore[no-redef]
    from airflow.models.baseoperatorlink import BaseOperatorLink  # type: ignore[no-redef]
    from airflow.models.xcom import XCom  # type: ignore[no-redef]
    from airflow.sensors.base import BaseSensorOperator  # type: ignore[no-redef]
    from airflow.utils.log.secrets_masker import mask_secret, redact  # type: ignore[no-redef]

    AIRFLOW_V3 = False

try:
    from airflow.sdk import Context
except ImportError:
    from airflow.utils.context import Context  # type: ignore[no-redef,attr-defined]

try:  # Airflow 3.1+
    from airflow.sdk import conf
except ImportError:
    from airflow.configuration import conf  # type: ignore[no-redef,assignment]

# Triggers run in the triggerer, which is part of airflow-core on both lines.
from airflow.triggers.base import BaseTrigger, TriggerEvent

try:  # Airflow 3.2+
    from airflow.sdk.lineage import get_hook_lineage_collector
except ImportError:  # Airflow 2.10+ and 3.0-3.1
    from airflow.lineage.hook import get_hook_lineage_collector  # type: ignore[no-redef]


def add_output_lineage(context: Any, uri: str) -> None:
    """Report ``uri`` as an output of the running task to Airflow's hook lineage collector.

    :param context: What wrote it (a hook or an ObjectStoragePath), as the collector expects.
    """
    collector = get_hook_lineage_collector()
    # Airflow 3 calls them assets, Airflow 2 datasets.
    add = getattr(collector, "add_output_asset", None) or getattr(collector, "add_output_dataset")  # noqa: B009
    add(context=context, uri=uri)


__all__ = [
    "AIRFLOW_V3",
    "AirflowException",
    "AirflowFailException",
    "AirflowSensorTimeout",
    "AirflowSkipException",
    "Asset",
    "BaseHook",
    "BaseOperator",
    "BaseOperatorLink",
    "BaseSensorOperator",
    "BaseTrigger",
    "Context",
    "ObjectStoragePath",
    "TaskDeferred",
    "TriggerEvent",
    "XCom",
    "add_output_lineage",
    "conf",
    "get_hook_lineage_collector",
    "mask_secret",
    "redact",
]

"""The one place that knows one Airflow release from another.

Everything else imports Airflow's public names from here, so supporting another Airflow line means
changing this module only.

The Airflow line (2 or 3) comes from Airflow's version number, never from whether some import
happened to work: on Airflow 3 a name missing from the task SDK must not send us to Airflow 2's
modules, which Airflow 3 no longer has. Within a line each name is imported on its own, from its
newest home first, because names reached the task SDK over several 3.x releases:

- 3.0: ``Asset``, ``BaseOperator``, ``BaseOperatorLink``, ``BaseSensorOperator``, ``Context``,
  ``ObjectStoragePath`` (``airflow.sdk``), ``XCom`` (``airflow.sdk.execution_time.xcom``) and
  ``mask_secret`` (``airflow.sdk.log``);
- 3.1: ``BaseHook`` (``airflow.sdk``), ``AirflowException`` (``airflow.sdk.exceptions``) and
  ``redact`` (``airflow.sdk.log``; on 3.0 ``airflow.sdk.execution_time.secrets_masker``);
- 3.2: the other exceptions (``airflow.sdk.exceptions``), ``conf`` (``airflow.sdk``) and
  ``get_hook_lineage_collector`` (``airflow.sdk.lineage``);
- 3.3: a task names the partitions of its asset events at run time
  (``outlet_events[asset].add_partitions(...)``): :data:`RUNTIME_PARTITIONS`.

Before that they come from airflow-core, as on Airflow 2. On 3.0 and 3.1 the exceptions must be
``airflow.exceptions``'s: those are the classes the task runner of those releases catches.
"""

from __future__ import annotations

from typing import Any

import airflow
from airflow.exceptions import AirflowProviderDeprecationWarning  # airflow-core, on every line
from airflow.triggers.base import BaseTrigger, TriggerEvent  # airflow-core's triggerer, on every line
from packaging.version import Version

# Pre-releases ("3.1.0rc1", "3.2.0.dev0") belong to their line too.
AIRFLOW_V3 = Version(airflow.__version__).major >= 3

if AIRFLOW_V3:
    # In the task SDK since 3.0.
    from airflow.sdk import (
        Asset,
        BaseOperator,
        BaseOperatorLink,
        BaseSensorOperator,
        Context,
        ObjectStoragePath,
    )
    from airflow.sdk.execution_time.xcom import XCom
    from airflow.sdk.log import mask_secret

    try:  # Airflow 3.1+
        from airflow.sdk import BaseHook
    except ImportError:  # Airflow 3.0
        from airflow.hooks.base import BaseHook  # type: ignore[no-redef,attr-defined]

    try:  # Airflow 3.1+
        from airflow.sdk.exceptions import AirflowException
    except ImportError:  # Airflow 3.0
        from airflow.exceptions import AirflowException  # type: ignore[no-redef,attr-defined]

    try:  # Airflow 3.2+
        from airflow.sdk.exceptions import AirflowFailException
    except ImportError:  # Airflow 3.0-3.1
        from airflow.exceptions import AirflowFailException  # type: ignore[no-redef,attr-defined]

    try:  # Airflow 3.2+
        from airflow.sdk.exceptions import AirflowSensorTimeout
    except ImportError:  # Airflow 3.0-3.1
        from airflow.exceptions import AirflowSensorTimeout  # type: ignore[no-redef,attr-defined]

    try:  # Airflow 3.2+
        from airflow.sdk.exceptions import AirflowSkipException
    except ImportError:  # Airflow 3.0-3.1
        from airflow.exceptions import AirflowSkipException  # type: ignore[no-redef,attr-defined]

    try:  # Airflow 3.2+
        from airflow.sdk.exceptions import TaskDeferred
    except ImportError:  # Airflow 3.0-3.1
        from airflow.exceptions import TaskDeferred  # type: ignore[no-redef,attr-defined]

    try:  # Airflow 3.1+
        from airflow.sdk.log import redact
    except ImportError:  # Airflow 3.0
        from airflow.sdk.execution_time.secrets_masker import (  # type: ignore[no-redef,import-not-found]
            redact,
        )

    try:  # Airflow 3.2+
        from airflow.sdk import conf
    except ImportError:  # Airflow 3.0-3.1
        from airflow.configuration import conf  # type: ignore[no-redef,assignment]

    try:  # Airflow 3.2+
        from airflow.sdk.lineage import get_hook_lineage_collector
    except ImportError:  # Airflow 3.0-3.1
        from airflow.lineage.hook import get_hook_lineage_collector  # type: ignore[no-redef]

    from airflow.sdk.execution_time.context import OutletEventAccessor

    RUNTIME_PARTITIONS = hasattr(OutletEventAccessor, "add_partitions")
else:  # Airflow 2.10+
    from airflow.configuration import conf  # type: ignore[no-redef,assignment]
    from airflow.datasets import Dataset as Asset  # type: ignore[no-redef,import-not-found]
    from airflow.exceptions import (  # type: ignore[no-redef,attr-defined]
        AirflowException,
        AirflowFailException,
        AirflowSensorTimeout,
        AirflowSkipException,
        TaskDeferred,
    )
    from airflow.hooks.base import BaseHook  # type: ignore[no-redef,attr-defined]
    from airflow.io.path import ObjectStoragePath  # type: ignore[no-redef]
    from airflow.lineage.hook import get_hook_lineage_collector  # type: ignore[no-redef]
    from airflow.models.baseoperator import BaseOperator  # type: ignore[no-redef]
    from airflow.models.baseoperatorlink import BaseOperatorLink  # type: ignore[no-redef]
    from airflow.models.xcom import XCom  # type: ignore[no-redef]
    from airflow.sensors.base import BaseSensorOperator  # type: ignore[no-redef]
    from airflow.utils.context import Context  # type: ignore[no-redef,attr-defined]
    from airflow.utils.log.secrets_masker import (  # type: ignore[no-redef,import-not-found]
        mask_secret,
        redact,
    )

    RUNTIME_PARTITIONS = False


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
    "RUNTIME_PARTITIONS",
    "AirflowException",
    "AirflowFailException",
    "AirflowProviderDeprecationWarning",
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

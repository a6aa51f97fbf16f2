"""Apache Airflow provider for Metronome, the usage-based billing platform."""

from __future__ import annotations

import importlib.util
from typing import Any

from airflow_provider_metronome.connection_form import connection_type

__version__ = "0.1.0"

PACKAGE_NAME = "airflow-provider-metronome"
# Serves gs:// with gcsfs alone when Airflow's google provider (which would serve it) is absent.
GCS_FILESYSTEM_MODULE = "airflow_provider_metronome.output.gcs_filesystem"


def get_provider_info() -> dict[str, Any]:
    """Describe the provider to Airflow's ProvidersManager (entry point ``apache_airflow_provider``).

    The connection form comes from :mod:`~airflow_provider_metronome.connection_form` rather than
    from the hook, so the Airflow 3 UI can build it without importing the hook.
    """
    info: dict[str, Any] = {
        "package-name": PACKAGE_NAME,
        "name": "Metronome",
        "description": "Fetch each customer's daily costs from Metronome, the usage-based billing platform.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "Metronome",
                "external-doc-url": "https://docs.metronome.com/",
                "tags": ["service"],
            }
        ],
        "hooks": [
            {
                "integration-name": "Metronome",
                "python-modules": ["airflow_provider_metronome.hooks.metronome"],
            }
        ],
        "operators": [
            {
                "integration-name": "Metronome",
                "python-modules": ["airflow_provider_metronome.operators.costs"],
            }
        ],
        "sensors": [
            {"integration-name": "Metronome", "python-modules": ["airflow_provider_metronome.sensors.costs"]}
        ],
        "triggers": [
            {"integration-name": "Metronome", "python-modules": ["airflow_provider_metronome.triggers.costs"]}
        ],
        "extra-links": ["airflow_provider_metronome.operators.costs.MetronomeCustomerLink"],
        "connection-types": [connection_type()],
    }
    if not _google_provider_installed():
        info["filesystems"] = [GCS_FILESYSTEM_MODULE]
    return info


def _google_provider_installed() -> bool:
    """Whether Airflow's google provider is there to serve gs:// (then ours must not compete with it)."""
    try:
        return importlib.util.find_spec("airflow.providers.google") is not None
    except (ImportError, ValueError):
        return False

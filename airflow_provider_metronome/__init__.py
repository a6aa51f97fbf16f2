"""Apache Airflow provider for Metronome, the usage-based billing platform."""

from __future__ import annotations

from typing import Any

from airflow_provider_metronome.connection_form import connection_type

__version__ = "0.1.0"

PACKAGE_NAME = "airflow-provider-metronome"


def get_provider_info() -> dict[str, Any]:
    """Describe the provider to Airflow's ProvidersManager (entry point ``apache_airflow_provider``).

    The connection form comes from :mod:`~airflow_provider_metronome.connection_form` rather than
    from the hook, so the Airflow 3 UI can build it without importing the hook.
    """
    return {
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

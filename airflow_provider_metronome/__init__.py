"""Apache Airflow provider for Metronome, the usage-based billing platform."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

PACKAGE_NAME = "airflow-provider-metronome"
HOOK_CLASS_NAME = "airflow_provider_metronome.hooks.metronome.MetronomeHook"


def get_provider_info() -> dict[str, Any]:
    """Describe the provider to Airflow's ProvidersManager (entry point ``apache_airflow_provider``).

    The connection form is declared here rather than on the hook so the Airflow 3 UI can build it
    without importing the hook.
    """
    return {
        "package-name": PACKAGE_NAME,
        "name": "Metronome",
        "description": "Fetch daily costs from [Metronome](https://metronome.com/), usage-based billing.",
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
        "connection-types": [
            {
                "connection-type": "metronome",
                "hook-class-name": HOOK_CLASS_NAME,
                "hook-name": "Metronome",
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "login", "port"],
                    "relabeling": {"host": "API base URL", "password": "API token"},
                    "placeholders": {
                        "host": "https://api.metronome.com",
                        "password": "Metronome API token (sent as a Bearer token)",
                        "extra": '{"timeout": 60, "max_retries": 2}',
                    },
                },
                "conn-fields": {
                    "timeout": {
                        "label": "Read timeout (s)",
                        "description": "Seconds to wait for an answer. Default 60.",
                        "schema": {"type": ["number", "null"], "exclusiveMinimum": 0},
                    },
                    "connect_timeout": {
                        "label": "Connect timeout (s)",
                        "description": "Seconds to wait for a TCP/TLS connection. Default 5.",
                        "schema": {"type": ["number", "null"], "exclusiveMinimum": 0},
                    },
                    "max_retries": {
                        "label": "Max retries",
                        "description": "Retries of 408/409/429/5xx and dropped connections. Default 2.",
                        "schema": {"type": ["integer", "null"], "minimum": 0},
                    },
                    "max_retry_wait": {
                        "label": "Max Retry-After wait (s)",
                        "description": "Longest server-requested wait honoured before a retry. Default 60.",
                        "schema": {"type": ["number", "null"], "minimum": 0},
                    },
                    "pool_size": {
                        "label": "Connection pool size",
                        "description": "Keep-alive connections kept open for concurrent calls. Default 32.",
                        "schema": {"type": ["integer", "null"], "minimum": 1},
                    },
                },
            }
        ],
    }

"""Old names keep working, with a deprecation warning that says what to use instead."""

from __future__ import annotations

import importlib
import sys

import pytest

from airflow_provider_metronome._compat import AirflowProviderDeprecationWarning
from airflow_provider_metronome.hooks.metronome import MetronomeHook
from airflow_provider_metronome.operators.costs import MetronomeCostsOperator
from airflow_provider_metronome.output import reading
from airflow_provider_metronome.window import resolve_window


@pytest.mark.parametrize(
    ("old_module", "names", "new_module"),
    [
        ("airflow_provider_metronome.utils.storage", ("iter_output", "summarize_output"), reading),
        (
            "airflow_provider_metronome.utils.window",
            ("resolve_window",),
            sys.modules[resolve_window.__module__],
        ),
    ],
)
def test_the_old_modules_still_import_and_say_where_the_names_went(
    old_module: str, names: tuple[str, ...], new_module: object
) -> None:
    sys.modules.pop(old_module, None)

    with pytest.warns(AirflowProviderDeprecationWarning, match=rf"{old_module} is deprecated: import"):
        module = importlib.import_module(old_module)

    for name in names:
        assert getattr(module, name) is getattr(new_module, name)


def test_the_old_name_of_the_task_cap_still_caps_the_task() -> None:
    with pytest.warns(AirflowProviderDeprecationWarning, match=r"pass task_requests_per_second=4 instead"):
        operator = MetronomeCostsOperator(task_id="costs", requests_per_second=4)
    with pytest.warns(AirflowProviderDeprecationWarning, match=r"requests_per_second is deprecated"):
        hook = MetronomeHook(requests_per_second=4)

    assert operator.task_requests_per_second == 4.0
    assert hook._task_cap is not None


def test_both_names_at_once_are_refused_when_the_dag_is_parsed() -> None:
    with pytest.raises(
        ValueError, match="requests_per_second is the deprecated name of task_requests_per_second"
    ):
        MetronomeCostsOperator(task_id="costs", task_requests_per_second=4, requests_per_second=4)

"""The argument checks shared by the hook, the operator, the sensor and the trigger.

Every check is ``check_<what>(name, value, ...)``: it returns the value (normalised where that helps)
or raises ``ValueError`` with a message that names the argument and says what to fix. Values known
when the DAG is parsed are checked then; templated values (Jinja, XComArgs) after rendering, before
the first request.
"""

from __future__ import annotations

import ast
import math
import uuid
import warnings
from collections.abc import Sequence
from typing import TypeVar

from airflow_provider_metronome._compat import AirflowProviderDeprecationWarning
from airflow_provider_metronome.vocabulary import (
    CUSTOMER_ERROR_POLICIES,
    MAX_PAGE_SIZE,
    RECORD_FORMATS,
    SOURCES,
    CustomerErrorPolicy,
    RecordFormat,
    Source,
)

ChoiceT = TypeVar("ChoiceT", bound=str)
ValueT = TypeVar("ValueT")


def is_templated(value: object) -> bool:
    """True when ``value`` still holds Jinja that Airflow renders at run time, or is an XComArg."""
    return (isinstance(value, str) and ("{{" in value or "{%" in value)) or hasattr(value, "resolve")


def check_choice(name: str, value: object, choices: Sequence[ChoiceT], hint: str = "") -> ChoiceT:
    """``value`` when it is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name}={value!r} must be one of {', '.join(map(repr, choices))}{hint}.")
    return value  # type: ignore[return-value]


def check_int(name: str, value: object, *, minimum: int, maximum: int | None = None) -> int:
    """``value`` when it is an integer (not a bool) in ``[minimum, maximum]``."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < minimum
        or (maximum is not None and value > maximum)
    ):
        bound = f"from {minimum} to {maximum}" if maximum is not None else f"of at least {minimum}"
        raise ValueError(f"{name}={value!r} must be an integer {bound}.")
    return value


def check_positive_number(name: str, value: object, *, unit: str, none_means: str = "") -> float | None:
    """``value`` as a float when it is a finite number above 0; None passes when ``none_means`` says why."""
    if value is None and none_means:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        alternative = f", or None for {none_means}" if none_means else ""
        raise ValueError(f"{name}={value!r} must be a positive number of {unit}{alternative}.")
    return float(value)


def renamed_argument(
    new: str, new_value: ValueT | None, old: str, old_value: ValueT | None, *, reason: str
) -> ValueT | None:
    """The value of argument ``new``, also accepted under its deprecated name ``old`` (with a warning).

    :param reason: Why it was renamed, for the warning.
    """
    if old_value is None:
        return new_value
    if new_value is not None:
        raise ValueError(f"{old} is the deprecated name of {new}: pass only {new}.")
    warnings.warn(
        f"{old} is deprecated ({reason}): pass {new}={old_value!r} instead.",
        AirflowProviderDeprecationWarning,
        stacklevel=3,
    )
    return old_value


def check_task_rate_cap(task_requests_per_second: object, requests_per_second: object = None) -> float | None:
    """The per-task cap on requests per second (None: no cap), also under its deprecated name."""
    if requests_per_second is None:
        name, value = "task_requests_per_second", task_requests_per_second
    else:
        name = "requests_per_second"
        value = renamed_argument(
            "task_requests_per_second",
            task_requests_per_second,
            name,
            requests_per_second,
            reason="it caps one task's requests, while the connection's requests_per_second is the "
            "account's budget",
        )
    return check_positive_number(name, value, unit="requests per second", none_means="no cap")


def check_source(value: object) -> Source:
    return check_choice("source", value, SOURCES)


def check_record_format(value: object) -> RecordFormat:
    return check_choice("record_format", value, RECORD_FORMATS)


def check_customer_error_policy(value: object) -> CustomerErrorPolicy:
    return check_choice(
        "on_customer_error",
        value,
        CUSTOMER_ERROR_POLICIES,
        " ('fail': any customer error fails the task; 'skip': leave out customers that answer a 4xx "
        "other than 401/403)",
    )


def check_max_workers(value: object) -> int:
    return check_int("max_workers", value, minimum=1)


def check_page_size(value: object) -> int:
    return check_int("page_size", value, minimum=1, maximum=MAX_PAGE_SIZE)


def check_customer_id(customer_id: object) -> str:
    """The id in canonical form; Metronome customer ids are always UUIDs."""
    try:
        return str(uuid.UUID(str(customer_id)))
    except (ValueError, AttributeError, TypeError):
        raise ValueError(
            f"customer_id={customer_id!r} is not a Metronome customer id; it must be a UUID such as "
            "'d7abd0cd-4ae9-4db7-8676-e986a4ebd8dc' (an ingest alias or external id will not work)."
        ) from None


def check_customer_ids(value: object) -> list[str] | None:
    """The rendered ``customer_ids`` as sorted, de-duplicated ids; None means every customer.

    Accepts one id, ids separated by commas, a list/tuple/set, or the text of a list (what Jinja
    renders from an XCom list without ``render_template_as_native_obj``).
    """
    if value is None:
        return None
    items: object = value
    if isinstance(value, str):
        text = value.strip()
        if not text:
            raise ValueError(
                "customer_ids rendered to an empty string; pass None for every active customer, or check "
                "the template."
            )
        if text.startswith("["):
            try:
                items = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                raise ValueError(f"customer_ids={value!r} looks like a list but is not one.") from None
        else:
            items = [part for part in (piece.strip() for piece in text.split(",")) if part]
    if not isinstance(items, (list, tuple, set, frozenset)):
        raise TypeError(
            f"customer_ids must be a customer id, a list of ids or None, not {type(value).__name__}."
        )
    return sorted({check_customer_id(item) for item in items})


def check_literal_customer_ids(value: object) -> None:
    """Check the ids already known when the DAG is parsed; templates and XComArgs wait for execute()."""
    if value is None or is_templated(value):
        return
    if isinstance(value, (list, tuple, set, frozenset)):
        for item in value:
            if not is_templated(item):
                check_customer_id(item)
    else:
        check_customer_ids(value)


__all__ = [
    "check_choice",
    "check_customer_error_policy",
    "check_customer_id",
    "check_customer_ids",
    "check_int",
    "check_literal_customer_ids",
    "check_max_workers",
    "check_page_size",
    "check_positive_number",
    "check_record_format",
    "check_source",
    "check_task_rate_cap",
    "is_templated",
    "renamed_argument",
]

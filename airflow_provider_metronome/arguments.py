"""Checks of the task arguments shared by the operator, the sensor and the trigger.

Values known when the DAG is parsed fail then, with a message that says what to fix; templated
values (Jinja, XComArgs) are checked after rendering, before the first request.
"""

from __future__ import annotations

import ast
from typing import Literal, TypeGuard

from airflow_provider_metronome.exceptions import MetronomeAuthenticationError, MetronomeClientError
from airflow_provider_metronome.hooks.metronome import SOURCES, Source, validate_customer_id
from airflow_provider_metronome.window import TimestampLike, resolve_window

CustomerErrorPolicy = Literal["fail", "skip"]
CUSTOMER_ERROR_POLICIES: tuple[CustomerErrorPolicy, ...] = ("fail", "skip")
DEFAULT_MAX_WORKERS = 8


def is_templated(value: object) -> bool:
    """True when ``value`` still holds Jinja that Airflow renders at run time."""
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def validate_source(source: str) -> Source:
    """Fail with the allowed values unless ``source`` is one the hook can read."""
    if source not in SOURCES:
        raise ValueError(f"source={source!r} must be one of {', '.join(map(repr, SOURCES))}.")
    return source  # type: ignore[return-value]


def validate_max_workers(max_workers: int) -> int:
    """Fail unless ``max_workers`` is a positive integer."""
    if isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1:
        raise ValueError(f"max_workers={max_workers!r} must be an integer of at least 1.")
    return max_workers


def validate_customer_error_policy(policy: str) -> CustomerErrorPolicy:
    """Fail unless ``on_customer_error`` is ``"fail"`` or ``"skip"``."""
    if policy not in CUSTOMER_ERROR_POLICIES:
        raise ValueError(
            f"on_customer_error={policy!r} must be 'fail' (any customer error fails the task) or 'skip' "
            "(leave out customers that answer a 4xx other than 401/403)."
        )
    return policy  # type: ignore[return-value]


def is_skippable_customer_error(error: BaseException) -> TypeGuard[MetronomeClientError]:
    """Whether ``on_customer_error="skip"`` may leave a customer out for ``error``.

    Only a 4xx about that customer (a plan with a UNIQUE-type metric, an unknown id) qualifies: a bad
    token fails every customer alike, so skipping them all would hide it; transient errors that
    outlasted the retries fail the task.
    """
    return isinstance(error, MetronomeClientError) and not isinstance(error, MetronomeAuthenticationError)


def parse_customer_ids(value: object) -> list[str] | None:
    """The rendered ``customer_ids`` as sorted, de-duplicated, validated ids; None means every customer.

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
    return sorted({validate_customer_id(item) for item in items})


def check_literal_customer_ids(value: object) -> None:
    """Validate the ids already known at parse time; templates and XComArgs wait for execute()."""
    # XComArgs (task.output, mapped arguments) resolve at run time.
    if value is None or is_templated(value) or hasattr(value, "resolve"):
        return
    if isinstance(value, (list, tuple, set, frozenset)):
        for item in value:
            if not is_templated(item):
                validate_customer_id(item)
    else:
        parse_customer_ids(value)


def check_literal_window(starting_on: TimestampLike | None, ending_before: TimestampLike | None) -> None:
    """Validate explicit window bounds known at parse time (both or neither; whole UTC days)."""
    if (starting_on is None) != (ending_before is None) or (
        starting_on is not None and not is_templated(starting_on) and not is_templated(ending_before)
    ):
        resolve_window({}, starting_on, ending_before)


__all__ = [
    "CUSTOMER_ERROR_POLICIES",
    "DEFAULT_MAX_WORKERS",
    "CustomerErrorPolicy",
    "check_literal_customer_ids",
    "check_literal_window",
    "is_skippable_customer_error",
    "is_templated",
    "parse_customer_ids",
    "validate_customer_error_policy",
    "validate_max_workers",
    "validate_source",
]

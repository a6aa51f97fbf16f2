"""The control endpoint: steer a running simulator over HTTP, on the API's own port, under ``/_simulator/``.

It takes the bearer token the API takes, JSON bodies, and answers JSON: the simulator's state after a
change, or ``{"message": ...}`` with a 4xx that says what to fix. Every action calls the simulator's Python
API, and the settings written as text (faults, customers) are read by the command line's own parsers
(:mod:`~airflow_provider_metronome.testing.arguments`).

========  ===================================  ==============================================================
method    path                                 body
========  ===================================  ==============================================================
GET       ``/_simulator/status``
POST      ``/_simulator/withhold``             ``{"days": ["2024-01-09"], "customer_id": ID}`` (customer optional)
POST      ``/_simulator/release``              ``{"days": [...]}`` or ``{"all": true}``, ``customer_id`` optional
POST      ``/_simulator/faults``               ``{"fault": "status=503:/costs:3"}`` (the ``--fault`` form)
DELETE    ``/_simulator/faults``
PUT       ``/_simulator/clock``                ``{"now": "2024-01-10T06:00:00Z"}`` (null: the wall clock)
PUT       ``/_simulator/rate-limit``           ``{"rate": 8, "burst": 8, "retry_after": "seconds"}``
DELETE    ``/_simulator/rate-limit``
PUT       ``/_simulator/gateway``              ``{"max_line_items": 300, "seconds": 0}`` (seconds optional)
DELETE    ``/_simulator/gateway``
PUT       ``/_simulator/customer-rate-limit``  ``{"customer_id": ID or "*", "rate": 1, "burst": 1, "retry_after": "none"}``
DELETE    ``/_simulator/customer-rate-limit``  ``{"customer_id": ID or "*"}``
POST      ``/_simulator/customers``            ``{"spec": "created_at=2024-01-05T00:00:00Z,contract=no"}``
========  ===================================  ==============================================================

A day is ``YYYY-MM-DD``, ``today`` or ``yesterday`` (by the simulator's clock, in UTC).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Protocol, TypeVar
from urllib.parse import unquote, urlsplit

from airflow_provider_metronome.testing.arguments import (
    FAULT_FORM,
    RETRY_AFTER,
    customer_spec,
    day,
    fault_argument,
    timestamp,
)
from airflow_provider_metronome.testing.availability import WithheldDays
from airflow_provider_metronome.testing.data import JsonObject, format_timestamp
from airflow_provider_metronome.testing.faults import Fault, GatewayTimeout, InjectedFault
from airflow_provider_metronome.testing.messages import (
    ApiError,
    Request,
    Response,
    accepted_token,
    json_response,
)
from airflow_provider_metronome.testing.rate_limit import EVERY_CUSTOMER, RateLimit
from airflow_provider_metronome.testing.request_log import RequestCounts

PREFIX = "/_simulator/"
_RELATIVE_DAYS = {"today": 0, "yesterday": 1}
_DAY_FORM = "YYYY-MM-DD, today or yesterday"
_Parsed = TypeVar("_Parsed")


class Steerable(Protocol):
    """What the control endpoint reads and changes: a part of :class:`MetronomeSimulator`'s Python API."""

    @property
    def accepted_tokens(self) -> frozenset[str]: ...

    @property
    def now(self) -> datetime: ...

    @now.setter
    def now(self, value: datetime | None) -> None: ...

    @property
    def availability_delay(self) -> timedelta: ...

    @property
    def rate_limit(self) -> RateLimit | None: ...

    @rate_limit.setter
    def rate_limit(self, value: RateLimit | None) -> None: ...

    gateway_timeout: GatewayTimeout | None

    @property
    def customer_rate_limits(self) -> dict[str, RateLimit]: ...

    def set_customer_rate_limit(self, customer_id: str, limit: RateLimit | None) -> None: ...

    @property
    def withheld_days(self) -> WithheldDays: ...

    @property
    def faults(self) -> list[InjectedFault]: ...

    @property
    def request_counts(self) -> RequestCounts: ...

    @property
    def active_customer_ids(self) -> list[str]: ...

    @property
    def archived_customer_ids(self) -> list[str]: ...

    def withhold(self, customer_id: str, days: Sequence[date]) -> None: ...

    def withhold_all(self, days: Sequence[date]) -> None: ...

    def release(self, days: Sequence[date], customer_id: str | None = None) -> None: ...

    def clear_withheld(self, customer_id: str | None = None) -> None: ...

    def inject(
        self,
        fault: Fault,
        path: str | None = None,
        times: int | None = 1,
        *,
        probability: float | None = None,
        seed: int = 0,
    ) -> None: ...

    def clear_faults(self) -> None: ...

    def add_customer(
        self,
        *,
        created_at: datetime,
        archived_at: datetime | None = None,
        plan: bool = True,
        contract: bool = True,
        billing_start: date | None = None,
        billing_end: date | None = None,
        name: str | None = None,
    ) -> str: ...

    def customer(self, customer_id: str) -> JsonObject: ...


Body = dict[str, object]
Answer = tuple[int, JsonObject]
"""A status code and the JSON object to answer with it."""


@dataclass(frozen=True)
class _Action:
    run: Callable[[Steerable, Body], Answer]
    keys: tuple[str, ...] = ()
    """The body's keys; none: the body is not read."""
    example: str = ""


def is_control(target: str) -> bool:
    """Whether a request target is the control endpoint's rather than the API's."""
    path = _path(target)
    return path == PREFIX.rstrip("/") or path.startswith(PREFIX)


def handle(simulator: Steerable, request: Request) -> Response:
    """Answer a control request: the action's JSON, or ``{"message": ...}`` with a 4xx."""
    try:
        status, payload = _run(simulator, request)
    except ApiError as error:
        return error.response()
    return json_response(status, payload)


def status(simulator: Steerable) -> JsonObject:
    """The simulator's state: clock, withheld days, faults, rate limit, customers and request counts."""
    withheld, counts = simulator.withheld_days, simulator.request_counts
    return {
        "now": format_timestamp(simulator.now),
        "availability_delay_hours": simulator.availability_delay / timedelta(hours=1),
        "withheld": {
            "all_customers": _iso(withheld.all_customers),
            "customers": {customer_id: _iso(days) for customer_id, days in withheld.customers.items()},
        },
        "faults": [_fault(injected) for injected in simulator.faults],
        "rate_limit": _rate_limit(simulator.rate_limit),
        "gateway_timeout": _gateway(simulator.gateway_timeout),
        "customer_rate_limits": {
            customer_id: _rate_limit(limit) for customer_id, limit in simulator.customer_rate_limits.items()
        },
        "customers": {
            "active": len(simulator.active_customer_ids),
            "archived": len(simulator.archived_customer_ids),
        },
        "requests": {
            "total": counts.total,
            "by_kind": dict(counts.by_kind),
            "by_status": {str(code): count for code, count in counts.by_status.items()},
            "throttled": counts.throttled,
        },
    }


def _run(simulator: Steerable, request: Request) -> Answer:
    if accepted_token(request.authorization, simulator.accepted_tokens) is None:
        raise ApiError(401, "Unauthorized: send 'Authorization: Bearer <token>' with the token /v1 accepts")
    path = _path(request.target)
    actions = {method: action for (method, name), action in _ACTIONS.items() if PREFIX + name == path}
    if not actions:
        known = ", ".join(f"{method} {PREFIX}{name}" for method, name in _ACTIONS)
        raise ApiError(404, f"no control endpoint {path}; they are: {known}")
    action = actions.get(request.method)
    if action is None:
        allowed = ", ".join(actions)
        raise ApiError(
            405, f"{request.method} is not allowed on {path}; use {allowed}", (("Allow", allowed),)
        )
    body = _body(request.body, action) if action.keys else {}
    return action.run(simulator, body)


def _path(target: str) -> str:
    return unquote(urlsplit(target).path)


def _body(raw: bytes | None, action: _Action) -> Body:
    """The request's JSON object (empty: ``{}``), with no key the action does not know."""
    if raw is None:
        raise ApiError(400, "send the JSON body with a Content-Length (not chunked), at most 1 MiB")
    try:
        body = json.loads(raw) if raw.strip() else {}
    except ValueError:
        raise ApiError(400, f"the body is not JSON; send an object such as {action.example}") from None
    if not isinstance(body, dict):
        raise ApiError(400, f"the body must be a JSON object such as {action.example}")
    unknown = sorted(set(body) - set(action.keys))
    if unknown:
        raise ApiError(400, f"unknown key {unknown[0]!r}; known keys: {', '.join(action.keys)}")
    return body


@contextmanager
def _refusals() -> Iterator[None]:
    """The Python API's refusals as answers: an unknown customer is a 404, a value it rejects a 400."""
    try:
        yield
    except KeyError as error:
        raise ApiError(404, str(error.args[0])) from error
    except ValueError as error:
        raise ApiError(400, str(error)) from error


def _parsed(parse: Callable[[str], _Parsed], key: str, body: Body, form: str) -> _Parsed:
    """``body[key]``, a required string, read by one of the command line's parsers."""
    text = body.get(key)
    if not isinstance(text, str):
        raise ApiError(400, f"{key} is required: a string {form}")
    try:
        return parse(text)
    except argparse.ArgumentTypeError as error:
        raise ApiError(400, f"{key}: {error}") from error


def _days(simulator: Steerable, body: Body) -> list[date]:
    form = f'a non-empty list of days ({_DAY_FORM}), e.g. ["2024-01-09"]'
    if "days" not in body:
        raise ApiError(400, f"days is required: {form}")
    raw = body["days"]
    if not isinstance(raw, list) or not raw or not all(isinstance(item, str) for item in raw):
        raise ApiError(400, f"days must be {form}, got {json.dumps(raw)}")
    today = simulator.now.date()
    return [_day(text, today) for text in raw]


def _day(text: str, today: date) -> date:
    if text in _RELATIVE_DAYS:
        return today - timedelta(days=_RELATIVE_DAYS[text])
    try:
        return day(text)
    except argparse.ArgumentTypeError as error:
        raise ApiError(400, f"days: {error}; a day is {_DAY_FORM}") from error


def _customer_id(body: Body) -> str | None:
    customer_id = body.get("customer_id")
    if customer_id is not None and not isinstance(customer_id, str):
        raise ApiError(400, f"customer_id must be a customer's id (a string), got {customer_id!r}")
    return customer_id


def _number(body: Body, key: str) -> float | None:
    value = body.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise ApiError(400, f"{key} must be a number, got {value!r}")
    return None if value is None else float(value)


# -- actions ---------------------------------------------------------------------------------------------


def _status(simulator: Steerable, body: Body) -> Answer:
    return 200, status(simulator)


def _withhold(simulator: Steerable, body: Body) -> Answer:
    days, customer_id = _days(simulator, body), _customer_id(body)
    with _refusals():
        if customer_id is None:
            simulator.withhold_all(days)
        else:
            simulator.withhold(customer_id, days)
    return 200, status(simulator)


def _release(simulator: Steerable, body: Body) -> Answer:
    release_all, customer_id = body.get("all", False), _customer_id(body)
    if not isinstance(release_all, bool):
        raise ApiError(400, f"all must be true or false, got {release_all!r}")
    if release_all == ("days" in body):
        raise ApiError(400, 'give either days (a list of days) or "all": true')
    with _refusals():
        if release_all:
            simulator.clear_withheld(customer_id)
        else:
            simulator.release(_days(simulator, body), customer_id)
    return 200, status(simulator)


def _add_fault(simulator: Steerable, body: Body) -> Answer:
    injected = _parsed(fault_argument, "fault", body, FAULT_FORM)
    simulator.inject(
        injected.fault, injected.path, injected.times, probability=injected.probability, seed=injected.seed
    )
    return 200, status(simulator)


def _clear_faults(simulator: Steerable, body: Body) -> Answer:
    simulator.clear_faults()
    return 200, status(simulator)


def _set_clock(simulator: Steerable, body: Body) -> Answer:
    if "now" not in body:
        raise ApiError(400, "now is required: an RFC 3339 timestamp such as 2024-01-10T06:00:00Z, or null")
    now = None if body["now"] is None else _parsed(timestamp, "now", body, "such as 2024-01-10T06:00:00Z")
    simulator.now = now
    return 200, status(simulator)


def _limit_of(body: Body, allowed_to: str) -> RateLimit:
    rate, retry_after = _number(body, "rate"), body.get("retry_after", "none")
    if rate is None:
        raise ApiError(400, f"rate is required: requests per second allowed to {allowed_to}")
    if not isinstance(retry_after, str) or retry_after not in RETRY_AFTER:
        raise ApiError(400, f"retry_after must be one of {', '.join(RETRY_AFTER)}, got {retry_after!r}")
    with _refusals():
        return RateLimit(rate, _number(body, "burst"), RETRY_AFTER[retry_after])


def _set_rate_limit(simulator: Steerable, body: Body) -> Answer:
    simulator.rate_limit = _limit_of(body, "each token on each endpoint")
    return 200, status(simulator)


def _limited_customer(body: Body) -> str:
    customer_id = body.get("customer_id")
    if not isinstance(customer_id, str) or not customer_id:
        raise ApiError(
            400, f"customer_id is required: a customer's id, or {EVERY_CUSTOMER!r} for every customer"
        )
    return customer_id


def _set_customer_rate_limit(simulator: Steerable, body: Body) -> Answer:
    customer_id = _limited_customer(body)
    simulator.set_customer_rate_limit(customer_id, _limit_of(body, "the customer"))
    return 200, status(simulator)


def _remove_customer_rate_limit(simulator: Steerable, body: Body) -> Answer:
    simulator.set_customer_rate_limit(_limited_customer(body), None)
    return 200, status(simulator)


def _remove_rate_limit(simulator: Steerable, body: Body) -> Answer:
    simulator.rate_limit = None
    return 200, status(simulator)


def _set_gateway(simulator: Steerable, body: Body) -> Answer:
    limit, seconds = _number(body, "max_line_items"), _number(body, "seconds")
    if limit is None or not limit.is_integer():
        raise ApiError(
            400, "max_line_items is required: the most line items one breakdowns request may cover"
        )
    with _refusals():
        simulator.gateway_timeout = GatewayTimeout(int(limit), seconds or 0.0)
    return 200, status(simulator)


def _remove_gateway(simulator: Steerable, body: Body) -> Answer:
    simulator.gateway_timeout = None
    return 200, status(simulator)


def _add_customer(simulator: Steerable, body: Body) -> Answer:
    spec = _parsed(customer_spec, "spec", body, "of comma-separated key=value, created_at=... required")
    customer_id = simulator.add_customer(**dataclasses.asdict(spec))
    return 201, {"id": customer_id, "customer": simulator.customer(customer_id)}


_ACTIONS: dict[tuple[str, str], _Action] = {
    ("GET", "status"): _Action(_status),
    ("POST", "withhold"): _Action(_withhold, ("days", "customer_id"), '{"days": ["2024-01-09"]}'),
    ("POST", "release"): _Action(_release, ("days", "all", "customer_id"), '{"days": ["2024-01-09"]}'),
    ("POST", "faults"): _Action(_add_fault, ("fault",), '{"fault": "status=503:/costs:3"}'),
    ("DELETE", "faults"): _Action(_clear_faults),
    ("PUT", "clock"): _Action(_set_clock, ("now",), '{"now": "2024-01-10T06:00:00Z"}'),
    ("PUT", "rate-limit"): _Action(
        _set_rate_limit, ("rate", "burst", "retry_after"), '{"rate": 8, "burst": 8, "retry_after": "none"}'
    ),
    ("DELETE", "rate-limit"): _Action(_remove_rate_limit),
    ("PUT", "gateway"): _Action(_set_gateway, ("max_line_items", "seconds"), '{"max_line_items": 300}'),
    ("DELETE", "gateway"): _Action(_remove_gateway),
    ("PUT", "customer-rate-limit"): _Action(
        _set_customer_rate_limit,
        ("customer_id", "rate", "burst", "retry_after"),
        '{"customer_id": "*", "rate": 1, "burst": 1, "retry_after": "none"}',
    ),
    ("DELETE", "customer-rate-limit"): _Action(
        _remove_customer_rate_limit, ("customer_id",), '{"customer_id": "*"}'
    ),
    ("POST", "customers"): _Action(_add_customer, ("spec",), '{"spec": "created_at=2024-01-05T00:00:00Z"}'),
}


def _iso(days: Sequence[date]) -> list[str]:
    return [day.isoformat() for day in days]


def _fault(injected: InjectedFault) -> JsonObject:
    described: JsonObject = {"kind": injected.fault.kind}
    if injected.fault.kind in {"status", "redirect"}:
        described["status_code"] = injected.fault.status_code
    return {
        **described,
        "path": injected.path,
        "remaining": injected.remaining,
        "probability": injected.probability,
        "seed": injected.seed,
    }


def _rate_limit(limit: RateLimit | None) -> JsonObject | None:
    if limit is None:
        return None
    retry_after = next(name for name, style in RETRY_AFTER.items() if style == limit.retry_after)
    return {"rate": limit.rate, "burst": limit.capacity, "retry_after": retry_after}


def _gateway(gateway: GatewayTimeout | None) -> JsonObject | None:
    return None if gateway is None else {"max_line_items": gateway.max_line_items, "seconds": gateway.seconds}

"""Deterministic fake Metronome data: customers, daily costs and invoice breakdowns.

Every value derives from the seed through ``random.Random`` instances seeded with SHA-256 digests, so one
seed gives the same data in every process (Python's ``hash()`` is salted per process and would not).
Money is generated in integer hundredths and rendered at the edge, so per-credit-type costs are exact sums
of their line items and hourly breakdowns add up to the daily ones.
"""

from __future__ import annotations

import functools
import hashlib
import random
import re
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any, Literal

JsonObject = dict[str, Any]
WindowSize = Literal["day", "hour"]

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
WINDOW_LENGTHS: dict[WindowSize, timedelta] = {"day": timedelta(days=1), "hour": timedelta(hours=1)}
HOURS_PER_DAY = 24
# Metronome finalizes an invoice after a 24-hour grace period following the end of its period.
FINALIZATION_GRACE = timedelta(hours=24)
NO_USAGE_PROBABILITY = 1 / 7
FIRST_CUSTOMER_CREATED_AT = datetime(2020, 1, 1, tzinfo=timezone.utc)
ARCHIVED_AFTER = timedelta(days=90)
# Bounded so that long benchmarks over many customers cannot grow the process without limit.
CACHE_SIZE = 65_536

_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):(\d{2}))"
)


@dataclass(frozen=True)
class LineItemTemplate:
    """A product a credit type bills for; ``group_values`` may contain None (Metronome's null group)."""

    name: str
    group_key: str | None = None
    group_values: tuple[str | None, ...] = ()


@dataclass(frozen=True)
class CreditType:
    """A Metronome credit type and how often it shows up in the generated data."""

    id: str
    name: str
    catalog: tuple[LineItemTemplate, ...]
    presence: float
    """Chance that the credit type has usage on a day that has usage at all."""
    breakdown_omission: float
    """Chance that ``/costs`` leaves out its ``line_item_breakdown`` key for a day."""

    def reference(self) -> JsonObject:
        """The ``{"id", "name"}`` object used by invoices and line items."""
        return {"id": self.id, "name": self.name}


_REGIONS: tuple[str | None, ...] = ("us-east-1", "us-west-2", "eu-west-1", None)

# Sorted by id: responses list credit types in id order.
CREDIT_TYPES: tuple[CreditType, ...] = (
    CreditType(
        id="2714e483-4ff1-48e4-9e25-ac732e8f24f2",
        name="USD (cents)",
        catalog=(
            LineItemTemplate("CPU hours", "region", _REGIONS),
            LineItemTemplate("Storage GB-months"),
            LineItemTemplate("API requests", "endpoint", ("/v1/search", "/v1/ingest", None)),
            LineItemTemplate("Data egress GB", "region", _REGIONS),
            LineItemTemplate("Seats"),
        ),
        presence=1.0,
        breakdown_omission=0.0,
    ),
    CreditType(
        id="7b2f9c1e-5a34-4d8e-9f60-3c1d2e4b5a69",
        name="Cloud Credits",
        catalog=(
            LineItemTemplate("GPU hours", "gpu_type", ("a100", "h100", None)),
            LineItemTemplate("Inference tokens", "model", ("small", "large")),
            LineItemTemplate("Fine-tuning jobs"),
            LineItemTemplate("Vector storage GB", "region", _REGIONS),
        ),
        presence=0.6,
        breakdown_omission=0.0,
    ),
    CreditType(
        id="c4e1a7d2-9b3f-4e5a-8c6d-1f2e3d4c5b6a",
        name="Compute Units",
        catalog=(
            LineItemTemplate("Batch jobs", "queue", ("default", "priority", None)),
            LineItemTemplate("Scheduled tasks"),
        ),
        presence=0.35,
        breakdown_omission=0.5,
    ),
)
CREDIT_TYPES_BY_ID: dict[str, CreditType] = {credit_type.id: credit_type for credit_type in CREDIT_TYPES}

_ADJECTIVES = ("Blue", "Quiet", "Rapid", "Golden", "Northern", "Bright", "Silver", "Open", "Clever", "Iron")
_NOUNS = ("Harbor", "Falcon", "Summit", "Cedar", "Beacon", "Orbit", "Meadow", "Canyon", "Signal", "Pixel")
_SUFFIXES = ("Labs", "Inc.", "Systems", "Analytics", "Cloud", "Co.", "Studios", "Networks")


@dataclass(frozen=True)
class UsageLine:
    """One line item's usage for a whole UTC day."""

    name: str
    product_id: str
    group_key: str | None
    group_value: str | None
    cents: int
    quantity: int


@dataclass(frozen=True)
class CreditTypeUsage:
    """A credit type's line items for one UTC day."""

    credit_type: CreditType
    lines: tuple[UsageLine, ...]
    shows_breakdown: bool

    @property
    def cents(self) -> int:
        """The credit type's cost in hundredths."""
        return sum(line.cents for line in self.lines)


DayUsage = tuple[CreditTypeUsage, ...]
# Per credit type, per line item: the 24 hourly (cents, quantity) shares of the day.
HourSplit = tuple[tuple[tuple[tuple[int, int], ...], ...], ...]


def stable_rng(*parts: object) -> random.Random:
    """A ``random.Random`` seeded from a digest of ``parts``: identical across processes and runs."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return random.Random(int.from_bytes(digest[:16], "big"))


def stable_uuid(*parts: object) -> str:
    """A uuid4-shaped id derived from ``parts``."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return str(uuid.UUID(bytes=digest[:16], version=4))


def money(cents: int) -> int | float:
    """Render hundredths as Metronome does: whole amounts as JSON integers, others with two decimals."""
    return cents // 100 if cents % 100 == 0 else cents / 100


def format_timestamp(moment: datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SSZ`` in UTC, the form of Metronome's documented examples."""
    moment = moment.astimezone(timezone.utc)
    return (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}"
        f"T{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}Z"
    )


def parse_timestamp(text: str) -> datetime:
    """Parse an RFC 3339 timestamp (offset required) into an aware UTC datetime.

    Written by hand because ``datetime.fromisoformat`` on Python 3.10 rejects ``Z`` and most fractions.
    Raises ValueError (or OverflowError near the ends of the calendar) when it is not one.
    """
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise ValueError(f"not an RFC 3339 timestamp: {text!r}")
    year, month, day, hour, minute, second = (int(part) for part in match.groups()[:6])
    fraction, zulu, sign, offset_hours, offset_minutes = match.groups()[6:]
    microsecond = int((fraction or "0")[:6].ljust(6, "0"))
    offset = timedelta(0)
    if not zulu:
        offset = timedelta(hours=int(offset_hours), minutes=int(offset_minutes))
        offset = -offset if sign == "-" else offset
    local = datetime(year, month, day, hour, minute, second, microsecond, tzinfo=timezone(offset))
    return local.astimezone(timezone.utc)


def plain_utc(value: datetime) -> datetime:
    """A stdlib UTC datetime: subclasses such as pendulum's compare differently with the data's times."""
    utc = value.astimezone(timezone.utc)
    return datetime(
        utc.year, utc.month, utc.day, utc.hour, utc.minute, utc.second, utc.microsecond, tzinfo=timezone.utc
    )


def utc(moment: date) -> datetime:
    """``moment`` as an aware UTC datetime: a date means its midnight UTC, a naive datetime is read as UTC."""
    if not isinstance(moment, datetime):
        return datetime(moment.year, moment.month, moment.day, tzinfo=timezone.utc)
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def window_index(moment: datetime, size: WindowSize, *, ceil: bool) -> int:
    """Index of the window (counted from the Unix epoch) at or after / before ``moment``."""
    length = WINDOW_LENGTHS[size]
    return -((EPOCH - moment) // length) if ceil else (moment - EPOCH) // length


def window_start(index: int, size: WindowSize) -> datetime:
    return EPOCH + index * WINDOW_LENGTHS[size]


def month_bounds(moment: datetime) -> tuple[datetime, datetime]:
    """The UTC calendar month containing ``moment``: Metronome's usage invoice period."""
    start = datetime(moment.year, moment.month, 1, tzinfo=timezone.utc)
    end = datetime(moment.year + moment.month // 12, moment.month % 12 + 1, 1, tzinfo=timezone.utc)
    return start, end


def invoice_status(window_start: datetime, now: datetime) -> str:
    """FINALIZED once the window's calendar month has ended and the grace period has passed."""
    return "FINALIZED" if now >= month_bounds(window_start)[1] + FINALIZATION_GRACE else "DRAFT"


def apportion(total: int, weights: list[int]) -> list[int]:
    """Split ``total`` into integer shares proportional to ``weights`` that add up exactly (largest remainder).

    A zero weight always gets a zero share, which keeps zero-quantity hours free of cost.
    """
    weight_sum = sum(weights)
    if total == 0 or weight_sum == 0:
        return [0] * len(weights)
    shares = [total * weight // weight_sum for weight in weights]
    by_remainder = sorted(range(len(weights)), key=lambda index: -(total * weights[index] % weight_sum))
    for index in by_remainder[: total - sum(shares)]:
        shares[index] += 1
    return shares


class Dataset:
    """All generated data for one seed; immutable once built, so threads may share it freely.

    Args:
        seed: Root of every generated value.
        customers: Number of active customers.
        archived_customers: Number of archived customers, interleaved in creation order.
        unique_metric_customers: Active customers whose plan has a UNIQUE-type billable metric.
        line_items_per_credit_type: Line items each credit type has on a day with usage.
    """

    def __init__(
        self,
        *,
        seed: int,
        customers: int,
        archived_customers: int,
        unique_metric_customers: int,
        line_items_per_credit_type: int,
    ) -> None:
        if min(customers, archived_customers, unique_metric_customers) < 0:
            raise ValueError("customer counts must not be negative")
        if unique_metric_customers > customers:
            raise ValueError("unique_metric_customers cannot exceed the number of active customers")
        if line_items_per_credit_type < 1:
            raise ValueError("line_items_per_credit_type must be at least 1")
        self.seed = seed
        self.line_items_per_credit_type = line_items_per_credit_type
        rng = random.Random(seed)
        total = customers + archived_customers
        ids = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(total)]
        archived = set(rng.sample(range(total), archived_customers))
        active = [index for index in range(total) if index not in archived]
        unique = set(rng.sample(active, unique_metric_customers))
        self.customers: tuple[JsonObject, ...] = tuple(
            _customer(rng, index, ids[index], index in archived) for index in range(total)
        )
        self.by_id: dict[str, JsonObject] = {customer["id"]: customer for customer in self.customers}
        self.active: tuple[JsonObject, ...] = tuple(self.customers[index] for index in active)
        self.archived: tuple[JsonObject, ...] = tuple(self.customers[index] for index in sorted(archived))
        self.unique_metric_ids: tuple[str, ...] = tuple(ids[index] for index in sorted(unique))
        # Per-instance caches: a module-level cache would mix seeds and keep old datasets alive.
        self.day_usage = functools.lru_cache(maxsize=CACHE_SIZE)(self._generate_day_usage)
        self.costs_window = functools.lru_cache(maxsize=CACHE_SIZE)(self._render_costs_window)
        self._hour_split = functools.lru_cache(maxsize=CACHE_SIZE)(self._generate_hour_split)

    def _generate_day_usage(self, customer_id: str, day: date) -> DayUsage:
        """Usage of one customer on one UTC day; empty on roughly one day in seven."""
        rng = stable_rng("usage", self.seed, customer_id, day.isoformat())
        if rng.random() < NO_USAGE_PROBABILITY:
            return ()
        usage = []
        for credit_type in CREDIT_TYPES:
            if rng.random() >= credit_type.presence:
                continue
            lines = tuple(
                self._usage_line(rng, credit_type, index) for index in range(self.line_items_per_credit_type)
            )
            usage.append(CreditTypeUsage(credit_type, lines, rng.random() >= credit_type.breakdown_omission))
        return tuple(usage)

    @staticmethod
    def _usage_line(rng: random.Random, credit_type: CreditType, index: int) -> UsageLine:
        template = credit_type.catalog[index % len(credit_type.catalog)]
        repeat = index // len(credit_type.catalog)
        name = template.name if repeat == 0 else f"{template.name} ({repeat + 1})"
        draw = rng.random()
        if draw < 0.15:
            # Free usage: sometimes nothing was used at all, sometimes a free tier absorbed it.
            cents, quantity = 0, (0 if rng.random() < 0.6 else rng.randint(1, 50))
        elif draw < 0.3:
            cents, quantity = rng.randint(1, 500) * 100, rng.randint(1, 5_000)
        else:
            cents, quantity = rng.randint(1, 50_000), rng.randint(1, 5_000)
        group_value = rng.choice(template.group_values) if template.group_key else None
        product_id = stable_uuid("product", credit_type.id, name)
        return UsageLine(name, product_id, template.group_key, group_value, cents, quantity)

    def _render_costs_window(self, customer_id: str, day: date) -> JsonObject:
        start = datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
        credit_types: JsonObject = {}
        for usage in self.day_usage(customer_id, day):
            entry: JsonObject = {"name": usage.credit_type.name, "cost": money(usage.cents)}
            if usage.shows_breakdown:
                entry["line_item_breakdown"] = [_cost_line(line) for line in usage.lines]
            credit_types[usage.credit_type.id] = entry
        return {
            "start_timestamp": format_timestamp(start),
            "end_timestamp": format_timestamp(start + WINDOW_LENGTHS["day"]),
            "credit_types": credit_types,
        }

    def _generate_hour_split(self, customer_id: str, day: date) -> HourSplit:
        rng = stable_rng("hours", self.seed, customer_id, day.isoformat())
        split = []
        for usage in self.day_usage(customer_id, day):
            lines = []
            for line in usage.lines:
                quantities = apportion(line.quantity, _hour_weights(rng))
                # Cost follows quantity so that an hour with no usage never costs anything.
                lines.append(tuple(zip(apportion(line.cents, quantities), quantities, strict=True)))
            split.append(tuple(lines))
        return tuple(split)

    def window_invoices(
        self,
        customer_id: str,
        window_start: datetime,
        window_size: WindowSize,
        *,
        status: str,
        credit_type_id: str | None = None,
        skip_zero_qty_line_items: bool = False,
    ) -> list[JsonObject]:
        """The breakdown invoices of one window, one per credit type with usage that day, by credit type id.

        Every window has at least one invoice, so "a window for each day" means the same for
        breakdowns as for costs: a window without usage (a day, or an hour of it) has one zero-total
        invoice in the primary credit type with no line items. ``skip_zero_qty_line_items`` removes
        line items, never invoices.
        """
        day = window_start.date()
        usages = self.day_usage(customer_id, day) or (CreditTypeUsage(CREDIT_TYPES[0], (), False),)
        hour_split = self._hour_split(customer_id, day) if window_size == "hour" else ()
        invoices = []
        for position, usage in enumerate(usages):
            if credit_type_id is not None and usage.credit_type.id != credit_type_id:
                continue
            amounts = (
                [lines[window_start.hour] for lines in hour_split[position]]
                if hour_split
                else [(line.cents, line.quantity) for line in usage.lines]
            )
            period_end = month_bounds(window_start)[1]
            line_items = [
                _invoice_line(usage.credit_type, line, cents, quantity, period_end)
                for line, (cents, quantity) in zip(usage.lines, amounts, strict=True)
                if quantity or not skip_zero_qty_line_items
            ]
            invoices.append(
                _invoice(
                    invoice_id=stable_uuid(
                        "invoice", self.seed, customer_id, window_size, window_start, usage.credit_type.id
                    ),
                    customer_id=customer_id,
                    credit_type=usage.credit_type,
                    line_items=line_items,
                    total=money(sum(cents for cents, _ in amounts)),
                    window_start=window_start,
                    window_size=window_size,
                    status=status,
                )
            )
        return invoices


def _hour_weights(rng: random.Random) -> list[int]:
    # Some idle hours, so hourly breakdowns have zero-quantity line items; never all idle, so sums hold.
    weights = [0 if rng.random() < 0.25 else rng.randint(1, 100) for _ in range(HOURS_PER_DAY)]
    if not any(weights):
        weights[HOURS_PER_DAY // 2] = 1
    return weights


def customer_name(rng: random.Random) -> str:
    """A made-up company name such as "Quiet Falcon Labs"."""
    return f"{rng.choice(_ADJECTIVES)} {rng.choice(_NOUNS)} {rng.choice(_SUFFIXES)}"


def customer_object(
    customer_id: str, name: str, aliases: list[str], created_at: datetime, archived_at: datetime | None
) -> JsonObject:
    """A customer as ``GET /v1/customers`` lists it; ``aliases[0]`` is its external id."""
    created, archived = (
        format_timestamp(created_at),
        None if archived_at is None else format_timestamp(archived_at),
    )
    return {
        "id": customer_id,
        "external_id": aliases[0],
        "name": name,
        "ingest_aliases": aliases,
        "custom_fields": {},
        "customer_config": {"salesforce_account_id": None},
        "created_at": created,
        "updated_at": archived or created,
        "archived_at": archived,
        "current_billable_status": {"value": "billable", "effective_at": created},
    }


def _customer(rng: random.Random, index: int, customer_id: str, archived: bool) -> JsonObject:
    created_at = FIRST_CUSTOMER_CREATED_AT + timedelta(hours=index)
    name = customer_name(rng)
    aliases = [f"cust_{index + 1:05d}"]
    if index % 3 == 0:
        aliases.append(f"{name.split()[1].lower()}-{index + 1}.example.com")
    return customer_object(
        customer_id, name, aliases, created_at, created_at + ARCHIVED_AFTER if archived else None
    )


def _grouping(line: UsageLine) -> JsonObject:
    # Ungrouped products have no group keys at all, unlike grouped ones whose value may be null.
    return {"group_key": line.group_key, "group_value": line.group_value} if line.group_key else {}


def _cost_line(line: UsageLine) -> JsonObject:
    return {"name": line.name, "cost": money(line.cents), **_grouping(line)}


def unit_price(line: UsageLine, cents: int) -> int | float:
    """The product's list price in the credit type's unit, four decimals at most; 0 for free usage.

    Taken from the product id's digits (no draw from the day's generator, which would change every
    other value); totals do not follow from it, as with tiers and free allowances.
    """
    if cents == 0:
        return 0
    price = int(line.product_id[:8], 16) % 1_000_000 + 1
    return price // 10_000 if price % 10_000 == 0 else price / 10_000


def _invoice_line(
    credit_type: CreditType, line: UsageLine, cents: int, quantity: int, period_end: datetime
) -> JsonObject:
    # As real answers: a unit price, the product's type, pricing groups, and the invoice's end.
    item: JsonObject = {
        "credit_type": credit_type.reference(),
        "name": line.name,
        "total": money(cents),
        "type": "usage",
        "quantity": quantity,
        "unit_price": unit_price(line, cents),
        "product_id": line.product_id,
        "product_type": "UsageProductListItem",
        "ending_before": format_timestamp(period_end),
        **_grouping(line),
    }
    if line.group_key:
        item["presentation_group_values"] = {line.group_key: line.group_value}
        item["pricing_group_values"] = {"tier": "standard" if int(line.product_id[9], 16) % 2 else "volume"}
    return item


def _invoice(
    *,
    invoice_id: str,
    customer_id: str,
    credit_type: CreditType,
    line_items: list[JsonObject],
    total: int | float,
    window_start: datetime,
    window_size: WindowSize,
    status: str,
) -> JsonObject:
    period_start, period_end = month_bounds(window_start)
    return {
        "id": invoice_id,
        "credit_type": credit_type.reference(),
        "customer_id": customer_id,
        "line_items": line_items,
        "status": status,
        "total": total,
        "type": "USAGE",
        "start_timestamp": format_timestamp(period_start),
        "end_timestamp": format_timestamp(period_end),
        "breakdown_start_timestamp": format_timestamp(window_start),
        "breakdown_end_timestamp": format_timestamp(window_start + WINDOW_LENGTHS[window_size]),
    }

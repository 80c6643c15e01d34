"""Online-store orders: POST /v1/orders from the website contractor, bearer token, idempotent.

The same order id posted twice (retries, concurrent double-submits) is one lead and the
same receipt; so is the same Idempotency-Key. Both are scoped to the token that posted:
two shops (two tokens) each have their own order 1001, and one cannot replay the other's.
Fields the contractor adds later are kept in the raw payload rather than refused: a new
field on their side must never lose an order.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any

from aiohttp import web
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from gateway.channels import (
    ChannelDefaults,
    ChannelSpec,
    Connector,
    ConnectorContext,
    TaskSpec,
)
from gateway.errors import ApiError
from gateway.http import idempotency_key, read_json_object, require_token
from gateway.identity import normalize_email, normalize_phone
from gateway.models import Channel, Contact, EquipmentCategory, Interest, LeadEvent
from gateway.receipts import receipt_response

ORDER_CLOCK_TRUST = timedelta(days=7)
MAX_DIGITS = 24  # room for any real price with cents; bounds what a number can expand to
# What docs/openapi.yaml promises for an amount (Money, quantity): a JSON number 0 or
# within 1e-6..1e17 (str(float) of those has at most 24 digits), or a string of plain
# digits with an optional decimal point, at most 24 digits. Checked here as written there,
# so that the contract and the server agree on every value (pydantic alone would take
# "1e5", " 12 " or 1e-300 and refuse 1e30 with a less helpful message).
_AMOUNT_TEXT = re.compile(r"[0-9]{1,24}|(?=[0-9.]{3,25}$)[0-9]+\.[0-9]+")
_AMOUNT_RANGE = (1e-6, 1e17)
_AMOUNT_HELP = (
    "a non-negative amount: a number (0, or 0.000001 to 1e17) or digits with an optional "
    "decimal point, at most 24 digits"
)


def _amount(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(_AMOUNT_HELP)
    if isinstance(value, int | float):
        low, high = _AMOUNT_RANGE
        if value != 0 and not low <= abs(value) <= high:
            raise ValueError(_AMOUNT_HELP)
        return value
    if isinstance(value, str) and _AMOUNT_TEXT.fullmatch(value):
        return value
    raise ValueError(_AMOUNT_HELP)


Amount = Annotated[Decimal, BeforeValidator(_amount)]


class _Payload(BaseModel):
    model_config = ConfigDict(extra="allow", str_strip_whitespace=True)


class Customer(_Payload):
    name: str | None = Field(None, max_length=300)
    phone: str | None = Field(None, max_length=64)
    email: str | None = Field(None, max_length=320)
    company: str | None = Field(None, max_length=300)


class Item(_Payload):
    sku: str | None = Field(None, max_length=200)
    name: str = Field(min_length=1, max_length=500)
    # max_digits: "1e999999" is a valid Decimal that would print as a million digits.
    quantity: Amount = Field(Decimal(1), gt=0, max_digits=MAX_DIGITS)
    price: Amount | None = Field(None, ge=0, max_digits=MAX_DIGITS)
    category: EquipmentCategory | None = None


class Order(_Payload):
    order_id: str = Field(min_length=1, max_length=200)
    created_at: datetime | None = None
    customer: Customer
    items: list[Item] = Field(default_factory=list, max_length=500)
    total: Amount | None = Field(None, ge=0, max_digits=MAX_DIGITS)
    currency: str = Field("RUB", pattern="^[A-Za-z]{3}$")
    comment: str | None = Field(None, max_length=10_000)
    utm: dict[str, str] = Field(default_factory=dict, max_length=20)

    @field_validator("created_at", mode="before")
    @classmethod
    def _iso_text(cls, value: Any) -> Any:
        # pydantic would also take 1700000000 or "1700000000" as a Unix time; the contract
        # (docs/openapi.yaml) is an ISO 8601 string.
        if value is None:
            return None
        if not isinstance(value, str):
            raise ValueError("an ISO 8601 date-time string, e.g. 2026-11-27T12:40:00+03:00")
        try:
            return datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(
                "an ISO 8601 date-time string, e.g. 2026-11-27T12:40:00+03:00"
            ) from None

    @field_validator("order_id", mode="before")
    @classmethod
    def _id_as_text(cls, value: Any) -> Any:
        # Shops send numeric ids as numbers; the key is the same either way. 1001.0 is the
        # integer 1001 to JSON Schema (and so to docs/openapi.yaml), so it is here too. Past
        # 2**53 a number is not exact in JavaScript nor once parsed as a float: such ids
        # must come as text, or two orders could share one key.
        if isinstance(value, bool) or not isinstance(value, int | float):
            return value
        if isinstance(value, float) and not value.is_integer():
            return value  # refused as "not a string"
        if abs(value) > 2**53:
            raise ValueError("a numeric order id must be within ±2**53; send larger ones as text")
        return str(int(value))


def order_external_id(token_name: str, order_id: str) -> str:
    """The order's idempotency key: its id within the token that posted it. (The SQLite
    store gives orders stored before this scoping the same key when it opens a file.)"""
    return f"{token_name}:{order_id}"


def _money(value: Decimal, currency: str) -> str:
    return f"{value:,.2f}".replace(",", " ") + f" {currency}"


def parse_order(
    data: dict[str, Any],
    *,
    received_at: datetime,
    token_name: str,
    region: str = "RU",
    idempotency_key: str | None = None,
) -> LeadEvent:
    """An order body -> LeadEvent; raises ApiError 422 naming each bad field."""
    try:
        order = Order.model_validate(data)
    except ValidationError as exc:
        fields = {
            ".".join(str(p) for p in err["loc"]) or "body": err["msg"] for err in exc.errors()
        }
        raise ApiError(422, "invalid_fields", "the order has invalid fields", fields) from None
    c = order.customer
    problems: dict[str, str] = {}
    phone = normalize_phone(c.phone, region) if c.phone else None
    email = normalize_email(c.email) if c.email else None
    if c.phone and phone is None:
        problems["customer.phone"] = "not a valid phone number"
    if c.email and email is None:
        problems["customer.email"] = "not a valid email address"
    if phone is None and email is None and not problems:
        problems["customer"] = "give at least a phone or an email to reach the customer"
    if problems:
        raise ApiError(422, "invalid_fields", "the order has invalid fields", problems)

    lines = [
        f"{i.name} × {i.quantity.normalize():f}"
        + (f" — {_money(i.price, order.currency)}" if i.price is not None else "")
        for i in order.items
    ]
    if order.total is not None:
        lines.append(f"Итого: {_money(order.total, order.currency)}")
    categories = {i.category for i in order.items if i.category is not None}
    # «Крупное» wins: one large machine in the cart makes it a large-equipment deal.
    category = (
        EquipmentCategory.LARGE
        if EquipmentCategory.LARGE in categories
        else next(iter(categories), None)
    )
    # The shop's own time is believed within a week before receipt (a queue that caught up
    # after an outage); outside that it would push the lead out of the dedup window or the
    # calendar's range, so receipt time stands and the shop's time stays in meta.
    shop_time = order.created_at if order.created_at and order.created_at.tzinfo else None
    trusted = shop_time and received_at - ORDER_CLOCK_TRUST <= shop_time <= received_at
    occurred = shop_time if shop_time and trusted else received_at
    text = f"Заказ №{order.order_id}\n" + "\n".join(lines)
    if order.comment:
        text += f"\nКомментарий: {order.comment}"
    return LeadEvent(
        channel=Channel.ORDERS,
        external_id=order_external_id(token_name, order.order_id),
        idempotency_key=f"order:{token_name}:{idempotency_key}" if idempotency_key else None,
        occurred_at=occurred,
        received_at=received_at,
        contact=Contact(
            name=c.name or None,
            phones=(phone,) if phone else (),
            emails=(email,) if email else (),
            company=c.company or None,
        ),
        text=text,
        interest=Interest(equipment_category=category, probable_equipment="\n".join(lines) or None),
        utm={k: v[:200] for k, v in order.utm.items()},
        source_detail=token_name,
        meta={
            "order_id": order.order_id,
            "total": str(order.total) if order.total else None,
            "currency": order.currency,
            "items": len(order.items),
            "shop_created_at": order.created_at.isoformat() if order.created_at else None,
        },
        raw=data,
    )


class OrdersConnector:
    name = "orders"

    def __init__(self, ctx: ConnectorContext) -> None:
        self.ctx = ctx

    def routes(self) -> Sequence[web.AbstractRouteDef]:
        return [web.post("/v1/orders", self.handle)]

    def tasks(self) -> Sequence[TaskSpec]:
        return []

    def readiness(self) -> str | None:
        return None

    async def shutdown(self) -> None:
        return None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        token_name = require_token(request, self.ctx.settings.orders.tokens, "orders")
        data = await read_json_object(request)
        event = parse_order(
            data,
            received_at=datetime.now(UTC),
            token_name=token_name,
            region=self.ctx.settings.phone_region,
            idempotency_key=idempotency_key(request),
        )
        return receipt_response(await self.ctx.pipeline.accept(event))


def build(ctx: ConnectorContext) -> Connector | None:
    return OrdersConnector(ctx)


# [orders.tokens] stays a core section beside [admin.tokens]: the same kind of table (named
# bearer tokens), part of the contractor's documented API, counted by `check-config`.
SPEC = ChannelSpec(
    name="orders",
    channels={
        Channel.ORDERS: ChannelDefaults(
            source_id="STORE",
            title="Заказ №{external_id}",
            label="Интернет-магазин",
            carries_interest=True,
        ),
    },
    build=build,
)

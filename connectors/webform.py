"""Website forms: POST /v1/forms/{form_id} as JSON, urlencoded or multipart.

A browser's plain HTML post (Accept: text/html) is answered 303 to the form's thank-you
page; an API call gets a JSON receipt. What the honeypot or the rate limit catches is
stored as a JUNK lead with its reason (the rate limit keeps one per client per window,
so a flood cannot fill the disk), never silently dropped.
"""

from __future__ import annotations

import html
import ipaddress
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from itertools import islice
from typing import Any

from aiohttp import web

from gateway.channels import (
    ChannelDefaults,
    ChannelSpec,
    Connector,
    ConnectorContext,
    TaskSpec,
)
from gateway.config import FormSettings
from gateway.errors import ApiError
from gateway.http import (
    client_ip,
    idempotency_key,
    in_networks,
    networks,
    read_fields,
    wants_html,
)
from gateway.i18n import N_, format_when, gettext_for, negotiate
from gateway.identity import normalize_email, normalize_phone
from gateway.models import Channel, Contact, EquipmentCategory, Interest, LeadEvent, new_id
from gateway.ratelimit import RateLimiter
from gateway.receipts import receipt_response

MSG_REQUIRED = N_("Заполните поле «{label}»")
MSG_PHONE = N_("Укажите телефон полностью, например +7 916 123-45-67")
MSG_EMAIL = N_("Проверьте адрес почты: он должен быть вида name@example.ru")
MSG_CHOICE = N_("Выберите одно из значений: {choices}")
MSG_TOO_LONG = N_("Слишком длинное значение: не больше {limit} символов")
MSG_NOT_TEXT = N_("Ожидается текст")
MSG_INVALID = N_("Проверьте поля формы")
MSG_TOO_MANY = N_("Слишком много заявок с вашего адреса, попробуйте через {seconds} с")
MSG_THANKS = N_("Спасибо! Заявка принята.")
MSG_SOON = N_("Мы свяжемся с вами в ближайшее время.")
MSG_AFTER_HOURS = N_("Сейчас нерабочее время. Мы свяжемся с вами, когда откроемся: {when}.")
MSG_NOT_SENT = N_("Заявка не отправлена")
MSG_BACK = N_("Вернуться к форме")

CORS_HEADERS = "Content-Type, Idempotency-Key, Accept-Language"
# What a page's script may read of our answers besides the basics: how long to wait
# after a 429 (fetch() hides every other header from a cross-origin script).
CORS_EXPOSED = "Retry-After"

UTM_KEYS = ("utm_source", "utm_medium", "utm_campaign", "utm_content", "utm_term")
_UTM_SET = frozenset(UTM_KEYS)
MAX_EXTRA_FIELDS = 20


class FormInvalid(Exception):
    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__(", ".join(fields))
        self.fields = fields


def _text(value: Any, *, numbers: bool = False) -> str | None:
    """A field's text; raise TypeError for JSON that is no text (lists, objects, true).

    Numbers pass only where they are a natural spelling of the value (a phone sent as
    79161234567 by a shop's JavaScript); {"name": 42} is a client bug, so it gets a 422.
    """
    if value is None:
        return None
    if isinstance(value, str):
        return value.strip() or None
    if numbers and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise TypeError


def parse_submission(
    form_id: str,
    form: FormSettings,
    data: Mapping[str, Any],
    *,
    received_at: datetime,
    region: str = "RU",
    idempotency_key: str | None = None,
    gettext: Callable[[str], str] = lambda s: s,
) -> LeadEvent:
    """A form body -> LeadEvent, or FormInvalid naming each bad field in the reader's language."""
    _ = gettext
    errors: dict[str, str] = {}
    values: dict[str, str] = {}
    for name, spec in form.fields.items():
        try:
            value = _text(data.get(name), numbers=spec.kind == "phone")
        except TypeError:
            errors[name] = _(MSG_NOT_TEXT)
            continue
        if value is None:
            if spec.required:
                errors[name] = _(MSG_REQUIRED).format(label=spec.label)
            continue
        if len(value) > spec.max_length:
            errors[name] = _(MSG_TOO_LONG).format(limit=spec.max_length)
            continue
        if spec.kind == "phone":
            phone = normalize_phone(value, region)
            if phone is None:
                errors[name] = _(MSG_PHONE)
                continue
            value = phone
        elif spec.kind == "email":
            email = normalize_email(value)
            if email is None:
                errors[name] = _(MSG_EMAIL)
                continue
            value = email
        elif spec.kind == "choice" and value not in (spec.choices or ()):
            errors[name] = _(MSG_CHOICE).format(choices=", ".join(spec.choices or ()))
            continue
        values[name] = value
    for key in UTM_KEYS:
        # Text or nothing, as the OpenAPI document says; a number or an object is a bug on
        # the site's side that would otherwise vanish without a word.
        if data.get(key) is not None and not isinstance(data[key], str):
            errors[key] = _(MSG_NOT_TEXT)
    if errors:
        raise FormInvalid(errors)

    by_target: dict[str, list[str]] = {}
    free_lines: list[str] = []
    for name, value in values.items():
        spec = form.fields[name]
        if spec.maps_to is None:
            free_lines.append(f"{spec.label}: {value}")
        else:
            by_target.setdefault(spec.maps_to, []).append(value)

    def first(target: str) -> str | None:
        found = by_target.get(target)
        return found[0] if found else None

    comment = "\n".join(by_target.get("comment", []) + free_lines) or None
    category = first("equipment_category")
    fields, honeypot_field = form.fields, form.honeypot_field
    extra = {
        k: str(v)[:500]
        for k, v in islice(data.items(), MAX_EXTRA_FIELDS * 4)
        if k not in fields
        and k not in _UTM_SET
        and k != honeypot_field
        and k != "__files__"
        and isinstance(v, str | int | float)
    }
    honeypot = form.honeypot_field and _honeypot_filled(data.get(form.honeypot_field))
    files = data.get("__files__") or []
    meta: dict[str, Any] = {"form_title": form.title}
    if extra:
        meta["extra_fields"] = dict(list(extra.items())[:MAX_EXTRA_FIELDS])
    if files:
        meta["files_not_stored"] = files[:10]
    event_id = new_id()
    return LeadEvent(
        id=event_id,
        channel=Channel(form.channel),
        # A form post has no id of its own: each is new unless the client sends a retry key.
        external_id=event_id,
        idempotency_key=f"form:{form_id}:{idempotency_key}" if idempotency_key else None,
        occurred_at=received_at,
        received_at=received_at,
        contact=Contact(
            name=first("name"),
            phones=tuple(by_target.get("phone", [])),
            emails=tuple(by_target.get("email", [])),
            company=first("company"),
        ),
        text=comment,
        interest=Interest(
            equipment_category=EquipmentCategory(category) if category else None,
            probable_equipment=first("probable_equipment"),
        ),
        utm={k: str(data[k])[:200] for k in UTM_KEYS if _is_text(data.get(k))},
        source_detail=form_id,
        meta=meta,
        junk_reason="honeypot" if honeypot else None,
        raw={k: v for k, v in data.items() if k != "__files__"},
    )


def _honeypot_filled(value: Any) -> bool:
    return value not in (None, "", [], {})


def _is_text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


class WebformConnector:
    name = "webform"

    def __init__(self, ctx: ConnectorContext) -> None:
        self.ctx = ctx
        limits = ctx.settings.ratelimit
        self.limiter = RateLimiter(
            ctx.coordination, limits.requests, limits.per_seconds, namespace="form"
        )
        self.exempt = networks(limits.exempt)
        self.trusted = list(ctx.trusted_proxies)
        self.region = ctx.settings.phone_region
        self._exempt_cache: dict[str, bool] = {}

    def routes(self) -> Sequence[web.AbstractRouteDef]:
        return [
            web.post("/v1/forms/{form_id}", self.handle),
            web.options("/v1/forms/{form_id}", self.preflight),
            web.get("/v1/forms/{form_id}/thanks", self.thanks),
        ]

    def tasks(self) -> Sequence[TaskSpec]:
        return []

    def readiness(self) -> str | None:
        return None

    async def shutdown(self) -> None:
        return None

    def _form(self, request: web.Request) -> tuple[str, FormSettings]:
        form_id = request.match_info["form_id"]
        form = self.ctx.settings.forms.get(form_id)
        if form is None:
            raise ApiError(404, "unknown_form", f"no form named {form_id!r} is configured")
        return form_id, form

    async def handle(self, request: web.Request) -> web.StreamResponse:
        form_id, form = self._form(request)
        cors = _cors(request, form)
        try:
            response = await self._accept(request, form_id, form)
        except ApiError as err:
            if wants_html(request) and err.status in (422, 429):
                return self._error_page(request, err)
            err.headers.update(cors)
            raise
        response.headers.update(cors)
        return response

    async def preflight(self, request: web.Request) -> web.StreamResponse:
        """CORS preflight, so the site's own scripts may post the form with fetch()."""
        _, form = self._form(request)
        cors = _cors(request, form)
        if not cors:
            raise ApiError(403, "origin_not_allowed", "this origin may not post this form")
        cors |= {
            "Access-Control-Allow-Methods": "POST, OPTIONS",
            "Access-Control-Allow-Headers": CORS_HEADERS,
            "Access-Control-Max-Age": "600",
        }
        return web.Response(status=204, headers=cors)

    async def thanks(self, request: web.Request) -> web.StreamResponse:
        """The default thank-you page: says when we will answer if we are closed now."""
        _, form = self._form(request)
        locale = negotiate(request.headers.get("Accept-Language"))
        _ = gettext_for(locale)
        pipeline = self.ctx.pipeline
        verdict = pipeline.classify(datetime.now(UTC), form.channel)
        when = (
            _(MSG_AFTER_HOURS).format(
                when=format_when(verdict.next_open_at, locale, pipeline.tz.key)
            )
            if verdict.next_open_at is not None
            else _(MSG_SOON)
        )
        return _page(locale, _(MSG_THANKS), f"<p>{html.escape(when)}</p>", status=200)

    def _error_page(self, request: web.Request, err: ApiError) -> web.StreamResponse:
        """A person posting a plain HTML form reads a page, not JSON."""
        locale = negotiate(request.headers.get("Accept-Language"))
        _ = gettext_for(locale)
        items = "".join(f"<li>{html.escape(m)}</li>" for m in err.fields.values())
        body = (
            f"<p>{html.escape(err.detail)}</p><ul>{items}</ul>"
            f'<p><a href="javascript:history.back()">{html.escape(_(MSG_BACK))}</a></p>'
        )
        self.ctx.metrics.rejected("/v1/forms/{form_id}", err.code)
        response = _page(locale, _(MSG_NOT_SENT), body, status=err.status)
        response.headers.update(err.headers)
        return response

    async def _accept(
        self, request: web.Request, form_id: str, form: FormSettings
    ) -> web.StreamResponse:
        ip = client_ip(request, self.trusted)
        wait = 0.0 if self._is_exempt(ip) else await self.limiter.hit(_bucket_of(ip))
        data = await read_fields(request)
        locale = negotiate(request.headers.get("Accept-Language"))
        _ = gettext_for(locale)
        received_at = datetime.now(UTC)
        try:
            event = parse_submission(
                form_id,
                form,
                data,
                received_at=received_at,
                region=self.region,
                idempotency_key=idempotency_key(request),
                gettext=_,
            )
        except FormInvalid as exc:
            if wait:
                raise self._too_many(wait, _) from None
            raise ApiError(422, "invalid_fields", _(MSG_INVALID), fields=exc.fields) from None
        if wait:
            await self._keep_rate_limited(_bucket_of(ip), event)
            raise self._too_many(wait, _)
        receipt = await self.ctx.pipeline.accept(event)
        if wants_html(request):
            target = form.thank_you_url or f"/v1/forms/{form_id}/thanks"
            return web.Response(status=303, headers={"Location": target})
        return receipt_response(receipt)

    def _is_exempt(self, ip: str) -> bool:
        # Parsing the address against each network costs more than the rest of the check.
        exempt = self._exempt_cache.get(ip)
        if exempt is None:
            if len(self._exempt_cache) > 100_000:
                self._exempt_cache.clear()
            exempt = self._exempt_cache[ip] = in_networks(ip, self.exempt)
        return exempt

    async def _keep_rate_limited(self, ip: str, event: LeadEvent) -> None:
        window = self.ctx.settings.ratelimit.per_seconds
        coordination = self.ctx.coordination
        if not await coordination.set_if_absent(f"form-junk:{ip}", coordination.owner, window):
            return  # one kept per client per window; the rest are counted as rejections
        # Without the client's Idempotency-Key: the honest retry after Retry-After must make
        # the real lead, not replay this JUNK copy.
        await self.ctx.pipeline.accept(
            event.model_copy(update={"junk_reason": "rate limited", "idempotency_key": None})
        )

    @staticmethod
    def _too_many(wait: float, _: Callable[[str], str]) -> ApiError:
        seconds = max(1, int(wait + 0.999))
        return ApiError(
            429,
            "rate_limited",
            _(MSG_TOO_MANY).format(seconds=seconds),
            headers={"Retry-After": str(seconds)},
        )


def _bucket_of(ip: str) -> str:
    """The rate-limit bucket: one per IPv4 address, one per IPv6 /64 (what one subscriber
    gets; per address, a client could rotate through 2**64 of them)."""
    if ":" not in ip:
        return ip
    try:
        return str(ipaddress.IPv6Network(f"{ip}/64", strict=False))
    except ValueError:
        return ip


def _cors(request: web.Request, form: FormSettings) -> dict[str, str]:
    origin = request.headers.get("Origin")
    if not origin or not form.allowed_origins:
        return {}
    if "*" in form.allowed_origins:
        return {"Access-Control-Allow-Origin": "*", "Access-Control-Expose-Headers": CORS_EXPOSED}
    if origin in form.allowed_origins:
        return {
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Expose-Headers": CORS_EXPOSED,
            "Vary": "Origin",
        }
    return {}


def _page(locale: str, title: str, body: str, *, status: int) -> web.Response:
    page = (
        f'<!doctype html><html lang="{locale}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>body{{font:17px system-ui;max-width:36em;"
        f"margin:3em auto;padding:0 1em}}</style></head><body><h1>{html.escape(title)}</h1>"
        f"{body}</body></html>"
    )
    return web.Response(status=status, text=page, content_type="text/html")


def build(ctx: ConnectorContext) -> Connector | None:
    return WebformConnector(ctx) if ctx.settings.forms else None


# Forms keep their [forms.NAME] and [ratelimit] tables in the core settings: they are the
# website contractor's documented API (docs/api.md), a form may be of any of the channels
# below, and the table is keyed by the operator's own form names.
SPEC = ChannelSpec(
    name="webform",
    channels={
        Channel.WEBFORM: ChannelDefaults(
            source_id="WEBFORM",
            title="Заявка с сайта",
            label="Форма на сайте",
            carries_interest=True,
        ),
        Channel.CALLBACK: ChannelDefaults(
            source_id="CALLBACK",
            title="Обратный звонок: {phone}",
            label="Обратный звонок",
            carries_interest=True,
        ),
    },
    build=build,
)

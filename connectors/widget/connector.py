"""The site widget's HTTP side: its script, its state, the callback request and the form.

Routes (NAME is the `[widget.NAME]` table):
- GET  /v1/widget/NAME.js        the script for the page's one `<script async>` tag
- GET  /v1/widget/widget.css     the styles, for browsers without constructable stylesheets
- GET  /v1/widget/NAME/state     open/closed per tab, the next change, texts and settings
- POST /v1/widget/NAME/callback  «Перезвоните мне»: a `callback` lead
- POST /v1/widget/NAME/form      the form tab: a lead through the /v1/forms parser
- GET  /v1/widget/NAME/ws         the chat's WebSocket (connectors.widget.chat)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from connectors.webform import FormInvalid
from connectors.widget import assets
from connectors.widget.chat import VISITOR_TOKEN, WidgetChat, WidgetSender, visitor_id
from connectors.widget.guard import (
    allowed_origin,
    cors,
    ip_bucket,
    preflight_headers,
    read_post,
    retry_seconds,
    visitor_locale,
    visitor_zone,
)
from connectors.widget.schedule import WidgetState, widget_state
from connectors.widget.settings import Tab, WidgetSection, WidgetSettings
from connectors.widget.submissions import (
    callback_event,
    check_consent,
    consent_record,
    form_event,
)
from connectors.widget.texts import (
    MSG_CALLBACK_BY,
    MSG_CALLBACK_LATER,
    MSG_CALLBACK_SOON,
    MSG_FORM_LATER,
    MSG_FORM_SOON,
    MSG_INVALID,
    MSG_TOO_MANY,
    Gettext,
    closed_note,
    interface,
)
from gateway.channels import Connector, ConnectorContext, TaskSpec
from gateway.errors import ApiError
from gateway.http import client_ip, idempotency_key
from gateway.i18n import describe_deadline, describe_opening, gettext_for
from gateway.models import Channel, LeadEvent, Outcome

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
NAME = "{name:[a-z0-9][a-z0-9_-]{0,39}}"


def _now() -> datetime:
    return datetime.now(UTC)


class WidgetConnector:
    name = "widget"

    def __init__(
        self,
        ctx: ConnectorContext,
        widgets: Mapping[str, WidgetSettings],
        *,
        clock: Clock = _now,
    ) -> None:
        self.ctx = ctx
        self.widgets = dict(widgets)
        # The calendar's "now": tests move it to 18:59:58 to watch the page switch at 19:00.
        self.clock = clock
        self.trusted = list(ctx.trusted_proxies)
        self.region = ctx.settings.phone_region
        self.script = assets.script()
        self.stylesheet = assets.stylesheet()
        self.chat = WidgetChat(ctx, self.widgets, clock)
        # Replies to widget chats (a seller's, the after-hours answer) go out through it.
        ctx.chats.register_sender(Channel.CHAT, WidgetSender(ctx, self.widgets, clock))

    def routes(self) -> Sequence[web.AbstractRouteDef]:
        return [
            web.get("/v1/widget/widget.css", self.css),
            web.get(f"/v1/widget/{NAME}.js", self.js),
            web.get(f"/v1/widget/{NAME}/state", self.state),
            web.post(f"/v1/widget/{NAME}/callback", self.callback),
            web.options(f"/v1/widget/{NAME}/callback", self.preflight),
            web.post(f"/v1/widget/{NAME}/form", self.form),
            web.options(f"/v1/widget/{NAME}/form", self.preflight),
            *self.chat.routes(),
        ]

    def tasks(self) -> Sequence[TaskSpec]:
        return []

    def readiness(self) -> str | None:
        return None

    async def shutdown(self) -> None:
        await self.chat.shutdown()

    # --- helpers --------------------------------------------------------------------------

    def widget(self, request: web.Request) -> tuple[str, WidgetSettings]:
        name = request.match_info["name"]
        widget = self.widgets.get(name)
        if widget is None:
            raise ApiError(404, "unknown_widget", f"no widget named {name!r} is configured")
        return name, widget

    # --- the script -------------------------------------------------------------------------

    async def js(self, request: web.Request) -> web.StreamResponse:
        self.widget(request)  # an unknown name is a 404, not a script that finds nothing
        return _static(request, self.script)

    async def css(self, request: web.Request) -> web.StreamResponse:
        return _static(request, self.stylesheet)

    # --- state ------------------------------------------------------------------------------

    async def state(self, request: web.Request) -> web.StreamResponse:
        name, widget = self.widget(request)
        origin = allowed_origin(request, widget)
        locale = visitor_locale(request.query, request)
        _ = gettext_for(locale)
        now = self.clock()
        zone = visitor_zone(request.query.get("tz"), self.ctx.pipeline.tz)
        state = widget_state(self.ctx.pipeline, widget, now)
        body: dict[str, Any] = {
            "widget": name,
            "visible": state.visible,
            "now": now.isoformat(),
            "next_change_at": state.next_change_at.isoformat(),
            "recheck_in": round(state.recheck_in(now), 3),
        }
        if state.visible:
            body |= self._shown(widget, state, locale, now, zone, _)
        headers = cors(origin) | {"Cache-Control": "no-store"}
        return web.Response(
            body=orjson.dumps(body), content_type="application/json", headers=headers
        )

    def _shown(
        self,
        widget: WidgetSettings,
        state: WidgetState,
        locale: str,
        now: datetime,
        zone: Any,
        _: Gettext,
    ) -> dict[str, Any]:
        tabs = []
        for tab in state.tabs:
            if not tab.shown:
                continue
            note = None
            if not tab.open and tab.opens_at is not None:
                when = describe_opening(tab.opens_at, now, zone.key, locale)
                note = closed_note(widget, locale, when, _)
            tabs.append({"id": tab.tab.value, "open": tab.open, "note": note})
        return {
            "lang": locale,
            "tabs": tabs,
            "title": interface(widget, locale, _)["title"],
            "color": widget.color,
            "color_text": widget.color_text,
            "position": widget.position,
            "policy_url": widget.policy_url,
            "prechat": [{"name": f, "label": _(_LABELS[f])} for f in widget.prechat],
            "prechat_required": widget.prechat_required,
            "form": _form_fields(widget, _),
            "honeypot": widget.form.honeypot_field,
            "phone_mask": "+7" if self.region in ("RU", "KZ") else None,
            "max_message_chars": widget.limits.max_message_chars,
            "texts": interface(widget, locale, _),
        }

    # --- callback and form ------------------------------------------------------------------

    async def preflight(self, request: web.Request) -> web.StreamResponse:
        _, widget = self.widget(request)
        origin = allowed_origin(request, widget)
        return web.Response(status=204, headers=preflight_headers(origin))

    async def callback(self, request: web.Request) -> web.StreamResponse:
        return await self._submit(request, Tab.CALLBACK)

    async def form(self, request: web.Request) -> web.StreamResponse:
        return await self._submit(request, Tab.FORM)

    async def _submit(self, request: web.Request, tab: Tab) -> web.StreamResponse:
        name, widget = self.widget(request)
        origin = allowed_origin(request, widget)
        try:
            response = await self._accept(request, name, widget, origin, tab)
        except ApiError as err:
            err.headers.update(cors(origin))
            raise
        response.headers.update(cors(origin))
        return response

    async def _accept(
        self, request: web.Request, name: str, widget: WidgetSettings, origin: str, tab: Tab
    ) -> web.StreamResponse:
        if tab not in widget.tabs:
            raise ApiError(404, "tab_not_enabled", f"this widget has no {tab.value} tab")
        ip = ip_bucket(client_ip(request, self.trusted))
        limits = widget.limits
        # Per address, and per visitor (the browser's token) where the page sends it: a
        # visitor cannot dodge by changing networks, an office behind one NAT is not one
        # visitor. A bot can leave the token out; the address limit still holds it.
        clients = [f"widget-submit:{name}:{ip}"]
        token = request.headers.get("X-Leadgate-Visitor", "")
        if VISITOR_TOKEN.fullmatch(token):
            clients.append(f"widget-submit-v:{name}:{visitor_id(token)}")
        wait = 0.0
        for bucket in clients:
            wait = max(
                wait,
                await self.ctx.coordination.take(
                    bucket,
                    capacity=float(limits.submissions_per_ip),
                    rate=limits.submissions_per_ip / limits.submissions_window_seconds,
                ),
            )
        data = await read_post(request)
        locale = visitor_locale({"lang": str(data.get("lang") or "")}, request)
        _ = gettext_for(locale)
        now = self.clock()
        consent = consent_record(name, widget, at=now, locale=locale, origin=origin, gettext=_)
        make = callback_event if tab is Tab.CALLBACK else form_event
        errors = check_consent(data, _)
        event: LeadEvent | None = None
        try:
            event = make(
                name,
                widget,
                data,
                received_at=now,
                region=self.region,
                consent=consent,
                idempotency_key=idempotency_key(request),
                gettext=_,
            )
        except FormInvalid as exc:
            errors = exc.fields | errors
        # No consent: 422 whatever the rate limit says, and nothing is kept, not even the
        # rate-limited JUNK copy below (152-ФЗ: no consent, no processing). The limit's
        # token is taken all the same, so a bot gains nothing by leaving consent out.
        if wait and "consent" not in errors:
            if event is not None:
                await self._keep_rate_limited(name, ip, event, limits.submissions_window_seconds)
            seconds = retry_seconds(wait)
            raise ApiError(
                429,
                "rate_limited",
                _(MSG_TOO_MANY).format(seconds=seconds),
                headers={"Retry-After": str(seconds)},
            )
        if errors or event is None:
            raise ApiError(422, "invalid_fields", _(MSG_INVALID), fields=errors)
        accepted = await self.ctx.pipeline.accept_detailed(event)
        verdict = accepted.classification
        zone = visitor_zone(
            data.get("tz") if isinstance(data.get("tz"), str) else None, self.ctx.pipeline.tz
        )
        if verdict.after_hours and verdict.next_open_at is not None:
            when = describe_opening(verdict.next_open_at, now, zone.key, locale)
            text = _(MSG_CALLBACK_LATER if tab is Tab.CALLBACK else MSG_FORM_LATER).format(
                when=when
            )
        elif tab is Tab.CALLBACK:
            due = verdict.sla_due_at.astimezone(zone)
            if due.date() == now.astimezone(zone).date():
                text = _(MSG_CALLBACK_SOON).format(time=due.strftime("%H:%M"))
            else:
                # Open now, but the reaction time runs past closing: 18:55 + 15 minutes
                # of working time is the next working day's 10:10, not "до 10:10" today.
                when = describe_deadline(verdict.sla_due_at, now, zone.key, locale)
                text = _(MSG_CALLBACK_BY).format(when=when)
        else:
            text = _(MSG_FORM_SOON)
        # Nothing about the lead itself: whether this phone already had one is not for a
        # page visitor to learn.
        replayed = accepted.receipt.outcome is Outcome.REPLAYED
        return web.Response(
            status=200 if replayed else 201,
            body=orjson.dumps({"status": "accepted", "message": text}),
            content_type="application/json",
        )

    async def _keep_rate_limited(self, name: str, ip: str, event: LeadEvent, window: float) -> None:
        """One refused submission per client and window is kept as a JUNK lead (a real
        customer behind a busy NAT is then still visible to a seller); the rest are only
        counted, so a flood cannot fill the disk."""
        coordination = self.ctx.coordination
        if not await coordination.set_if_absent(f"widget-junk:{name}:{ip}", "1", window):
            return
        await self.ctx.pipeline.accept(
            event.model_copy(update={"junk_reason": "rate limited", "idempotency_key": None})
        )


_LABELS = {"name": "Имя", "phone": "Телефон", "email": "Email"}


def _form_fields(widget: WidgetSettings, _: Gettext) -> list[dict[str, Any]]:
    return [
        {
            "name": field_name,
            "label": _(spec.label),
            "kind": spec.kind,
            "required": spec.required,
            "choices": [{"value": c, "label": _(c)} for c in spec.choices or ()],
            "max_length": spec.max_length,
        }
        for field_name, spec in widget.form.fields.items()
    ]


def _static(request: web.Request, asset: assets.Asset) -> web.StreamResponse:
    headers = {
        "Cache-Control": "public, max-age=300",
        "ETag": asset.etag,
        "Vary": "Accept-Encoding",
        "X-Content-Type-Options": "nosniff",
        # Public and the same for every page: any page may load it, also with
        # crossorigin="anonymous" or under Cross-Origin-Embedder-Policy.
        "Access-Control-Allow-Origin": "*",
        "Cross-Origin-Resource-Policy": "cross-origin",
    }
    if asset.etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        headers["Content-Encoding"] = "gzip"
        body = asset.gzipped
    else:
        body = asset.body
    return web.Response(
        body=body, headers=headers, content_type=asset.content_type, charset="utf-8"
    )


def build(ctx: ConnectorContext, *, clock: Clock = _now) -> Connector | None:
    widgets = ctx.settings.section(WidgetSection).widgets
    return WidgetConnector(ctx, widgets, clock=clock) if widgets else None

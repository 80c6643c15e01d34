"""The telephony connector: webhook routes for the configured providers, one call flow for all.

    /v1/telephony/zadarma                 GET ?zd_echo=X (URL check), POST notifications
    /v1/telephony/mango/events/{kind}     POST events/call, events/summary (others: 200)
    /v1/telephony/cti/{token}             POST newCall, answer, hangup

Every webhook is verified first (nothing is stored for a missing or wrong secret), then
parsed by the provider's pure parse function into a Notice, then recorded (see calls.py for
how a call maps to events). The answer to the start of a call may steer it.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from aiohttp import web

from connectors.telephony import cti, guard, mango, zadarma
from connectors.telephony.calls import (
    ANSWERED,
    CallInvalid,
    Notice,
    call_event,
    recording_event,
    result_event,
    settle,
)
from connectors.telephony.metrics import TelephonyMetrics
from connectors.telephony.replay import MANGO_KIND, read_again
from connectors.telephony.settings import TelephonySettings
from gateway.assign import REASON_STICKY
from gateway.channels import Connector, ConnectorContext, StatusValue, TaskSpec
from gateway.errors import ApiError
from gateway.http import (
    FORM_READ_ERRORS,
    FORM_TYPES,
    MAX_JSON_DEPTH,
    bearer_token,
    networks,
    too_deep,
)
from gateway.identity import normalize_phone
from gateway.models import LeadStatus, Outcome, Receipt
from gateway.pipeline import Accepted
from gateway.redact import register as register_secret
from gateway.store.base import QuarantineEntry
from gateway.textsafe import header_bytes

log = logging.getLogger(__name__)

CHANNEL = "phone"
MAX_ECHO = 256
# Quarantined requests keep only headers that help to tell who sent them.
_KEPT_HEADERS = ("Content-Type", "User-Agent", "X-Forwarded-For", "X-Real-IP")


def _json(body: dict[str, Any]) -> web.Response:
    return web.Response(body=orjson.dumps(body), content_type="application/json")


def _storable(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(400, "invalid_form", "form body is not valid text") from None
    return text


async def read_form(request: web.Request) -> dict[str, Any]:
    """Form fields as text; a repeated "name[]" field becomes a list, other repeats keep the
    first value (what PHP-style senders mean)."""
    if request.content_type not in FORM_TYPES:
        raise ApiError(
            415,
            "unsupported_media_type",
            "send application/x-www-form-urlencoded or multipart/form-data",
        )
    try:
        post = await request.post()
    except FORM_READ_ERRORS as exc:
        raise ApiError(400, "invalid_form", f"form body could not be read: {exc}") from None
    out: dict[str, Any] = {}
    for key, value in post.items():
        if not isinstance(value, str):
            continue  # files: no telephony event carries one
        key, value = _storable(key), _storable(value)
        if key.endswith("[]"):
            out.setdefault(key, []).append(value)
        else:
            out.setdefault(key, value)
    return out


class TelephonyConnector:
    name = "telephony"

    def __init__(self, ctx: ConnectorContext) -> None:
        self.ctx = ctx
        self.settings = ctx.settings.section(TelephonySettings)
        self.pipeline = ctx.pipeline
        self.region = ctx.settings.phone_region
        self.blocked = {
            p for raw in self.settings.blocked_numbers if (p := normalize_phone(raw, self.region))
        }
        self.extensions = {s.extension: s.id for s in ctx.settings.sellers if s.extension}
        self.zadarma_tz = ZoneInfo(self.settings.zadarma.timezone)
        self.trusted = list(ctx.trusted_proxies)
        self.allowed = {
            zadarma.PROVIDER: networks(self.settings.zadarma.allowed_networks),
            mango.PROVIDER: networks(self.settings.mango.allowed_networks),
            cti.PROVIDER: networks(self.settings.cti.allowed_networks),
        }
        self.metrics = TelephonyMetrics(ctx.metrics.registry)
        # The CTI token travels in the URL path: any log line or page quoting a request
        # line must show it masked, in whatever spelling it came.
        for secret in (
            self.settings.zadarma.api_secret,
            self.settings.mango.api_key,
            self.settings.mango.api_salt,
            self.settings.cti.token,
        ):
            if secret is not None:
                register_secret(secret.get_secret_value())
        # When a webhook arrived; replaceable in tests (the CTI format has no timestamps).
        self.clock: Callable[[], datetime] = lambda: datetime.now(UTC)

    def routes(self) -> Sequence[web.AbstractRouteDef]:
        s = self.settings
        routes: list[web.AbstractRouteDef] = []
        if s.zadarma.api_secret is not None:
            routes += [
                web.get("/v1/telephony/zadarma", self.zadarma_echo),
                web.post("/v1/telephony/zadarma", self.zadarma_event),
            ]
        if s.mango.api_key is not None:
            routes.append(
                web.post("/v1/telephony/mango/events/{kind:[A-Za-z0-9_/]{1,64}}", self.mango_event)
            )
        if s.cti.token is not None:
            routes += [
                # The token in a header keeps it out of URLs (proxy and access logs).
                web.post("/v1/telephony/cti", self.cti_event),
                web.post("/v1/telephony/cti/{token}", self.cti_event),
            ]
        return routes

    def tasks(self) -> Sequence[TaskSpec]:
        return []

    def readiness(self) -> str | None:
        return None

    async def shutdown(self) -> None:
        return None

    def status(self) -> Mapping[str, StatusValue]:
        """For the /ops page: providers on, webhooks since start, the last refusal."""
        s = self.settings
        on = {"zadarma": s.zadarma.api_secret, "mango": s.mango.api_key, "cti": s.cti.token}
        return self.metrics.status([name for name, secret in on.items() if secret is not None])

    async def replay_quarantined(self, entry: QuarantineEntry) -> Receipt | None:
        """A kept webhook read again and recorded like a live one (a call already stored
        is `replayed`). None for a notice that is read but stores nothing (ignored)."""
        z = self.settings.zadarma
        notice, raw = read_again(
            entry, zadarma_tz=self.zadarma_tz, region=self.region, recording_url=z.recording_url
        )
        _, _, receipt = await self._record(notice, raw)
        return receipt

    # --- Zadarma --------------------------------------------------------------------

    def _check_source(self, provider: str, request: web.Request) -> None:
        """The provider's allow-list of source networks, before anything else is read."""
        try:
            guard.check_source(provider, request, self.allowed[provider], self.trusted)
        except ApiError:
            self.metrics.webhook(provider, "unknown", "unauthorized")
            raise

    async def zadarma_echo(self, request: web.Request) -> web.StreamResponse:
        self._check_source(zadarma.PROVIDER, request)
        echo = request.query.get("zd_echo")
        if echo is None:
            raise ApiError(400, "missing_zd_echo", "Zadarma checks this URL with ?zd_echo=...")
        if len(echo) > MAX_ECHO:
            raise ApiError(400, "invalid_zd_echo", f"zd_echo longer than {MAX_ECHO} characters")
        return web.Response(
            text=echo, content_type="text/plain", headers={"X-Content-Type-Options": "nosniff"}
        )

    async def zadarma_event(self, request: web.Request) -> web.StreamResponse:
        z = self.settings.zadarma
        assert z.api_secret is not None
        self._check_source(zadarma.PROVIDER, request)
        # Token first: no Signature, nothing of the body is read. (The signed string is made
        # of form fields, so checking it has to wait for the form.)
        given = request.headers.get("Signature")
        if not given:
            self.metrics.webhook(zadarma.PROVIDER, "unknown", "unauthorized", "no Signature")
            raise ApiError(401, "unauthorized", "missing Signature header")
        fields = await read_form(request)
        texts = {k: v for k, v in fields.items() if isinstance(v, str)}
        event = texts.get("event")
        if not event:
            raise ApiError(400, "invalid_event", "the notification has no event field")
        if event not in zadarma.SIGNED_FIELDS:
            return self._unknown(zadarma.PROVIDER, _json({}))
        if not zadarma.verify(z.api_secret.get_secret_value(), texts, given):
            self.metrics.webhook(zadarma.PROVIDER, "unknown", "unauthorized", "wrong Signature")
            raise ApiError(403, "forbidden", "wrong Signature")
        try:
            notice = zadarma.parse(
                texts, tz=self.zadarma_tz, region=self.region, recording_url=z.recording_url
            )
        except CallInvalid as exc:
            await self._invalid(zadarma.PROVIDER, str(exc), orjson.dumps(texts), request)
            raise ApiError(400, "invalid_event", str(exc)) from None
        self._check_fresh(notice, z.max_age_hours)
        accepted, blocked = await self.record(notice, dict(texts))
        body: dict[str, Any] = {}
        if notice.kind == "start" and notice.direction == "in" and accepted is not None:
            after_hours = accepted.classification.after_hours
            wanted = z.sticky_redirect and not blocked and not after_hours
            body = zadarma.steer(
                blocked=blocked,
                after_hours=after_hours,
                seller_extension=await self._seller_extension(accepted) if wanted else None,
                after_hours_ivr=z.after_hours_ivr,
                sticky_redirect=z.sticky_redirect,
                redirect_timeout=z.redirect_timeout,
                blocked_action=z.blocked_action,
            )
            self._count_steering(zadarma.PROVIDER, body)
        return _json(body)

    # --- Mango Office ---------------------------------------------------------------

    async def mango_event(self, request: web.Request) -> web.StreamResponse:
        m = self.settings.mango
        assert m.api_key is not None and m.api_salt is not None
        self._check_source(mango.PROVIDER, request)
        kind = request.match_info["kind"]
        fields = await read_form(request)
        texts = {k: v for k, v in fields.items() if isinstance(v, str)}
        problem = mango.verify(m.api_key.get_secret_value(), m.api_salt.get_secret_value(), texts)
        if problem is not None:
            self.metrics.webhook(mango.PROVIDER, "unknown", "unauthorized", f"sign: {problem}")
            if problem == "missing":
                raise ApiError(401, "unauthorized", "missing vpbx_api_key, sign or json")
            raise ApiError(403, "forbidden", "wrong vpbx_api_key or sign")
        body = texts["json"].encode()
        if kind not in mango.KNOWN_KINDS:
            return self._unknown(mango.PROVIDER, web.Response(status=200))
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            data = None
        try:
            if not isinstance(data, dict):
                raise CallInvalid("json is not a JSON object")
            if too_deep(data):
                raise CallInvalid(f"json is nested deeper than {MAX_JSON_DEPTH} levels")
            notice = mango.parse(kind, data, region=self.region)
        except CallInvalid as exc:
            await self._invalid(mango.PROVIDER, str(exc), body, request, {MANGO_KIND: kind})
            raise ApiError(400, "invalid_event", str(exc)) from None
        await self.record(notice, data)
        return web.Response(status=200)

    # --- generic CTI ----------------------------------------------------------------

    async def cti_event(self, request: web.Request) -> web.StreamResponse:
        token = self.settings.cti.token
        assert token is not None
        self._check_source(cti.PROVIDER, request)
        given = request.match_info.get("token") or bearer_token(request) or ""
        if not hmac.compare_digest(header_bytes(given), token.get_secret_value().encode()):
            self.metrics.webhook(cti.PROVIDER, "unknown", "unauthorized", "wrong token")
            raise ApiError(403, "forbidden", "wrong or missing CTI token")
        if request.content_type == "application/json":
            raw = await request.read()
            try:
                data = orjson.loads(raw)
            except orjson.JSONDecodeError:
                data = None
            if not isinstance(data, dict):
                await self._invalid(cti.PROVIDER, "body is not a JSON object", raw, request)
                raise ApiError(400, "invalid_json", "expected a JSON object")
            if too_deep(data):
                problem = f"JSON nested deeper than {MAX_JSON_DEPTH} levels"
                await self._invalid(cti.PROVIDER, problem, raw, request)
                raise ApiError(400, "invalid_json", problem)
        else:
            data = await read_form(request)
            raw = orjson.dumps(data)
        try:
            notice = cti.parse(data, received_at=self.clock(), region=self.region)
        except CallInvalid as exc:
            await self._invalid(cti.PROVIDER, str(exc), raw, request)
            raise ApiError(400, "invalid_event", str(exc)) from None
        if notice.kind == "ignored" and notice.reason == "unknown event":
            return self._unknown(cti.PROVIDER, _json({}))
        accepted, blocked = await self.record(notice, data)
        body: dict[str, Any] = {}
        if notice.kind == "start" and notice.direction == "in" and accepted is not None:
            body = cti.steer(blocked=blocked)
            self._count_steering(cti.PROVIDER, body)
        return _json(body)

    def _check_fresh(self, notice: Notice, max_age_hours: float) -> None:
        try:
            guard.check_fresh(notice, self.clock(), max_age_hours)
        except ApiError:
            self.metrics.webhook(notice.provider, notice.kind, "unauthorized")
            raise

    # --- the call flow, the same for every provider ---------------------------------

    async def record(self, notice: Notice, raw: dict[str, Any]) -> tuple[Accepted | None, bool]:
        """Store what a verified webhook tells. Returns the call event's Accepted (when the
        webhook names the caller) and whether the customer's number is blocked."""
        accepted, blocked, _ = await self._record(notice, raw)
        return accepted, blocked

    async def _record(
        self, notice: Notice, raw: dict[str, Any]
    ) -> tuple[Accepted | None, bool, Receipt | None]:
        """record(), and the receipt of the last event stored (None: nothing stored)."""
        provider = notice.provider
        if notice.kind == "ignored" or (
            notice.direction == "out" and not self.settings.outgoing_calls
        ):
            self.metrics.webhook(provider, notice.kind, "ignored")
            return None, False, None
        received_at = self.clock()
        accepted: Accepted | None = None
        last: Receipt | None = None
        blocked = False
        call_id = notice.call_id
        assert call_id is not None
        answer_key = f"telephony:{provider}:{call_id}:answered_by"
        if notice.call is not None:
            call = notice.call
            in_list = call.number is not None and call.number in self.blocked
            blocked = call.number is not None and (
                in_list or self.pipeline.is_blocked_phone(call.number)
            )
            event = call_event(
                call,
                received_at=received_at,
                raw=raw,
                junk_reason="blocked number" if in_list and call.direction == "in" else None,
                # An outgoing call to a blocked number joins nothing (and makes no JUNK lead).
                keep_number=not (blocked and call.direction == "out"),
            )
            accepted = await self.pipeline.accept_detailed(event)
            last = accepted.receipt
        if notice.kind == "answer" and notice.answered_by and notice.direction == "in":
            # Who answered is kept durably beside the call, for its end to read (the end of
            # a call that a person took does not always name them); it survives restarts.
            await self.pipeline.save_checkpoint(answer_key, notice.answered_by)
        if notice.kind == "end" and notice.end is not None and notice.direction is not None:
            end = notice.end
            known = None
            if end.disposition == ANSWERED and end.answered_by is None:
                known = await self.pipeline.get_checkpoint(answer_key)
            end = settle(end, notice.direction, known)
            last = await self.pipeline.accept(
                result_event(
                    provider,
                    call_id,
                    notice.direction,
                    end,
                    occurred_at=notice.call.started_at if notice.call else received_at,
                    received_at=received_at,
                    raw=raw,
                    seller_id=self.extensions.get(end.answered_by) if end.answered_by else None,
                )
            )
        elif notice.kind == "recording" and notice.recording is not None:
            last = await self.pipeline.accept(
                recording_event(
                    provider,
                    call_id,
                    notice.recording,
                    occurred_at=received_at,
                    received_at=received_at,
                    raw=raw,
                )
            )
        self.metrics.webhook(provider, notice.kind, "accepted")
        return accepted, blocked, last

    async def _seller_extension(self, accepted: Accepted) -> str | None:
        """The extension of a returning caller's own seller, if they have one."""
        receipt = accepted.receipt
        seller_id: str | None = None
        if receipt.outcome is Outcome.CREATED:
            chosen = accepted.assignment
            if chosen is not None and chosen.reason == REASON_STICKY:
                seller_id = chosen.seller_id
        elif receipt.lead_id is not None:
            lead = await self.pipeline.lead(receipt.lead_id)
            if lead is not None and lead.status is LeadStatus.NEW:
                returning = (
                    receipt.outcome is Outcome.MERGED
                    or lead.assignment_reason == REASON_STICKY
                    or bool(lead.events and lead.events[0].id != receipt.event_id)
                )
                seller_id = lead.assigned_to if returning else None
        seller = self.pipeline.seller(seller_id) if seller_id else None
        if seller is None or not seller.active:
            return None
        return seller.extension

    def _unknown(self, provider: str, response: web.Response) -> web.Response:
        self.metrics.unknown.labels(provider).inc()
        self.metrics.webhook(provider, "unknown", "ignored")
        return response

    def _count_steering(self, provider: str, body: dict[str, Any]) -> None:
        if not body:
            return
        action = (
            "blocked"
            if body.get("redirect") == "blacklist" or "hangup" in body or "action" in body
            else "after_hours_ivr"
            if "ivr_play" in body
            else "sticky_redirect"
        )
        self.metrics.steering.labels(provider, action).inc()

    async def _invalid(
        self,
        provider: str,
        reason: str,
        body: bytes,
        request: web.Request,
        context: Mapping[str, str] | None = None,
    ) -> None:
        """Authentic but unreadable: keep it for a person to look at, then answer 400.
        `context`: what reading it again needs besides the body (Mango's event kind)."""
        self.metrics.webhook(provider, "unknown", "invalid", detail=reason)
        headers = {h: request.headers[h] for h in _KEPT_HEADERS if h in request.headers}
        headers.update(context or {})
        await self.pipeline.quarantine(CHANNEL, f"{provider}: {reason}", body, headers)
        log.warning("telephony %s: unreadable event kept in quarantine: %s", provider, reason)


def build(ctx: ConnectorContext) -> Connector | None:
    configured = ctx.settings.section(TelephonySettings).any_provider
    return TelephonyConnector(ctx) if configured else None

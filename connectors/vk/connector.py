"""The VK connector: the Callback API route for every configured community, the lead-form
catch-up tasks, readiness.

    POST /v1/vk      every community's Callback API server points here

The body's `secret` is compared (constant time, against every community) before anything
else is looked at: a wrong or missing one is 403 and nothing is stored. Then the
community is the one whose secret matched *and* whose group_id the body names; a
confirmation is answered with that community's string; every other event with `ok`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web
from pydantic import SecretStr

from connectors.vk.api import VkApi, VkError
from connectors.vk.catchup import LeadFormCatchUp
from connectors.vk.envelope import EnvelopeInvalid, find_community, read_envelope
from connectors.vk.handler import Community, EventHandler
from connectors.vk.metrics import VkMetrics
from connectors.vk.names import NameCache
from connectors.vk.settings import CommunitySettings, VkSettings
from gateway.channels import Connector, ConnectorContext, TaskSpec
from gateway.errors import ApiError
from gateway.http import parse_json_object
from gateway.redact import register as register_secret

log = logging.getLogger(__name__)

# A Callback API event is a few KiB (a message is at most 9000 characters, attachments are
# descriptions, not files): anything this large is not from VK.
MAX_BODY = 256 * 1024
# How long the answer to VK may wait for a customer's name (users.get) before the event is
# stored without it. VK repeats an event that is not answered within a few seconds.
NAME_WAIT_SECONDS = 2.0
# A user token may make 3 calls a second; we keep below it.
USER_RPS = 2.5
# Event types of the Callback API (vk-api-schema callback_type): metric labels are these
# or "other", so a sender cannot grow the label set.
KNOWN_TYPES = frozenset(
    {
        "audio_new",
        "board_post_new",
        "board_post_edit",
        "board_post_restore",
        "board_post_delete",
        "confirmation",
        "group_leave",
        "group_join",
        "group_change_photo",
        "group_change_settings",
        "group_officers_edit",
        "lead_forms_new",
        "market_comment_new",
        "market_comment_delete",
        "market_comment_edit",
        "market_comment_restore",
        "market_order_new",
        "market_order_edit",
        "message_new",
        "message_reply",
        "message_edit",
        "message_allow",
        "message_deny",
        "message_read",
        "message_typing_state",
        "messages_edit",
        "message_reaction_event",
        "message_event",
        "photo_new",
        "photo_comment_new",
        "photo_comment_delete",
        "photo_comment_edit",
        "photo_comment_restore",
        "poll_vote_new",
        "user_block",
        "user_unblock",
        "video_new",
        "video_comment_new",
        "video_comment_delete",
        "video_comment_edit",
        "video_comment_restore",
        "wall_post_new",
        "wall_reply_new",
        "wall_reply_edit",
        "wall_reply_delete",
        "wall_reply_restore",
        "wall_repost",
        "wall_schedule_post_new",
        "wall_schedule_post_delete",
        "donut_subscription_create",
        "donut_subscription_prolonged",
        "donut_subscription_expired",
        "donut_subscription_cancelled",
        "donut_subscription_price_changed",
        "donut_money_withdraw",
        "donut_money_withdraw_error",
        "vkpay_transaction",
        "app_payload",
        "like_add",
        "like_remove",
    }
)


def _plain(text: str) -> web.Response:
    return web.Response(text=text, content_type="text/plain")


def _utc_now() -> datetime:
    return datetime.now(UTC)


class VkConnector:
    name = "vk"

    def __init__(self, ctx: ConnectorContext, settings: VkSettings) -> None:
        self.settings = settings
        self.pipeline = ctx.pipeline
        self.metrics = VkMetrics(ctx.metrics.registry)
        self.clock: Callable[[], datetime] = _utc_now
        self.handler = EventHandler(
            pipeline=ctx.pipeline,
            metrics=self.metrics,
            region=ctx.settings.phone_region,
            clock=lambda: self.clock(),
        )
        self.communities: dict[int, Community] = {}
        self.apis: list[VkApi] = []
        self.catch_ups: list[LeadFormCatchUp] = []
        for s in settings.communities:
            register_secret(s.secret.get_secret_value())
            api = self._api(ctx, s, s.token, bucket=str(s.group_id)) if s.token else None
            community = Community(settings=s, names=NameCache(api))
            self.communities[s.group_id] = community
            if s.catch_up_token is not None and s.lead_forms:
                # A user token: its own, smaller budget (user tokens get 3 calls a second).
                user_api = self._api(
                    ctx, s, s.catch_up_token, bucket=f"{s.group_id}:user", rps=USER_RPS
                )
                self.catch_ups.append(
                    LeadFormCatchUp(
                        community=community,
                        api=user_api,
                        handler=self.handler,
                        pipeline=ctx.pipeline,
                        metrics=self.metrics,
                        clock=lambda: self.clock(),
                    )
                )

    def _api(
        self,
        ctx: ConnectorContext,
        s: CommunitySettings,
        token: SecretStr,
        *,
        bucket: str,
        rps: float | None = None,
    ) -> VkApi:
        key = str(s.group_id)

        def observe(method: str, error: VkError | None) -> None:
            self.metrics.call(key, method, error)

        api = VkApi(
            base=s.api_base,
            token=token,
            version=s.api_version,
            timeout_seconds=s.timeout_seconds,
            coordination=ctx.coordination,
            bucket=bucket,
            requests_per_second=min(rps or s.requests_per_second, s.requests_per_second),
            observe=observe,
        )
        self.apis.append(api)
        return api

    # --- the connector contract --------------------------------------------------------

    def routes(self) -> Sequence[web.AbstractRouteDef]:
        return [web.post("/v1/vk", self.callback)]

    def tasks(self) -> Sequence[TaskSpec]:
        return [TaskSpec(c.name, c.run, singleton=True) for c in self.catch_ups]

    def readiness(self) -> str | None:
        problems = [c.problem for c in self.catch_ups if c.problem is not None]
        return "; ".join(problems) or None

    async def shutdown(self) -> None:
        for api in self.apis:
            await api.close()

    # --- the Callback API ----------------------------------------------------------------

    async def callback(self, request: web.Request) -> web.StreamResponse:
        if request.content_length is not None and request.content_length > MAX_BODY:
            raise ApiError(413, "body_too_large", f"body larger than {MAX_BODY} bytes")
        raw = await request.read()
        if len(raw) > MAX_BODY:
            raise ApiError(413, "body_too_large", f"body larger than {MAX_BODY} bytes")
        data = parse_json_object(raw)
        secret = data.get("secret")
        group = data.get("group_id")
        group_id = group if isinstance(group, int) and not isinstance(group, bool) else 0
        found, secret_known = find_community(
            self.settings.communities, secret if isinstance(secret, str) else None, group_id
        )
        if not secret_known:
            self.metrics.event("unknown", "unknown", "unauthorized")
            raise ApiError(403, "forbidden", "wrong or missing secret")
        if found is None:
            self.metrics.event("unknown", "unknown", "unknown_group")
            raise ApiError(
                403,
                "unknown_group",
                "no configured community has this group_id with this secret",
            )
        community = self.communities[found.group_id]
        try:
            envelope = read_envelope(data)
        except EnvelopeInvalid as exc:
            # Authentic (the secret matched) but not an event: kept, and answered ok so
            # that VK does not pause the server over it.
            await self.pipeline.quarantine("vk", f"envelope: {exc}", raw_without_secret(data))
            self.metrics.event(community.key, "other", "invalid")
            return _plain("ok")
        kind = envelope.type if envelope.type in KNOWN_TYPES else "other"
        if envelope.type == "confirmation":
            self.metrics.event(community.key, kind, "confirmation")
            return _plain(found.confirmation)
        if envelope.type not in KNOWN_TYPES:
            envelope = dataclasses.replace(envelope, type="other")
        await self.handler.handle(community, envelope, name_wait=NAME_WAIT_SECONDS)
        return _plain("ok")


def raw_without_secret(data: dict[str, Any]) -> bytes:
    return orjson.dumps({k: v for k, v in data.items() if k != "secret"})


def build(ctx: ConnectorContext) -> Connector | None:
    settings = ctx.settings.section(VkSettings)
    if not settings.communities:
        return None
    return VkConnector(ctx, settings)

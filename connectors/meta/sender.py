"""Sending to Messenger and Instagram customers with the Send API, inside Meta's window.

`POST /{version}/me/messages` with the Page token (Messenger, and Instagram through the
linked Page), or `POST /{version}/{ig account id}/messages` with an Instagram Login token,
body `{"recipient": {"id": PSID|IGSID}, "messaging_type": ..., "message": {"text": ...}}`
-> `{"recipient_id", "message_id"}`. Every Graph answer is mapped to a SendResult; nothing
here raises for what Meta says.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import SecretStr

from connectors.meta.graph import ErrorKind, GraphClient, GraphError
from connectors.meta.window import WINDOW_CLOSED, MessagingType, WindowRules, window
from gateway.conversations import AUTO, OutboundMessage, SendResult, SendStatus

log = logging.getLogger(__name__)

# Longest texts. Messenger: 2000 characters (Send API reference: "Must be UTF-8 and has a
# 2000 character limit"). Instagram: under 1000 *bytes* of UTF-8 (as integrations quote
# Meta's Instagram Messaging page; not re-read at Meta this session): 500 characters keep a
# Russian text (2 bytes a letter) within it, and a longer one is refused before sending.
MESSENGER_MAX_TEXT = 2000
INSTAGRAM_MAX_TEXT = 500
INSTAGRAM_MAX_BYTES = 1000


@dataclass(frozen=True, slots=True)
class Route:
    """Where and with what a message to one of our accounts goes."""

    client: GraphClient
    path: str  # "me/messages" or "{ig account id}/messages"
    token: SecretStr


# When the customer came into the thread from an ad (channel, account, chat) -> moment.
AdClicks = Callable[[str, str, str], Awaitable[datetime | None]]
# What the connector does with a Graph failure (metrics, token health).
OnError = Callable[[str, str, GraphError], None]
OnOk = Callable[[str], None]


class MetaSender:
    """The MessageSender of one channel (facebook or instagram)."""

    # Meta's Send API has no idempotency key: a send that went out and got no answer (a
    # timeout, a dropped connection, a crash) is not repeated by the core: `unconfirmed`.
    idempotent = False

    def __init__(
        self,
        routes: dict[str, Route],
        rules: WindowRules,
        max_text: int,
        *,
        max_bytes: int | None = None,
        rate_limit_wait: float = 60.0,
        ad_clicks: AdClicks,
        on_error: OnError,
        on_ok: OnOk,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.routes = routes
        self.rules = rules
        self.max_text = max_text
        self.max_bytes = max_bytes
        self.rate_limit_wait = rate_limit_wait
        self.ad_clicks = ad_clicks
        self.on_error = on_error
        self.on_ok = on_ok
        self.clock = clock

    async def send(self, message: OutboundMessage) -> SendResult:
        route = self.routes.get(message.account)
        if route is None:
            return SendResult(
                SendStatus.UNDELIVERABLE,
                reason=f"account {message.account} is not in [meta] (no token to send with)",
            )
        if self.max_bytes is not None and len(message.text.encode()) > self.max_bytes:
            return SendResult(
                SendStatus.UNDELIVERABLE,
                reason=f"текст длиннее {self.max_bytes} байт: больше Instagram не принимает",
            )
        clicked = await self.ad_clicks(message.channel.value, message.account, message.chat)
        allowed = window(
            self.clock(),
            message.last_inbound_at,
            rules=self.rules,
            ad_click_at=clicked,
            by_person=message.author != AUTO,
        )
        if not allowed.open:
            return SendResult(SendStatus.UNDELIVERABLE, reason=WINDOW_CLOSED)
        body = {
            "recipient": {"id": message.chat},
            **allowed.fields(),
            "message": {"text": message.text},
        }
        try:
            answer = await route.client.post(route.path, route.token.get_secret_value(), body)
        except GraphError as exc:
            self.on_error(message.account, "send", exc)
            return self._failed(exc, tagged=allowed.messaging_type is MessagingType.MESSAGE_TAG)
        self.on_ok(message.account)
        sent_id = answer.get("message_id")
        return SendResult(
            SendStatus.SENT, external_id=sent_id if isinstance(sent_id, str) else None
        )

    def _failed(self, exc: GraphError, *, tagged: bool) -> SendResult:
        kind = exc.kind
        reason = f"{exc.label}: {exc.message}"
        if exc.unanswered:
            # The Send API has no idempotency key: the core does not send it again.
            return SendResult(SendStatus.UNKNOWN, reason=reason)
        if kind is ErrorKind.AUTH:
            return SendResult(SendStatus.HALT, reason=reason)
        if kind is ErrorKind.WINDOW:
            return SendResult(SendStatus.UNDELIVERABLE, reason=f"{WINDOW_CLOSED} ({reason})")
        if kind is ErrorKind.PERMISSION:
            if tagged:
                # The tag is what was refused (the app lacks the Human Agent permission):
                # this reply cannot go, the others still can.
                return SendResult(SendStatus.UNDELIVERABLE, reason=f"{WINDOW_CLOSED} ({reason})")
            # The app may not message for this account at all: stop, and say so.
            return SendResult(SendStatus.HALT, reason=reason)
        if kind in (ErrorKind.UNAVAILABLE, ErrorKind.INVALID):
            return SendResult(SendStatus.UNDELIVERABLE, reason=reason)
        if kind is ErrorKind.RATE_LIMIT:
            return SendResult(SendStatus.RETRY, reason=reason, retry_after=self.rate_limit_wait)
        return SendResult(SendStatus.RETRY, reason=reason)

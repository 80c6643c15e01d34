"""The Callback API envelope: `{type, group_id, event_id, v, object, secret}` (vk-api-schema
callback_base). Read before anything else, so that the secret can be checked first."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

from connectors.vk.settings import CommunitySettings

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


class EnvelopeInvalid(ValueError):
    """The body is not a Callback API event at all (before the secret could be read)."""


@dataclass(frozen=True, slots=True)
class Envelope:
    type: str
    group_id: int
    event_id: str | None  # absent in bodies of old API versions
    version: str | None
    object: dict[str, Any]
    secret: str | None

    @property
    def peer(self) -> str | None:
        """The dialog an event is about (message_new, _reply, _edit: the message's peer_id;
        message_allow/deny and typing: user_id), for the inbox's order per chat."""
        obj = self.object
        message = obj.get("message") if isinstance(obj.get("message"), dict) else obj
        for field in ("peer_id", "user_id", "from_id"):
            value = _int(message.get(field))
            if value is not None:
                return str(value)
        return None

    @property
    def key(self) -> str:
        """The event's idempotency key: VK's event_id ("if it passed twice or more, ignore
        it"); for a body without one, a hash of what it says."""
        if self.event_id:
            return self.event_id
        digest = hashlib.sha256(repr((self.type, self.group_id, self.object)).encode())
        return "sha256:" + digest.hexdigest()


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 19:
        return int(value)
    return None


def read_envelope(data: dict[str, Any]) -> Envelope:
    kind = data.get("type")
    if not isinstance(kind, str) or not kind or len(kind) > 64:
        raise EnvelopeInvalid("no event type")
    group_id = _int(data.get("group_id"))
    if group_id is None or group_id <= 0:
        raise EnvelopeInvalid("no group_id")
    secret = data.get("secret")
    event_id = data.get("event_id")
    version = data.get("v")
    obj = data.get("object")
    return Envelope(
        type=kind,
        group_id=group_id,
        event_id=event_id if isinstance(event_id, str) and 0 < len(event_id) <= 100 else None,
        version=version if isinstance(version, str) else None,
        object=obj if isinstance(obj, dict) else {},
        secret=secret if isinstance(secret, str) else None,
    )


def find_community(
    communities: list[CommunitySettings], secret: str | None, group_id: int
) -> tuple[CommunitySettings | None, bool]:
    """(the community this event is for, whether its secret matched any community at all).

    Every configured secret is compared, in constant time, whatever the group: timing
    tells nothing about which secrets or groups exist.
    """
    given = (secret or "").encode("utf-8", "surrogatepass")
    matched: list[CommunitySettings] = []
    for community in communities:
        if hmac.compare_digest(given, community.secret.get_secret_value().encode()):
            matched.append(community)
    found = next((c for c in matched if c.group_id == group_id), None)
    return found, bool(matched) and secret is not None

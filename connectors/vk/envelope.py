"""The Callback API envelope: `{type, group_id, event_id, v, object, secret}` (vk-api-schema
callback_base). Read before anything else, so that the secret can be checked first."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

from connectors.vk.settings import CommunitySettings


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

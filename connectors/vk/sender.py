"""Sending in VK: messages.send on the community token, one message per call.

`random_id` is derived from our own message id: VK keeps it with the message and refuses
to send a second message with the same random_id from the same community (it answers
with the first one's id), so a send that is repeated after a crash or a lost answer
reaches the customer once. VK's errors, by kind:
- 901/900/902 (the user has not allowed the community's messages, blocked it, or their
  privacy settings forbid it): undeliverable, with VK's words;
- 950 (the time to reply to this user has passed): undeliverable, «окно ответа закрыто»;
- 6/9/29 and captcha (rate limits): retry after VK's pause for the code;
- 5/27/28 (the token is refused): halt sending for this community, shown on /readyz;
- 914 and other request errors: undeliverable (repeating the same request cannot help);
- a network failure, HTTP 5xx, error 1/10: retry.
"""

from __future__ import annotations

import hashlib

from connectors.vk.api import ErrorKind, VkApi, VkError
from gateway.conversations import OutboundMessage, SendResult, SendStatus

MAX_TEXT = 9000  # messages.send `message` maxLength (vk-api-schema, dev.vk.com)
WINDOW_CLOSED = "окно ответа закрыто"


def random_id(message_id: str) -> int:
    """A positive 63-bit number, the same for the same message id on every replica and
    after every restart (VK's scope for it is the community's whole history)."""
    digest = hashlib.sha256(f"leadgate:vk:{message_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & ((1 << 63) - 1) or 1


class VkSender:
    max_text = MAX_TEXT
    idempotent = True  # VK drops a repeated random_id itself

    def __init__(self, apis: dict[str, VkApi]) -> None:
        self.apis = apis  # community (group id as text) -> its API client

    async def send(self, message: OutboundMessage) -> SendResult:
        api = self.apis.get(message.account)
        if api is None:
            return SendResult(
                SendStatus.HALT,
                reason=f"no token configured for VK community {message.account}",
            )
        try:
            peer_id = int(message.chat)
        except ValueError:
            return SendResult(SendStatus.UNDELIVERABLE, reason=f"not a VK peer: {message.chat}")
        params = {
            "peer_id": peer_id,
            "random_id": random_id(message.message_id),
            "message": message.text,
        }
        try:
            answer = await api.call("messages.send", params)
        except VkError as exc:
            return outcome(exc)
        if isinstance(answer, int) and not isinstance(answer, bool):
            return SendResult(SendStatus.SENT, external_id=str(answer))
        if isinstance(answer, list) and answer and isinstance(answer[0], dict):
            found = answer[0].get("message_id") or answer[0].get("conversation_message_id")
            return SendResult(SendStatus.SENT, external_id=str(found) if found else None)
        return SendResult(SendStatus.SENT)


def outcome(error: VkError) -> SendResult:
    """A VK error as what the message worker should do about it."""
    words = error.message or str(error)
    match error.kind:
        case ErrorKind.WINDOW_CLOSED:
            return SendResult(SendStatus.UNDELIVERABLE, reason=f"{WINDOW_CLOSED} ({words})")
        case ErrorKind.CANNOT_WRITE | ErrorKind.PERMANENT:
            return SendResult(SendStatus.UNDELIVERABLE, reason=f"VK {error.code}: {words}")
        case ErrorKind.AUTH:
            return SendResult(SendStatus.HALT, reason=f"VK {error.code}: {words}")
        case ErrorKind.THROTTLED:
            return SendResult(
                SendStatus.RETRY, reason=f"VK {error.code}: {words}", retry_after=error.retry_after
            )
    return SendResult(SendStatus.RETRY, reason=str(error))

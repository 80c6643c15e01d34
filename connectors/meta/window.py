"""Meta's messaging window: may this reply still go, and as what?

Meta's policy (Messenger Platform and Instagram Messaging policy): a business may answer
within the *standard messaging window*, 24 hours after the person's last message — up to
7 days from the first message after a click on a Click-to-Messenger / Click-to-Direct ad.
After that only a message tag lets a message through; `HUMAN_AGENT` lets a person (not a
bot) answer up to 7 days after the customer's last message. Anything later cannot be
delivered at all: the reply ends as «окно ответа закрыто» instead of being retried.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import NamedTuple

# What a seller reads on a reply that can no longer go (the lead's transcript).
WINDOW_CLOSED = "окно ответа закрыто"


class MessagingType(StrEnum):
    RESPONSE = "RESPONSE"
    MESSAGE_TAG = "MESSAGE_TAG"


class Window(NamedTuple):
    messaging_type: MessagingType | None  # None: the window is closed
    tag: str | None = None

    @property
    def open(self) -> bool:
        return self.messaging_type is not None

    def fields(self) -> dict[str, str]:
        """The Send API fields that say under which rule the message goes."""
        if self.messaging_type is None:
            raise ValueError("the window is closed")
        out = {"messaging_type": self.messaging_type.value}
        if self.tag is not None:
            out["tag"] = self.tag
        return out


class WindowRules(NamedTuple):
    standard: timedelta = timedelta(hours=24)
    after_ad: timedelta = timedelta(days=7)
    tag: str | None = "HUMAN_AGENT"
    tag_window: timedelta = timedelta(days=7)


def window(
    now: datetime,
    last_inbound_at: datetime | None,
    *,
    rules: WindowRules,
    ad_click_at: datetime | None = None,
    by_person: bool = True,
) -> Window:
    """How a message to a person who last wrote at `last_inbound_at` may be sent now.

    `ad_click_at`: when the person came into the thread from an ad (the longer window runs
    from there). `by_person`: a person answers (a seller), not the gateway itself — only a
    person's reply may carry HUMAN_AGENT.
    """
    if last_inbound_at is None:
        return Window(None)  # they never wrote: Meta lets no business start a conversation
    age = now - last_inbound_at
    after_ad = ad_click_at is not None and now - ad_click_at <= rules.after_ad
    if age <= rules.standard or after_ad:
        return Window(MessagingType.RESPONSE)
    if rules.tag is not None and by_person and age <= rules.tag_window:
        return Window(MessagingType.MESSAGE_TAG, rules.tag)
    return Window(None)

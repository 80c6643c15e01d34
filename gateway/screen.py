"""Spam screening: rules that turn a would-be lead into a JUNK lead, with the rule as reason."""

from __future__ import annotations

from collections.abc import Iterable

from gateway.identity import normalize_email, normalize_phone
from gateway.models import LeadEvent


def _normalize_domain(raw: str) -> str:
    """The domain as normalize_email spells it in an address: lower-case, IDNA (punycode).

    Contact emails carry "bot@xn--80ayhh.xn--p1ai", so a configured "спам.рф" must become the
    same ASCII form or it never matches. Encoding through normalize_email itself keeps the two
    spellings identical by construction. A domain that does not encode (no dot, invalid label)
    is kept lower-cased as given: no normalized email can carry it, so it simply never matches.
    """
    domain = raw.strip().lstrip("@")
    email = normalize_email(f"x@{domain}")
    return email.rsplit("@", 1)[1] if email is not None else domain.lower()


class Screen:
    def __init__(
        self,
        *,
        blocked_phones: list[str],
        blocked_emails: list[str],
        blocked_domains: list[str],
        stop_words: list[str],
        own_phones: Iterable[str] = (),
        region: str = "RU",
    ) -> None:
        # Normalize the lists once, so "8 916 ..." in config matches "+7916..." in events.
        self.phones = {p for raw in blocked_phones if (p := normalize_phone(raw, region))}
        self.own = {p for raw in own_phones if (p := normalize_phone(raw, region))}
        self.region = region
        self.emails = {e for raw in blocked_emails if (e := normalize_email(raw))}
        self.domains = {_normalize_domain(d) for d in blocked_domains}
        self.words = [w.casefold() for w in stop_words if w.strip()]

    def without_own_phones(self, event: LeadEvent) -> LeadEvent:
        """The event without the company's own numbers among the customer's phones.

        A customer who quotes the shop's number ("перезвоните на 8 495 …"), an email reply
        that keeps the shop's signature, a call from the office's own line: that number is
        not the customer's, and as a matching key it would merge every such customer into
        one lead. The text keeps it; only the contact loses it."""
        if not self.own:
            return event
        contact = event.contact
        kept = tuple(p for p in contact.phones if normalize_phone(p, self.region) not in self.own)
        if len(kept) == len(contact.phones):
            return event
        return event.model_copy(update={"contact": contact.model_copy(update={"phones": kept})})

    def reason(self, event: LeadEvent) -> str | None:
        """Why this event is spam, or None."""
        if event.junk_reason:
            return event.junk_reason
        contact = event.contact
        for phone in contact.phones:
            if phone in self.phones:
                return "blocked phone"
        for email in contact.emails:
            if email in self.emails:
                return "blocked email"
            if email.rsplit("@", 1)[-1] in self.domains:
                return "blocked domain"
        if self.words and event.text:
            text = event.text.casefold()
            for word in self.words:
                if word in text:
                    return f"stop word: {word}"
        return None

    def is_blocked_phone(self, phone: str) -> bool:
        return phone in self.phones

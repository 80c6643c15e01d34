"""Who is this person: phone/email normalization, matching keys, and masking for logs.

Every channel spells the same customer differently ("8 (916) 123-45-67", "+7 916 1234567",
"Ivan@Mail.RU"); dedup only works if they all collapse to one canonical form here.
"""

from __future__ import annotations

import functools
import logging
import re

import idna
import phonenumbers
from phonenumbers import COUNTRY_CODE_TO_REGION_CODE, NumberParseException, PhoneNumberFormat

from gateway.models import Contact

# phonenumbers refuses longer input anyway; cutting early keeps junk payloads cheap.
_MAX_PHONE_INPUT = 250
_MAX_EMAIL = 254  # RFC 5321 path limit
_MAX_LOCAL = 64

# Digits only, so that "+7 (916) 123-45-67 доб. 12" and friends reduce to something countable.
_NON_DIGITS = re.compile(r"\D+")


_PHONE_CACHE: dict[tuple[str, str], str | None] = {}
_PHONE_CACHE_SIZE = 65536


def normalize_phone(raw: str, region: str = "RU") -> str | None:
    """E.164 ("+79161234567"), or None when it is not a valid number.

    Cached, the result under its own E.164 form too: a number is checked by the connector
    and again by identity_keys on every request, and phonenumbers' parse + validate costs
    15-20 us a call on the hot path.
    """
    key = (raw, region)
    try:
        return _PHONE_CACHE[key]
    except KeyError:
        pass
    result = _parse_phone(raw, region)
    if len(_PHONE_CACHE) >= _PHONE_CACHE_SIZE:
        _PHONE_CACHE.clear()
    _PHONE_CACHE[key] = result
    if result is not None:
        _PHONE_CACHE[(result, region)] = result
    return result


def _parse_phone(raw: str, region: str) -> str | None:
    """E.164 ("+79161234567"), or None when it is not a valid number.

    phonenumbers with region RU already understands the trunk prefix 8 and 11 digits starting
    with 7 without '+'. Extensions ("доб. 12") are dropped: E.164 has no place for them and the
    person is the same. Validity (not mere possibility) is required so junk such as "1234567"
    never becomes a matching key that would merge strangers.
    """
    text = raw.strip()
    if not text or len(text) > _MAX_PHONE_INPUT:
        return None
    if text.startswith("00"):
        # The European international prefix; RU's own (8~10) is handled by phonenumbers.
        text = "+" + text[2:]
    try:
        number = phonenumbers.parse(text, region)
    except NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, PhoneNumberFormat.E164)


@functools.lru_cache(maxsize=65536)
def normalize_email(raw: str) -> str | None:
    """Lower-cased address with an IDNA (punycode) domain, or None if it is not an email.

    Deliberately simple: one '@', no whitespace, non-empty local part, a dotted domain that
    IDNA accepts. No DNS, no provider-specific rules (dots/plus in Gmail): being predictable
    matters more than catching every alias.
    """
    text = raw.strip()
    if not text or len(text) > _MAX_EMAIL or text.count("@") != 1:
        return None
    if any(ch.isspace() for ch in text):
        return None
    local, domain = text.split("@")
    if not local or len(local) > _MAX_LOCAL or "." not in domain:
        return None
    if domain.startswith(".") or domain.endswith(".") or ".." in domain:
        return None
    try:
        ascii_domain = idna.encode(domain, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError):
        return None
    return f"{local.lower()}@{ascii_domain}"


def identity_keys(contact: Contact) -> tuple[str, ...]:
    """Matching keys in the order phones, emails, handles; no duplicates.

    Phones and emails are normalized again even though Contact promises it: a connector slip
    would otherwise silently break dedup. Values that do not normalize are dropped rather than
    used raw, because a junk key ("phone:123") could merge unrelated people.
    """
    keys: dict[str, None] = {}  # insertion-ordered set
    for raw_phone in contact.phones:
        phone = normalize_phone(raw_phone)
        if phone is not None:
            keys[f"phone:{phone}"] = None
    for raw_email in contact.emails:
        email = normalize_email(raw_email)
        if email is not None:
            keys[f"email:{email}"] = None
    for handle in contact.handles:
        if handle:
            keys[handle] = None
    return tuple(keys)


def find_phones(text: str, region: str = "RU") -> tuple[str, ...]:
    """Valid phone numbers mentioned in free text (email signatures), E.164, first-seen order."""
    found: dict[str, None] = {}
    for match in phonenumbers.PhoneNumberMatcher(text, region):
        found[phonenumbers.format_number(match.number, PhoneNumberFormat.E164)] = None
    return tuple(found)


# --- masking: logs must never show a full phone or email -----------------------------------

_MASK = "*"


def _country_code_length(digits: str) -> int:
    # Country codes are prefix-free, so the first 1-3 digit prefix that is known is the one.
    if digits.startswith("0"):
        return 1
    for length in (1, 2, 3):
        if int(digits[:length]) in COUNTRY_CODE_TO_REGION_CODE:
            return length
    return 1


def _mask_digits(digits: str, international: bool) -> str:
    """Show at most half the digits: the country code, the last 2-4, and leading national
    digits only when the budget allows. The tail wins over the head because "ends with 4567"
    is what people use to tell numbers apart in a log."""
    n = len(digits)
    budget = n // 2
    head = _country_code_length(digits) if international else 0
    if head + 2 > budget:
        head = 0
    tail = max(0, min(4, budget - head))
    if international:
        head += max(0, min(3, budget - head - tail))
    prefix = "+" if international else ""
    return f"{prefix}{digits[:head]}{_MASK * (n - head - tail)}{digits[n - tail :] if tail else ''}"


def mask_phone(phone: str) -> str:
    """E.g. "+79161234567" -> "+7******4567": never more than half of the digits visible."""
    digits = _NON_DIGITS.sub("", phone)
    if len(digits) < 4:
        return _MASK * 3
    return _mask_digits(digits, phone.lstrip().startswith("+"))


def mask_email(email: str) -> str:
    """E.g. "ivan.petrov@example.ru" -> "i***@example.ru": the domain helps debugging."""
    local, at, domain = email.strip().rpartition("@")
    if not at or not local:
        return _MASK * 3
    return f"{local[0]}{_MASK * 3}@{domain}"


# One pass over the text with both alternatives. Boundaries are what keep timestamps, UUIDs,
# ULIDs and IPs intact: a run may not start right after a word char or '-', '/', '.', '+', '@',
# may not be an ISO (YYYY-MM-DD) or DD-MM-YYYY date, and may not run on into a word char, '@'
# or a '-'/'/'/'.' followed by more digits. '.' is not a separator so IPs and dotted dates stay.
_TEXT_PATTERN = re.compile(
    r"(?P<email>(?<![\w.+\-])[\w.+\-]+@[\w\-]+(?:\.[\w\-]+)+)"
    r"|(?P<phone>(?<![\w@/.+\-])(?!\d{4}-\d\d-\d\d|\d\d-\d\d-\d{4})"
    r"\+?\(?\d(?:[ \u00a0\-()]{0,3}\d){6,}(?![\w@]|[-/.]\d))"
)


def _mask_match(match: re.Match[str]) -> str:
    email = match.group("email")
    if email is not None:
        return mask_email(email)
    run = match.group("phone")
    return _mask_digits(_NON_DIGITS.sub("", run), run.startswith("+"))


def mask_text(text: str) -> str:
    """Mask every email and every phone-like run of 7+ digits inside arbitrary text."""
    return _TEXT_PATTERN.sub(_mask_match, text)


class MaskingFilter(logging.Filter):
    """Attach to handlers (or loggers): rewrites each record so no full phone/email is emitted.

    The message is formatted first so that values passed as %-args are masked too; the
    traceback text is pre-rendered and masked because exception messages often carry payloads.
    """

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not turn logging into a crash
            message = f"{record.msg!s} {record.args!r}"
        record.msg = mask_text(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_text(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_text(record.stack_info)
        return True

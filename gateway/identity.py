"""Who is this person: phone/email normalization, matching keys, and masking for logs.

Every channel spells the same customer differently ("8 (916) 123-45-67", "+7 916 1234567",
"Ivan@Mail.RU"); dedup only works if they all collapse to one canonical form here.
"""

from __future__ import annotations

import functools
import logging
import re
import urllib.parse
from typing import Annotated

import idna
import phonenumbers
from phonenumbers import COUNTRY_CODE_TO_REGION_CODE, NumberParseException, PhoneNumberFormat

from gateway.models import Contact
from gateway.redact import redact
from gateway.textsafe import escape_controls, escape_controls_multiline, storable

# Marks a settings field as a list of phone numbers: gateway.config checks every such list,
# in any section, with the one phone rule and the configured phone_region.
PHONE_LIST = "phone-list"
PhoneList = Annotated[list[str], PHONE_LIST]

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


# Separators a PBX or a person puts between the digits of a number written without "+".
_DIALLED = re.compile(r"[\s\-().]+")


def _parse_phone(raw: str, region: str) -> str | None:
    """E.164 ("+79161234567"), or None when it is not a valid number.

    The one rule for a number written without "+": it is read as a national number of
    `region` when it is valid there, else as an international number (as if it had a "+")
    when that is valid. PBXs send foreign callers that way ("442037691880" for a UK
    number, "493023125741" for Berlin), and the national reading wins whenever both are
    possible, so "4951234567" stays a Moscow number. phonenumbers with region RU already
    understands the trunk prefix 8, 11 digits starting with 7 and the 8~10 international
    prefix. Extensions ("доб. 12") are dropped: E.164 has no place for them and the person is
    the same. Validity (not mere possibility) is required so junk such as "1234567" never
    becomes a matching key that would merge strangers.
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
        number = None
    if number is not None and phonenumbers.is_valid_number(number):
        return phonenumbers.format_number(number, PhoneNumberFormat.E164)
    digits = _DIALLED.sub("", text)
    if text.startswith("+") or not digits.isdigit() or not digits.isascii():
        return None
    try:
        number = phonenumbers.parse("+" + digits, None)
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


# mask_text makes two left-to-right passes with precompiled patterns:
#   1. emails (only when the line has an '@' in some spelling at all): an address, also
#      percent-encoded ("ivan%40mail.ru", "%D0%B8...%40...") or JSON-escaped ("\u0438...@...").
#   2. numbers. At each position that starts a digit run (or a plus) it tries, in this order:
#      keep  - dates (ISO, dotted, DD-MM-YYYY), clock times (with seconds and a fraction) and
#              IPv4 addresses: numeric-looking but not personal, they survive byte for byte.
#              Matching them first also stops "10:00:00 2025-01-15" being read as "00 2025-...".
#      phone - a "digit cluster": an optional plus ("+", "%2B", "\u002b"), then digit groups
#              joined by 1-3 separators (space, tab, NBSP and other Unicode spaces/dashes, "-",
#              ".", "(", ")", "+" as a form-encoded space, and their %XX / \uXXXX / "\t" /
#              "&nbsp;" spellings). Letters, "_", "/", "." or "=" around it do not protect it:
#              "тел.8916...", "phone_7916...", "/cb/7916...", "89161234567abc" are clusters.
#              _mask_cluster then decides whether the cluster is a phone.
#      A cluster lying inside a UUID is recognized in context and kept (_inside_uuid). IPv6
#      groups are at most 4 digits between colons, so never a cluster. ULIDs and hex digests are
#      not special-cased: in the rare one that holds 10+ digits in a row, that run is masked
#      (over-masking an id beats showing a phone hidden in something id-shaped).
# Both passes are linear even on hostile input: everything that repeats is possessive (nothing
# is ever re-tried at a shorter length), an email is only tried from the first character of a run
# of local-part characters, and a digit cluster either matches in full or fails its bounded
# pre-check. tests/test_identity.py runs 100 KB lines of digits and separators to prove it.
_HEX = "[0-9A-Fa-f]"
_PLUS = r"(?:\+|%2[Bb]|\\u002[Bb])"
_SEP = (
    r"(?:[ \t\u00a0\u2000-\u200b\u202f\u2010-\u2015\u2212.()+\-,/_]"
    r"|%2[089BbDdEeCcFf]|%5[Ff]|&nbsp;|&#160;|\\t|\\u(?:00[Aa]0|200[0-9AaBb]|201[0-5]|202[Ff]|2212)"
    rf"|\\x{_HEX}{{2}})"
)
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?!\d)"
_MONTH = r"(?:0[1-9]|1[0-2])"
_DAY = r"(?:0[1-9]|[12]\d|3[01])"
_TIME = r"\d\d?:[0-5]\d(?::[0-5]\d(?:\.\d{1,9}(?!\d))?)?(?!\d)"
_UUID = rf"{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}"
_KEEP = (
    rf"(?:\d{{4}}-{_MONTH}-{_DAY}|\d{{4}}\.{_MONTH}\.{_DAY}|\d{{4}}/{_MONTH}/{_DAY}"
    rf"|{_DAY}\.{_MONTH}\.\d{{4}}|{_DAY}-{_MONTH}-\d{{4}}|\d\d?/\d\d?/\d{{4}})(?![-./]?\d)"
    rf"|{_TIME}"
    rf"|(?:{_OCTET}\.){{3}}{_OCTET}(?!\.?\d)"
)
_PLUS_LEAD = rf"{_PLUS}(?:[ (\u00a0]|%2[08])?"
# The look-ahead is a bounded pre-check (7 digits within reach) so that the callback only runs
# for clusters that might be phones; it reads at most 7 digits and 19 separators, so it cannot
# make the pass superlinear. A later group that starts a clock time or a UUID ends the cluster
# ("uid 1234567 10:00" stays a bare UID, "attempt 3 550e8400-..." leaves the UUID whole).
_PHONE = (
    rf"(?=(?:{_PLUS_LEAD})?\d(?:{_SEP}{{0,3}}\d){{6}})"
    rf"(?:{_PLUS_LEAD})?\d++(?:{_SEP}{{1,3}}+(?!{_TIME}|{_UUID})\d++)*+"
)
# The shared prefix rejects most positions (letters, inside digit runs) in two cheap steps.
_NUMBER_PATTERN = re.compile(rf"(?<!\d)(?=[\d+%\\])(?:(?P<keep>{_KEEP})|(?P<phone>{_PHONE}))")

# A local part may start wherever a run of its characters starts: after a non-local character,
# but not inside a %XX or \uXXXX escape (one start per run keeps the pass linear). "%40",
# "%2540" (encoded twice, as in a redirect URL), "\u0040" and "&#64;" are the '@' itself, so
# they are not local characters.
_AT = r"(?:@|%40|%2540|\\u0040|\\x40|&#64;|&#[xX]40;)"
_LOCAL_CHAR = (
    rf"(?:[\w.+\-]|%(?!40|2540){_HEX}{{2}}|\\u(?!0040){_HEX}{{4}}|\\x(?!40){_HEX}{{2}})"
)
_DOMAIN_CHAR = rf"(?:[\w\-]|%{_HEX}{{2}}|\\u{_HEX}{{4}}|\\x{_HEX}{{2}})"
_EMAIL_PATTERN = re.compile(
    rf"(?<![\w.+\-])(?!(?<=%){_HEX}{{2}}|(?<=\\)u{_HEX}{{4}}|(?<=\\)x{_HEX}{{2}})"
    rf"(?P<local>{_LOCAL_CHAR}++)(?P<at>{_AT})"
    rf"{_DOMAIN_CHAR}++(?:\.{_DOMAIN_CHAR}++)++"
)

_AT_PATTERN = re.compile(_AT)  # cheap gate: most log lines have no address at all
_DIGIT_GROUPS = re.compile(r"\d+")
# Escapes inside a cluster are separators; their hex digits are not the number's digits.
_CLUSTER_ESCAPES = re.compile(rf"%{_HEX}{{2}}|\\u{_HEX}{{4}}|\\x{_HEX}{{2}}|\\t|&nbsp;|&#160;")
_PLUS_TOKEN = re.compile(_PLUS)
# Separators that also join lists and paths: a cluster joined by them needs phone-sized groups.
_WEAK_SEP = re.compile(r"([,/_]|%2[CcFf]|%5[Ff])")
_GROUP_MAX = 4
_LEADING_SEPS = re.compile(rf"(?:(?!{_PLUS}){_SEP})*")
_HEX_BYTE = re.compile(rf"\\x({_HEX}{{2}})")
_UUID_EXACT = re.compile(rf"(?<![0-9A-Za-z]){_UUID}(?![0-9A-Za-z])")


def _bare_run_is_phone(digits: str) -> bool:
    """Is a run of digits with no plus and no separators a phone number?

    11+ digits: always (a full number with its country code or trunk prefix, "89161234567",
    "442079460958", or a longer run that may hide one; millisecond epochs get masked too).
    10 digits: yes, unless it starts with 1. Ten digits is a national number without its prefix
    in Russia (mobile 9xx, geographic 3xx/4xx/8xx), NANP (area codes never start with 0 or 1)
    and elsewhere (0xx...), but it is also a Unix time in seconds, and from 2001-09-09 to
    2033-05-18 those are exactly 1000000000..1999999999. So "1736930000" (a timestamp, an IMAP
    UIDVALIDITY) survives while "9161234567" and "4951234567" are masked.
    7-9 digits alone (IMAP UIDs, counters, row ids) are not phones: too short to be a full one.
    """
    return len(digits) >= 11 or (len(digits) == 10 and digits[0] != "1")


def _mask_cluster(run: str) -> str:
    """The masked form of a digit cluster, or the cluster unchanged when it is not a phone."""
    plus_match = _PLUS_TOKEN.match(run)
    plus = plus_match.group() if plus_match else ""
    body = run[len(plus) :]
    if "%" in body or "\\" in body or "&" in body:
        body = _CLUSTER_ESCAPES.sub(" ", body)
    groups = _DIGIT_GROUPS.findall(body)
    digits = "".join(groups)
    if _WEAK_SEP.search(run) and not _phone_shaped(groups, bool(plus)):
        # Joined by "," "/" "_": a phone only when written like one ("8,916,123,45,67"),
        # else a list ("UIDs 1234567, 1234568") whose items are judged one by one.
        return "".join(
            part if i % 2 else _mask_piece(part) for i, part in enumerate(_WEAK_SEP.split(run))
        )
    if plus:
        # "+7 916 ..." and "+79161234567": a number written internationally.
        is_phone = len(digits) >= 7
    elif len(groups) == 1:
        is_phone = _bare_run_is_phone(digits)
    elif len(groups) == 2 and body == f"{groups[0]}.{groups[1]}":
        # A decimal ("1736930000.123456"): each side judged as a bare run, so "1.89161234567"
        # (a numbered list item) is masked. One exception keeps float noise in durations
        # readable: "0." and 16+ digits ("0.30000000000000004") cannot be a phone, E.164 has
        # at most 15. ("\u00a0.9161234567" - an escape's 0, then a phone - is still masked.)
        is_phone = _bare_run_is_phone(groups[0]) or (
            _bare_run_is_phone(groups[1]) and (groups[0] != "0" or len(groups[1]) < 16)
        )
    else:
        # Separator-grouped: "123-45-67", "8 (916) 123-45-67", "916.123.45.67", "1 234 567".
        is_phone = len(digits) >= 7
    if not is_phone:
        return run
    masked = _mask_digits(digits, bool(plus))
    return plus + masked[1:] if plus else masked


def _phone_shaped(groups: list[str], plus: bool) -> bool:
    """Digit groups that spell one whole number: short groups (the last may hold the
    subscriber's 7 digits), a full number's worth of digits (7 after a plus, else 10)."""
    digits = sum(map(len, groups))
    short = all(len(g) <= _GROUP_MAX for g in groups[:-1]) and len(groups[-1]) <= 7
    return short and digits >= (7 if plus else 10)


def _mask_piece(piece: str) -> str:
    """One item of a list cut out of a cluster: its leading separators kept as they are."""
    lead = _LEADING_SEPS.match(piece)
    start = lead.end() if lead else 0
    core = piece[start:]
    return piece[:start] + _mask_cluster(core) if _DIGIT_GROUPS.search(core) else piece


def _inside_uuid(match: re.Match[str]) -> bool:
    """Is this cluster part of a UUID ("...-a716-446655440000")?"""
    start, end = match.span()
    if end - start > 36:
        return False
    # A UUID holding [start, end) lies within [end - 36, start + 36); one more character is
    # read so that its trailing look-ahead sees the real text, not an artificial end.
    text = match.string
    for uuid in _UUID_EXACT.finditer(text, max(0, end - 36), min(len(text), start + 37)):
        if uuid.start() <= start and end <= uuid.end():
            return True
    return False


def _mask_number(match: re.Match[str]) -> str:
    run = match.group()
    if match.lastgroup == "keep" or _inside_uuid(match):
        return run
    return _mask_cluster(run)


def _first_char(local: str) -> str:
    """The first character of a possibly %-encoded or \\u-escaped local part, for display."""
    if local[0] == "%":
        char = urllib.parse.unquote(local[:12])[0]  # up to 4 %XX bytes: one UTF-8 character
    elif local.startswith("\\x"):  # \xNN bytes as Python's repr shows them
        raw = bytes.fromhex("".join(_HEX_BYTE.findall(local[:16])))
        char = raw.decode("utf-8", "replace")[0]
    elif local[0] == "\\":
        char = chr(int(local[2:6], 16))
    else:
        char = local[0]
    return char if char.isprintable() else _MASK  # no lone surrogates or controls in logs


def _mask_email_match(match: re.Match[str]) -> str:
    # The domain stays as written: it helps debugging and keeps a URL or JSON string intact.
    local, at = match.group("local", "at")
    return f"{_first_char(local)}{_MASK * 3}{at}{match.group()[len(local) + len(at) :]}"


def mask_text(text: str) -> str:
    """Mask every email and every phone-like digit cluster inside arbitrary text.

    Also the spellings logs really contain: "тел.89161234567", "phone_79161234567",
    "?phone=%2B79161234567", "?email=ivan%40mail.ru", JSON "\\u0438\\u0432...@..." escapes,
    "+7.916.123.45.67", tabs between groups. Dates, clock times, ISO timestamps, IPv4/IPv6,
    UUIDs and bare numbers of up to 9 digits (IMAP UIDs) are left alone, as are 10-digit
    numbers starting with 1 (Unix times); see _bare_run_is_phone.
    """
    if _AT_PATTERN.search(text):
        text = _EMAIL_PATTERN.sub(_mask_email_match, text)
    return _NUMBER_PATTERN.sub(_mask_number, text)


class MaskingFilter(logging.Filter):
    """Attach to handlers (or loggers): rewrites each record so no full phone/email is emitted.

    The message is formatted first so that values passed as %-args are masked too; the
    traceback text is pre-rendered and masked because exception messages often carry payloads.
    Whatever a formatter later adds (time, level, logger name) is ours. In order: registered
    secrets are cut out in any spelling (gateway.redact), control characters are escaped (a
    message is one line: a newline in a client's input cannot forge a second log line), then
    phones and emails are masked, also where aiohttp shows raw bytes as \\xNN escapes.
    """

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not turn logging into a crash
            message = f"{record.msg!s} {record.args!r}"
        record.msg = mask_text(escape_controls(redact(storable(message))))
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            text = redact(storable(record.exc_text))
            record.exc_text = mask_text(escape_controls_multiline(text))
        if record.stack_info:
            record.stack_info = mask_text(redact(record.stack_info))
        return True

"""One raw RFC 5322 message -> the facts a lead needs: who, what, which thread, and whether
it is from a customer at all. Pure functions: no IMAP, no store, testable on .eml files.
"""

from __future__ import annotations

import email
import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime
from email.message import Message
from email.utils import getaddresses, parsedate_to_datetime

from connectors.email.charsets import decode_bytes, decode_header_value
from connectors.email.html_text import html_to_text
from connectors.email.quotes import trim_quoted
from gateway.identity import normalize_email
from gateway.models import Attachment

MAX_TEXT = 20_000
MAX_FORWARD_DEPTH = 4  # a forward inside a forward is read; deeper ones are listed only
FORWARDED_HEAD = "---------- Пересланное сообщение ----------"
MAX_DEPTH = 20  # MIME nesting; deeper is a crafted message, not mail
MAX_THREAD_IDS = 20
_MAX_ID = 500  # LeadEvent.external_id allows 512
_ANGLE_IDS = re.compile(r"<([^<>\s]+)>")
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([\w.:-]+)""", re.IGNORECASE)
_DAEMONS = frozenset({"mailer-daemon", "postmaster", "mail-daemon", "mailerdaemon"})
_ROBOT_LOCAL = re.compile(r"(no-?reply|do-?not-?reply|mailer|robot|notif)", re.IGNORECASE)
_REPORT_TYPES = frozenset(
    {"message/delivery-status", "message/disposition-notification", "message/feedback-report"}
)
# Headers Exchange puts on mail its mailbox rules generated (out-of-office, auto-replies).
_EXCHANGE_GENERATED = (
    "X-MS-Exchange-Inbox-Rules-Loop",
    "X-MS-Exchange-Generated-Message-Source",
)
AUDIT_HEADERS = (
    "From", "Reply-To", "To", "Cc", "Subject", "Date", "Message-ID", "In-Reply-To",
    "References", "Return-Path", "Auto-Submitted", "Precedence", "List-Id",
    "X-Auto-Response-Suppress",
)  # fmt: skip


class MalformedMail(ValueError):
    """Not a message we can read (no headers, crafted nesting): kept raw for a person."""


@dataclass(frozen=True, slots=True)
class Address:
    name: str | None
    address: str | None  # normalized, None when the header held no usable address


@dataclass(frozen=True, slots=True)
class Mail:
    message_id: str  # without angle brackets; derived from content when the header is absent
    message_id_derived: bool
    sender: Address  # From
    reply_to: Address | None
    to: tuple[str, ...]
    subject: str
    date: datetime | None
    thread_ids: tuple[str, ...]  # In-Reply-To first, then References newest first
    references: tuple[str, ...]  # the References header as written, oldest first
    body: str  # new text only: quoted history trimmed
    attachments: tuple[Attachment, ...]
    not_customer: str | None  # why this is no customer's mail (a metric label), or None
    headers: dict[str, str] = field(default_factory=dict)  # decoded, for audit
    # Mail the customer forwarded as an attachment (message/rfc822), as readable text. Kept
    # apart from `body`: it is shown to the seller, but its numbers are not the customer's.
    forwarded: str = ""

    @property
    def answer_to(self) -> Address:
        """Where a reply goes and who the person is: Reply-To when set, else From."""
        if self.reply_to is not None and self.reply_to.address is not None:
            return self.reply_to
        return self.sender

    @property
    def person_name(self) -> str | None:
        if self.reply_to is not None and self.reply_to.name:
            return self.reply_to.name
        sender = self.sender
        # "Tilda <noreply@tilda.ws>" with the customer in Reply-To: the name is the robot's.
        if (
            self.reply_to is not None
            and sender.address
            and _ROBOT_LOCAL.search(sender.address.split("@")[0])
        ):
            return None
        return sender.name


# --- headers -------------------------------------------------------------------------------


def _header(msg: Message, name: str) -> str | None:
    # The raw value: compat32's msg.get() turns undeclared 8-bit bytes (cp1251 written
    # straight into a Subject by old mailers) into replacement characters, while the raw
    # value keeps them as surrogates that decode_header_value can still read.
    wanted = name.lower()
    for key, value in msg.raw_items():
        if key.lower() == wanted:
            return str(value)
    return None


def _addresses(raw: str | None) -> list[Address]:
    if not raw:
        return []
    out = []
    for name, addr in getaddresses([raw]):
        decoded = decode_header_value(name).strip().strip('"').strip() or None
        normalized = normalize_email(decode_header_value(addr)) if addr else None
        if decoded is not None and normalized is not None and decoded.lower() == normalized:
            decoded = None  # «ivan@mail.ru <ivan@mail.ru>» has no name in it
        if decoded is None and normalized is None:
            continue
        out.append(Address(decoded, normalized))
    return out


def message_ids(raw: str | None) -> list[str]:
    """Ids in a Message-ID / In-Reply-To / References header, without brackets."""
    if not raw:
        return []
    found = _ANGLE_IDS.findall(raw)
    if not found:  # some mailers drop the brackets
        found = [tok for tok in raw.split() if "@" in tok]
    return [i for i in found if len(i) <= _MAX_ID]


def _derived_id(msg: Message, raw: bytes) -> str:
    """A stable id for mail without Message-ID: the same message hashes the same in any
    folder and after a UIDVALIDITY change (the server's own headers are left out)."""
    h = hashlib.sha256()
    for name in ("From", "To", "Date", "Subject"):
        h.update(
            name.encode() + b"\x00" + (_header(msg, name) or "").encode("utf-8", "surrogateescape")
        )
    _, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        _, _, body = raw.partition(b"\n\n")
    h.update(b"\x00" + body)
    return f"derived-{h.hexdigest()[:40]}@leadgate"


def _thread_ids(msg: Message) -> tuple[str, ...]:
    ordered = message_ids(_header(msg, "In-Reply-To"))
    ordered += list(reversed(message_ids(_header(msg, "References"))))
    return tuple(dict.fromkeys(ordered))[:MAX_THREAD_IDS]


def _date(msg: Message) -> datetime | None:
    raw = _header(msg, "Date")
    if not raw:
        return None
    try:
        parsed = parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    return parsed if parsed.tzinfo is not None else None


# --- who is not a customer -----------------------------------------------------------------


def _has_report(msg: Message, depth: int = 0) -> bool:
    if depth > MAX_DEPTH:
        return False
    ctype = msg.get_content_type()
    if ctype == "multipart/report" or ctype in _REPORT_TYPES:
        return True
    if msg.is_multipart() and ctype != "message/rfc822":
        payload = msg.get_payload()
        if isinstance(payload, list):
            return any(_has_report(p, depth + 1) for p in payload if isinstance(p, Message))
    return False


def not_customer_reason(
    msg: Message, sender: Address, own: frozenset[str], reply_to: Address | None = None
) -> str | None:
    """Why this is auto-generated or our own mail (RFC 3834 and friends), or None."""
    local = (sender.address or "").split("@")[0].lower()
    if _has_report(msg) or local in _DAEMONS or msg.get("X-Failed-Recipients") is not None:
        return "delivery_report"
    auto = (_header(msg, "Auto-Submitted") or "").strip().split(";")[0].strip().lower()
    if auto and auto != "no":
        return "auto_submitted"
    if any(msg.get(h) is not None for h in ("X-Autoreply", "X-Autorespond")):
        return "auto_submitted"
    if msg.get("X-Auto-Response-Suppress") is not None and any(
        msg.get(h) is not None for h in _EXCHANGE_GENERATED
    ):
        # Exchange's own replies (out-of-office, rule replies) asking not to be answered,
        # with Exchange's marks of a mailbox rule having made them; some carry no
        # Auto-Submitted at all.
        return "auto_submitted"
    precedence = (_header(msg, "Precedence") or "").strip().lower()
    if precedence in ("bulk", "junk", "list"):
        return "precedence"
    if precedence == "auto_reply":
        return "auto_submitted"
    if any(key.lower().startswith("list-") for key in msg):
        return "mailing_list"
    return_path = _header(msg, "Return-Path")
    if return_path is not None and return_path.strip() in ("<>", ""):
        return "null_sender"
    if sender.address is None:
        return "no_sender"
    if sender.address in own and (reply_to is None or reply_to.address in own):
        # A site's form mailer sending as us with the customer in Reply-To is a customer.
        return "own_address"
    return None


# --- body ----------------------------------------------------------------------------------


@dataclass(slots=True)
class _Parts:
    plain: list[str] = field(default_factory=list)
    html: list[str] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    forwarded: list[str] = field(default_factory=list)

    def text(self) -> str:
        if any(t.strip() for t in self.plain):
            return "\n\n".join(t.strip() for t in self.plain if t.strip())
        return "\n\n".join(h for h in (html_to_text(x) for x in self.html) if h.strip())


def _unflow(text: str, delsp: bool) -> str:
    """RFC 3676 format=flowed: a line ending in a space continues on the next one of the
    same quote depth. Lines of different depth are never joined (4.5): a reply written
    under a quoted line that ends in a space stays a line of its own."""
    out: list[str] = []
    joining = False
    depth = 0
    for raw in text.split("\n"):
        line = raw.rstrip("\r")
        marks = len(line) - len(line.lstrip(">"))
        body = line[marks:]
        if body.startswith(" "):
            body = body[1:]  # space-stuffing (after the quote marks, if any)
        if joining and out and marks == depth:
            out[-1] += body
        else:
            out.append(("> " * marks) + body if marks else body)
        depth = marks
        joining = body.endswith(" ") and body != "-- "
        if joining and delsp:
            out[-1] = out[-1][:-1]
    return "\n".join(out)


def _text_of(part: Message) -> str:
    payload = part.get_payload(decode=True)
    data = payload if isinstance(payload, bytes) else b""
    charset = part.get_content_charset()
    if (
        charset is None
        and part.get_content_type() == "text/html"
        and (m := _META_CHARSET.search(data[:4096])) is not None
    ):
        charset = m.group(1).decode("ascii", "replace")
    text = decode_bytes(data, charset).replace("\r\n", "\n")
    if part.get_content_type() == "text/plain" and part.get_param("format") == "flowed":
        delsp = str(part.get_param("delsp") or "").lower() == "yes"
        text = _unflow(text, delsp)
    return text


_RAW_NAME = re.compile(r"""(?:^|;)\s*(?:file)?name\s*=\s*"([^"]*)\"""", re.IGNORECASE)


def _raw_filename(part: Message) -> str | None:
    """The file name as the raw header holds it: get_filename() turns undeclared 8-bit
    bytes (raw UTF-8 in Yahoo's file names) into replacement characters, the raw header
    keeps them for decode_header_value to read."""
    for name in ("Content-Disposition", "Content-Type"):
        raw = _header(part, name)
        if raw and (m := _RAW_NAME.search(raw)):
            return m.group(1)
    return None


def _attachment(part: Message) -> Attachment:
    ctype = part.get_content_type()
    name = part.get_filename()
    if name and "\ufffd" in name:
        name = _raw_filename(part) or name
    decoded = decode_header_value(name) if name else None
    size: int | None
    if ctype == "message/rfc822":
        inner = part.get_payload()
        first = inner[0] if isinstance(inner, list) and inner else None
        if decoded is None and isinstance(first, Message):
            decoded = (decode_header_value(_header(first, "Subject")) or "message") + ".eml"
        try:
            size = len(first.as_bytes()) if isinstance(first, Message) else None
        except Exception:
            size = None
    else:
        payload = part.get_payload(decode=True)
        size = len(payload) if isinstance(payload, bytes) else None
    return Attachment(name=decoded or None, content_type=ctype, size=size)


def _collect(part: Message, into: _Parts, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise MalformedMail(f"MIME nesting deeper than {MAX_DEPTH}")
    ctype = part.get_content_type()
    if part.is_multipart() and ctype != "message/rfc822":
        children = [p for p in part.get_payload() if isinstance(p, Message)]
        if ctype == "multipart/alternative":
            options = []
            for child in children:
                bucket = _Parts()
                _collect(child, bucket, depth + 1)
                options.append(bucket)
            chosen = next((o for o in options if any(t.strip() for t in o.plain)), None)
            chosen = chosen or next((o for o in options if o.html), None)
            chosen = chosen or (options[-1] if options else None)
            if chosen is not None:
                into.plain += chosen.plain
                into.html += chosen.html
                into.attachments += chosen.attachments
            return
        for child in children:
            _collect(child, into, depth + 1)
        return
    if ctype == "message/rfc822" and depth < MAX_FORWARD_DEPTH:
        inner = part.get_payload()
        first = inner[0] if isinstance(inner, list) and inner else None
        if isinstance(first, Message):
            into.forwarded.append(_forwarded_text(first, depth))
    disposition = part.get_content_disposition()
    is_text = ctype in ("text/plain", "text/html")
    if is_text and disposition != "attachment" and part.get_filename() is None:
        (into.plain if ctype == "text/plain" else into.html).append(_text_of(part))
        return
    into.attachments.append(_attachment(part))


def _forwarded_text(inner: Message, depth: int) -> str:
    """A forwarded message as a seller reads it: who, what about, and its new text.

    Thunderbird's "Forward as attachment" (and Outlook's "Forward as attachment") leaves the
    customer's own text empty and puts everything in a message/rfc822 part; dropping it
    would lose the request itself."""
    bucket = _Parts()
    _collect(inner, bucket, depth + 1)
    lines = [FORWARDED_HEAD]
    for name, label in (("From", "От"), ("Date", "Дата"), ("Subject", "Тема")):
        if value := decode_header_value(_header(inner, name)):
            lines.append(f"{label}: {value}")
    text = trim_quoted(bucket.text())
    return "\n".join(lines) + ("\n\n" + text if text else "")


def _cap(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1].rstrip() + "…"


# --- the whole message ---------------------------------------------------------------------


def parse_mail(raw: bytes, own_addresses: frozenset[str] = frozenset()) -> Mail:
    """Read a raw message; MalformedMail when it cannot be read as mail at all."""
    if not raw.strip():
        raise MalformedMail("empty message")
    msg = email.message_from_bytes(raw)
    if not any(msg.get(h) is not None for h in ("From", "Date", "Message-ID", "Subject")):
        raise MalformedMail("no message headers")
    senders = _addresses(_header(msg, "From"))
    sender = senders[0] if senders else Address(None, None)
    reply_tos = [a for a in _addresses(_header(msg, "Reply-To")) if a.address]
    reply_to = reply_tos[0] if reply_tos else None
    own_ids = message_ids(_header(msg, "Message-ID"))
    parts = _Parts()
    _collect(msg, parts, 0)
    headers = {h: decode_header_value(v) for h in AUDIT_HEADERS if (v := _header(msg, h))}
    return Mail(
        message_id=own_ids[0] if own_ids else _derived_id(msg, raw),
        message_id_derived=not own_ids,
        sender=sender,
        reply_to=reply_to,
        to=tuple(a.address for a in _addresses(_header(msg, "To")) if a.address),
        subject=decode_header_value(_header(msg, "Subject")),
        date=_date(msg),
        thread_ids=_thread_ids(msg),
        references=tuple(message_ids(_header(msg, "References")))[-MAX_THREAD_IDS:],
        body=_cap(trim_quoted(parts.text())),
        forwarded=_cap("\n\n".join(parts.forwarded)),
        attachments=tuple(parts.attachments),
        not_customer=not_customer_reason(msg, sender, own_addresses, reply_to),
        headers=headers,
    )

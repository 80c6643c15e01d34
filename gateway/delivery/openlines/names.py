"""The customer's name as Open Lines takes it.

imconnector.send.messages: "`name` and `last_name` can contain letters, spaces, hyphens,
and apostrophes. Numbers and other special characters are not allowed. The maximum
length ... is 25 characters." Messenger display names are anything but that («Ваня 🚜»,
«ivan_1987», «ООО "Ромашка"»), so they are cleaned: other characters become spaces,
typographic apostrophes become ', the parts are split as the CRM delivery splits ФИО
(gateway.delivery.b24mapping.split_name), and each is cut to 25 at a word boundary. A name
with nothing left (only emoji or digits) becomes the fallback (the channel's label).
"""

from __future__ import annotations

import re
import unicodedata

from gateway.delivery.b24mapping import split_name

MAX_NAME = 25
_APOSTROPHES = str.maketrans({"’": "'", "ʼ": "'", "‘": "'", "`": "'", "´": "'"})
_SPACES = re.compile(r"\s+")
_EDGES = re.compile(r"^[\s'-]+|[\s'-]+$")


def clean(text: str | None) -> str:
    """Letters, spaces, hyphens and apostrophes only; runs of anything else one space."""
    if not text:
        return ""
    text = unicodedata.normalize("NFC", text).translate(_APOSTROPHES)
    kept = "".join(c if c.isalpha() or c in "-'" else " " for c in text)
    words = [_EDGES.sub("", w) for w in _SPACES.split(kept)]
    return " ".join(w for w in words if w)


def cut(text: str, limit: int = MAX_NAME) -> str:
    """At most `limit` characters, ending at a word boundary when there is one."""
    if len(text) <= limit:
        return text
    head = text[:limit]
    if text[limit] != " " and " " in head:
        head = head.rsplit(" ", 1)[0]
    return _EDGES.sub("", head)


def user_names(full: str | None, fallback: str, order: str = "auto") -> tuple[str, str]:
    """(name, last_name) for Open Lines; never an empty name."""
    parts = split_name(clean(full), order)
    first = " ".join(p for p in (parts.get("NAME"), parts.get("SECOND_NAME")) if p)
    name = cut(first) if len(first) <= MAX_NAME else cut(parts.get("NAME", ""))
    last = cut(parts.get("LAST_NAME", ""))
    if not name:
        name, last = cut(clean(fallback)) or "Client", last
    return name, last

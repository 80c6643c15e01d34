"""Text that is safe to put in front of a person: a terminal, a log line, a stored header.

Whatever a customer or an attacker typed (a form name, a header, a comment) can carry
terminal escape sequences (ESC [ 2 J clears the screen, OSC 8 makes a fake link), a
carriage return that overwrites what is already on the line, a newline that forges a
second log line, or bidirectional overrides that show text in another order than it is.
These helpers make every such character visible as an escape instead of obeying it.
"""

from __future__ import annotations

import json
import re

# C0 controls, DEL, C1 controls, and the Unicode format characters that reorder or hide
# text (bidi embeddings, overrides and isolates; zero-width joiners; the BOM).
_ABOVE_C0 = "\x7f-\x9f\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff"
_UNSAFE = re.compile(f"[\x00-\x1f{_ABOVE_C0}]")
_UNSAFE_ABOVE_C0 = re.compile(f"[{_ABOVE_C0}]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}"


def escape_controls(text: str) -> str:
    """Every control or reordering character as a visible escape: one line, shown as is."""
    return _UNSAFE.sub(_escape, text)


def escape_controls_multiline(text: str) -> str:
    """Like escape_controls, but newlines stay (a traceback is many lines on purpose)."""
    return "\n".join(escape_controls(line) for line in text.split("\n"))


def printable(text: str | None) -> str:
    """For the terminal (`leadgate leads list`): the text with controls made visible."""
    return escape_controls(text) if text else ""


def storable(text: str) -> str:
    """A header value as received (aiohttp decodes bytes that are not UTF-8 to lone
    surrogates) turned into text any JSON encoder and database takes: bytes that were not
    UTF-8 become \\xNN escapes."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return text


def header_bytes(text: str) -> bytes:
    """A header value as the bytes the client sent, for constant-time comparison: a value
    that is not UTF-8 compares unequal instead of raising."""
    return text.encode("utf-8", "surrogateescape")


def json_text(value: object) -> str:
    """Indented JSON for a terminal: readable Cyrillic, but every control or reordering
    character as a \\uXXXX escape (json.dumps leaves C1 controls and bidi overrides raw)."""
    text = json.dumps(value, ensure_ascii=False, indent=2)  # C0 inside strings: escaped
    return _UNSAFE_ABOVE_C0.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def ascii_digits(text: str) -> bool:
    """A non-empty run of the digits 0-9 and nothing else.

    str.isdigit() also says yes to "²", "①" and "𝟕", which int() then refuses (a
    ValueError that used to surface as a 500), and int() reads "３" and "٣" as 3, so two
    spellings of one id would become one key. Ids and indexes in vendor payloads are ASCII.
    """
    return text.isascii() and text.isdigit()

"""Bytes and headers to text, the way Russian mail really arrives.

Declared charsets are often misspelt ("win-1251", "cp-1251", "x-cp1251") or missing, and
some mailers put raw 8-bit windows-1251 into headers without RFC 2047. Everything here
degrades to a best guess with replacement characters; nothing raises on bad input.
"""

from __future__ import annotations

import codecs
import re
from email.header import decode_header

# Spellings seen in the wild that Python's codec registry does not know.
_ALIASES = {
    "win-1251": "cp1251",
    "windows1251": "cp1251",
    "cp-1251": "cp1251",
    "x-cp1251": "cp1251",
    "x-win-1251": "cp1251",
    "win1251": "cp1251",
    "koi8r": "koi8_r",
    "koi-8-r": "koi8_r",
    "x-koi8-r": "koi8_r",
    "koi8-ru": "koi8_u",
    "x-mac-cyrillic": "mac_cyrillic",
    "unicode-1-1-utf-7": "utf-7",
    "x-unknown": "",
    "unknown-8bit": "",
    "x-user-defined": "",
    "default": "",
}

_CYRILLIC_LOWER = re.compile("[а-яё]")
_CYRILLIC_UPPER = re.compile("[А-ЯЁ]")


def codec_for(charset: str | None) -> str | None:
    """A Python codec name for a declared charset, or None when it is unknown or absent."""
    if not charset:
        return None
    name = charset.strip().strip('"').lower()
    name = _ALIASES.get(name, name)
    if not name:
        return None
    try:
        return codecs.lookup(name).name
    except LookupError:
        return None


def _cyrillic_score(text: str) -> float:
    # Real Russian text is mostly lower-case; KOI8-R read as cp1251 (or the reverse) comes
    # out mostly upper-case with odd symbols, which is how the two are told apart.
    lower = len(_CYRILLIC_LOWER.findall(text))
    upper = len(_CYRILLIC_UPPER.findall(text))
    return lower - 2 * upper - 3 * text.count("\ufffd")


def guess_decode(data: bytes) -> str:
    """Undeclared bytes: UTF-8 if it is valid UTF-8, else the likelier of cp1251 and KOI8-R."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.reason == "unexpected end of data":
            # UTF-8 cut in the middle of its last character (a mailer truncating a long
            # header, as Yahoo did with a Russian file name): UTF-8 it is.
            return data[: exc.start].decode("utf-8") + "\ufffd"
    candidates = [data.decode(codec, errors="replace") for codec in ("cp1251", "koi8_r")]
    return max(candidates, key=_cyrillic_score)


def decode_bytes(data: bytes, charset: str | None) -> str:
    """Decode with the declared charset, falling back to a guess when it is absent or wrong."""
    codec = codec_for(charset)
    if codec is not None:
        if codec in ("ascii", "us-ascii"):
            # "us-ascii" declared over 8-bit text is a classic of old mailers.
            codec = "utf-8" if _is_utf8(data) else None
        if codec is not None:
            try:
                return data.decode(codec)
            except UnicodeDecodeError:
                if codec != "utf-8" and _is_utf8(data):
                    return data.decode("utf-8")
                # A wrong declaration (cp1251 sent as "utf-8"): the better-reading wins.
                candidates = [data.decode(codec, errors="replace"), guess_decode(data)]
                return max(candidates, key=_cyrillic_score)
    return guess_decode(data)


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _unescape(raw: str) -> str:
    """Header text as parsed from bytes keeps undecodable bytes as surrogates: recover them."""
    if not any("\udc80" <= ch <= "\udcff" for ch in raw):
        return raw
    return guess_decode(raw.encode("utf-8", errors="surrogateescape"))


# Encoded words inside quotes ("=?utf-8?B?...?=" <a@b>) are not decoded by strict parsers,
# but Outlook and many web mailers write them; decode_header handles them once unquoted.
_QUOTED_WORD = re.compile(r'"(\s*=\?[^?]+\?[bBqQ]\?[^?]*\?=\s*)+"')


def decode_header_value(raw: str | None) -> str:
    """An RFC 2047 header (or raw 8-bit one) to text, whitespace folded to single spaces."""
    if raw is None:
        return ""
    text = _unescape(str(raw))
    text = _QUOTED_WORD.sub(lambda m: m.group(0)[1:-1], text)
    try:
        parts = decode_header(text)
    except Exception:  # a malformed encoded word: keep the text as it is
        return _fold(text)
    out: list[str] = []
    for chunk, charset in parts:
        if isinstance(chunk, bytes):
            out.append(decode_bytes(chunk, charset) if charset else _unencoded(chunk))
        else:
            out.append(chunk)
    return _fold("".join(out))


def _unencoded(chunk: bytes) -> str:
    # decode_header hands back the text between encoded words as raw-unicode-escape bytes.
    try:
        return chunk.decode("raw-unicode-escape")
    except UnicodeDecodeError:
        return chunk.decode("latin-1")


def _fold(text: str) -> str:
    # Raw 8-bit headers decoded with raw-unicode-escape can carry lone surrogates, which no
    # JSON encoder or SQLite text column takes: replace them, or the message sticks forever.
    return " ".join(text.split()).encode("utf-8", "replace").decode("utf-8")

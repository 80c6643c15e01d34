"""Form bodies (urlencoded, multipart) read as text in the charset the browser really used.

A browser posts a form in the charset of the page it is on unless the form says
`accept-charset`, and says nothing about it in the request. Many Russian sites still serve
windows-1251 pages: their forms arrive as cp1251 bytes, which a UTF-8 reading turns into
U+FFFD ("mojibake") or refuses. So, for a body that names no charset: every value is read
as UTF-8 when all of them are valid UTF-8, else as windows-1251 when all of them are valid
windows-1251 (Cyrillic text in cp1251 is practically never valid UTF-8), else the request
is refused with 400 `invalid_charset` — never stored garbled. A charset the client names
(`; charset=koi8-r`, a part's own Content-Type) is used as given.
"""

from __future__ import annotations

import codecs
from typing import Any
from urllib.parse import unquote_to_bytes

from aiohttp import BodyPartReader, hdrs, web

from gateway.errors import ApiError

FALLBACK_CHARSET = "cp1251"  # windows-1251: the legacy charset of Russian websites
MAX_FIELDS = 1000
CHUNK = 64 * 1024

_UNREADABLE = (
    "form body is neither UTF-8 nor windows-1251 text; post it as UTF-8 "
    '(accept-charset="utf-8" on the <form>)'
)


def _decode_all(values: list[bytes], charset: str | None) -> list[str]:
    """The values as text, all in one charset (see the module docstring)."""
    if charset:
        try:
            info = codecs.lookup(charset)
        except LookupError:
            raise ApiError(400, "invalid_form", f"unknown charset {charset[:40]!r}") from None
        # Only text encodings a browser could have used: "unicode_escape" and friends would
        # interpret backslashes in the visitor's text, rot13/base64 are not charsets at all.
        if not info._is_text_encoding or "escape" in info.name or info.name == "undefined":
            raise ApiError(400, "invalid_form", f"unsupported charset {charset[:40]!r}")
    for name in [charset] if charset else ["utf-8", FALLBACK_CHARSET]:
        try:
            return [v.decode(name) for v in values]
        except UnicodeDecodeError:
            continue
    detail = f"form body is not valid {charset} text" if charset else _UNREADABLE
    raise ApiError(400, "invalid_charset", detail)


def _unquote(part: bytes) -> bytes:
    return unquote_to_bytes(part.replace(b"+", b" "))


def _split_urlencoded(raw: bytes) -> list[tuple[bytes, bytes]]:
    pairs = []
    for item in raw.strip().split(b"&"):
        if not item:
            continue
        key, _, value = item.partition(b"=")
        pairs.append((_unquote(key), _unquote(value)))
        if len(pairs) > MAX_FIELDS:
            raise ApiError(400, "invalid_form", f"more than {MAX_FIELDS} form fields")
    return pairs


async def read_urlencoded(request: web.Request) -> list[tuple[str, str]]:
    raw = await request.read()  # bounded by the app's client_max_size
    pairs = _split_urlencoded(raw)
    texts = _decode_all([b for pair in pairs for b in pair], _named_charset(request))
    return [(texts[2 * i], texts[2 * i + 1]) for i in range(len(pairs))]


async def read_multipart(request: web.Request, limit: int) -> list[tuple[str, Any]]:
    """[(name, text)] for plain fields, [(name, {"name", "type"})] for files (their bytes are
    read and dropped: forms keep no files). Refuses more than `limit` bytes in all."""
    reader = await request.multipart()
    total = 0
    fields: list[tuple[str, bytes, str | None]] = []
    files: list[tuple[str, dict[str, str]]] = []
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            raise ApiError(400, "invalid_form", "nested multipart bodies are not accepted")
        if len(fields) + len(files) >= MAX_FIELDS:
            raise ApiError(400, "invalid_form", f"more than {MAX_FIELDS} form fields")
        if part.name is None:
            raise ApiError(400, "invalid_form", "a form part has no name (Content-Disposition)")
        name = part.name
        data = bytearray()
        while chunk := await part.read_chunk(CHUNK):
            total += len(chunk)
            if total > limit:
                raise ApiError(413, "body_too_large", f"body larger than {limit} bytes")
            if part.filename is None:
                data.extend(chunk)
        ctype = part.headers.get(hdrs.CONTENT_TYPE)
        if part.filename is not None:
            meta = {"name": part.filename, "type": ctype or "application/octet-stream"}
            files.append((name, meta))
            continue
        if ctype is not None and not ctype.lower().startswith("text/"):
            continue  # a typed part that is no file (JSON, binary): not a form field
        value = bytes(part.decode(bytes(data)))  # Content-Transfer-Encoding (base64, QP)
        charset = (part.get_charset(default="") or None) if ctype else None
        fields.append((name, value, charset))
    # Parts naming their charset keep it; the rest are read together, in one charset.
    plain = [value for _, value, charset in fields if charset is None]
    decoded_plain = iter(_decode_all(plain, None)) if plain else iter(())
    out: list[tuple[str, Any]] = []
    for name, value, charset in fields:
        text = next(decoded_plain) if charset is None else _decode_all([value], charset)[0]
        out.append((name, text))
    return out + files


def _named_charset(request: web.Request) -> str | None:
    return request.charset or None

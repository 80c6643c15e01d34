"""BB-code both ways: a seller's answer as plain text for the customer's messenger, and a
customer's text made inert before it is shown in the seller's chat.

Open Lines hands the operator's message over in Bitrix24's BB-code
(api-reference/chats/messages/formatting): `[b]Анна:[/b] [br]Здравствуйте!` — the
signature in bold, then [br] for the line break. Messengers do not read BB-code, so the
tags go: [br] becomes a line break, a link keeps its text and address, a mention its name,
a quote its text after «»; every other tag is dropped, its text kept.

The other way, Bitrix24 renders whatever BB-code the customer typed: [URL=…]Оплатить[/URL]
disguises a link, [USER=1] mentions (and notifies) an employee, [CHAT=…] links a chat,
[SEND=…]/[PUT=…] make buttons that post text as the seller. `neutralize` replaces the "["
of anything shaped like a tag with "［" (FULLWIDTH LEFT SQUARE BRACKET): Bitrix24 parses
no tag in it, and the seller still reads what the customer wrote.
"""

from __future__ import annotations

import html
import re

_BR = re.compile(r"\[br\]", re.IGNORECASE)
_URL_NAMED = re.compile(r"\[url=([^\]]+)\](.*?)\[/url\]", re.IGNORECASE | re.DOTALL)
_URL_BARE = re.compile(r"\[url\](.*?)\[/url\]", re.IGNORECASE | re.DOTALL)
_NAMED = re.compile(
    r"\[(user|chat|send|put|context|call|pch|disk)=[^\]]*\](.*?)\[/\1\]",
    re.IGNORECASE | re.DOTALL,
)
_QUOTE = re.compile(r"\[quote\](.*?)\[/quote\]", re.IGNORECASE | re.DOTALL)
_ICON = re.compile(r"\[icon=[^\]]*\]", re.IGNORECASE)
_TAG = re.compile(
    r"\[/?(?:b|i|u|s|color|size|font|left|right|center|justify|code)(?:=[^\]]*)?\]", re.IGNORECASE
)


def _link(match: re.Match[str]) -> str:
    url, label = match.group(1).strip(), match.group(2).strip()
    return url if not label or label == url else f"{label} ({url})"


def to_plain(text: str) -> str:
    out = _BR.sub("\n", text)
    out = _URL_NAMED.sub(_link, out)
    out = _URL_BARE.sub(lambda m: m.group(1).strip(), out)
    out = _NAMED.sub(lambda m: m.group(2), out)
    out = _QUOTE.sub(lambda m: f"«{m.group(1).strip()}»", out)
    out = _ICON.sub("", out)
    out = _TAG.sub("", out)
    # Bitrix24 escapes HTML in stored messages now and then (&quot;, &amp;).
    out = html.unescape(out)
    lines = [line.rstrip() for line in out.split("\n")]
    return "\n".join(lines).strip()


# "[" then (after optional spaces) an optional "/" and a letter or "*": every BB tag
# Bitrix24 knows ([B], [/URL], [USER=1], [SEND=…], [*]), whatever its case, and no
# ordinary bracket ("[1]", "[см. выше]" keep theirs).
_TAG_START = re.compile(r"\[(?=\s*/?\s*[A-Za-z*])")
INERT_BRACKET = "\uff3b"


def neutralize(text: str) -> str:
    """Customer text that Bitrix24 shows as typed: no tag in it is a tag any more."""
    return _TAG_START.sub(INERT_BRACKET, text)

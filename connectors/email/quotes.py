"""Cut quoted history out of a reply, so a seller reads what the customer just wrote.

Only history that can be told apart is cut: "> " lines, and everything below a reply
header ("-----Original Message-----", Outlook's «От: / Отправлено:» block, «… пишет:»,
"On … wrote:", Yandex's «12.01.2026, 10:00, "Иван" <ivan@mail.ru>:», Mail.ru's
«Понедельник, 12 января 2026, 10:00 +03:00 от Иван <ivan@mail.ru>:»). Forwarded mail is
kept: a customer forwarding something means it to be read. When cutting would leave
nothing, the text is returned as it was.
"""

from __future__ import annotations

import re

_SEPARATORS = re.compile(
    r"^\s*(-{2,}\s*(original message|исходное сообщение|оригинальное сообщение)\s*-{2,}"
    r"|_{20,})\s*$",
    re.IGNORECASE,
)
_ATTRIBUTION_END = re.compile(
    r"(wrote|writes|пишет|написал|написала|написал\(а\)|schrieb|a écrit)\s*:\s*$", re.IGNORECASE
)
_ATTRIBUTION_START = re.compile(r"^\s*(on|в|le|am)\s", re.IGNORECASE)
# 12.01.2026, 10:00, "Иван" <ivan@mail.ru>:   (Yandex)  /  2026-01-12 10:00 GMT+03:00, …:
_DATED = re.compile(r"^\s*(\d{1,2}[./]\d{1,2}[./]\d{2,4}|\d{4}-\d\d-\d\d)[ ,].*[@<].*:\s*$")
# Понедельник, 12 января 2026, 10:00 +03:00 от Иван <ivan@mail.ru>:   (Mail.ru)
_MAILRU = re.compile(r"\d{4}.*\sот\s.*[@<].*:\s*$", re.IGNORECASE)
_HEADER_FROM = re.compile(r"^\s*\**(from|от|отправитель)\s*:\**\s*\S", re.IGNORECASE)
_HEADER_REST = re.compile(
    r"^\s*\**(sent|date|to|subject|cc|отправлено|дата|кому|тема|копия)\s*:", re.IGNORECASE
)


def _is_outlook_header(lines: list[str], i: int) -> bool:
    if not _HEADER_FROM.match(lines[i]):
        return False
    following = [ln for ln in lines[i + 1 : i + 6] if ln.strip()]
    return sum(1 for ln in following[:4] if _HEADER_REST.match(ln)) >= 2


# Attribution lines are short; the patterns above backtrack polynomially on long lines
# (a 40 KB one-line body took a minute), so longer lines are never attributions.
MAX_ATTRIBUTION = 300


def _is_attribution(lines: list[str], i: int) -> bool:
    line = lines[i].strip()
    if not line or len(line) > MAX_ATTRIBUTION:
        return False
    if _ATTRIBUTION_END.search(line) or _DATED.match(line) or _MAILRU.search(line):
        return True
    # "On Mon, 12 Jan 2026 at 10:00, Ivan <ivan@example.ru>" wrapped onto a second line.
    if i + 1 < len(lines) and _ATTRIBUTION_START.match(line):
        following = lines[i + 1].strip()
        return len(following) <= MAX_ATTRIBUTION and bool(_ATTRIBUTION_END.search(following))
    return False


def history_start(lines: list[str]) -> int | None:
    """Index of the first line of quoted history below the new text, or None."""
    for i, line in enumerate(lines):
        if _SEPARATORS.match(line) or _is_outlook_header(lines, i) or _is_attribution(lines, i):
            return i
    return None


def trim_quoted(text: str) -> str:
    """The new part of a reply; the whole text when no new part can be told apart."""
    lines = text.splitlines()
    start = history_start(lines)
    if start is not None:
        lines = lines[:start]
    kept = [ln for ln in lines if not ln.lstrip().startswith(">")]
    result = _tidy(kept)
    return result if result else _tidy(text.splitlines())


def _tidy(lines: list[str]) -> str:
    out: list[str] = []
    for line in lines:
        line = line.rstrip()
        if not line and (not out or not out[-1]):
            continue
        out.append(line)
    while out and not out[-1]:
        out.pop()
    return "\n".join(out)

"""Cut quoted history out of a reply, so a seller reads what the customer just wrote.

Only history that can be told apart is cut: "> " lines, and everything below a reply
header ("-----Original Message-----", Outlook's «От: / Отправлено:» block and Outlook.com's
"Date: / Subject: / From: / To:" one, «… пишет:», "On … wrote:", Yandex's «12.01.2026, 10:00,
"Иван" <ivan@mail.ru>:», Mail.ru's «Понедельник, 12 января 2026, 10:00 +03:00 от Иван
<ivan@mail.ru>:», Gmail's «ср, 30 апр. 2025 г. в 15:19, Иван <…>:», Android Gmail's
«пт, 12 янв. 2024 г., 10:00 Иван <…>:» and its older «02.04.2012 14:20 пользователь "…" <…>
написал:», Apple Mail's «12 янв. 2024 г., в 10:00, Иван <…> написал(а):»), also when the
mail program wrapped the attribution onto a second line. A reply written below the quote
(bottom-posting, or answers between quoted lines) keeps its own lines: only the attribution
and the quoted lines go. Forwarded mail is kept: a customer forwarding something means it
to be read. When cutting would leave nothing, the text is returned as it was.
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
# How a wrapped attribution's first line starts: "On …", «В …», a date, or a weekday.
_ATTRIBUTION_START = re.compile(
    r"^\s*((on|в|le|am)\s|\d{1,2}[./]\d{1,2}[./]\d{2,4}[ ,]|\d{4}-\d\d-\d\d[ ,]"
    r"|[а-яёa-z]{2,3}\.?,\s*\d{1,2}\s|\d{1,2}\s+[а-яё]{3,5}\.?\s+\d{4})",
    re.IGNORECASE,
)
# 12.01.2026, 10:00, "Иван" <ivan@mail.ru>:   (Yandex)  /  2026-01-12 10:00 GMT+03:00, …:
_DATED = re.compile(r"^\s*(\d{1,2}[./]\d{1,2}[./]\d{2,4}|\d{4}-\d\d-\d\d)[ ,].*[@<].*:\s*$")
# Понедельник, 12 января 2026, 10:00 +03:00 от Иван <ivan@mail.ru>:   (Mail.ru)
_MAILRU = re.compile(r"\d{4}.*\sот\s.*[@<].*:\s*$", re.IGNORECASE)
# Gmail, Android Gmail, Apple Mail in Russian: a date written with «г.» (Gmail puts a
# narrow no-break space before it), a time, then who: «ср, 30 апр. 2025 г. в 15:19, Иван
# <ivan@mail.ru>:», «пт, 12 янв. 2024 г., 10:00 Иван <…>:».
_RU_DATED = re.compile(
    r"\d{1,2}\s+[а-яё]{3,8}\.?\s+\d{4}\s*г\..*\d:\d\d.*[@<].*:\s*$", re.IGNORECASE
)
_HEADER_FROM = re.compile(r"^\s*\**(from|от|отправитель)\s*:\**\s*\S", re.IGNORECASE)
_HEADER_REST = re.compile(
    r"^\s*\**(sent|date|to|subject|cc|отправлено|дата|кому|тема|копия)\s*:", re.IGNORECASE
)
_HEADER_WHEN = re.compile(r"^\s*\**(sent|date|отправлено|дата)\s*:", re.IGNORECASE)


def _is_outlook_header(lines: list[str], i: int) -> bool:
    if _HEADER_FROM.match(lines[i]):
        following = [ln for ln in lines[i + 1 : i + 6] if ln.strip()]
        return sum(1 for ln in following[:4] if _HEADER_REST.match(ln)) >= 2
    # Outlook.com (Hotmail) writes the block in another order: Date, Subject, From, To. A
    # block that does not start with From must name the sender and a date to count.
    if not _HEADER_REST.match(lines[i]):
        return False
    block = [ln for ln in lines[i : i + 6] if ln.strip()][:5]
    headers = [ln for ln in block if _HEADER_REST.match(ln) or _HEADER_FROM.match(ln)]
    return (
        len(headers) >= 3
        and any(_HEADER_FROM.match(ln) for ln in headers)
        and any(_HEADER_WHEN.match(ln) for ln in headers)
    )


# Attribution lines are short; the patterns above backtrack polynomially on long lines
# (a 40 KB one-line body took a minute), so longer lines are never attributions.
MAX_ATTRIBUTION = 300


def _is_attribution_text(line: str) -> bool:
    return bool(
        _ATTRIBUTION_END.search(line)
        or _DATED.match(line)
        or _MAILRU.search(line)
        or _RU_DATED.search(line)
    )


def attribution_span(lines: list[str], i: int) -> int:
    """How many lines the attribution starting at line i takes (0: none there)."""
    line = lines[i].strip()
    if not line or len(line) > MAX_ATTRIBUTION:
        return 0
    if _is_attribution_text(line):
        return 1
    # An attribution wrapped onto a second line: "On Mon, 12 Jan 2026 at 10:00, Ivan" /
    # "<ivan@example.ru> wrote:", or Android Gmail's «02.04.2012 14:20 пользователь "…" <» /
    # «ivan@mail.ru> написал:».
    if i + 1 < len(lines) and _ATTRIBUTION_START.match(line):
        joined = f"{line} {lines[i + 1].strip()}"
        if len(joined) <= MAX_ATTRIBUTION and _is_attribution_text(joined):
            return 2
    return 0


def _is_attribution(lines: list[str], i: int) -> bool:
    return attribution_span(lines, i) > 0


def history_start(lines: list[str]) -> int | None:
    """Index of the first line of quoted history below the new text, or None."""
    for i, line in enumerate(lines):
        if _SEPARATORS.match(line) or _is_outlook_header(lines, i) or _is_attribution(lines, i):
            return i
    return None


def _quoted(line: str) -> bool:
    return line.lstrip().startswith(">")


def _answers_below(lines: list[str]) -> bool:
    """Quoted lines first, then the writer's own: a reply written below (or between) the
    quoted lines, which must be kept."""
    filled = [ln for ln in lines if ln.strip()]
    if not filled or not _quoted(filled[0]):
        return False
    return any(not _quoted(ln) for ln in filled)


def trim_quoted(text: str) -> str:
    """The new part of a reply; the whole text when no new part can be told apart."""
    lines = text.splitlines()
    start = history_start(lines)
    if start is not None:
        span = attribution_span(lines, start)
        if span and _answers_below(lines[start + span :]):
            lines = lines[:start] + lines[start + span :]
        else:
            lines = lines[:start]
    kept = [ln for ln in lines if not _quoted(ln)]
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

"""HTML-only mail to readable text, with the stdlib parser.

Why not a library: mail HTML needs only block structure, line breaks, list bullets and
quote depth, and the stdlib parser is forgiving of the broken markup mailers produce.
html2text would add Markdown noise (escapes, link syntax) a seller does not want to read,
and BeautifulSoup would be a dependency for what is ~100 lines here.

Quoted history is kept but marked: text inside <blockquote> or Gmail's "gmail_quote" comes
out as "> " lines, and Outlook's reply header block starts an "-----Original Message-----"
line, so the quote trimmer treats HTML replies the same way as plain ones.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

_SKIP = frozenset({"script", "style", "head", "title", "template", "noscript", "xml", "o:p"})
_BLOCK = frozenset(
    {
        "address", "article", "aside", "blockquote", "center", "dd", "div", "dl", "dt",
        "fieldset", "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5",
        "h6", "header", "hr", "li", "main", "nav", "ol", "p", "pre", "section", "table",
        "tbody", "thead", "tfoot", "tr", "ul",
    }
)  # fmt: skip
_PARAGRAPH = frozenset({"p", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol"})
_VOID = frozenset({"br", "hr", "img", "meta", "link", "input", "col", "area", "base", "wbr"})
_QUOTE_CLASSES = ("gmail_quote", "yahoo_quoted", "moz-cite-prefix")
# Where Outlook (desktop: divRplyFwdMsg, appendonsend; Outlook.com/Hotmail: the
# <hr id="stopSpelling"> above its Date/Subject/From/To block) starts the quoted mail.
_OUTLOOK_REPLY_IDS = ("divrplyfwdmsg", "appendonsend", "stopspelling")
_SPACES = re.compile(r"[ \t\r\n\f\u00a0\u200b]+")
ORIGINAL_MESSAGE = "-----Original Message-----"


class _TextBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[str] = []
        self.line: list[str] = []
        self.skip_depth = 0
        self.pre_depth = 0
        self.quote_depth = 0
        # Open elements with what they started ("quote", "skip", "pre" or ""), so an end tag
        # closes exactly what its start opened.
        self.stack: list[tuple[str, str]] = []
        self.list_kinds: list[str] = []
        self.list_counters: list[int] = []

    # --- output ------------------------------------------------------------------------

    def _prefix(self) -> str:
        return "> " * self.quote_depth

    def newline(self, *, blank: bool = False) -> None:
        text = "".join(self.line)
        if text.strip():
            body = text.rstrip() if self.pre_depth else text.strip()
            self.lines.append(self._prefix() + body)
        self.line = []
        if blank:
            self.lines.append(self._prefix().rstrip())

    def write(self, text: str) -> None:
        if self.skip_depth:
            return
        if self.pre_depth:
            chunks = text.split("\n")
            for i, chunk in enumerate(chunks):
                if i:
                    self.newline()
                self.line.append(chunk)
            return
        text = _SPACES.sub(" ", text)
        if not self.line:
            text = text.lstrip()
        elif self.line[-1].endswith(" ") and text.startswith(" "):
            text = text[1:]
        if text:
            self.line.append(text)

    # --- parser callbacks --------------------------------------------------------------

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        tag = tag.lower()
        attr = {k.lower(): (v or "") for k, v in attrs}
        if tag in _SKIP:
            self.skip_depth += 1
            self.stack.append((tag, "skip"))
            return
        if tag == "br":
            self.newline()
            return
        if tag in _VOID and tag != "hr":
            return
        if tag in _BLOCK:
            self.newline(blank=tag in _PARAGRAPH)
        if attr.get("id", "").lower() in _OUTLOOK_REPLY_IDS:
            self.newline()
            self.lines.append(ORIGINAL_MESSAGE)
        classes = attr.get("class", "").lower()
        kind = ""
        if tag == "blockquote" or any(c in classes for c in _QUOTE_CLASSES):
            self.quote_depth += 1
            kind = "quote"
        elif tag == "pre":
            self.pre_depth += 1
            kind = "pre"
        elif tag in ("ul", "ol"):
            self.list_kinds.append(tag)
            self.list_counters.append(0)
        elif tag == "li":
            if self.list_kinds and self.list_kinds[-1] == "ol":
                self.list_counters[-1] += 1
                self.write(f"{self.list_counters[-1]}. ")
            else:
                self.write("• ")
        elif tag in ("td", "th") and self.line:
            self.write("  ")
        elif tag == "hr":
            self.newline()
            return
        self.stack.append((tag, kind))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag.lower() not in _VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        tag = tag.lower()
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i][0] == tag:
                # Close it and whatever was left open inside (mail HTML is rarely balanced).
                for _, kind in reversed(self.stack[i:]):
                    self._close(kind)
                del self.stack[i:]
                break
        if tag in ("ul", "ol") and self.list_kinds:
            self.list_kinds.pop()
            self.list_counters.pop()
        if tag in _BLOCK:
            self.newline(blank=tag in _PARAGRAPH)

    def _close(self, kind: str) -> None:
        if kind == "skip":
            self.skip_depth = max(0, self.skip_depth - 1)
        elif kind == "quote":
            self.newline()
            self.quote_depth = max(0, self.quote_depth - 1)
        elif kind == "pre":
            self.newline()
            self.pre_depth = max(0, self.pre_depth - 1)

    def handle_data(self, data: str) -> None:
        self.write(data)


def html_to_text(html: str) -> str:
    """Readable plain text of an HTML mail body; never raises on broken markup."""
    builder = _TextBuilder()
    try:
        builder.feed(html)
        builder.close()
    except Exception:  # the stdlib parser is lenient; this is a last resort
        return _SPACES.sub(" ", re.sub(r"<[^>]*>", " ", html)).strip()
    builder.newline()
    lines: list[str] = []
    for line in builder.lines:
        blank = not line.strip("> ")
        if blank and (not lines or not lines[-1].strip("> ")):
            continue  # no leading blank line, at most one in a row
        lines.append(line)
    while lines and not lines[-1].strip("> "):
        lines.pop()
    return "\n".join(lines)

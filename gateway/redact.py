"""Secrets kept out of every text a person sees: logs, /readyz, /ops, outbox errors.

A secret leaks in pieces as often as whole. A CRM that refuses a request echoes its path
("/rest/7/<secret>/batch.json"), percent-encoded or lower-cased on the way; a proxy's
error page quotes the request line; a PBX's URL carries the CTI token in its path. So
each registered secret is found in any of those spellings, and a URL registers every part
of it that is secret (the password in it, the path, path segments and query values that
look like keys), not only the URL as written. Registration is process-wide because the
log handlers are: whoever holds a secret (a sink, a connector, the app) registers it once.
"""

from __future__ import annotations

import re
import threading
from urllib.parse import parse_qsl, urlsplit

MASK = "***"
# Shorter strings are not masked: they would blot out ordinary words and numbers in every
# log line. (Tokens that short are too weak to be worth hiding; leadgate init makes 40.)
MIN_SECRET = 8


def _looks_secret(part: str) -> bool:
    """A URL part that is a key rather than a word: long, or letters mixed with digits."""
    if len(part) < MIN_SECRET:
        return False
    has_digit = any(c.isdigit() for c in part)
    has_alpha = any(c.isalpha() for c in part)
    return len(part) >= 20 or (has_digit and has_alpha)


def _spelled(secret: str) -> str:
    """A pattern for `secret` however it was escaped on the way: characters other than
    letters and digits may come percent-encoded, \\u- or \\x-escaped."""
    out = []
    for ch in secret:
        if ch.isascii() and ch.isalnum():
            out.append(re.escape(ch))
            continue
        variants = [re.escape(ch), re.escape("\\" + ch)]  # JSON's and PHP's "\/" too
        for byte in ch.encode("utf-8"):
            variants.append(f"%{byte:02x}")
            variants.append(f"\\\\x{byte:02x}")
        if ord(ch) < 0x10000:
            variants.append(f"\\\\u{ord(ch):04x}")
        if ch == " ":
            variants.append(r"\+")
        out.append("(?:" + "|".join(variants) + ")")
    return "".join(out)


class SecretMask:
    def __init__(self) -> None:
        self._parts: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._lock = threading.Lock()

    def add(self, secret: str | None) -> None:
        """A secret as a whole (a token, an HMAC key)."""
        if secret and len(secret.strip()) >= MIN_SECRET:
            with self._lock:
                if secret not in self._parts:
                    self._parts.add(secret)
                    self._pattern = None

    def add_url(self, url: str | None) -> None:
        """A URL that holds a secret somewhere: the whole URL, its password, its path (a
        Bitrix24 webhook's "rest/<user>/<secret>"), every path segment and query value
        that looks like a key, and each such segment with the one before it."""
        if not url:
            return
        self.add(url)
        try:
            parts = urlsplit(url)
            password = parts.password
        except ValueError:
            return
        self.add(password)
        path = parts.path.strip("/")
        segments = [s for s in path.split("/") if s]
        if any(_looks_secret(s) for s in segments):
            self.add(path)
        for i, segment in enumerate(segments):
            if _looks_secret(segment):
                self.add(segment)
                if i > 0:
                    self.add(f"{segments[i - 1]}/{segment}")
        for _, value in parse_qsl(parts.query, keep_blank_values=False):
            if _looks_secret(value):
                self.add(value)

    def _compiled(self) -> re.Pattern[str] | None:
        pattern = self._pattern
        if pattern is None and self._parts:
            with self._lock:
                # Longest first: the whole path wins over the segment inside it.
                ordered = sorted(self._parts, key=len, reverse=True)
                pattern = re.compile("|".join(_spelled(p) for p in ordered), re.IGNORECASE)
                self._pattern = pattern
        return pattern

    def __call__(self, text: str) -> str:
        pattern = self._compiled()
        if pattern is None or not text:
            return text
        return pattern.sub(MASK, text)


SECRETS = SecretMask()


def register(secret: str | None) -> None:
    SECRETS.add(secret)


def register_url(url: str | None) -> None:
    SECRETS.add_url(url)


def redact(text: str) -> str:
    """`text` with every registered secret, in any spelling, replaced by ***."""
    return SECRETS(text)

"""X-Hub-Signature-256: HMAC-SHA256 of the raw body under the app secret, in lowercase hex.

Meta signs the bytes it sends, and it sends non-ASCII text escaped (`\\u0436`): the check
runs on the raw body exactly as received, before anything parses it. Re-serialised JSON
would be a different byte string (and for Cyrillic, always a different signature).
"""

from __future__ import annotations

import hashlib
import hmac

from gateway.textsafe import header_bytes

HEADER = "X-Hub-Signature-256"
_PREFIX = b"sha256="


def sign(app_secret: str, body: bytes) -> str:
    """The header value Meta sends for `body` (what tests and the docs' recipe compute)."""
    digest = hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify(app_secret: str, body: bytes, header: str | None) -> bool:
    """Does `header` carry the signature of exactly these bytes? Constant time."""
    if not header:
        return False
    given = header_bytes(header.strip())
    if given[: len(_PREFIX)].lower() != _PREFIX:
        return False
    expected = hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest().encode()
    # Meta writes lowercase hex; an upper-case copy (a proxy, a hand-made test) is the same.
    return hmac.compare_digest(given[len(_PREFIX) :].lower(), expected)

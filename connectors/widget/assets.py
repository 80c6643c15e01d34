"""The widget's script, served from package data: plain modern JavaScript, no build step.

`static/widget.js` is the program, `static/widget.css` its styles. The served script is
the program with the styles filled in as a string, so the page makes one request for it,
and the styles reach the Shadow DOM through a constructable stylesheet (CSSOM, which a
strict CSP allows without 'unsafe-inline'). Browsers without constructable stylesheets
link `/v1/widget/widget.css` instead (then `style-src` must name the gateway).

Built once per process: its gzip form and ETag are computed at startup, not per request.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
from dataclasses import dataclass
from importlib import resources


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    gzipped: bytes
    etag: str
    content_type: str


def _asset(body: bytes, content_type: str) -> Asset:
    # mtime=0: the same bytes on every replica and every start, so ETags agree.
    gzipped = gzip.compress(body, compresslevel=9, mtime=0)
    etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
    return Asset(body, gzipped, etag, content_type)


def _static(name: str) -> str:
    return (resources.files("connectors.widget") / "static" / name).read_text(encoding="utf-8")


# widget.js is one function expression called with its styles: `(css) => {...}` applied
# to this placeholder, replaced by the stylesheet as a JSON string. The file stays valid
# JavaScript on its own, and the page's globals are never touched.
CSS_SLOT = '/*@css*/""'


def script_source() -> str:
    """The script as served: the program, its styles filled in."""
    program = _static("widget.js")
    if program.count(CSS_SLOT) != 1:
        raise RuntimeError(f"widget.js must contain {CSS_SLOT} exactly once")
    return program.replace(CSS_SLOT, json.dumps(_static("widget.css"), ensure_ascii=False))


@functools.cache
def script() -> Asset:
    return _asset(script_source().encode(), "application/javascript")


@functools.cache
def stylesheet() -> Asset:
    return _asset(_static("widget.css").encode(), "text/css")

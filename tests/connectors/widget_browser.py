"""A real browser for the widget tests: Debian's Chromium driven by Playwright, a shop page
served from another origin under a strict CSP, and screenshots compared with references.

The gateway runs in the test's event loop (so the test moves its clock), the shop page on a
second local server on another port: the widget is cross-origin exactly as on a real site.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer
from PIL import Image, ImageChops, ImageStat
from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--font-render-hinting=none",
]
ROOT = Path(__file__).resolve().parents[2]
REFERENCES = ROOT / "tests" / "connectors" / "widget_screens"
DOCS_IMG = ROOT / "docs" / "img"
# UPDATE_WIDGET_SCREENSHOTS=1 rewrites the references (and the docs' copies) from this run.
UPDATE = os.environ.get("UPDATE_WIDGET_SCREENSHOTS") == "1"

PAGE = """<!doctype html>
<html lang="{lang}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Подъёмники для автосервиса</title>
<style nonce="{nonce}">
body {{ margin: 0; padding: 32px; font: 16px/1.5 "DejaVu Sans", sans-serif; background: #f4f5f7;
       color: #222; }}
h1 {{ font-size: 26px; margin: 0 0 12px; }}
.card {{ background: #fff; border: 1px solid #dde1e6; border-radius: 8px; padding: 16px;
         max-width: 520px; margin-bottom: 16px; }}
</style>
</head>
<body>
<h1>Подъёмники для автосервиса</h1>
<div class="card"><p>Двухстоечный подъёмник, 4 т. Доставка и монтаж по России.</p>
<a id="catalog" href="#catalog">Каталог</a></div>
<div class="card"><p>Ножничный подъёмник, 3 т. В наличии на складе в Москве.</p></div>
<script async nonce="{nonce}" src="{gateway}/v1/widget/{widget}.js"></script>
</body>
</html>
"""


def strict_csp(nonce: str, gateway: str) -> str:
    """The policy the docs tell a site to add, as strict as it gets: nonce scripts only,
    no inline styles, Trusted Types, nothing else loaded from anywhere."""
    socket = gateway.replace("http://", "ws://").replace("https://", "wss://")
    return (
        f"default-src 'none'; script-src 'nonce-{nonce}' 'strict-dynamic'; "
        f"style-src 'nonce-{nonce}'; connect-src {gateway} {socket}; img-src 'none'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'; "
        "require-trusted-types-for 'script'; trusted-types 'none'"
    )


@dataclass
class ShopSite:
    """The shop's pages on their own origin; `gateway` is set once the gateway listens."""

    gateway: str = ""
    widget: str = "site"
    server: TestServer | None = None

    @property
    def origin(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.port}"

    async def page(self, request: web.Request) -> web.Response:
        nonce = secrets.token_urlsafe(16)
        html = PAGE.format(
            lang=request.query.get("lang", "ru"),
            nonce=nonce,
            gateway=self.gateway,
            widget=self.widget,
        )
        return web.Response(
            text=html,
            content_type="text/html",
            headers={"Content-Security-Policy": strict_csp(nonce, self.gateway)},
        )


@asynccontextmanager
async def shop_site() -> AsyncIterator[ShopSite]:
    site = ShopSite()
    app = web.Application()
    app.router.add_get("/", site.page)
    site.server = TestServer(app, host="127.0.0.1")
    await site.server.start_server()
    try:
        yield site
    finally:
        await site.server.close()


@dataclass
class Watched:
    """What a page said that it should not have: console errors, uncaught exceptions,
    CSP violations."""

    problems: list[str] = field(default_factory=list)

    def console(self, message: ConsoleMessage) -> None:
        if message.type in ("error", "warning") and "violat" in message.text.lower():
            self.problems.append(f"csp: {message.text}")
        elif message.type == "error":
            self.problems.append(f"console: {message.text}")

    def error(self, exc: Any) -> None:
        self.problems.append(f"page error: {exc}")


CSP_WATCH = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push(`${e.violatedDirective} ${e.blockedURI}`);
});
"""


HAVE_CHROMIUM = Path(CHROMIUM).exists()


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    if not HAVE_CHROMIUM:
        raise AssertionError(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


async def open_page(
    browser: Browser,
    url: str,
    *,
    phone: bool = False,
    locale: str = "ru-RU",
    storage_state: Any = None,
) -> tuple[Page, Watched]:
    context = await browser.new_context(
        viewport={"width": 390, "height": 760} if phone else {"width": 1000, "height": 720},
        device_scale_factor=1,
        is_mobile=phone,
        has_touch=phone,
        locale=locale,
        timezone_id="Europe/Moscow",
        reduced_motion="reduce",
        storage_state=storage_state,
    )
    await context.add_init_script(CSP_WATCH)
    page = await context.new_page()
    watched = Watched()
    page.on("console", watched.console)
    page.on("pageerror", watched.error)
    await page.goto(url)
    return page, watched


async def assert_clean(page: Page, watched: Watched) -> None:
    violations = await page.evaluate("window.__cspViolations")
    assert not violations, f"CSP violations: {violations}"
    assert not watched.problems, "\n".join(watched.problems)


# --- screenshots ----------------------------------------------------------------------------

# Compared at a quarter of the size, where a glyph rendered a pixel differently (another
# FreeType, another hinting) averages away while a moved box, a missing tab or another
# colour does not; a cell counts as different past this mean channel difference.
SCALE = 4
CELL_TOLERANCE = 24
MAX_DIFFERENT_CELLS = 0.02


def difference(actual: Image.Image, reference: Image.Image) -> float:
    """The share of SCALE x SCALE cells whose mean colour differs noticeably (0 to 1)."""
    if actual.size != reference.size:
        return 1.0
    size = (actual.width // SCALE, actual.height // SCALE)
    small = [im.convert("RGB").resize(size, Image.Resampling.BOX) for im in (actual, reference)]
    diff = ImageChops.difference(small[0], small[1]).convert("L")
    histogram = diff.histogram()
    different = sum(histogram[CELL_TOLERANCE + 1 :])
    return different / (size[0] * size[1])


def assert_looks_like(png: bytes, name: str) -> None:
    actual = Image.open(BytesIO(png))
    reference_path = REFERENCES / f"{name}.png"
    if UPDATE:
        REFERENCES.mkdir(parents=True, exist_ok=True)
        reference_path.write_bytes(png)
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(reference_path, DOCS_IMG / f"widget-{name}.png")
        return
    assert reference_path.exists(), (
        f"no reference screenshot {reference_path.name}: run with UPDATE_WIDGET_SCREENSHOTS=1"
    )
    reference = Image.open(reference_path)
    share = difference(actual, reference)
    if share > MAX_DIFFERENT_CELLS:
        failed = reference_path.with_name(f"{name}.actual.png")
        failed.write_bytes(png)
        mean = ImageStat.Stat(
            ImageChops.difference(actual.convert("RGB"), reference.convert("RGB"))
        )
        raise AssertionError(
            f"{name}: {share:.1%} of the picture differs from the reference (allowed "
            f"{MAX_DIFFERENT_CELLS:.0%}; mean channel difference {mean.mean}); this run's "
            f"picture is in {failed}"
        )

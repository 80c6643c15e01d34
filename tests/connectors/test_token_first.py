"""Token first: a webhook whose sender proves itself in a header refuses a request without
it before reading the body, so a stranger learns nothing of how a body would be read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conftest import make_settings
from test_telephony_support import AFTER_HOURS_FILE, sellers, telephony_config

from gateway.web import create_app


async def test_zadarma_without_signature_is_refused_unread(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    telephony = telephony_config(after_hours_ivr=AFTER_HOURS_FILE)
    settings = make_settings(tmp_path, telephony=telephony, sellers=sellers())
    client = await aiohttp_client(create_app(settings))
    for form in ({}, {"event": "NOTIFY_SOMETHING_NEW"}, {"event": "NOTIFY_START"}):
        resp = await client.post("/v1/telephony/zadarma", data=form)
        assert resp.status == 401, (form, await resp.text())
        assert (await resp.json())["error"] == "unauthorized"
    # Not even a body that cannot be read as a form gets further.
    resp = await client.post(
        "/v1/telephony/zadarma",
        data=b"\xff\xfe%%%",
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=nonsense"},
    )
    assert resp.status == 401

"""`leadgate openlines setup`: register, activate, data, events, status — reported step by
step, and idempotent: a second run changes nothing and binds nothing twice."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from b24_openlines_standin import Bitrix24AppStandIn
from openlines_helpers import (
    PUBLIC_URL,
    Client,
    app_client_of,
    gateway,
    install,
    ol_settings,
    openlines_section,
    portal,
)

from gateway.delivery.openlines.steps import EVENTS, StepStatus, run_setup
from gateway.keys import SETTINGS
from gateway.web import create_app

__all__ = ["gateway", "portal"]


async def test_setup_does_every_step_and_reports_it(
    gateway: Client, portal: Bitrix24AppStandIn
) -> None:
    assert (await install(portal, gateway))[0] == 200
    settings = gateway.app[SETTINGS].openlines
    steps = await run_setup(app_client_of(gateway), settings)
    assert [s.name for s in steps] == [
        "app.info",
        "imconnector.register",
        "imconnector.activate",
        "imconnector.connector.data.set",
        *[f"event.bind {e}" for e in EVENTS],
        "imconnector.status",
        "imopenlines.config.get",
    ]
    assert all(s.status in (StepStatus.DONE, StepStatus.ALREADY) for s in steps), steps
    registered = portal.connectors["leadgate"]
    assert registered["PLACEMENT_HANDLER"] == f"{PUBLIC_URL}/v1/openlines/placement"
    assert registered["CHAT_GROUP"] is False
    assert registered["ICON"]["DATA_IMAGE"].startswith("data:image/svg+xml,")
    assert portal.active[("leadgate", 1)] is True
    assert portal.connector_data[("leadgate", 1)]["URL"] == PUBLIC_URL
    for event in EVENTS:
        assert portal.handlers(event) == [f"{PUBLIC_URL}/v1/openlines/events"]
    assert steps[-2].name == "imconnector.status"
    assert "active=True, configured=True" in steps[-2].detail
    assert "disable_crm=Y" in steps[-1].detail  # the tracker is kept out by default


async def test_setup_warns_when_the_tracker_could_make_a_second_lead(
    aiohttp_client: Callable[..., Any], tmp_path: Path, portal: Bitrix24AppStandIn
) -> None:
    client: Client = await aiohttp_client(
        create_app(ol_settings(tmp_path, portal, crm_tracker=True))
    )
    assert (await install(portal, client))[0] == 200
    settings = client.app[SETTINGS].openlines
    steps = await run_setup(app_client_of(client), settings)
    assert steps[-1].status is StepStatus.WARNING
    assert "a second one" in steps[-1].detail
    portal.line_crm["CRM_CREATE"] = "none"  # the line creates nothing by itself
    steps = await run_setup(app_client_of(client), settings)
    assert steps[-1].status is StepStatus.ALREADY


async def test_setup_twice_binds_nothing_twice(gateway: Client, portal: Bitrix24AppStandIn) -> None:
    assert (await install(portal, gateway))[0] == 200
    settings = gateway.app[SETTINGS].openlines
    await run_setup(app_client_of(gateway), settings)
    again = await run_setup(app_client_of(gateway), settings)
    binds = [s for s in again if s.name.startswith("event.bind")]
    assert binds and all(s.status is StepStatus.ALREADY for s in binds)
    assert len(portal.bindings) == len(EVENTS)
    assert again[-2].status is StepStatus.ALREADY


async def test_setup_names_an_old_handler_address(
    gateway: Client, portal: Bitrix24AppStandIn
) -> None:
    assert (await install(portal, gateway))[0] == 200
    portal.bindings.append(
        {"event": "ONIMCONNECTORMESSAGEADD", "handler": "https://old.example/v1/openlines/events"}
    )
    steps = await run_setup(app_client_of(gateway), gateway.app[SETTINGS].openlines)
    step = next(s for s in steps if s.name == "event.bind OnImConnectorMessageAdd")
    assert step.status is StepStatus.WARNING
    assert "https://old.example/v1/openlines/events" in step.detail


async def test_register_refused_inside_a_200_is_a_failure(
    gateway: Client, portal: Bitrix24AppStandIn
) -> None:
    assert (await install(portal, gateway))[0] == 200
    settings = gateway.app[SETTINGS].openlines.model_copy(update={"connector_name": ""})
    steps = await run_setup(app_client_of(gateway), settings)
    assert steps[-1].name == "imconnector.register"
    assert steps[-1].status is StepStatus.FAILED
    assert "refused: NAME_REQUIRED" in steps[-1].detail
    assert "imconnector.activate" not in [s.name for s in steps]  # stopped there


async def test_setup_on_a_line_that_does_not_exist(
    gateway: Client, portal: Bitrix24AppStandIn
) -> None:
    assert (await install(portal, gateway))[0] == 200
    settings = gateway.app[SETTINGS].openlines.model_copy(update={"line": 9})
    steps = await run_setup(app_client_of(gateway), settings)
    assert steps[-1].name == "imconnector.activate"
    assert steps[-1].status is StepStatus.FAILED
    assert "NOT_ACTIVE_LINE" in steps[-1].detail


async def _cli(config: Path, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway.cli",
        "-c",
        str(config),
        "openlines",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def _config(tmp_path: Path, portal: Bitrix24AppStandIn) -> Path:
    section = openlines_section(portal)
    lines = ["[openlines]"] + [f"{k} = {orjson.dumps(v).decode()}" for k, v in section.items()]
    path = tmp_path / "leadgate.toml"
    path.write_text(
        f'[store]\npath = "{tmp_path / "leadgate.db"}"\n' + "\n".join(lines) + "\n",
        encoding="utf-8",
    )
    return path


async def test_the_cli_beside_a_running_gateway(
    gateway: Client, portal: Bitrix24AppStandIn, tmp_path: Path
) -> None:
    config = _config(tmp_path, portal)
    code, out, err = await _cli(config, "status")
    assert code == 1
    assert "not_installed" in out
    assert (await install(portal, gateway))[0] == 200
    code, out, err = await _cli(config, "setup")
    assert code == 0, err
    assert "done     imconnector.register: connector 'leadgate' registered" in out
    assert "Open Lines: ready, chats go to line 1" in out
    code, out, err = await _cli(config, "setup", "--json")
    assert code == 0, err
    report = orjson.loads(out)
    assert report["ok"] is True
    assert {s["status"] for s in report["steps"] if s["step"].startswith("event.bind")} == {
        "already"
    }
    code, out, err = await _cli(config, "status", "--json")
    assert code == 0
    status = orjson.loads(out)
    assert status["state"] == "ready"
    assert status["member_id"] == portal.member_id
    assert portal.client_secret not in out + err
    assert "access_token" not in status and "refresh_token" not in status


async def test_the_cli_without_the_section(tmp_path: Path) -> None:
    config = tmp_path / "leadgate.toml"
    config.write_text(f'[store]\npath = "{tmp_path / "x.db"}"\n', encoding="utf-8")
    code, _, err = await _cli(config, "setup")
    assert code == 2
    assert "[openlines] is not configured" in err

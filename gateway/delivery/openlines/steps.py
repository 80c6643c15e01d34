"""`leadgate openlines setup`: make the portal ready for leadgate's chats, step by step.

Each step says what it did; running it again changes nothing that is already right:
1. app.info            the application is installed, with the scopes it needs;
2. imconnector.register  the connector (id, name, icon, settings page); CHAT_GROUP is
                       false: one chat per customer, the only mode in which Open Lines'
                       CRM tracker runs at all (see docs/delivery/open-lines.md for why
                       leadgate still keeps it from creating leads);
3. imconnector.activate  on the configured line;
4. imconnector.connector.data.set  what the line shows about the channel;
5. event.get + event.bind  the events leadgate handles, to its event URL (only those not
                       bound yet: binding one twice is an error, "Handler already binded");
6. imconnector.status  what the line says now;
7. imopenlines.config.get  the line's CRM settings, read (never changed) and judged:
                       whether Open Lines' tracker could make a second lead for a customer
                       leadgate already made one for.
imconnector.register reports its refusals inside a 200 answer (result.result = false):
that is read as a failure, not as success.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from gateway.delivery.b24client import B24Error
from gateway.delivery.openlines.client import AppClient
from gateway.delivery.openlines.settings import OpenLinesSettings

EVENTS_PATH = "/v1/openlines/events"
INSTALL_PATH = "/v1/openlines/install"
PLACEMENT_PATH = "/v1/openlines/placement"
# The events leadgate handles (event.bind takes the name in any case; event.get answers
# upper case).
EVENTS = (
    "OnImConnectorMessageAdd",
    "OnImConnectorDialogFinish",
    "OnImConnectorStatusDelete",
    "OnAppUninstall",
)
# Scopes of the methods and events used: imconnector.* methods need imopenlines, the
# connector events imconnector; crm for the CRM lead the chat belongs to.
SCOPES = ("imopenlines", "imconnector", "crm")


class StepStatus(StrEnum):
    DONE = "done"  # changed something
    ALREADY = "already"  # was right already
    WARNING = "warning"  # done, but a person should look at something
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Step:
    name: str
    status: StepStatus
    detail: str


def _failed(name: str, exc: B24Error) -> Step:
    return Step(name, StepStatus.FAILED, str(exc))


def register_params(settings: OpenLinesSettings) -> dict[str, Any]:
    return {
        "ID": settings.connector_id,
        "NAME": settings.connector_name,
        "ICON": {
            "DATA_IMAGE": settings.connector_icon,
            "COLOR": settings.connector_color,
            "SIZE": "90%",
            "POSITION": "center",
        },
        "ICON_DISABLED": {"DATA_IMAGE": settings.connector_icon, "COLOR": "#99adb3"},
        "PLACEMENT_HANDLER": settings.url(PLACEMENT_PATH),
        # One chat per customer (group chats skip the CRM tracker and mix customers).
        "CHAT_GROUP": False,
        # Sellers' answers reach the customer signed with their name, as in any other
        # Open Lines channel; system messages (transfers, ratings) do not.
        "NEED_SIGNATURE": True,
        "NEED_SYSTEM_MESSAGES": False,
        "DEL_EXTERNAL_MESSAGES": False,
        "EDIT_INTERNAL_MESSAGES": False,
        "DEL_INTERNAL_MESSAGES": False,
        "NEWSLETTER": False,
    }


async def run_setup(client: AppClient, settings: OpenLinesSettings) -> list[Step]:
    """Every step in order; stops at the first failure (later ones build on it)."""
    steps: list[Step] = []
    for step in (_app_info, _register, _activate, _data_set, _bind_events, _status, _line_crm):
        done = await step(client, settings)
        steps.extend(done)
        if any(s.status is StepStatus.FAILED for s in done):
            break
    return steps


async def _app_info(client: AppClient, settings: OpenLinesSettings) -> Sequence[Step]:
    name = "app.info"
    try:
        info = await client.call("app.info")
    except B24Error as exc:
        return [_failed(name, exc)]
    code = info.get("CODE") if isinstance(info, dict) else None
    if code != settings.client_id:
        return [
            Step(name, StepStatus.FAILED, f"the token belongs to application {code!r}, not ours")
        ]
    tokens = client.keeper.tokens
    granted = {s.strip() for s in (tokens.scope if tokens else "").replace(" ", ",").split(",")}
    missing = [s for s in SCOPES if s not in granted]
    if missing and tokens is not None and tokens.scope:
        return [
            Step(
                name,
                StepStatus.WARNING,
                f"installed, but without the scopes {', '.join(missing)}: add them to the "
                "local application and reinstall it",
            )
        ]
    return [Step(name, StepStatus.ALREADY, f"application {code} is installed")]


async def _register(client: AppClient, settings: OpenLinesSettings) -> Sequence[Step]:
    name = "imconnector.register"
    try:
        result = await client.call(name, register_params(settings))
    except B24Error as exc:
        return [_failed(name, exc)]
    # Refusals come as HTTP 200 {"result": {"result": false, "error": ...}}.
    ok = isinstance(result, dict) and result.get("result") is True
    if not ok:
        error = result.get("error") if isinstance(result, dict) else None
        text = result.get("error_description") if isinstance(result, dict) else None
        detail = f"refused: {error or 'no result'}" + (f" ({text})" if text else "")
        return [Step(name, StepStatus.FAILED, detail)]
    return [Step(name, StepStatus.DONE, f"connector {settings.connector_id!r} registered")]


async def _activate(client: AppClient, settings: OpenLinesSettings) -> Sequence[Step]:
    name = "imconnector.activate"
    params = {"CONNECTOR": settings.connector_id, "LINE": settings.line, "ACTIVE": "1"}
    try:
        result = await client.call(name, params)
    except B24Error as exc:
        return [_failed(name, exc)]
    if result is not True:
        return [Step(name, StepStatus.FAILED, f"unexpected answer {result!r}")]
    await client.keeper.set_line(True, settings.line)
    return [Step(name, StepStatus.DONE, f"active on line {settings.line}")]


async def _data_set(client: AppClient, settings: OpenLinesSettings) -> Sequence[Step]:
    name = "imconnector.connector.data.set"
    params = {
        "CONNECTOR": settings.connector_id,
        "LINE": settings.line,
        "DATA": {
            "ID": f"{settings.connector_id}_{settings.line}",
            "URL": settings.public_url,
            "NAME": settings.connector_name,
        },
    }
    try:
        result = await client.call(name, params)
    except B24Error as exc:
        return [_failed(name, exc)]
    if result is not True:
        return [Step(name, StepStatus.FAILED, f"unexpected answer {result!r}")]
    return [Step(name, StepStatus.DONE, "channel data set")]


async def _bind_events(client: AppClient, settings: OpenLinesSettings) -> Sequence[Step]:
    handler = settings.url(EVENTS_PATH)
    try:
        bound = await client.call("event.get")
    except B24Error as exc:
        return [_failed("event.get", exc)]
    have: dict[str, set[str]] = {}
    for row in bound if isinstance(bound, list) else []:
        if isinstance(row, dict):
            event = str(row.get("event", "")).upper()
            have.setdefault(event, set()).add(str(row.get("handler", "")))
    steps: list[Step] = []
    for event in EVENTS:
        name = f"event.bind {event}"
        handlers = have.get(event.upper(), set())
        others = sorted(h for h in handlers if h != handler)
        note = f"; also bound to {', '.join(others)} (unbind it if it is an old address)"
        if handler in handlers:
            status = StepStatus.WARNING if others else StepStatus.ALREADY
            steps.append(Step(name, status, "already bound" + (note if others else "")))
            continue
        try:
            await client.call("event.bind", {"event": event, "handler": handler})
        except B24Error as exc:
            if "already binded" in str(exc):
                steps.append(Step(name, StepStatus.ALREADY, "already bound"))
                continue
            steps.append(_failed(name, exc))
            return steps
        status = StepStatus.WARNING if others else StepStatus.DONE
        steps.append(Step(name, status, f"bound to {handler}" + (note if others else "")))
    return steps


async def _status(client: AppClient, settings: OpenLinesSettings) -> Sequence[Step]:
    name = "imconnector.status"
    params = {"CONNECTOR": settings.connector_id, "LINE": settings.line}
    try:
        result = await client.call(name, params)
    except B24Error as exc:
        return [_failed(name, exc)]
    if not isinstance(result, dict):
        return [Step(name, StepStatus.FAILED, f"unexpected answer {result!r}")]
    active = bool(result.get("STATUS"))
    configured = bool(result.get("CONFIGURED"))
    error = bool(result.get("ERROR"))
    detail = f"line {settings.line}: active={active}, configured={configured}, error={error}"
    ok = active and configured and not error
    return [Step(name, StepStatus.ALREADY if ok else StepStatus.FAILED, detail)]


async def _line_crm(client: AppClient, settings: OpenLinesSettings) -> Sequence[Step]:
    name = "imopenlines.config.get"
    try:
        config = await client.call(name, {"CONFIG_ID": settings.line})
    except B24Error as exc:
        # Reading the line's settings needs the right to manage lines; the connector
        # works without it, so this is a warning, not a failure.
        return [Step(name, StepStatus.WARNING, f"could not read the line's settings: {exc}")]
    if not isinstance(config, dict):
        return [Step(name, StepStatus.WARNING, f"unexpected answer {config!r}")]
    crm = str(config.get("CRM", ""))
    create = str(config.get("CRM_CREATE", ""))
    tracker = str(config.get("CRM_CHAT_TRACKER", ""))
    seen = f"CRM={crm}, CRM_CREATE={create}, CRM_CHAT_TRACKER={tracker}"
    if not settings.crm_tracker:
        return [
            Step(
                name,
                StepStatus.ALREADY,
                f"line {settings.line}: {seen}; leadgate sends disable_crm=Y with every "
                "message, so Open Lines makes no lead of its own",
            )
        ]
    if crm == "Y" and create in ("lead", "deal"):
        return [
            Step(
                name,
                StepStatus.WARNING,
                f"line {settings.line}: {seen}: with crm_tracker on, Open Lines creates a "
                f"{create} for a customer it does not find by phone or email — a second one "
                "beside leadgate's. Set the line to create them manually, or turn "
                "crm_tracker off",
            )
        ]
    return [Step(name, StepStatus.ALREADY, f"line {settings.line}: {seen}")]

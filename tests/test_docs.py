"""Keep the docs honest: what the code has, the docs name — and the documented JSON is real.

- every key of every config section is in its section of docs/configuration.md: the
  sections are read off the assembled settings model, so a new channel spec's section is
  checked as soon as it is registered;
- docs/openapi.yaml is valid OpenAPI, covers the core routes the app registers (and only
  routes that exist), its schemas have exactly the models' fields, and real responses
  validate against them;
- every CLI command and subcommand appears in the docs, and the core commands' options too;
- every core metric exists in gateway.metrics.Metrics and is described in docs/operations.md.

Channels and delivery document their own routes and metrics; for those this test only
holds the core to account, so their additions do not break it.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

import pytest
import yaml
from aiohttp.test_utils import TestClient
from conftest import ADMIN_AUTH, ORDER_AUTH
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate as validate_openapi
from pydantic import BaseModel

from connectors import orders
from gateway import conversations, models
from gateway.channels import specs
from gateway.cli import build_parser
from gateway.config import Settings, settings_model
from gateway.metrics import Metrics
from gateway.web import create_app

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
CONFIG_DOC = DOCS / "configuration.md"
OPERATIONS_DOC = DOCS / "operations.md"
OPENAPI = DOCS / "openapi.yaml"

# The core's config sections (top-level keys of Settings); the channel specs add theirs.
CORE_SETTINGS = (
    "phone_region",
    "log_level",
    "log_format",
    "server",
    "store",
    "calendar",
    "dedup",
    "assignment",
    "sellers",
    "forms",
    "ratelimit",
    "orders",
    "admin",
    "ops",
    "screen",
    "sources",
    "delivery",
    "inbox",
    "conversations",
    "openlines",
)
# Routes of the core; channel webhooks (/v1/telephony/*, /v1/widget/*, ...) live elsewhere.
CORE_ROUTE_PREFIXES = ("/v1/forms/", "/v1/orders", "/v1/leads", "/v1/openlines/", "/v1/telegram/")
# Channel routes the OpenAPI document describes too (the widget's; its WebSocket is in
# docs/channels/widget.md, OpenAPI has no words for one).
DOCUMENTED_CHANNEL_PREFIXES = ("/v1/widget/",)
CHANNEL_ROUTES_UNDOCUMENTED = {("/v1/widget/{name}/ws", "get")}
CORE_ROUTES = (
    "/healthz",
    "/readyz",
    "/metrics",
    "/ops",
    "/ops/panel",
    "/ops/data",
    "/ops/login",
    "/ops/logout",
)
CORE_METRICS = (
    "leadgate_events_total",
    "leadgate_rejections_total",
    "leadgate_after_hours_events_total",
    "leadgate_junk_leads_total",
    "leadgate_unassigned_leads_total",
    "leadgate_quarantined_total",
    "leadgate_request_seconds",
    "leadgate_ready",
    "leadgate_task_restarts_total",
    "leadgate_websockets_open",
    "leadgate_build_info",
    "leadgate_start_time_seconds",
)
CORE_COMMANDS = ("serve", "init", "check-config", "calendar", "leads", "quarantine", "inbox")
# Nested tables whose keys are documented as a whole elsewhere (weekly hours: calendar.md).
OPAQUE_MODELS = ("WeeklyHours",)

Client = TestClient[Any, Any]


def _corpus() -> str:
    files = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
    return "\n".join(f.read_text(encoding="utf-8") for f in files)


# --- configuration.md ---------------------------------------------------------------


def _section(doc: str, title: str) -> str | None:
    """The text under the heading whose text is `title` (backticks ignored), down to the next
    heading of the same or a higher level; None when there is no such heading."""
    lines = doc.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"(#+)\s+(.*)$", line)
        if m and m.group(2).replace("`", "").strip() == title:
            level = len(m.group(1))
            body = []
            for nxt in lines[i + 1 :]:
                h = re.match(r"(#+)\s", nxt)
                if h and len(h.group(1)) <= level:
                    break
                body.append(nxt)
            return "\n".join(body)
    return None


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside `Model`, `Model | None`, else None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (Union, UnionType):
        found = [m for a in get_args(annotation) if (m := _model_of(a)) is not None]
        return found[0] if found else None
    return None


def _named_tables(model: type[BaseModel]) -> type[BaseModel] | None:
    """The model of the tables a section holds under names of the operator's choice
    (pydantic's typed `__pydantic_extra__`), or None."""
    try:
        extra = get_type_hints(model).get("__pydantic_extra__")
    except (NameError, TypeError):
        return None
    return _model_of(get_args(extra)[1]) if get_origin(extra) is dict else None


def _is_table(annotation: Any) -> bool:
    if get_origin(annotation) is dict:
        inner = _model_of(get_args(annotation)[1])
    else:
        inner = _model_of(annotation)
    return inner is not None and inner.__name__ not in OPAQUE_MODELS


def _expected_sections() -> Iterator[tuple[tuple[str, ...], list[str]]]:
    """(heading titles that may hold them, keys) for every table of the assembled settings:
    the core's and every channel spec's sections."""

    def table(model: type[BaseModel], titles: tuple[str, ...], path: str) -> Iterator[Any]:
        # A key that is a table of its own is checked under its own heading instead.
        yield titles, [k for k, f in model.model_fields.items() if not _is_table(f.annotation)]
        # A section whose every key is a name ([widget.NAME]): typed extra keys.
        if (named := _named_tables(model)) is not None:
            yield from table(named, (f"[{path}.NAME]",), f"{path}.NAME")
        for name, field in model.model_fields.items():
            ann = field.annotation
            if get_origin(ann) is dict:
                inner = _model_of(get_args(ann)[1])
                if inner is not None and inner.__name__ not in OPAQUE_MODELS:
                    sub = f"{path}.{name}.{name.upper().rstrip('S')}"
                    yield from table(inner, (f"[{sub}]", f"[{path}.{name}.NAME]"), sub)
            elif (inner := _model_of(ann)) is not None and inner.__name__ not in OPAQUE_MODELS:
                yield from table(inner, (f"[{path}.{name}]",), f"{path}.{name}")

    top_level = []
    for name, field in settings_model().model_fields.items():
        ann = field.annotation
        origin = get_origin(ann)
        model = _model_of(ann)
        if model is not None:
            titles = [f"[{name}]"]
            if len(model.model_fields) == 1:  # [orders.tokens]: a section of one table
                titles.append(f"[{name}.{next(iter(model.model_fields))}]")
            if name == "calendar":  # described briefly; the keys' details are in calendar.md
                yield tuple(titles), list(model.model_fields)
            else:
                yield from table(model, tuple(titles), name)
        elif origin is list and (item := _model_of(get_args(ann)[0])) is not None:
            yield from table(item, (f"[[{name}]]",), name)
        elif origin is dict and (value := _model_of(get_args(ann)[1])) is not None:
            yield from table(value, (f"[{name}.NAME]",), f"{name}.NAME")
        elif origin is dict:  # [sources]: keys are the enum's values
            key_type = get_args(ann)[0]
            keys = [k.value for k in key_type] if isinstance(key_type, type) else []
            yield (f"[{name}]",), keys
        else:
            top_level.append(name)
    yield ("Top-level keys",), top_level


def test_core_settings_exist() -> None:
    missing = [name for name in CORE_SETTINGS if name not in Settings.model_fields]
    assert not missing, f"core settings renamed or gone (update this test and the docs): {missing}"


def test_every_spec_section_is_in_the_assembled_settings() -> None:
    fields = settings_model().model_fields
    sections = [s.section for s in specs() if s.section is not None]
    assert {"telephony", "email", "widget"} <= set(sections)
    assert all(name in fields for name in sections)
    # ... and the docs check above walks exactly these fields: a spec section cannot hide.
    assert set(fields) == set(CORE_SETTINGS) | set(sections)


def test_every_core_config_key_is_documented() -> None:
    doc = CONFIG_DOC.read_text(encoding="utf-8")
    problems = []
    for titles, keys in _expected_sections():
        text = next((s for t in titles if (s := _section(doc, t)) is not None), None)
        if text is None:
            problems.append(f"no section {' or '.join(titles)} in {CONFIG_DOC.name}")
            continue
        problems += [f"{titles[0]}: `{k}` not described" for k in keys if f"`{k}`" not in text]
    assert not problems, "\n".join(problems)


def test_config_doc_covers_file_lookup_and_env() -> None:
    doc = CONFIG_DOC.read_text(encoding="utf-8")
    for needle in ("LEADGATE_CONFIG", "./leadgate.toml", "-c", "LEADGATE_SERVER__PORT", "__"):
        assert needle in doc, needle


# --- openapi.yaml -------------------------------------------------------------------


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(OPENAPI.read_text(encoding="utf-8"))
    return loaded


def test_openapi_is_valid(spec: dict[str, Any]) -> None:
    assert spec["openapi"].startswith("3.1")
    validate_openapi(spec)


def _core_routes(tmp_path: Path) -> set[tuple[str, str]]:
    # Open Lines (a core part) mounts its routes only when configured; a Telegram bot in
    # webhook mode, so its route is mounted and checked too.
    openlines = {
        "portal": "portal.example.bitrix24.ru",
        "client_id": "local.6a1f9c2e3b4d50.73419826",
        "client_secret": "routes-test-secret",
        "public_url": "https://leads.example.ru",
        "line": 1,
    }
    bot = {"token": "123456789:AAExampleExampleExampleExampleExamp", "secret_token": "s" * 16}
    app = create_app(
        settings_model()(
            store={"path": str(tmp_path / "routes.db")},
            openlines=openlines,
            telegram={"bots": {"shop": bot}},
        )
    )
    routes = set()
    for route in app.router.routes():
        resource = route.resource
        if resource is None or route.method in ("HEAD", "OPTIONS", "*"):
            continue
        path = resource.canonical
        if path in CORE_ROUTES or path.startswith(CORE_ROUTE_PREFIXES):
            routes.add((path, route.method.lower()))
    return routes


def _documented(spec: dict[str, Any], prefixes: tuple[str, ...]) -> set[tuple[str, str]]:
    return {
        (path, method)
        for path, ops in spec["paths"].items()
        for method in ops
        # Channel webhooks documented there (/v1/vk, /v1/meta) exist only when their channel
        # is configured; each channel's tests check its own (tests/connectors/test_*_docs.py).
        if method in ("get", "post", "put", "patch", "delete") and path.startswith(prefixes)
    }


def test_openapi_paths_match_the_core_routes(spec: dict[str, Any], tmp_path: Path) -> None:
    registered = _core_routes(tmp_path)
    documented = _documented(spec, (*CORE_ROUTE_PREFIXES, *CORE_ROUTES))
    assert registered - documented == set(), "routes missing from docs/openapi.yaml"
    assert documented - registered == set(), "docs/openapi.yaml documents routes that do not exist"


def test_openapi_paths_match_the_documented_channel_routes(
    spec: dict[str, Any], tmp_path: Path
) -> None:
    widget = {"allowed_origins": ["https://shop.example.ru"], "policy_url": "https://x.ru/p"}
    settings = settings_model()(store={"path": str(tmp_path / "ch.db")}, widget={"site": widget})
    registered = {
        (route.resource.canonical, route.method.lower())
        for route in create_app(settings).router.routes()
        if route.resource is not None
        and route.method not in ("HEAD", "OPTIONS", "*")
        and route.resource.canonical.startswith(DOCUMENTED_CHANNEL_PREFIXES)
    } - CHANNEL_ROUTES_UNDOCUMENTED
    documented = _documented(spec, DOCUMENTED_CHANNEL_PREFIXES)
    assert registered - documented == set(), "routes missing from docs/openapi.yaml"
    assert documented - registered == set(), "docs/openapi.yaml documents routes that do not exist"


@pytest.mark.parametrize(
    ("schema", "model"),
    [
        ("Lead", models.Lead),
        ("Contact", models.Contact),
        ("Interest", models.Interest),
        ("EventRecord", models.EventRecord),
        ("Attachment", models.Attachment),
        ("Receipt", models.Receipt),
        ("ThreadRef", models.ThreadRef),
        ("Conversation", conversations.Conversation),
        ("ChatMessage", conversations.ChatMessage),
        ("Order", orders.Order),
        ("Customer", orders.Customer),
        ("OrderItem", orders.Item),
    ],
)
def test_openapi_schema_has_the_model_fields(
    spec: dict[str, Any], schema: str, model: type[BaseModel]
) -> None:
    documented = set(spec["components"]["schemas"][schema]["properties"])
    assert documented == set(model.model_fields)


def test_openapi_enums_match_the_code(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    for name, enum in [
        ("Channel", models.Channel),
        ("LeadStatus", models.LeadStatus),
        ("Outcome", models.Outcome),
        ("EquipmentCategory", models.EquipmentCategory),
        ("Direction", conversations.Direction),
        ("MessageStatus", conversations.MessageStatus),
    ]:
        assert schemas[name]["enum"] == [e.value for e in enum], name


def _validator(spec: dict[str, Any], schema: str) -> Draft202012Validator:
    # The whole document as the root, so "#/components/schemas/..." refs resolve.
    root = {"components": spec["components"], "$ref": f"#/components/schemas/{schema}"}
    return Draft202012Validator(root)


def _check(spec: dict[str, Any], schema: str, instance: Any) -> None:
    validator = _validator(spec, schema)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(instance)]
    assert not errors, f"{schema}: " + "; ".join(errors)


async def test_real_responses_match_the_schemas(spec: dict[str, Any], client: Client) -> None:
    form = {"name": "Иван", "phone": "8 (916) 123-45-67", "equipment_type": "Крупное"}
    resp = await client.post("/v1/forms/site", json=form)
    assert resp.status == 201
    _check(spec, "Receipt", await resp.json())

    order = {
        "order_id": 1001,
        "customer": {"name": "Иван", "phone": "+79161234567", "company": "ООО Ромашка"},
        "items": [
            {
                "sku": "L-1",
                "name": "Подъёмник",
                "quantity": 1,
                "price": "450000",
                "category": "Крупное",
            }
        ],
        "total": 450000,
        "utm": {"utm_source": "google"},
    }
    _check(spec, "Order", order)
    resp = await client.post("/v1/orders", json=order, headers=ORDER_AUTH)
    receipt = await resp.json()
    assert receipt["outcome"] == "merged"
    _check(spec, "Receipt", receipt)
    resp = await client.post("/v1/orders", json=order, headers=ORDER_AUTH)
    assert resp.status == 200
    _check(spec, "Receipt", await resp.json())

    resp = await client.get("/v1/leads", params={"limit": "1"}, headers=ADMIN_AUTH)
    page = await resp.json()
    _check(spec, "LeadPage", page)
    assert page["next_cursor"] == page["leads"][0]["id"]

    resp = await client.get(f"/v1/leads/{receipt['lead_id']}", headers=ADMIN_AUTH)
    lead = await resp.json()
    _check(spec, "LeadDetail", lead)
    assert lead["conversations"] == lead["messages"] == []  # no chat: an empty transcript
    assert [e["outcome"] for e in lead["events"]] == ["created", "merged"]

    resp = await client.post("/v1/forms/site", json={"phone": "123"})
    assert resp.status == 422
    _check(spec, "Error", await resp.json())
    resp = await client.get("/v1/leads", params={"limit": "0"}, headers=ADMIN_AUTH)
    _check(spec, "Error", await resp.json())
    resp = await client.get("/readyz")
    _check(spec, "Readiness", await resp.json())


# --- CLI ----------------------------------------------------------------------------


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def test_every_cli_command_is_documented() -> None:
    corpus = _corpus()
    lines = corpus.splitlines()
    problems = []
    for name, sub in _subcommands(build_parser()).items():
        if f"leadgate {name}" not in corpus:
            problems.append(f"`leadgate {name}` is not in the docs")
        for action in _subcommands(sub):
            word = re.compile(rf"\b{action}\b")
            if not any(f"leadgate {name}" in ln and word.search(ln) for ln in lines):
                problems.append(f"`leadgate {name} {action}` is not in the docs")
    assert not problems, "\n".join(problems)


def test_core_cli_options_are_documented() -> None:
    corpus = _corpus()
    commands = _subcommands(build_parser())
    problems = []
    for name in CORE_COMMANDS:
        parsers = [commands[name], *_subcommands(commands[name]).values()]
        for parser in parsers:
            for action in parser._actions:
                for flag in action.option_strings:
                    if flag.startswith("--") and flag != "--help" and flag not in corpus:
                        problems.append(f"leadgate {name}: {flag}")
    assert not problems, "undocumented options:\n" + "\n".join(problems)


# --- metrics ------------------------------------------------------------------------


def _exposed_names(metrics: Metrics) -> set[str]:
    names = set()
    for family in metrics.registry.collect():
        names.add(f"{family.name}_total" if family.type == "counter" else family.name)
    return names


def test_core_metrics_exist_and_are_documented() -> None:
    exposed = _exposed_names(Metrics())
    missing_in_code = [m for m in CORE_METRICS if m not in exposed]
    assert not missing_in_code, f"core metrics renamed or gone: {missing_in_code}"
    doc = OPERATIONS_DOC.read_text(encoding="utf-8")
    undocumented = [m for m in CORE_METRICS if f"`{m}`" not in doc]
    assert not undocumented, f"not described in docs/operations.md: {undocumented}"


# Pages other work adds (the outbox docs, the benchmark report); links to them may precede them.
PENDING_PAGES = ("delivery/", "benchmarks.md")


@pytest.mark.parametrize("page", ["quickstart.md", "configuration.md", "api.md", "operations.md"])
def test_core_docs_links_resolve(page: str) -> None:
    text = (DOCS / page).read_text(encoding="utf-8")
    broken = [
        target
        for target in re.findall(r"\]\(([^)#:\s]+)(?:#[^)]*)?\)", text)
        if not (DOCS / target).exists() and not target.startswith(PENDING_PAGES)
    ]
    assert not broken, f"docs/{page} links to missing pages: {broken}"

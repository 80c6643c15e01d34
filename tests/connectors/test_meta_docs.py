"""The Meta channel's documentation agrees with the code: its routes in docs/openapi.yaml,
real answers against the documented schemas, its metrics in docs/channels/meta.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from meta_support import (
    VERIFY_TOKEN,
    MakeClient,
    fixture_bytes,
    graph,  # noqa: F401  (a fixture)
    make_client,  # noqa: F401  (a fixture)
    post,
)

from gateway.keys import METRICS

ROOT = Path(__file__).resolve().parents[2]
SPEC: dict[str, Any] = yaml.safe_load((ROOT / "docs" / "openapi.yaml").read_text("utf-8"))
CHANNEL_DOC = (ROOT / "docs" / "channels" / "meta.md").read_text("utf-8")


def check(schema: str, instance: Any) -> None:
    root = {"components": SPEC["components"], "$ref": f"#/components/schemas/{schema}"}
    errors = [e.message for e in Draft202012Validator(root).iter_errors(instance)]
    assert not errors, f"{schema}: {errors}"


async def test_routes_and_answers_match_the_document(
    make_client: MakeClient,  # noqa: F811
) -> None:
    client = await make_client()
    registered = {
        (r.resource.canonical, r.method.lower())
        for r in client.app.router.routes()
        if r.resource is not None
        and r.resource.canonical.startswith("/v1/meta")
        and r.method not in ("HEAD", "OPTIONS")
    }
    documented = {
        (p, m) for p, ops in SPEC["paths"].items() if p.startswith("/v1/meta") for m in ops
    }
    assert registered == documented == {("/v1/meta", "get"), ("/v1/meta", "post")}

    raw = fixture_bytes("messenger_text.botman-test.json")
    check("MetaWebhook", yaml.safe_load(raw))
    resp = await post(client, raw)
    assert resp.status == 200
    check("MetaAck", await resp.json())
    resp = await post(client, raw, "sha256=" + "0" * 64)
    assert resp.status == 403
    check("Error", await resp.json())
    resp = await client.get(
        "/v1/meta",
        params={"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "7"},
    )
    assert resp.status == 200 and await resp.text() == "7"


async def test_every_meta_metric_is_documented(
    make_client: MakeClient,  # noqa: F811
) -> None:
    client = await make_client()
    names = set()
    for family in client.app[METRICS].registry.collect():
        if family.name.startswith("leadgate_meta_"):
            names.add(f"{family.name}_total" if family.type == "counter" else family.name)
    assert len(names) >= 6
    missing = [n for n in sorted(names) if f"`{n}`" not in CHANNEL_DOC]
    assert not missing, f"not in docs/channels/meta.md: {missing}"


def test_the_docs_say_whose_decision_it_is() -> None:
    assert "blocked in Russia" in CHANNEL_DOC
    assert "operator's decision" in CHANNEL_DOC
    config_doc = (ROOT / "docs" / "configuration.md").read_text("utf-8")
    assert "operator's decision" in config_doc

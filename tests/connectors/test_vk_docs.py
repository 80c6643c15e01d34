"""The VK channel's docs name what the code has: its config keys, its route in the
OpenAPI document, its metrics (in docs/channels/vk.md and docs/operations.md)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from vk_standin import VkStandIn
from vk_support import MakeClient, make_client, standin

from connectors.vk.settings import CommunitySettings, VkSettings
from gateway.keys import METRICS

__all__ = ["make_client", "standin"]

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _section(doc: str, title: str) -> str:
    match = re.search(rf"^(#+) {re.escape(title)}\n(.*?)(?=^#{{1,3}} |\Z)", doc, re.M | re.S)
    assert match is not None, f"no section {title}"
    return match.group(2)


def test_every_vk_config_key_is_documented() -> None:
    doc = (DOCS / "configuration.md").read_text(encoding="utf-8")
    top = _section(doc, "[vk]")
    assert all(f"`{key}`" in top for key in VkSettings.model_fields)
    table = _section(doc, "[[vk.communities]]")
    missing = [k for k in CommunitySettings.model_fields if f"`{k}`" not in table]
    assert not missing, missing


async def test_the_route_and_the_metrics_are_documented(
    make_client: MakeClient, standin: VkStandIn
) -> None:
    client = await make_client()
    routes = {
        (r.resource.canonical, r.method.lower())
        for r in client.app.router.routes()
        if r.resource is not None and r.resource.canonical.startswith("/v1/vk")
    }
    spec: dict[str, Any] = yaml.safe_load((DOCS / "openapi.yaml").read_text(encoding="utf-8"))
    documented = {
        (path, method)
        for path, ops in spec["paths"].items()
        if path.startswith("/v1/vk")
        for method in ops
    }
    assert routes == documented == {("/v1/vk", "post")}

    names = {
        f"{family.name}_total" if family.type == "counter" else family.name
        for family in client.app[METRICS].registry.collect()
        if family.name.startswith("leadgate_vk_")
    }
    assert len(names) >= 4
    channel = (DOCS / "channels" / "vk.md").read_text(encoding="utf-8")
    operations = (DOCS / "operations.md").read_text(encoding="utf-8")
    assert [n for n in names if f"`{n}`" not in channel] == []
    assert [n for n in names if f"`{n}`" not in operations] == []

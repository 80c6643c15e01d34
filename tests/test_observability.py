"""What ships for monitoring is real: the alert rules pass promtool (syntax and unit tests),
every alert is documented, the Grafana dashboard and the rules only name metrics the
gateway exposes, and the compose file mounts what it provisions.

promtool comes with Debian's `prometheus` package (.ci/run installs it). Without it these
checks skip on a developer's machine, but fail under CI (CI=true): a check that silently
never runs is no check.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config import load_settings
from gateway.web import create_app

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
RULES = DOCKER / "prometheus" / "alerts.yml"
DASHBOARD = DOCKER / "grafana" / "dashboards" / "leadgate.json"
OPERATIONS_DOC = ROOT / "docs" / "operations.md"


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing under CI: .ci/run must install Debian's prometheus")
        pytest.skip("promtool not installed (apt-get install prometheus)")
    return found


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args],
        cwd=RULES.parent,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_alert_rules_pass_promtool_check() -> None:
    done = run_promtool("check", "rules", RULES.name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_prometheus_config_loads_the_rules() -> None:
    done = run_promtool("check", "config", "prometheus.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 rule files found" in done.stdout


def test_alert_rules_fire_as_their_unit_tests_say() -> None:
    done = run_promtool("test", "rules", "alerts_test.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_metrics_output_passes_promtool_lint(tmp_path: Path) -> None:
    exposition = _exposition(tmp_path)
    done = subprocess.run(
        [promtool(), "check", "metrics"],
        input=exposition,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_every_alert_is_documented_and_every_documented_alert_ships() -> None:
    doc = OPERATIONS_DOC.read_text(encoding="utf-8")
    shipped = {rule["alert"] for rule in _rules()}
    undocumented = sorted(name for name in shipped if f"`{name}`" not in doc)
    assert not undocumented, f"alerts not described in docs/operations.md: {undocumented}"
    documented = set(re.findall(r"`(Leadgate[A-Za-z]+)`", doc))
    assert documented <= shipped, f"documented but not shipped: {sorted(documented - shipped)}"


# --- every metric they name exists -----------------------------------------------------------


def _app_settings(tmp_path: Path) -> Any:
    """Every part that adds metrics switched on: telephony, a mailbox, Bitrix24 delivery."""
    return load_settings(
        None,
        store={"path": str(tmp_path / "leadgate.db")},
        telephony={"cti": {"token": "observability-test-token-0123"}},
        email={"mailboxes": {"sales": {"host": "127.0.0.1", "username": "u", "password": "p"}}},
        delivery={
            "sink": "bitrix24",
            "bitrix24": {"webhook_url": "https://example.bitrix24.ru/rest/1/secret/"},
        },
    )


def _exposition(tmp_path: Path) -> str:
    from prometheus_client import generate_latest

    from gateway.keys import METRICS

    app = create_app(_app_settings(tmp_path))
    return generate_latest(app[METRICS].registry).decode()


def _exposed(tmp_path: Path) -> set[str]:
    from gateway.keys import METRICS

    app = create_app(_app_settings(tmp_path))
    names: set[str] = set()
    for family in app[METRICS].registry.collect():
        base = family.name
        names.add(base)
        if family.type == "counter":
            names.add(f"{base}_total")
        if family.type == "histogram":
            names |= {f"{base}_bucket", f"{base}_sum", f"{base}_count"}
        if family.type == "gauge" and base.endswith("_info"):
            names.add(base)
    return names


_NAME = re.compile(r"\b(leadgate_[a-z_]+)")


def _named_in(text: str) -> set[str]:
    return set(_NAME.findall(text))


def test_alerts_name_only_real_metrics(tmp_path: Path) -> None:
    exposed = _exposed(tmp_path)
    used = set().union(*(_named_in(rule["expr"]) for rule in _rules()))
    assert used, "no metric named in the rules?"
    assert used <= exposed, f"unknown metrics in alerts.yml: {sorted(used - exposed)}"


def test_dashboard_is_provisioned_and_names_only_real_metrics(tmp_path: Path) -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["uid"] == "leadgate" and dashboard["title"] == "leadgate"
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len(panels) >= 10
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    exprs = [t["expr"] for p in panels for t in p["targets"]]
    assert all(exprs)
    used = set().union(*(_named_in(e) for e in exprs))
    exposed = _exposed(tmp_path)
    assert used <= exposed, f"unknown metrics on the dashboard: {sorted(used - exposed)}"
    # Every panel reads the data source that provisioning creates, by its uid.
    source = yaml.safe_load(
        (DOCKER / "grafana/provisioning/datasources/prometheus.yml").read_text(encoding="utf-8")
    )["datasources"][0]
    assert {p["datasource"]["uid"] for p in panels} == {source["uid"]}
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]


def test_compose_mounts_what_is_provisioned() -> None:
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text(encoding="utf-8"))
    services = compose["services"]
    mounts = {
        name: {
            v.split(":")[0]: v.split(":")[1]
            for v in service.get("volumes", [])
            if isinstance(v, str) and v.startswith("./")
        }
        for name, service in services.items()
    }
    assert mounts["prometheus"]["./prometheus"] == "/etc/prometheus"
    for source in mounts["prometheus"] | mounts["grafana"]:
        assert (DOCKER / source).exists(), f"compose mounts missing {source}"
    provider = yaml.safe_load(
        (DOCKER / "grafana/provisioning/dashboards/leadgate.yml").read_text(encoding="utf-8")
    )["providers"][0]
    assert mounts["grafana"]["./grafana/dashboards"] == provider["options"]["path"]
    assert mounts["grafana"]["./grafana/provisioning"] == "/etc/grafana/provisioning"


def test_compose_stops_when_a_secret_is_missing() -> None:
    """Every secret compose passes from the environment is `${VAR:?why}` (compose refuses to
    start without it), including the commented examples a user uncomments; Grafana never
    starts with its admin/admin default."""
    text = (DOCKER / "compose.yaml").read_text(encoding="utf-8")
    compose = yaml.safe_load(text)
    secret = re.compile(r"(PASSWORD|TOKEN|SECRET)", re.IGNORECASE)
    found = []
    for line in text.splitlines():
        key, sep, value = line.strip().lstrip("# ").partition(": ")
        if sep and secret.search(key) and "${" in value:
            found.append(key)
            assert re.fullmatch(r"\$\{[A-Z0-9_]+:\?[^}]+\}", value.strip()), line
    assert {"GF_SECURITY_ADMIN_PASSWORD", "LEADGATE_ADMIN__TOKENS__OPS"} <= set(found)
    grafana = compose["services"]["grafana"]["environment"]
    assert grafana["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD:?")

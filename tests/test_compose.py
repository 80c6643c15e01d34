"""docker/compose.yaml holds together: two replicas on a durable Redis behind HAProxy, each
scraped by Prometheus, secrets required, and the shipped configs it mounts valid.

(No Docker daemon in CI: the file is read as data; the HAProxy config it mounts is checked
by `haproxy -c` here and run for real by tests/test_loadbalancer.py.)
"""

from __future__ import annotations

import ipaddress
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from gateway.config import load_settings
from tests.test_loadbalancer import haproxy_binary

DOCKER = Path(__file__).resolve().parents[1] / "docker"
COMPOSE_TEXT = (DOCKER / "compose.yaml").read_text(encoding="utf-8")
COMPOSE: dict[str, Any] = yaml.safe_load(COMPOSE_TEXT)
SERVICES: dict[str, Any] = COMPOSE["services"]
GATEWAYS = sorted(name for name in SERVICES if name.startswith("gateway-"))


def test_two_gateway_replicas_on_redis_that_must_be_durable() -> None:
    assert GATEWAYS == ["gateway-1", "gateway-2"]
    for name in GATEWAYS:
        env = SERVICES[name]["environment"]
        assert env["LEADGATE_STORE__KIND"] == "redis"
        assert env["LEADGATE_STORE__DURABILITY"] == "always"
        assert "@redis:6379/" in env["LEADGATE_STORE__URL"]
        assert SERVICES[name]["depends_on"]["redis"]["condition"] == "service_healthy"
        assert "/readyz" in " ".join(SERVICES[name]["healthcheck"]["test"])
        assert "ports" not in SERVICES[name]  # reached through the balancer only
    redis = " ".join(SERVICES["redis"]["command"])
    assert "--appendonly yes" in redis and "--appendfsync always" in redis
    assert "--no-appendfsync-on-rewrite no" in redis
    assert "--maxmemory-policy noeviction" in redis
    assert any(v.endswith(":/data") for v in SERVICES["redis"]["volumes"])


def test_the_environment_it_sets_is_a_valid_gateway_config(monkeypatch: Any) -> None:
    env = dict(SERVICES["gateway-1"]["environment"])
    env["LEADGATE_STORE__URL"] = re.sub(r"\$\{[^}]*\}", "0123abcd", env["LEADGATE_STORE__URL"])
    for key, value in env.items():
        if key != "LEADGATE_CONFIG":
            monkeypatch.setenv(key, value)
    settings = load_settings(None)
    assert settings.store.kind == "redis" and settings.store.durability == "always"
    assert settings.store.url is not None
    assert settings.store.url.get_secret_value() == "redis://:0123abcd@redis:6379/0"
    # trusted_proxies is the compose network: HAProxy's X-Forwarded-For is believed.
    subnet = COMPOSE["networks"]["leadgate"]["ipam"]["config"][0]["subnet"]
    assert [str(n) for n in settings.server.trusted_proxies] == [subnet]
    assert ipaddress.ip_network(subnet).is_private


def test_every_variable_is_required_with_a_message() -> None:
    """`${VAR}` alone would start with an empty password; `${VAR:?message}` refuses."""
    uses = re.findall(r"\$\{([^}]*)\}", COMPOSE_TEXT)
    assert uses, "no secrets from the environment?"
    for use in uses:  # the commented-out examples too: they get copied
        assert ":?" in use and use.split(":?", 1)[1].strip(), use


def test_the_balancer_checks_readyz_on_both_replicas_and_its_config_is_valid() -> None:
    lb = SERVICES["lb"]
    assert lb["ports"] == ["8080:8080"]
    assert "./haproxy:/usr/local/etc/haproxy:ro" in lb["volumes"]
    config = (DOCKER / "haproxy" / "haproxy.cfg").read_text(encoding="utf-8")
    assert "uri /readyz" in config and "expect status 200" in config
    servers = re.findall(r"^\s*server (\S+) (\S+):8080", config, re.MULTILINE)
    assert servers == [(name, name) for name in GATEWAYS]
    done = subprocess.run(
        [haproxy_binary(), "-c", "-f", str(DOCKER / "haproxy" / "haproxy.cfg")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # Outside compose the replicas' names do not resolve: a warning, not an error.
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Configuration file is valid" in done.stdout + done.stderr


def test_prometheus_scrapes_every_replica_and_the_balancer() -> None:
    scrape = yaml.safe_load((DOCKER / "prometheus" / "prometheus.yml").read_text("utf-8"))
    jobs = {
        job["job_name"]: job["static_configs"][0]["targets"] for job in scrape["scrape_configs"]
    }
    assert jobs["leadgate"] == [f"{name}:8080" for name in GATEWAYS]
    assert jobs["haproxy"] == ["lb:8404"]
    assert set(SERVICES["prometheus"]["depends_on"]) == set(GATEWAYS)
    # Every service that talks to another is on the one network.
    assert all(s.get("networks") == ["leadgate"] for s in SERVICES.values()), json.dumps(
        {n: s.get("networks") for n, s in SERVICES.items()}
    )

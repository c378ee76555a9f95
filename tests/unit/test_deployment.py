"""The deployment files parse and agree with the code: ports, probes, metric names, Redis policy."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import yaml

from stream_guard.observability.metrics import WorkerMetrics
from stream_guard.settings import ObservabilityConfig

ROOT = Path(__file__).resolve().parents[2]
PORT = ObservabilityConfig().port


def _compose() -> dict:
    return yaml.safe_load((ROOT / "compose" / "docker-compose.yml").read_text())


def _metric_names() -> set[str]:
    """Every series name the worker can expose, labelled ones included before their first sample."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
    return {
        family.name + suffix
        for family in WorkerMetrics().registry.collect()
        for suffix in suffixes.get(family.type, ("",))
    }


def test_compose_runs_workers_with_probes_and_prometheus_scrapes_their_port() -> None:
    """The worker's healthcheck is `stream-guard health`; Prometheus scrapes the endpoint's default port."""
    services = _compose()["services"]
    assert {"kafka", "redis", "schema-registry", "worker", "prometheus", "grafana"} <= set(services)
    worker = services["worker"]
    assert worker["healthcheck"]["test"] == ["CMD", "stream-guard", "health"]
    assert worker["restart"] == "unless-stopped"
    scrape = yaml.safe_load((ROOT / "compose" / "prometheus" / "prometheus.yml").read_text())
    (job,) = scrape["scrape_configs"]
    assert job["dns_sd_configs"][0] == {"names": ["worker"], "type": "A", "port": PORT}
    for service in ("worker", "prometheus", "grafana"):
        for volume in services[service].get("volumes", []):
            assert (ROOT / "compose" / volume.split(":")[0]).exists(), volume


def test_redis_never_evicts_state_silently() -> None:
    """Eviction would drop counters and offset fences; with noeviction a full Redis fails loudly."""
    command = _compose()["services"]["redis"]["command"]
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    assert "--maxmemory" in command and "--appendonly" in command


def test_grafana_panels_query_metrics_the_worker_exposes() -> None:
    """Every metric a panel queries is one the worker serves (a renamed metric breaks this test, not the board)."""
    board = json.loads((ROOT / "compose" / "grafana" / "dashboards" / "stream-guard.json").read_text())
    queried = {m for p in board["panels"] for t in p["targets"] for m in re.findall(r"stream_guard_\w+", t["expr"])}
    assert queried and queried <= _metric_names(), queried - _metric_names()


def test_kubernetes_probes_and_config_use_the_endpoint() -> None:
    """Liveness and readiness probe /healthz and /readyz on the port the configured worker serves."""
    docs = list(yaml.safe_load_all((ROOT / "deploy" / "kubernetes" / "stream-guard.yaml").read_text()))
    by_kind = {d["kind"]: d for d in docs}
    (container,) = by_kind["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["ports"] == [{"name": "http", "containerPort": PORT}]
    assert container["resources"]["limits"] and container["resources"]["requests"]
    config = tomllib.loads(by_kind["ConfigMap"]["data"]["config.toml"])
    assert config["observability"]["port"] == PORT


def test_image_checks_its_health_and_installs_pinned_versions() -> None:
    """The Dockerfile's HEALTHCHECK asks the readiness probe; the wheel build uses constraints.txt."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "HEALTHCHECK" in dockerfile and '"stream-guard", "health"' in dockerfile
    assert "-c constraints.txt" in dockerfile
    pins = dict(line.split("==") for line in (ROOT / "constraints.txt").read_text().splitlines() if "==" in line)
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for requirement in pyproject["project"]["dependencies"]:
        name = re.split(r"[<>=\[ ]", requirement, maxsplit=1)[0].lower()
        assert name in pins, f"{name} is not pinned in constraints.txt"

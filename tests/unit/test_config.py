"""``config/`` for deployment and ``docker-compose.yml`` (issue #24): the environment example is
complete and current, Redis is bounded, and the alert rules and the dashboard name only metrics
the service exports."""

from __future__ import annotations

import json
import re

import yaml

from rag.metrics import Metrics
from rag.settings import Settings, env_example
from tests.paths import ROOT

CONFIG = ROOT / "config"


def test_the_env_example_is_current_and_names_every_setting() -> None:
    text = (CONFIG / "rag.env.example").read_text()
    assert text == env_example(), "run python scripts/make_env_example.py"
    named = set(re.findall(r"^# RAG_([A-Z0-9_]+)=", text, re.MULTILINE))
    assert named == {name.upper() for name in Settings.model_fields}


def test_redis_is_bounded_and_evicts_least_recently_used() -> None:
    lines = dict(
        line.split(maxsplit=1)
        for line in (CONFIG / "redis.conf").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert lines["maxmemory"].endswith("mb") and lines["maxmemory-policy"] == "allkeys-lru"


def exported_metrics() -> set[str]:
    """Every series name ``/metrics`` exports (with ``_total``, ``_bucket``… suffixes)."""
    metrics = Metrics()
    metrics.observe_stage("llm", 0.1)  # a labelled histogram exports series once observed
    text = metrics.prometheus_text().decode()
    return {line.split("{")[0].split()[0] for line in text.splitlines() if line.startswith("rag_")}


def test_alerts_and_the_dashboard_name_only_exported_metrics() -> None:
    exported = exported_metrics()
    alerts = yaml.safe_load((CONFIG / "alerts.yml").read_text())
    expressions = [rule["expr"] for group in alerts["groups"] for rule in group["rules"]]
    dashboard = json.loads((CONFIG / "grafana" / "rag-dashboard.json").read_text())
    expressions += [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    named = {name for expr in expressions for name in re.findall(r"\brag_[a-z_]+", expr)}
    assert named and named <= exported, named - exported
    kinds = {"breaker": "rag_redis_available", "shedding": 'kind="shed"', "llm": 'kind="llm"'}
    for what, needle in kinds.items():
        assert any(needle in expr for expr in expressions), what


def test_compose_uses_config_and_sets_only_settings_that_exist() -> None:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    assert set(services) == {"redis", "qdrant", "app", "prometheus", "grafana"}
    names = {n for n in services["app"]["environment"] if n.startswith("RAG_")}
    assert names and all(n.removeprefix("RAG_").lower() in Settings.model_fields for n in names)
    mounted = [v.split(":")[0] for s in services.values() for v in s.get("volumes", [])]
    for path in mounted:
        if path.startswith("./"):
            assert (ROOT / path).is_file(), path
    assert "./config/redis.conf" in mounted and "./config/alerts.yml" in mounted
    for name, service in services.items():
        check = service["healthcheck"]["test"]
        assert check[0] in {"CMD", "CMD-SHELL"} and len(check) > 1, name
    assert "/healthz" in " ".join(services["app"]["healthcheck"]["test"])
    assert services["app"]["depends_on"] == {
        "redis": {"condition": "service_healthy"},
        "qdrant": {"condition": "service_healthy"},
    }
    assert services["app"]["build"] == "." and (ROOT / "Dockerfile").is_file()

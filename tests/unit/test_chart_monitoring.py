"""The chart's monitoring objects: PodMonitors for the gateway and the runtimes, the dashboard."""

from __future__ import annotations

import json

from test_chart import one, render

ALL_ON = (
    "--set",
    "metrics.podMonitor.gateway.enabled=true",
    "--set",
    "metrics.podMonitor.runtimes.enabled=true",
    "--set",
    "metrics.dashboard.enabled=true",
)


def test_nothing_for_prometheus_or_grafana_by_default() -> None:
    kinds = {(d["kind"], d["metadata"]["name"]) for d in render()}
    assert not any(kind == "PodMonitor" for kind, _ in kinds)
    assert ("ConfigMap", "llmop-dashboard") not in kinds


def test_the_gateway_serves_metrics_on_a_port_apart_from_its_api() -> None:
    gateway = one(render(), "Deployment", "llmop-gateway")["spec"]["template"]["spec"]["containers"][0]
    assert gateway["args"][-2:] == ["--metrics-port", "8080"]
    assert {p["name"]: p["containerPort"] for p in gateway["ports"]} == {"http": 8000, "metrics": 8080}
    service = one(render(), "Service", "llmop-gateway")
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]  # clients never reach /metrics


def test_pod_monitors_scrape_the_gateway_and_the_runtimes_that_serve_metrics() -> None:
    docs = render(*ALL_ON, "--set", "metrics.serviceMonitor.labels.release=prom")
    gateway = one(docs, "PodMonitor", "llmop-gateway")
    deployment = one(docs, "Deployment", "llmop-gateway")
    assert gateway["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert gateway["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    assert gateway["metadata"]["labels"]["release"] == "prom"
    runtimes = one(docs, "PodMonitor", "llmop-runtimes")
    selector = runtimes["spec"]["selector"]
    assert selector["matchLabels"] == {
        "app.kubernetes.io/name": "llmop-backend",
        "app.kubernetes.io/managed-by": "llmop",
    }
    # Ollama serves no /metrics: its pods are left out rather than scraped into errors.
    assert selector["matchExpressions"] == [
        {"key": "llmop.dev/runtime", "operator": "In", "values": ["vllm", "llamacpp"]}
    ]
    assert runtimes["spec"]["namespaceSelector"] == {"any": True}
    assert runtimes["spec"]["podMetricsEndpoints"][0]["port"] == "http"


def test_runtime_scrapes_can_be_kept_to_some_namespaces() -> None:
    docs = render(
        "--set",
        "metrics.podMonitor.runtimes.enabled=true",
        "--set",
        "metrics.podMonitor.runtimes.namespaces={team-a,team-b}",
    )
    assert one(docs, "PodMonitor", "llmop-runtimes")["spec"]["namespaceSelector"] == {
        "matchNames": ["team-a", "team-b"]
    }


def test_the_dashboard_is_a_configmap_grafana_picks_up() -> None:
    dashboard = one(render(*ALL_ON), "ConfigMap", "llmop-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    panels = json.loads(dashboard["data"]["llmop.json"])["panels"]
    assert any("llmop_gateway_requests_total" in t["expr"] for p in panels for t in p["targets"])

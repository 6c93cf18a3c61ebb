"""The gateway's table follows real LLMBackends on a real API server: listed, then changed by watch
events (status written, backend deleted), with the runtime key read from a Secret that opts in."""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from llmop.gateway.demand import MIN_INTERVAL_SECONDS, DemandBook, DemandWriter
from llmop.gateway.table import RoutingTable
from llmop.gateway.watch import BackendWatch
from llmop.k8s.client import LLMBACKENDS, KubeClient
from support.kube import Kube, eventually

VENV_BIN = Path(sys.executable).parent

pytestmark = pytest.mark.integration


def serving_status(ip: str, model: str) -> dict[str, object]:
    return {
        "phase": "Ready",
        "runtime": "llamacpp",
        "pods": [{"name": "chat-0", "ip": ip, "ready": True, "phase": "Serving", "models": [model]}],
        "models": [{"name": model, "capabilities": ["chat", "completion"]}],
    }


async def next_table(
    tables: asyncio.Queue[RoutingTable], wanted: Callable[[RoutingTable], bool]
) -> RoutingTable:
    while not wanted(table := await tables.get()):
        pass
    return table


async def test_the_table_follows_backends_written_and_deleted(kube: Kube, namespace: str) -> None:
    key = base64.b64encode(b"runtime-key").decode()
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "chat-key", "labels": {"llmop.dev/use": "true"}},
            "data": {"key": key},
        },
        namespace,
    )
    spec = {"runtime": "llamacpp", "apiKeySecretRef": {"name": "chat-key", "key": "key"}}
    kube.apply(
        {
            "apiVersion": "llmop.dev/v1alpha1",
            "kind": "LLMBackend",
            "metadata": {"name": "chat"},
            "spec": spec,
        },
        namespace,
    )
    client = KubeClient.from_environment(str(kube.kubeconfig))
    await client.patch_status(LLMBACKENDS, "chat", namespace, serving_status("10.0.0.1", "tiny"))
    tables: asyncio.Queue[RoutingTable] = asyncio.Queue()
    following = asyncio.create_task(BackendWatch(client, [namespace], tables.put).follow(namespace))
    try:
        listed = await next_table(tables, lambda t: bool(t.lookup("tiny")))
        (upstream,) = listed.lookup("tiny")[0].serving
        assert (upstream.base_url, upstream.api_key) == ("http://10.0.0.1:8080/v1", "runtime-key")
        await client.patch_status(LLMBACKENDS, "chat", namespace, serving_status("10.0.0.2", "tiny"))
        moved = await next_table(
            tables, lambda t: t.lookup("tiny")[0].serving[0].base_url.startswith("http://10.0.0.2")
        )
        assert moved.model_names() == ["tiny"]
        kube.run("delete", "llmbackend", "chat", "-n", namespace)
        await next_table(tables, lambda t: t.model_names() == [])
    finally:
        following.cancel()
        await client.close()


def test_llmop_gateway_serves_the_models_of_its_namespace_and_stops_on_sigterm(
    kube: Kube, namespace: str, tmp_path: Path
) -> None:
    """The command the chart runs, against the real API server: ready once it listed, a request
    without a key refused, the backend's model listed for a key of its namespace, an unknown one a
    404 naming it, and a clean exit on SIGTERM."""
    gateway_key = "tenant-key-0123456789"
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": "gateway-key",
                "labels": {"llmop.dev/use": "true", "llmop.dev/gateway-key": "true"},
            },
            "stringData": {"key": gateway_key},
        },
        namespace,
    )
    spec = {"runtime": "llamacpp"}
    kube.apply(
        {
            "apiVersion": "llmop.dev/v1alpha1",
            "kind": "LLMBackend",
            "metadata": {"name": "chat"},
            "spec": spec,
        },
        namespace,
    )
    status = json.dumps({"status": serving_status("10.0.0.1", "tiny")})
    kube.run(
        "patch", "llmbackend", "chat", "-n", namespace, "--subresource=status", "--type=merge", "-p", status
    )
    with socket.socket() as probe, socket.socket() as metrics_probe:
        probe.bind(("127.0.0.1", 0))
        metrics_probe.bind(("127.0.0.1", 0))
        port, metrics_port = probe.getsockname()[1], metrics_probe.getsockname()[1]
    command = [
        str(VENV_BIN / "llmop"),
        "gateway",
        "-n",
        namespace,
        "--port",
        str(port),
        "--host",
        "127.0.0.1",
        "--metrics-port",
        str(metrics_port),
    ]
    with (tmp_path / "gateway.log").open("w") as log:
        gateway = subprocess.Popen(
            [*command, "--kubeconfig", str(kube.kubeconfig)], stdout=log, stderr=subprocess.STDOUT
        )
    base = f"http://127.0.0.1:{port}"
    try:
        eventually(lambda: _status(base + "/readyz") == 200, message="the gateway ready")
        assert httpx.get(base + "/v1/models").status_code == 401
        authorized = {"Authorization": f"Bearer {gateway_key}"}
        models = httpx.get(base + "/v1/models", headers=authorized).json()
        assert [m["id"] for m in models["data"]] == ["tiny"]
        missing = httpx.post(
            base + "/v1/chat/completions", json={"model": "nope", "messages": []}, headers=authorized
        )
        assert missing.status_code == 404 and "tiny" in missing.json()["error"]["message"]
        # Its /metrics, on their own port: the 404 counted, without the made-up name.
        scraped = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
        counted = {
            (sample.labels["model"], sample.labels["code"]): sample.value
            for family in text_string_to_metric_families(scraped)
            for sample in family.samples
            if sample.name == "llmop_gateway_requests_total"
        }
        assert counted == {("", "404"): 1.0}
    finally:
        gateway.send_signal(signal.SIGTERM)
        code = gateway.wait(timeout=30)
    assert code == 0, (tmp_path / "gateway.log").read_text()


def _status(url: str) -> int | None:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.TransportError:
        return None


async def test_each_gateway_writes_its_own_demand_entry_and_leaves_the_rest_of_status(
    kube: Kube, namespace: str
) -> None:
    """The merge patch the gateway sends, against the real API server and the CRD's schema: its
    entry stored as written, another gateway's entry and the operator's status untouched, and a
    pod with nothing left in flight removed from the entry."""
    kube.apply(
        {
            "apiVersion": "llmop.dev/v1alpha1",
            "kind": "LLMBackend",
            "metadata": {"name": "chat"},
            "spec": {"runtime": "llamacpp"},
        },
        namespace,
    )
    other = {"inFlight": 1, "waiting": 0, "pods": {"chat-0": 1}, "time": "2026-12-01T12:00:00Z"}
    client = KubeClient.from_environment(str(kube.kubeconfig))
    await client.patch_status(
        LLMBACKENDS, "chat", namespace, {**serving_status("10.0.0.1", "tiny"), "demand": {"gw-0": other}}
    )
    clock = [0.0]
    in_flight = Counter({f"{namespace}/chat/chat-0": 2, f"{namespace}/chat/chat-1": 1})
    book = DemandBook(in_flight, lambda: clock[0])
    book.autoscaled = frozenset({(namespace, "chat")})
    writer = DemandWriter(client, book, "gw-1", now=lambda: datetime(2026, 12, 1, 12, 0, 1, tzinfo=UTC))
    try:
        await writer.write_due()
        status = kube.get("llmb", "chat", namespace)["status"]
        assert status["demand"] == {
            "gw-0": other,
            "gw-1": {
                "inFlight": 3,
                "waiting": 0,
                "pods": {"chat-0": 2, "chat-1": 1},
                "time": "2026-12-01T12:00:01.000Z",
            },
        }
        assert status["pods"] == serving_status("10.0.0.1", "tiny")["pods"]
        del in_flight[f"{namespace}/chat/chat-1"]
        clock[0] += MIN_INTERVAL_SECONDS
        await writer.write_due()
        entry = kube.get("llmb", "chat", namespace)["status"]["demand"]["gw-1"]
        assert (entry["inFlight"], entry["pods"]) == (2, {"chat-0": 2})
    finally:
        await client.close()

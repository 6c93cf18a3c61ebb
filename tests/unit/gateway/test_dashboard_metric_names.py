"""The dashboard queries only metric names the real servers expose: here the gateway's and the
operator's, from their real /metrics; the runtimes' (vLLM, llama-server) in
tests/integration/runtimes/test_dashboard_runtime_metrics.py."""
# ruff: noqa: F811 (the fixtures of test_gateway_server, imported, are the tests' arguments)

from __future__ import annotations

import json
import socket

import httpx
from aiohttp import web
from test_gateway_server import CHAT, backend_of, gateway_for, pods  # noqa: F401

from llmop import metrics as operator_metrics
from llmop.gateway.metrics import start_metrics_server
from llmop.gateway.table import build_table
from support.dashboard import dashboard_metric_names, exposed_names, metric_names


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def get(url: str) -> str:
    async with httpx.AsyncClient() as client:
        response = await client.get(url)
    assert response.status_code == 200, response.text
    return response.text


def test_every_query_names_a_server_whose_scrape_is_checked() -> None:
    names = dashboard_metric_names()
    assert names, "no metric names found in the dashboard"
    unchecked = {n for n in names if not n.startswith(("llmop_", "vllm:", "llamacpp:"))}
    assert not unchecked, f"queries of metrics no test scrapes: {sorted(unchecked)}"
    assert {n.split("_")[1] if n.startswith("llmop_") else n.split(":")[0] for n in names} >= {
        "gateway",
        "vllm",
        "llamacpp",
    }


def test_names_are_read_from_promql_and_only_names() -> None:
    expr = 'histogram_quantile(0.95, sum by (le, model) (rate(a_bucket{code=~"5..", x="rate(b)"}[5m]))) / on (pod) c:d'
    assert metric_names(expr) == {"a_bucket", "c:d"}


async def test_the_gateway_queries_use_names_its_real_metrics_expose(gateway_for, pods) -> None:
    async def answer(request: web.Request) -> web.StreamResponse:
        out = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await out.prepare(request)
        usage = {"choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 1}}
        await out.write(b"data: " + json.dumps(usage).encode() + b"\n\ndata: [DONE]\n\n")
        await out.write_eof()
        return out

    pod = await pods("p0", answer)
    gateway, client = await gateway_for(build_table([backend_of(pod)]))
    assert (await client.post("/v1/chat/completions", json={**CHAT, "stream": True})).status == 200
    port = free_port()
    runner = await start_metrics_server("127.0.0.1", port, gateway.metrics)
    assert runner is not None
    try:
        exposed = exposed_names(await get(f"http://127.0.0.1:{port}/metrics"))
    finally:
        await runner.cleanup()
    wanted = {n for n in dashboard_metric_names() if n.startswith("llmop_gateway_")}
    assert wanted and wanted <= exposed, f"not in the gateway's /metrics: {sorted(wanted - exposed)}"


async def test_the_operator_queries_use_names_its_real_metrics_expose() -> None:
    port = free_port()
    runner = await operator_metrics.start_server("127.0.0.1", port, lambda: (True, {}))
    assert runner is not None
    try:
        exposed = exposed_names(await get(f"http://127.0.0.1:{port}/metrics"))
    finally:
        await runner.cleanup()
    wanted = {
        n for n in dashboard_metric_names() if n.startswith("llmop_") and not n.startswith("llmop_gateway_")
    }
    assert wanted and wanted <= exposed, f"not in the operator's /metrics: {sorted(wanted - exposed)}"

"""The dashboard's vLLM and llama.cpp queries use only names the real servers' /metrics expose
(llama-server started as llmop starts it, with --metrics; the real vLLM of the session's pool,
shared with the other vLLM tests)."""

from __future__ import annotations

import httpx
from vllm_servers import VLLMServer

from llmop.runtimes import connect
from support.dashboard import dashboard_metric_names, exposed_names


async def scrape(url: str) -> set[str]:
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.get(url + "/metrics")
    assert response.status_code == 200, response.text[:500]
    return exposed_names(response.text)


async def test_the_llamacpp_queries_use_names_llama_server_exposes(llama_server) -> None:
    server = llama_server("--metrics").start()
    async with connect("llamacpp", server.url) as runtime:
        assert (await runtime.wait_ready(60, max_interval=0.2)).serving, server.log_tail()
    wanted = {n for n in dashboard_metric_names() if n.startswith("llamacpp:")}
    exposed = await scrape(server.url)
    assert wanted and wanted <= exposed, f"not in llama-server's /metrics: {sorted(wanted - exposed)}"


async def test_the_vllm_queries_use_names_vllm_exposes(vllm_servers, vllm_binary) -> None:
    server: VLLMServer = vllm_servers.get("real", "plain", vllm_binary)
    wanted = {n for n in dashboard_metric_names() if n.startswith("vllm:")}
    exposed = await scrape(server.url)
    assert wanted and wanted <= exposed, f"not in vLLM's /metrics: {sorted(wanted - exposed)}"

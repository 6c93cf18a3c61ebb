"""How often and how much llmop asks a runtime: fast while not Ready, cheap and slower once steady."""

from __future__ import annotations

import httpx

from llmop.loops.pace import STEADY_INTERVAL, STEADY_PROBES_PER_SECOND, steady_interval
from llmop.observer import observe_runtime

MODELS = {"object": "list", "data": [{"id": "tiny", "object": "model", "max_model_len": 2048}]}


def test_a_steady_backend_is_probed_every_steady_interval() -> None:
    assert steady_interval(1.0, observed=10) == STEADY_INTERVAL


def test_a_steady_backend_is_never_probed_faster_than_its_probe_interval() -> None:
    assert steady_interval(30.0, observed=1) == 30.0


def test_many_backends_share_one_steady_probe_budget() -> None:
    observed = 1000
    pace = steady_interval(1.0, observed)
    assert pace == observed / STEADY_PROBES_PER_SECOND
    assert observed / pace <= STEADY_PROBES_PER_SECOND


async def test_a_steady_round_asks_only_for_health_and_keeps_the_model_listing(fake_runtime) -> None:
    server = await fake_runtime({"GET /health": "", "GET /v1/models": MODELS})
    async with httpx.AsyncClient() as client:
        full = await observe_runtime("vllm", server.url, client=client)
        asked = len(server.requests)
        steady = await observe_runtime("vllm", server.url, client=client, previous=full)
    assert [m.name for m in full.models] == ["tiny"]
    assert [m.name for m in full.running] == ["tiny"]
    # vLLM's loaded models are its listed models: one request serves both; two empty requests
    # tell a generating server from a pooling one, once for the listing and the capabilities.
    assert sorted((r.method, r.path) for r in server.requests[:asked]) == [
        ("GET", "/health"),
        ("GET", "/v1/models"),
        ("POST", "/v1/completions"),
        ("POST", "/v1/embeddings"),
    ]
    assert [(r.method, r.path) for r in server.requests[asked:]] == [("GET", "/health")]
    assert steady.models == full.models and steady.running == full.running
    assert steady.probe.serving


async def test_a_runtime_that_stops_answering_loses_its_listing(fake_runtime, closed_port_url: str) -> None:
    server = await fake_runtime({"GET /health": "", "GET /v1/models": MODELS})
    async with httpx.AsyncClient() as client:
        full = await observe_runtime("vllm", server.url, client=client)
        gone = await observe_runtime("vllm", closed_port_url, client=client, previous=full)
    assert not gone.probe.serving
    assert gone.models == ()

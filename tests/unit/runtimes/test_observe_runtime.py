"""One observation of a runtime: what its API cannot tell is absent, a refused key is named."""

from __future__ import annotations

import httpx

from llmop.observer import observe_runtime
from llmop.runtimes import ProbeState

MODELS = {"object": "list", "data": [{"id": "org/tiny", "object": "model"}]}


async def test_an_openai_server_that_cannot_list_loaded_models_serves_with_its_models(fake_runtime) -> None:
    server = await fake_runtime({"GET /v1/models": MODELS})
    for kind in ("openai", "lmstudio"):
        async with httpx.AsyncClient() as client:
            seen = await observe_runtime(kind, server.url, client=client)
        assert seen.probe.serving, seen.probe.reason
        assert [m.name for m in seen.models] == ["org/tiny"]
        assert seen.running is None


async def test_a_key_refused_by_the_model_list_behind_a_public_health_endpoint_is_unauthorized(
    fake_runtime,
) -> None:
    from aiohttp import web

    async def refuse(request: web.Request) -> web.Response:
        return web.json_response({"error": "Unauthorized"}, status=401)

    server = await fake_runtime({"GET /health": {}, "GET /v1/models": refuse, "GET /props": {}})
    for kind in ("vllm", "llamacpp"):
        async with httpx.AsyncClient() as client:
            seen = await observe_runtime(kind, server.url, client=client, api_key="wrong")
        assert seen.probe.state is ProbeState.UNAUTHORIZED
        assert "401" in seen.probe.reason and "Unauthorized" in seen.probe.reason

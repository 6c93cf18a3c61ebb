"""One observation of a runtime: what its API cannot tell is absent, a refused key is named."""

from __future__ import annotations

import asyncio
import gc
import warnings

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


async def test_an_observation_stopped_as_its_runtime_answers_leaves_no_request_never_made() -> None:
    """A deleted backend's observer is cancelled at any point: when that is right after the health
    check, the model listings it was about to ask for must not linger as coroutines never awaited
    (each warned in the operator's log and kept the warning's source lines in memory)."""

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/health":
            current = asyncio.current_task()
            assert current is not None
            current.cancel()  # the backend is deleted just as its runtime answered
            return httpx.Response(200)
        return httpx.Response(200, json=MODELS)

    async def observe() -> None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
            await observe_runtime("vllm", "http://runtime.test:8000", client=client)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        observing = asyncio.create_task(observe())
        await asyncio.wait([observing])
        assert observing.cancelled()
        del observing  # with its traceback, whatever it left behind is collected now
        gc.collect()
    assert [str(w.message) for w in caught if w.category is RuntimeWarning] == []

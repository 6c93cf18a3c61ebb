"""probe() and wait_ready(): what a user sees while a runtime starts, loads, refuses or fails."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiohttp import web
from fake_runtimes import close_without_answer, json_reply, never_answer, reset_connection

from llmop.runtimes import ProbeResult, ProbeState, connect


async def test_nothing_listening_is_reported_as_starting(closed_port_url: str) -> None:
    async with connect("llamacpp", closed_port_url) as runtime:
        result = await runtime.probe()
    assert result.state is ProbeState.STARTING
    assert not result.serving
    assert "refused the connection" in result.reason
    assert closed_port_url in result.reason
    assert result.http_status is None


async def test_connection_reset_is_reported_as_starting(raw_server) -> None:
    url = await raw_server(reset_connection)
    async with connect("vllm", url) as runtime:
        result = await runtime.probe()
    assert result.state is ProbeState.STARTING
    assert "closed the connection" in result.reason


async def test_connection_closed_without_answer_is_reported_as_starting(raw_server) -> None:
    url = await raw_server(close_without_answer)
    async with connect("vllm", url) as runtime:
        result = await runtime.probe()
    assert result.state is ProbeState.STARTING


async def test_silence_is_reported_as_timeout(raw_server) -> None:
    url = await raw_server(never_answer)
    async with connect("vllm", url, timeout=0.3) as runtime:
        result = await runtime.probe()
    assert result.state is ProbeState.TIMEOUT
    assert "did not answer GET /health within 0.3s" in result.reason


async def test_llamacpp_loading_model_503_is_reported_as_loading(fake_runtime) -> None:
    loading = {"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}}
    server = await fake_runtime({"GET /health": lambda request: _reply(loading, 503)})
    async with connect("llamacpp", server.url) as runtime:
        result = await runtime.probe()
    assert result.state is ProbeState.LOADING
    assert result.http_status == 503
    assert "Loading model" in result.reason


async def test_old_llamacpp_loading_answer_with_200_is_still_loading(fake_runtime) -> None:
    server = await fake_runtime({"GET /health": {"status": "loading model"}})
    async with connect("llamacpp", server.url) as runtime:
        result = await runtime.probe()
    assert result.state is ProbeState.LOADING
    assert "loading model" in result.reason


async def test_vllm_empty_200_is_serving(fake_runtime) -> None:
    server = await fake_runtime({"GET /health": lambda request: _empty(200)})
    async with connect("vllm", server.url) as runtime:
        result = await runtime.probe()
    assert result.serving
    assert result.http_status == 200
    assert result.url == server.url + "/health"
    assert result.latency_seconds >= 0


@pytest.mark.parametrize("status", [401, 403])
async def test_rejected_key_is_unauthorized_with_advice(fake_runtime, status: int) -> None:
    server = await fake_runtime({"GET /v1/models": lambda request: _reply({"error": "Unauthorized"}, status)})
    async with connect("lmstudio", server.url, api_key="wrong") as runtime:
        result = await runtime.probe()
    assert result.state is ProbeState.UNAUTHORIZED
    assert "Unauthorized" in result.reason
    assert "API key" in result.reason


async def test_missing_key_says_none_was_given(fake_runtime) -> None:
    server = await fake_runtime({"GET /v1/models": lambda request: _reply({"error": "Unauthorized"}, 401)})
    async with connect("openai", server.url) as runtime:
        result = await runtime.probe()
    assert "none was given" in result.reason


async def test_server_error_is_error_with_the_runtimes_words(fake_runtime) -> None:
    server = await fake_runtime(
        {"GET /health": lambda request: _reply({"detail": "engine dead: CUDA out of memory"}, 500)}
    )
    async with connect("sglang", server.url) as runtime:
        result = await runtime.probe()
    assert result.state is ProbeState.ERROR
    assert result.http_status == 500
    assert "CUDA out of memory" in result.reason


async def test_ollama_probe_reports_its_version(fake_runtime) -> None:
    server = await fake_runtime({"GET /api/version": {"version": "0.17.4"}})
    async with connect("ollama", server.url) as runtime:
        result = await runtime.probe()
    assert result.serving
    assert result.version == "0.17.4"
    assert "0.17.4" in result.reason


async def test_ollama_probe_of_another_server_is_an_error(fake_runtime) -> None:
    server = await fake_runtime({"GET /api/version": lambda request: web.Response(text="<html>hi</html>")})
    async with connect("ollama", server.url) as runtime:
        result = await runtime.probe()
    assert result.state is ProbeState.ERROR
    assert "HTTP 200 text/plain, 15 bytes, not the JSON Ollama's /api/version answers" in result.reason
    assert "<html>" not in result.reason


async def test_wrong_kind_of_server_is_an_error_that_says_so(fake_runtime) -> None:
    server = await fake_runtime({"GET /health": lambda request: _empty(200)})  # vLLM, not Ollama
    async with connect("ollama", server.url) as runtime:
        result = await runtime.probe()
    assert result.state is ProbeState.ERROR
    assert "really Ollama" in result.reason


async def test_each_profile_probes_its_own_health_path(fake_runtime) -> None:
    expected = {
        "vllm": "/health",
        "llamacpp": "/health",
        "tgi": "/health",
        "sglang": "/health",
        "localai": "/readyz",
        "openai": "/v1/models",
        "lmstudio": "/v1/models",
        "ollama": "/api/version",
    }
    routes = {f"GET {path}": {"version": "1", "data": []} for path in set(expected.values())}
    server = await fake_runtime(routes)
    for kind, path in expected.items():
        async with connect(kind, server.url) as runtime:
            result = await runtime.probe()
        assert result.serving, (kind, result.reason)
        assert result.url == server.url + path


async def test_wait_ready_sees_refused_then_loading_then_serving(unused_port_url) -> None:
    """The cold start of a real runtime: port closed, then 503 while loading, then 200."""
    url, port = unused_port_url
    phase = {"loading_until": 0.0}

    async def health(request: web.Request) -> web.Response:
        if time.monotonic() < phase["loading_until"]:
            return _reply({"error": {"code": 503, "message": "Loading model"}}, 503)
        return _reply({"status": "ok"})

    async def start_later() -> web.AppRunner:
        await asyncio.sleep(0.4)
        app = web.Application()
        app.router.add_get("/health", health)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await runner.setup()
        phase["loading_until"] = time.monotonic() + 0.4
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return runner

    seen: list[ProbeResult] = []
    starter = asyncio.create_task(start_later())
    async with connect("llamacpp", url) as runtime:
        result = await runtime.wait_ready(10, initial_interval=0.05, max_interval=0.1, on_probe=seen.append)
    runner = await starter
    await runner.cleanup()
    assert result.serving
    states = [probe.state for probe in seen]
    assert states[0] is ProbeState.STARTING
    assert ProbeState.LOADING in states
    assert states.index(ProbeState.LOADING) < states.index(ProbeState.SERVING)


async def test_wait_ready_gives_up_at_the_deadline_with_the_last_result(closed_port_url: str) -> None:
    async with connect("vllm", closed_port_url) as runtime:
        started = time.monotonic()
        result = await runtime.wait_ready(0.5, initial_interval=0.05, max_interval=0.1)
        waited = time.monotonic() - started
    assert result.state is ProbeState.STARTING
    assert 0.4 < waited < 3


async def test_wait_ready_stops_at_once_when_the_key_is_refused(fake_runtime) -> None:
    server = await fake_runtime({"GET /health": lambda request: _reply({"error": "Unauthorized"}, 401)})
    async with connect("vllm", server.url) as runtime:
        result = await runtime.wait_ready(30, initial_interval=0.05)
    assert result.state is ProbeState.UNAUTHORIZED
    assert len(server.requests) == 1


def _reply(data: object, status: int = 200) -> web.Response:
    return json_reply(data, status)


def _empty(status: int) -> web.Response:
    return web.Response(status=status)


@pytest.fixture
def unused_port_url(closed_port_url: str) -> tuple[str, int]:
    return closed_port_url, int(closed_port_url.rsplit(":", 1)[1])

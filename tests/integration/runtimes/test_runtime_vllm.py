"""llmop's vLLM adapter against the real vLLM (hack/build-runtimes.sh's CPU build) serving a tiny
Qwen3-layout repo as "Qwen/Qwen3-0.6B".

The shared servers come from conftest.py's `vllm_servers`, which test_vllm_conformance.py uses too;
the first test starts a server of its own, since it watches it start and kills its engine.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from vllm_servers import API_KEY, MAX_MODEL_LEN, REAL_START_SECONDS, SECOND_NAME, SERVED_NAME, VLLMServer

from llmop.runtimes import (
    AuthFailed,
    ModelCapability,
    ModelNotFound,
    ProbeResult,
    ProbeState,
    RuntimeCapabilities,
    Unsupported,
    connect,
)


@pytest.fixture
def plain(vllm_servers, vllm_binary) -> VLLMServer:
    """One served name, no API key."""
    return vllm_servers.get("real", "plain", vllm_binary)


@pytest.fixture
def keyed(vllm_servers, vllm_binary) -> VLLMServer:
    """Two served names and an API key."""
    return vllm_servers.get("real", "keyed", vllm_binary)


async def probe_until(runtime, leaves: ProbeState, within_seconds: float) -> list[ProbeResult]:
    """Probe every 0.05 s while the state is `leaves`; the probes, the first other state last."""
    seen: list[ProbeResult] = []
    deadline = time.monotonic() + within_seconds
    while True:
        seen.append(await runtime.probe())
        if seen[-1].state is not leaves:
            return seen
        assert time.monotonic() < deadline, f"still {leaves} after {within_seconds}s: {seen[-1].reason}"
        await asyncio.sleep(0.05)


async def test_cold_start_is_starting_then_serving_and_a_dead_engine_is_an_error(
    vllm_servers, vllm_binary
) -> None:
    server = vllm_servers.fresh("real", "plain", vllm_binary)
    seen: list[ProbeResult] = []
    async with connect("vllm", server.url) as runtime:
        server.process.start()
        result = await runtime.wait_ready(
            REAL_START_SECONDS, initial_interval=0.05, max_interval=0.2, on_probe=seen.append
        )
        assert result.serving, server.process.log_tail()
        server.ready_at = time.monotonic()
        # The port is closed for the whole load, then /health answers 200: no LOADING phase.
        states = [probe.state for probe in seen]
        phases = [state for index, state in enumerate(states) if index == 0 or states[index - 1] is not state]
        assert phases == [ProbeState.STARTING, ProbeState.SERVING]

        killed_at = await asyncio.to_thread(server.kill_engine_core)
        *_, dead = await probe_until(runtime, ProbeState.SERVING, 3)
        assert time.monotonic() - killed_at < 1.5
        assert dead.state is ProbeState.ERROR, dead.reason
        assert dead.http_status == 503
        assert "engine is dead" in dead.reason
        # vLLM's watchdog shuts it down within 5 s; then nothing listens.
        *_, gone = await probe_until(runtime, ProbeState.ERROR, 15)
        assert gone.state is ProbeState.STARTING, gone.reason
    assert await asyncio.to_thread(server.wait_exit, 10) == 0, server.process.log_tail()


async def test_models_capabilities_and_running_match_what_the_server_says(plain: VLLMServer) -> None:
    async with connect("vllm", plain.url + "/v1") as runtime:
        assert (await runtime.wait_ready(30, max_interval=0.2)).serving, plain.process.log_tail()
        (model,) = await runtime.list_models()
        running = await runtime.list_running()
        capabilities = await runtime.capabilities()
    async with httpx.AsyncClient() as client:
        (raw,) = (await client.get(plain.url + "/v1/models")).json()["data"]
    assert model.name == raw["id"] == SERVED_NAME
    assert model.context_length == raw["max_model_len"] == MAX_MODEL_LEN
    # A generating model: /v1/completions and /v1/chat/completions exist, /v1/embeddings does not.
    assert model.capabilities == {ModelCapability.CHAT, ModelCapability.COMPLETION}
    assert [(r.name, r.context_length) for r in running] == [(model.name, model.context_length)]
    assert capabilities == RuntimeCapabilities(chat=True, completions=True, embeddings=False, streaming=True)
    assert runtime.normalize_model_name("hf://" + SERVED_NAME) == model.name


async def test_warmup_generates_a_token_and_names_a_missing_model(plain: VLLMServer) -> None:
    async with connect("vllm", plain.url) as runtime:
        assert (await runtime.wait_ready(30, max_interval=0.2)).serving, plain.process.log_tail()
        before = await generated_tokens(plain.url)
        result = await runtime.warmup(SERVED_NAME, timeout=60)
        after = await generated_tokens(plain.url)
        with pytest.raises(ModelNotFound, match="The model `other/model` does not exist"):
            await runtime.warmup("other/model", timeout=60)
    assert result.model == SERVED_NAME
    assert after - before >= 1, "the server generated no token"


async def generated_tokens(url: str) -> float:
    async with httpx.AsyncClient() as client:
        metrics = (await client.get(url + "/metrics")).text
    for line in metrics.splitlines():
        if line.startswith("vllm:generation_tokens_total{"):
            return float(line.split()[-1])
    raise AssertionError(f"no vllm:generation_tokens_total in /metrics:\n{metrics[:2000]}")


async def test_a_wrong_api_key_serves_but_cannot_list_models(keyed: VLLMServer) -> None:
    async with connect("vllm", keyed.url, api_key="wrong") as wrong:
        # vLLM leaves /health open: the runtime serves, and refuses the key on the API.
        assert (await wrong.wait_ready(30, max_interval=0.2)).serving, keyed.process.log_tail()
        with pytest.raises(AuthFailed, match="401 Unauthorized: Unauthorized"):
            await wrong.list_models()
    async with connect("vllm", keyed.url, api_key=API_KEY) as right:
        assert [model.name for model in await right.list_models()] == [SERVED_NAME, SECOND_NAME]


async def test_pull_is_unsupported(plain: VLLMServer) -> None:
    async with connect("vllm", plain.url) as runtime:
        with pytest.raises(Unsupported, match="vLLM does not support pulling models"):
            async for _ in runtime.pull(SERVED_NAME):
                pass

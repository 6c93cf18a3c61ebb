"""The vLLM adapter against the protocol-exact vLLM stand-in (real vLLM does not install here)."""

from __future__ import annotations

import time

import httpx
import pytest

from llmop.runtimes import (
    AuthFailed,
    ModelNotFound,
    ProbeResult,
    ProbeState,
    Unsupported,
    connect,
)

MODEL = "Qwen/Qwen3-0.6B"


async def test_cold_start_is_refused_then_loading_then_serving(vllm_standin) -> None:
    server = vllm_standin(
        "--model",
        "/models/qwen3",
        "--served-model-name",
        MODEL,
        "--bind-delay",
        "1",
        "--loading-seconds",
        "1",
    ).start()
    seen: list[ProbeResult] = []
    async with connect("vllm", server.url) as runtime:
        started = time.monotonic()
        result = await runtime.wait_ready(60, initial_interval=0.05, max_interval=0.2, on_probe=seen.append)
    assert result.serving, server.log_tail()
    assert time.monotonic() - started >= 2
    states = [probe.state for probe in seen]
    # Each phase in order, each seen at least once.
    phases = [state for index, state in enumerate(states) if index == 0 or states[index - 1] is not state]
    assert phases == [ProbeState.STARTING, ProbeState.LOADING, ProbeState.SERVING]
    loading = next(probe for probe in seen if probe.state is ProbeState.LOADING)
    assert loading.http_status == 503


async def test_models_match_what_the_server_says(vllm_standin) -> None:
    server = vllm_standin(
        "--model", "/models/qwen3", "--served-model-name", MODEL, "--max-model-len", "4096"
    ).start()
    async with connect("vllm", server.url + "/v1") as runtime:
        assert (await runtime.wait_ready(30, max_interval=0.2)).serving, server.log_tail()
        (model,) = await runtime.list_models()
        (running,) = await runtime.list_running()
    async with httpx.AsyncClient() as client:
        (raw,) = (await client.get(server.url + "/v1/models")).json()["data"]
    assert model.name == raw["id"] == MODEL == running.name
    assert model.context_length == raw["max_model_len"] == 4096
    assert runtime.normalize_model_name("hf://" + MODEL) == model.name


async def test_warmup_completes_one_token_and_names_a_missing_model(vllm_standin) -> None:
    server = vllm_standin("--model", "/models/qwen3", "--served-model-name", MODEL).start()
    async with connect("vllm", server.url) as runtime:
        assert (await runtime.wait_ready(30, max_interval=0.2)).serving, server.log_tail()
        result = await runtime.warmup(MODEL, timeout=30)
        with pytest.raises(ModelNotFound, match="The model `other/model` does not exist"):
            await runtime.warmup("other/model", timeout=30)
    assert result.model == MODEL
    async with httpx.AsyncClient() as client:
        metrics = (await client.get(server.url + "/metrics")).text
    generated = [line for line in metrics.splitlines() if line.startswith("vllm:generation_tokens_total")]
    assert generated and float(generated[0].split()[-1]) == 1.0


async def test_api_key(vllm_standin) -> None:
    server = vllm_standin("--model", "/models/qwen3", "--served-model-name", MODEL, "--api-key", "k1").start()
    async with connect("vllm", server.url, api_key="nope") as wrong:
        # vLLM leaves /health open: it serves, and refuses the key on the API.
        assert (await wrong.wait_ready(30, max_interval=0.2)).serving, server.log_tail()
        with pytest.raises(AuthFailed, match="401 Unauthorized: Unauthorized"):
            await wrong.list_models()
    async with connect("vllm", server.url, api_key="k1") as right:
        assert [model.name for model in await right.list_models()] == [MODEL]


async def test_pull_is_unsupported(vllm_standin) -> None:
    server = vllm_standin("--model", "/models/qwen3").start()
    async with connect("vllm", server.url) as runtime:
        with pytest.raises(Unsupported, match="vLLM does not support pulling models"):
            async for _ in runtime.pull(MODEL):
                pass

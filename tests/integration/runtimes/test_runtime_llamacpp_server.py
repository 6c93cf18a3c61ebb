"""The adapters against a real llama-server (built from source) serving a tiny real GGUF model."""

from __future__ import annotations

import asyncio
import signal
import time

import httpx
import pytest
from runtime_processes import TINY_CONTEXT_LENGTH, run_shell, start_shell

from llmop.runtimes import (
    AuthFailed,
    ModelCapability,
    ProbeResult,
    ProbeState,
    RuntimeUnavailable,
    connect,
)

PROBE_INTERVAL = 0.25


async def first_healthy_moment(url: str, deadline: float) -> float:
    """When the server first answered /health with 200, seen by a tight independent poll."""
    async with httpx.AsyncClient(timeout=1) as client:
        while time.monotonic() < deadline:
            try:
                if (await client.get(url + "/health")).status_code == 200:
                    return time.monotonic()
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.01)
    raise AssertionError(f"{url} never became healthy")


async def test_probing_before_the_server_exists_reports_serving_within_one_interval(llama_server) -> None:
    server = llama_server()
    seen: list[tuple[float, ProbeResult]] = []
    async with connect("llamacpp", server.url) as runtime:
        waiting = asyncio.create_task(
            runtime.wait_ready(
                60,
                initial_interval=0.05,
                max_interval=PROBE_INTERVAL,
                on_probe=lambda result: seen.append((time.monotonic(), result)),
            )
        )
        await asyncio.sleep(1.0)  # the adapter probes a port where nothing listens yet
        assert not waiting.done()
        server.start()
        healthy_at = await first_healthy_moment(server.url, time.monotonic() + 60)
        result = await waiting
    assert result.serving, server.log_tail()
    assert seen[0][1].state is ProbeState.STARTING
    serving_at = seen[-1][0]
    # Generous: one interval, plus a probe's round trip and a loaded machine's scheduling.
    assert serving_at - healthy_at <= PROBE_INTERVAL + 1.0


async def test_models_and_context_length_match_what_the_server_says(llama_server) -> None:
    server = llama_server("--ctx-size", "256").start()
    async with connect("llamacpp", server.url) as runtime:
        assert (await runtime.wait_ready(60, max_interval=PROBE_INTERVAL)).serving, server.log_tail()
        (model,) = await runtime.list_models()
        (running,) = await runtime.list_running()
    async with httpx.AsyncClient() as client:
        raw_models = (await client.get(server.url + "/v1/models")).json()
        raw_props = (await client.get(server.url + "/props")).json()
    (raw_model,) = raw_models["data"]
    assert model.name == raw_model["id"] == running.name
    assert model.trained_context_length == raw_model["meta"]["n_ctx_train"] == TINY_CONTEXT_LENGTH
    assert model.size_bytes == raw_model["meta"]["size"]
    assert model.context_length == raw_props["default_generation_settings"]["n_ctx"] == 256
    assert {ModelCapability.CHAT, ModelCapability.COMPLETION} <= model.capabilities
    # The tiny model's ChatML template says nothing of tools.
    assert ModelCapability.TOOLS not in model.capabilities


async def test_warmup_runs_a_real_completion(llama_server) -> None:
    server = llama_server("--metrics").start()
    async with connect("llamacpp", server.url) as runtime:
        assert (await runtime.wait_ready(60, max_interval=PROBE_INTERVAL)).serving, server.log_tail()
        (model,) = await runtime.list_models()
        before = await predicted_tokens(server.url)
        result = await runtime.warmup(model.name, timeout=60)
        after = await predicted_tokens(server.url)
    assert result.model == model.name
    assert after - before >= 1, "the server generated no token"


async def predicted_tokens(url: str) -> float:
    async with httpx.AsyncClient() as client:
        metrics = (await client.get(url + "/metrics")).text
    for line in metrics.splitlines():
        if line.startswith("llamacpp:tokens_predicted_total"):
            return float(line.split()[-1])
    raise AssertionError(f"no llamacpp:tokens_predicted_total in /metrics:\n{metrics}")


async def test_killing_the_server_mid_request_is_a_clear_error(llama_server) -> None:
    server = llama_server().start()
    async with connect("llamacpp", server.url, timeout=30) as runtime:
        assert (await runtime.wait_ready(60, max_interval=PROBE_INTERVAL)).serving, server.log_tail()
        # Frozen, the server still accepts the connection (the kernel does) but never answers:
        # the request is in flight when the process dies.
        server.signal(signal.SIGSTOP)
        request = asyncio.create_task(runtime.warmup("tiny", timeout=30))
        await asyncio.sleep(0.5)
        assert not request.done()
        server.kill()
        started = time.monotonic()
        with pytest.raises(RuntimeUnavailable, match="closed the connection") as caught:
            await request
        assert time.monotonic() - started < 5
        after = await runtime.probe()
    assert server.url in str(caught.value)
    assert "POST /v1/completions" in str(caught.value)
    assert after.state is ProbeState.STARTING


async def test_api_key_guards_the_api_but_not_health(llama_server) -> None:
    server = llama_server("--api-key", "sekrit").start()
    async with connect("llamacpp", server.url) as keyless:
        # /health is public in llama-server: the runtime serves, but will not list models.
        assert (await keyless.wait_ready(60, max_interval=PROBE_INTERVAL)).serving, server.log_tail()
        with pytest.raises(AuthFailed, match="none was given"):
            await keyless.list_models()
    async with connect("llamacpp", server.url, api_key="wrong") as wrong:
        with pytest.raises(AuthFailed, match="check that the API key"):
            await wrong.list_models()
    async with connect("llamacpp", server.url, api_key="sekrit") as keyed:
        assert len(await keyed.list_models()) == 1


async def test_llmop_probe_and_models_from_a_shell(llama_server) -> None:
    server = llama_server()
    # Started behind the command's back, once it has seen the port closed: `probe --wait`
    # waits out the cold start.
    command = start_shell(f"llmop probe --url {server.url} --runtime llamacpp --wait 60s")
    first_wait = await asyncio.to_thread(command.stderr.readline)
    assert "waiting: starting" in first_wait, first_wait
    server.start()
    stdout, stderr = await asyncio.to_thread(command.communicate, timeout=120)
    assert command.returncode == 0, first_wait + stderr + server.log_tail()
    assert stdout.splitlines()[1].startswith("serving")

    models = await asyncio.to_thread(run_shell, f"llmop models --url {server.url} --runtime llamacpp")
    assert models.returncode == 0, models.stderr
    header, row = models.stdout.splitlines()
    assert header.split()[:3] == ["NAME", "SIZE", "CONTEXT"]
    assert row.split()[0].endswith("tiny.gguf")

    as_json = await asyncio.to_thread(
        run_shell,
        f"llmop models --url {server.url} --runtime llamacpp --json | python -c "
        "'import json,sys; print(json.load(sys.stdin)[0][\"trained_context_length\"])'",
    )
    assert as_json.stdout.strip() == str(TINY_CONTEXT_LENGTH), as_json.stderr

    server.kill()
    down = await asyncio.to_thread(run_shell, f"llmop probe --url {server.url} --runtime llamacpp")
    assert down.returncode == 1
    assert "starting" in down.stdout and "refused the connection" in down.stdout


async def test_a_router_over_several_models_tells_which_are_loaded(
    runtime_processes, llama_server_binary, tiny_gguf, tmp_path
) -> None:
    """llama-server without --model is a router over a folder of models, loaded on demand: each
    listed model says whether it is in memory, and only a loaded one has a served context."""
    models = tmp_path / "models"
    models.mkdir()
    for name in ("alpha", "beta"):
        (models / f"{name}.gguf").write_bytes(tiny_gguf.read_bytes())
    argv = [str(llama_server_binary), "--models-dir", str(models), "--no-models-autoload", "-c", "512"]
    server = runtime_processes("llama-router", [*argv, "--host", "127.0.0.1", "--port", "{port}"]).start()
    async with connect("llamacpp", server.url) as runtime:
        assert (await runtime.wait_ready(30)).serving, server.log_tail()
        before = {model.name: model.loaded for model in await runtime.list_models()}
        async with httpx.AsyncClient(timeout=60) as client:
            loading = await client.post(server.url + "/models/load", json={"model": "alpha"})
            assert loading.status_code == 200, loading.text
        deadline = time.monotonic() + 60
        while (listed := {m.name: m for m in await runtime.list_models()})["alpha"].loaded is not True:
            assert time.monotonic() < deadline, f"alpha never loaded: {server.log_tail()}"
            await asyncio.sleep(0.2)
        running = await runtime.list_running()
    assert before == {"alpha": False, "beta": False}
    assert (listed["alpha"].loaded, listed["beta"].loaded) == (True, False)
    assert [model.name for model in running] == ["alpha"]
    assert listed["alpha"].context_length == 512 and listed["beta"].context_length is None
    assert listed["alpha"].trained_context_length == TINY_CONTEXT_LENGTH

"""The Ollama adapter against the Ollama that hack/build-runtimes.sh provides, pulling the tiny
model from a local registry (hack/standins/ollama_registry.py) with real bytes."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from runtime_processes import (
    HACK,
    TINY_CONTEXT_LENGTH,
    VENV_BIN,
    RuntimeProcess,
    run_shell,
    wait_until_listening,
)

from llmop.runtimes import ModelCapability, PullFailed, PullLine, RuntimeAdapter, connect

#: Slow enough that the tiny model's download shows several progress lines.
REGISTRY_BYTES_PER_SECOND = 300_000


@dataclass
class OllamaWithRegistry:
    ollama: RuntimeProcess
    registry: RuntimeProcess
    gguf: Path
    #: The file the registry reads at each download (its digest was taken at start).
    served_gguf: Path

    def model(self, name: str = "tiny") -> str:
        return f"127.0.0.1:{self.registry.port}/library/{name}:latest"


@pytest.fixture
async def ollama(
    runtime_processes: Callable[..., RuntimeProcess], ollama_binary: Path, tiny_gguf: Path, tmp_path: Path
) -> OllamaWithRegistry:
    served = tmp_path / "served.gguf"
    shutil.copyfile(tiny_gguf, served)
    registry = runtime_processes(
        "registry",
        [
            str(VENV_BIN / "python"),
            str(HACK / "standins" / "ollama_registry.py"),
            "--port",
            "{port}",
            "--model",
            f"library/tiny:latest={served}",
            "--throttle",
            str(REGISTRY_BYTES_PER_SECOND),
        ],
    ).start()
    home = tmp_path / "ollama-home"
    home.mkdir()
    server = runtime_processes(
        "ollama",
        [str(ollama_binary), "serve"],
        env={
            "HOME": str(home),
            "OLLAMA_HOST": "127.0.0.1:{port}",
            "OLLAMA_MODELS": str(home / "models"),
            "OLLAMA_NUM_PARALLEL": "1",
        },
    )
    server.start()
    await wait_until_listening(registry.port)
    async with connect("ollama", server.url) as runtime:
        ready = await runtime.wait_ready(60, max_interval=0.2)
    assert ready.serving, server.log_tail()
    return OllamaWithRegistry(ollama=server, registry=registry, gguf=tiny_gguf, served_gguf=served)


async def pull_all(runtime: RuntimeAdapter, model: str) -> list[PullLine]:
    return [progress async for progress in runtime.pull(model, insecure=True)]


async def test_probe_reports_ollamas_version(ollama: OllamaWithRegistry) -> None:
    async with connect("ollama", ollama.ollama.url) as runtime:
        result = await runtime.probe()
    async with httpx.AsyncClient() as client:
        raw = (await client.get(ollama.ollama.url + "/api/version")).json()
    assert result.serving
    assert result.version == raw["version"]


async def test_pull_streams_per_layer_progress_and_the_model_appears(ollama: OllamaWithRegistry) -> None:
    model = ollama.model()
    async with connect("ollama", ollama.ollama.url) as runtime:
        progress = await pull_all(runtime, model)
        models = await runtime.list_models()
    statuses = [line.status for line in progress]
    assert statuses[0] == "pulling manifest"
    assert "verifying sha256 digest" in statuses
    assert statuses[-1] == "success"

    weights_digest = "sha256:" + hashlib.sha256(ollama.gguf.read_bytes()).hexdigest()
    weights = [line for line in progress if line.digest == weights_digest]
    assert weights, f"no progress for the weights layer {weights_digest}: {statuses}"
    assert {line.total for line in weights} == {ollama.gguf.stat().st_size}
    completed = [line.completed or 0 for line in weights]
    assert completed == sorted(completed)
    # Ollama reports a layer every 60 ms and stops when it is done (server/download.go, Wait):
    # the last count may fall short of the total; "verifying sha256 digest" says it is all here.
    assert 0 < completed[-1] <= ollama.gguf.stat().st_size
    assert statuses.index("verifying sha256 digest") > statuses.index(weights[-1].status)
    assert len(set(completed)) >= 3, "a throttled download reports progress as it goes"

    (tiny,) = [found for found in models if found.name == runtime.normalize_model_name(model)]
    async with httpx.AsyncClient() as client:
        (raw_tag,) = (await client.get(ollama.ollama.url + "/api/tags")).json()["models"]
        raw_show = (await client.post(ollama.ollama.url + "/api/show", json={"model": model})).json()
    assert tiny.name == raw_tag["name"]
    assert tiny.size_bytes == raw_tag["size"]
    assert tiny.digest == "sha256:" + raw_tag["digest"]
    assert (
        tiny.trained_context_length == raw_show["model_info"]["llama.context_length"] == TINY_CONTEXT_LENGTH
    )
    assert ModelCapability.COMPLETION in tiny.capabilities


async def test_pull_of_an_unknown_model_reports_ollamas_own_text(ollama: OllamaWithRegistry) -> None:
    missing = ollama.model("nosuch")
    async with httpx.AsyncClient(timeout=30) as client:
        raw = await client.post(ollama.ollama.url + "/api/pull", json={"model": missing, "insecure": True})
    said = [json.loads(line)["error"] for line in raw.text.splitlines() if '"error"' in line]
    assert said, raw.text
    async with connect("ollama", ollama.ollama.url) as runtime:
        with pytest.raises(PullFailed) as caught:
            await pull_all(runtime, missing)
        assert await runtime.list_models() == []
    assert caught.value.runtime_message == said[0]
    assert said[0] in str(caught.value) and missing in str(caught.value)


async def test_pull_failing_after_the_download_reports_ollamas_own_text(ollama: OllamaWithRegistry) -> None:
    """The registry's bytes no longer match the digest it announced: Ollama downloads them, then
    fails its check; the adapter has streamed the progress and ends with Ollama's words."""
    size = ollama.served_gguf.stat().st_size
    with ollama.served_gguf.open("r+b") as served:
        served.seek(size - 1000)
        served.write(b"\xff" * 1000)
    want = "sha256:" + hashlib.sha256(ollama.gguf.read_bytes()).hexdigest()
    seen: list[PullLine] = []
    async with connect("ollama", ollama.ollama.url) as runtime:
        with pytest.raises(PullFailed) as caught:
            async for progress in runtime.pull(ollama.model(), insecure=True):
                seen.append(progress)
        assert await runtime.list_models() == []
    downloaded = [line for line in seen if line.digest == want]
    # The whole layer came (its total announced, progress streamed) before the check failed.
    assert downloaded and downloaded[-1].total == size and 0 < (downloaded[-1].completed or 0) <= size
    assert caught.value.runtime_message.startswith("digest mismatch")
    assert f"want {want}" in caught.value.runtime_message
    assert caught.value.runtime_message in str(caught.value)


async def test_warmup_loads_the_model_and_delete_removes_it(ollama: OllamaWithRegistry) -> None:
    model = ollama.model()
    async with connect("ollama", ollama.ollama.url) as runtime:
        await pull_all(runtime, model)
        result = await runtime.warmup(model, timeout=120, keep_alive="5m")
        running = await runtime.list_running()
        (listed,) = await runtime.list_models()
        async with httpx.AsyncClient() as client:
            (raw,) = (await client.get(ollama.ollama.url + "/api/ps")).json()["models"]
        assert await runtime.delete_model(model) is True
        assert await runtime.delete_model(model) is False
        assert await runtime.list_models() == []
    assert result.model == model
    (loaded,) = running
    assert loaded.name == raw["name"] == runtime.normalize_model_name(model)
    assert loaded.size_bytes == raw["size"] and loaded.size_bytes > 0
    assert loaded.expires_at is not None
    # The context it runs with is what /api/ps says once loaded (the tiny model's 1024 caps
    # Ollama's default); the listing alone does not know it and does not guess the trained one.
    assert loaded.context_length == raw["context_length"] == TINY_CONTEXT_LENGTH
    assert listed.context_length is None and listed.trained_context_length == TINY_CONTEXT_LENGTH


async def test_llmop_pull_from_a_shell(ollama: OllamaWithRegistry) -> None:
    url = ollama.ollama.url
    pulled = await asyncio.to_thread(
        run_shell, f"llmop pull --url {url} --runtime ollama --insecure {ollama.model()}"
    )
    assert pulled.returncode == 0, pulled.stderr
    lines = pulled.stdout.splitlines()
    assert lines[0] == "pulling manifest"
    assert lines[-1] == "success"
    assert any(line.endswith("%") for line in lines), "progress is printed while it downloads"
    assert len(lines) < 40, "progress is printed at a readable rate"

    listed = await asyncio.to_thread(run_shell, f"llmop models --url {url} --runtime ollama")
    assert ollama.model() in listed.stdout

    failed = await asyncio.to_thread(
        run_shell, f"llmop pull --url {url} --runtime ollama --insecure {ollama.model('nosuch')}"
    )
    assert failed.returncode == 1
    assert "file does not exist" in failed.stderr

"""The Ollama adapter against answers shaped as Ollama's API documents them."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import pytest
from aiohttp import web
from fake_runtimes import json_reply

from llmop.runtimes import (
    ModelCapability,
    ModelNotFound,
    PullFailed,
    ResponseTooLarge,
    RuntimeHTTPError,
    RuntimeTimeout,
    RuntimeUnavailable,
    connect,
)

QWEN_DIGEST = "ff82381e2bea77d91c1b824c7afb83f6fb73e9f7de9dda631bcdbca564aa5435"
TAGS = {
    "models": [
        {
            "name": "qwen3:0.6b",
            "model": "qwen3:0.6b",
            "modified_at": "2025-05-01T10:00:00.123456789+02:00",
            "size": 522653767,
            "digest": QWEN_DIGEST,
            "details": {
                "format": "gguf",
                "family": "qwen3",
                "parameter_size": "751.63M",
                "quantization_level": "Q4_K_M",
            },
        },
        {
            "name": "all-minilm:latest",
            "model": "all-minilm:latest",
            "modified_at": "2025-04-01T00:00:00Z",
            "size": 45960996,
            "digest": "1b226e2802dbb772b5fc32a58f103ca1804ef7501331012de126ab22f67475ef",
            "details": {"format": "gguf", "family": "bert"},
        },
    ]
}
SHOW = {
    "qwen3:0.6b": {
        "parameters": 'repeat_penalty                 1\nstop                           "<|im_start|>"',
        "template": "{{- if .Tools }}...",
        "details": {"family": "qwen3"},
        "model_info": {"general.architecture": "qwen3", "qwen3.context_length": 40960},
        "capabilities": ["completion", "tools", "thinking"],
    },
    "all-minilm:latest": {
        "parameters": "num_ctx                        256",
        "model_info": {"general.architecture": "bert", "bert.context_length": 512},
        "capabilities": ["embedding"],
    },
}


async def show(request: web.Request) -> web.Response:
    name = (await request.json())["model"]
    if name not in SHOW:
        return json_reply({"error": f"model '{name}' not found"}, 404)
    return json_reply(SHOW[name])


@pytest.fixture
async def ollama(fake_runtime):
    return await fake_runtime({"GET /api/tags": TAGS, "POST /api/show": show})


async def test_models_combine_tags_and_show(ollama) -> None:
    async with connect("ollama", ollama.url) as runtime:
        models = {model.name: model for model in await runtime.list_models()}
    qwen = models["qwen3:0.6b"]
    assert qwen.size_bytes == 522653767
    assert qwen.digest == f"sha256:{QWEN_DIGEST}"
    assert qwen.modified_at == datetime(2025, 5, 1, 8, 0, 0, 123456, tzinfo=UTC)
    # Ollama runs it at its default context (or OLLAMA_CONTEXT_LENGTH), never the trained 40960:
    # unknown until /api/ps tells it, not overstated.
    assert qwen.context_length is None
    assert qwen.trained_context_length == 40960
    assert qwen.capabilities == {
        ModelCapability.CHAT,
        ModelCapability.COMPLETION,
        ModelCapability.TOOLS,
        ModelCapability.THINKING,
    }
    assert (qwen.family, qwen.parameter_size, qwen.quantization) == ("qwen3", "751.63M", "Q4_K_M")
    minilm = models["all-minilm:latest"]
    assert minilm.capabilities == {ModelCapability.EMBEDDINGS}
    # num_ctx in the Modelfile is the context the model is served with.
    assert minilm.context_length == 256
    assert minilm.trained_context_length == 512
    assert sorted(ollama.bodies("/api/show"), key=str) == [
        {"model": "all-minilm:latest"},
        {"model": "qwen3:0.6b"},
    ]


async def test_old_ollama_without_capabilities_means_chat_and_completion(fake_runtime) -> None:
    server = await fake_runtime(
        {
            "GET /api/tags": {"models": [TAGS["models"][0]]},
            "POST /api/show": {"model_info": {"general.architecture": "qwen3"}},
        }
    )
    async with connect("ollama", server.url) as runtime:
        (model,) = await runtime.list_models()
    assert model.capabilities == {ModelCapability.CHAT, ModelCapability.COMPLETION}
    assert model.context_length is None


async def test_a_model_ollama_cannot_describe_is_still_listed_and_the_others_keep_details(
    fake_runtime,
) -> None:
    async def broken_show(request: web.Request) -> web.Response:
        if (await request.json())["model"] == "all-minilm:latest":
            return json_reply({"error": "invalid manifest"}, 500)
        return await show(request)

    server = await fake_runtime({"GET /api/tags": TAGS, "POST /api/show": broken_show})
    async with connect("ollama", server.url) as runtime:
        models = {model.name: model for model in await runtime.list_models()}
    assert models["all-minilm:latest"].size_bytes == 45960996
    assert models["all-minilm:latest"].family == "bert"
    assert models["qwen3:0.6b"].trained_context_length == 40960


async def test_model_deleted_between_tags_and_show_is_left_out(fake_runtime) -> None:
    ghost = {**TAGS["models"][0], "name": "ghost:latest"}
    server = await fake_runtime(
        {"GET /api/tags": {"models": [*TAGS["models"], ghost]}, "POST /api/show": show}
    )
    async with connect("ollama", server.url) as runtime:
        names = [model.name for model in await runtime.list_models()]
    assert sorted(names) == ["all-minilm:latest", "qwen3:0.6b"]


async def test_empty_store_lists_no_models(fake_runtime) -> None:
    # Ollama answers {"models": []}; some versions send null.
    server = await fake_runtime({"GET /api/tags": {"models": None}})
    async with connect("ollama", server.url) as runtime:
        assert await runtime.list_models() == []


async def test_capabilities_are_what_the_models_can_do(ollama) -> None:
    async with connect("ollama", ollama.url) as runtime:
        capabilities = await runtime.capabilities()
    assert capabilities.chat and capabilities.completions and capabilities.tools
    assert capabilities.embeddings and capabilities.streaming


async def test_running_models_from_ps(fake_runtime) -> None:
    ps = {
        "models": [
            {
                "name": "qwen3:0.6b",
                "model": "qwen3:0.6b",
                "size": 1459617792,
                "digest": QWEN_DIGEST,
                "details": {},
                "expires_at": "2025-06-04T14:38:31.83753-07:00",
                "size_vram": 1459617792,
                "context_length": 4096,
            },
            {"name": "forever:latest", "size": 1, "size_vram": 0, "expires_at": "0001-01-01T00:00:00Z"},
        ]
    }
    server = await fake_runtime({"GET /api/ps": ps})
    async with connect("ollama", server.url) as runtime:
        qwen, forever = await runtime.list_running()
    assert qwen.name == "qwen3:0.6b"
    assert qwen.size_bytes == qwen.size_vram == 1459617792
    assert qwen.expires_at == datetime(2025, 6, 4, 21, 38, 31, 837530, tzinfo=UTC)
    assert qwen.context_length == 4096
    assert forever.expires_at is None
    assert forever.size_vram == 0


def generate_handler(loaded: list[str]):
    async def generate(request: web.Request) -> web.Response:
        body = await request.json()
        if body["model"] == "missing:latest":
            return json_reply({"error": "model 'missing:latest' not found, try pulling it first"}, 404)
        if body["model"] == "all-minilm:latest":
            return json_reply({"error": '"all-minilm:latest" does not support generate'}, 400)
        if body.get("keep_alive") == 0:
            loaded.remove(body["model"])
            return json_reply({"model": body["model"], "response": "", "done": True, "done_reason": "unload"})
        loaded.append(body["model"])
        return json_reply(
            {
                "model": body["model"],
                "response": "",
                "done": True,
                "done_reason": "load",
                "load_duration": 2_500_000_000,
            }
        )

    return generate


async def test_warmup_loads_with_an_empty_prompt(fake_runtime) -> None:
    loaded: list[str] = []
    server = await fake_runtime({"POST /api/generate": generate_handler(loaded)})
    async with connect("ollama", server.url) as runtime:
        result = await runtime.warmup("qwen3:0.6b", timeout=10, keep_alive="30m")
    assert server.bodies("/api/generate") == [
        {"model": "qwen3:0.6b", "prompt": "", "stream": False, "keep_alive": "30m"}
    ]
    assert result.model == "qwen3:0.6b"
    assert result.load_seconds == 2.5
    assert result.unloaded == ()
    assert loaded == ["qwen3:0.6b"]


async def test_warmup_can_unload_the_others_first(fake_runtime) -> None:
    loaded = ["llama3:latest", "qwen3:0.6b"]

    async def ps(request: web.Request) -> web.Response:
        return json_reply({"models": [{"name": name} for name in loaded]})

    server = await fake_runtime({"POST /api/generate": generate_handler(loaded), "GET /api/ps": ps})
    async with connect("ollama", server.url) as runtime:
        result = await runtime.warmup("qwen3:0.6b", timeout=10, unload_others=True)
    assert result.unloaded == ("llama3:latest",)
    assert {"model": "llama3:latest", "keep_alive": 0} in server.bodies("/api/generate")
    assert "llama3:latest" not in loaded


async def test_warmup_of_an_embedding_model_uses_embed(fake_runtime) -> None:
    server = await fake_runtime(
        {
            "POST /api/generate": generate_handler([]),
            "POST /api/embed": {"model": "all-minilm:latest", "embeddings": [], "load_duration": 1_000_000},
        }
    )
    async with connect("ollama", server.url) as runtime:
        result = await runtime.warmup("all-minilm:latest", timeout=10)
    assert server.bodies("/api/embed") == [{"model": "all-minilm:latest", "stream": False, "input": ""}]
    assert result.load_seconds == 0.001


async def test_warmup_of_a_missing_model_is_model_not_found(fake_runtime) -> None:
    server = await fake_runtime({"POST /api/generate": generate_handler([])})
    async with connect("ollama", server.url) as runtime:
        with pytest.raises(ModelNotFound, match="try pulling it first"):
            await runtime.warmup("missing:latest", timeout=10)


async def test_warmup_timeout_bounds_a_slow_load(fake_runtime) -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return json_reply({"done": True})

    server = await fake_runtime({"POST /api/generate": slow})
    async with connect("ollama", server.url) as runtime:
        with pytest.raises(RuntimeTimeout, match=r"within 0\.3s"):
            await runtime.warmup("qwen3:0.6b", timeout=0.3)


def ndjson_stream(lines: list[dict], *, pause: float = 0.0, then_hang: bool = False):
    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        for line in lines:
            await response.write(json.dumps(line).encode() + b"\n")
            await asyncio.sleep(pause)
        if then_hang:
            await asyncio.sleep(3600)
        return response

    return stream


LAYER_A = "sha256:" + "a" * 64
LAYER_B = "sha256:" + "b" * 64
PULL_OK = [
    {"status": "pulling manifest"},
    {"status": "pulling aaaaaaaaaaaa", "digest": LAYER_A, "total": 1000},
    {"status": "pulling aaaaaaaaaaaa", "digest": LAYER_A, "total": 1000, "completed": 400},
    {"status": "pulling aaaaaaaaaaaa", "digest": LAYER_A, "total": 1000, "completed": 1000},
    {"status": "pulling bbbbbbbbbbbb", "digest": LAYER_B, "total": 20, "completed": 20},
    {"status": "verifying sha256 digest"},
    {"status": "writing manifest"},
    {"status": "success"},
]


async def test_pull_streams_progress_per_layer(fake_runtime) -> None:
    server = await fake_runtime({"POST /api/pull": ndjson_stream(PULL_OK)})
    async with connect("ollama", server.url) as runtime:
        progress = [line async for line in runtime.pull("qwen3:0.6b", insecure=True)]
    assert server.bodies("/api/pull") == [{"model": "qwen3:0.6b", "insecure": True, "stream": True}]
    assert [line.status for line in progress] == [line["status"] for line in PULL_OK]
    layer_a = [(line.completed, line.total) for line in progress if line.digest == LAYER_A]
    assert layer_a == [(None, 1000), (400, 1000), (1000, 1000)]
    assert progress[-1].done and not progress[0].done


async def test_pull_sends_the_expected_digest_when_given(fake_runtime) -> None:
    """llmop's agent speaks Ollama's pull API and checks downloads against `sha256`."""
    server = await fake_runtime({"POST /api/pull": ndjson_stream(PULL_OK)})
    digest = "ab" * 32
    async with connect("ollama", server.url) as runtime:
        async for _ in runtime.pull("hf://org/repo/model.gguf", sha256=digest):
            pass
    (body,) = server.bodies("/api/pull")
    assert body["sha256"] == digest


async def test_pull_error_mid_stream_is_pull_failed_with_ollamas_text(fake_runtime) -> None:
    failing = [*PULL_OK[:3], {"error": "max retries exceeded: unexpected EOF"}]
    server = await fake_runtime({"POST /api/pull": ndjson_stream(failing)})
    seen = []
    async with connect("ollama", server.url) as runtime:
        with pytest.raises(PullFailed) as caught:
            async for line in runtime.pull("qwen3:0.6b"):
                seen.append(line)
    assert caught.value.runtime_message == "max retries exceeded: unexpected EOF"
    assert "qwen3:0.6b" in str(caught.value) and "unexpected EOF" in str(caught.value)
    assert len(seen) == 3


async def test_pull_refused_up_front_is_pull_failed(fake_runtime) -> None:
    server = await fake_runtime(
        {
            "POST /api/pull": lambda request: json_reply(
                {"error": "pull model manifest: file does not exist"}, 500
            )
        }
    )
    async with connect("ollama", server.url) as runtime:
        with pytest.raises(PullFailed) as caught:
            async for _ in runtime.pull("nosuch:model"):
                pass
    assert caught.value.runtime_message == "pull model manifest: file does not exist"


async def test_pull_ending_without_success_is_unavailable(fake_runtime) -> None:
    server = await fake_runtime({"POST /api/pull": ndjson_stream(PULL_OK[:3])})
    async with connect("ollama", server.url) as runtime:
        with pytest.raises(RuntimeUnavailable, match=r"without reporting success.*pulling aaaaaaaaaaaa"):
            async for _ in runtime.pull("qwen3:0.6b"):
                pass


async def test_pull_silence_longer_than_the_idle_timeout_is_a_timeout(fake_runtime) -> None:
    """A pull has no total deadline, but a stalled one must not hang for ever."""
    server = await fake_runtime({"POST /api/pull": ndjson_stream(PULL_OK[:2], then_hang=True)})
    seen = []
    async with connect("ollama", server.url, timeout=0.2) as runtime:
        with pytest.raises(RuntimeTimeout, match=r"silent for 0\.5s"):
            async for line in runtime.pull("qwen3:0.6b", idle_timeout=0.5):
                seen.append(line)
    assert len(seen) == 2


async def test_slow_but_steady_pull_outlives_the_request_timeout(fake_runtime) -> None:
    server = await fake_runtime({"POST /api/pull": ndjson_stream(PULL_OK, pause=0.1)})
    async with connect("ollama", server.url, timeout=0.3) as runtime:
        progress = [line async for line in runtime.pull("qwen3:0.6b", idle_timeout=1)]
    assert progress[-1].done


async def test_pull_line_larger_than_the_bound_is_too_large(fake_runtime) -> None:
    server = await fake_runtime({"POST /api/pull": ndjson_stream([{"status": "x" * 10_000}])})
    async with connect("ollama", server.url, max_body_bytes=1024) as runtime:
        with pytest.raises(ResponseTooLarge):
            async for _ in runtime.pull("qwen3:0.6b"):
                pass


async def test_delete_model(fake_runtime) -> None:
    async def delete(request: web.Request) -> web.Response:
        if (await request.json())["model"] == "qwen3:0.6b":
            return web.Response(status=200)
        return json_reply({"error": "model 'gone:latest' not found"}, 404)

    server = await fake_runtime({"DELETE /api/delete": delete})
    async with connect("ollama", server.url) as runtime:
        assert await runtime.delete_model("qwen3:0.6b") is True
        assert await runtime.delete_model("gone:latest") is False


async def test_delete_refused_for_another_reason_raises(fake_runtime) -> None:
    server = await fake_runtime(
        {"DELETE /api/delete": lambda request: json_reply({"error": "model is in use"}, 500)}
    )
    async with connect("ollama", server.url) as runtime:
        with pytest.raises(RuntimeHTTPError, match="model is in use"):
            await runtime.delete_model("qwen3:0.6b")


@pytest.mark.parametrize(
    ("given", "normalized"),
    [
        ("llama3", "llama3:latest"),
        ("llama3:8b", "llama3:8b"),
        ("  qwen3:0.6b ", "qwen3:0.6b"),
        ("library/llama3", "llama3:latest"),
        ("registry.ollama.ai/library/llama3:8b", "llama3:8b"),
        ("registry.ollama.ai/library/llama3", "llama3:latest"),
        ("registry.ollama.ai/someone/model", "someone/model:latest"),
        ("someone/model:q4", "someone/model:q4"),
        ("registry.example.com/team/model:v1", "registry.example.com/team/model:v1"),
        ("localhost:5000/team/model", "localhost:5000/team/model:latest"),
        ("hf.co/bartowski/Qwen3-0.6B-GGUF:Q4_K_M", "hf.co/bartowski/Qwen3-0.6B-GGUF:Q4_K_M"),
        ("llama3@sha256:" + "c" * 64, "llama3@sha256:" + "c" * 64),
    ],
)
def test_normalize_model_name(given: str, normalized: str) -> None:
    runtime = connect("ollama", "http://127.0.0.1:11434")
    assert runtime.normalize_model_name(given) == normalized


def test_normalize_rejects_an_empty_name() -> None:
    runtime = connect("ollama", "http://127.0.0.1:11434")
    with pytest.raises(ValueError, match="empty"):
        runtime.normalize_model_name("  ")


async def test_find_model_reads_the_tags_alone_and_says_none_for_a_model_not_there(fake_runtime) -> None:
    """What a pull left on disk, as the operator records it: no /api/show (the agent has none)."""
    server = await fake_runtime({"GET /api/tags": TAGS})
    async with connect("ollama", server.url) as runtime:
        found = await runtime.find_model("qwen3:0.6b")
        missing = await runtime.find_model("nosuch")
    assert found is not None and found.digest == f"sha256:{QWEN_DIGEST}" and found.size_bytes == 522653767
    assert missing is None
    assert [r.path for r in server.requests] == ["/api/tags", "/api/tags"]


async def test_the_agent_is_told_to_stop_a_transfer(fake_runtime) -> None:
    from llmop.runtimes.agent import connect_agent

    server = await fake_runtime({"DELETE /api/pull": {"status": "cancelled"}})
    async with connect_agent(server.url, token="agent-token") as agent:
        await agent.cancel_pull("hf://org/repo")
    assert server.bodies("/api/pull") == [{"model": "hf://org/repo"}]
    assert server.requests[0].headers["Authorization"] == "Bearer agent-token"

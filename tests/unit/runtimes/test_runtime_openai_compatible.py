"""vLLM, llama.cpp and the OpenAI-compatible profiles against answers shaped as each documents."""

from __future__ import annotations

import pytest
from aiohttp import web
from fake_runtimes import json_reply

from llmop.runtimes import (
    KNOWN_KINDS,
    MalformedResponse,
    ModelCapability,
    ModelNotFound,
    ProbeState,
    RuntimeHTTPError,
    Unsupported,
    connect,
)

VLLM_MODELS = {
    "object": "list",
    "data": [
        {
            "id": "Qwen/Qwen3-0.6B",
            "object": "model",
            "created": 1747000000,
            "owned_by": "vllm",
            "root": "/models/Qwen3-0.6B",
            "parent": None,
            "max_model_len": 8192,
            "permission": [{"id": "modelperm-1", "object": "model_permission", "allow_sampling": True}],
        },
        {
            "id": "sql-lora",
            "object": "model",
            "created": 1747000000,
            "owned_by": "vllm",
            "root": "/adapters/sql",
            "parent": "Qwen/Qwen3-0.6B",
            "max_model_len": 8192,
        },
    ],
}

LLAMACPP_MODELS = {
    "object": "list",
    "data": [
        {
            "id": "tiny.gguf",
            "object": "model",
            "created": 1747000000,
            "owned_by": "llamacpp",
            "meta": {
                "vocab_type": 1,
                "n_vocab": 512,
                "n_ctx_train": 2048,
                "n_embd": 64,
                "n_params": 160000,
                "size": 640000,
            },
        }
    ],
}

CHATML_TEMPLATE = "{% for message in messages %}<|im_start|>{{ message['content'] }}{% endfor %}"
TOOLS_TEMPLATE = "{% if tools %}You may call: {{ tools | tojson }}{% endif %}" + CHATML_TEMPLATE


def refuses_empty(request: web.Request) -> web.Response:
    """vLLM's answer to a request without fields on a route it has: a validation error."""
    return json_reply({"error": {"message": "Field required", "type": "BadRequestError", "code": 400}}, 400)


def llamacpp_props(**overrides: object) -> dict:
    props: dict = {
        "default_generation_settings": {"id": 0, "n_ctx": 512, "params": {"n_predict": -1}},
        "total_slots": 1,
        "model_path": "/models/tiny.gguf",
        "chat_template": CHATML_TEMPLATE,
        "modalities": {"vision": False, "audio": False},
        "build_info": "b5000-abc",
    }
    props.update(overrides)
    return props


async def test_vllm_models_with_served_context_length(fake_runtime) -> None:
    server = await fake_runtime({"GET /v1/models": VLLM_MODELS, "POST /v1/completions": refuses_empty})
    async with connect("vllm", server.url) as runtime:
        base, lora = await runtime.list_models()
    assert base.name == "Qwen/Qwen3-0.6B"
    assert base.context_length == 8192
    assert base.capabilities == {ModelCapability.CHAT, ModelCapability.COMPLETION}
    # LoRA adapters are served models too; requests name them like any other.
    assert lora.name == "sql-lora"


async def test_vllm_running_models_are_the_served_ones(fake_runtime) -> None:
    server = await fake_runtime({"GET /v1/models": VLLM_MODELS, "POST /v1/completions": refuses_empty})
    async with connect("vllm", server.url) as runtime:
        running = await runtime.list_running()
    assert [(model.name, model.context_length) for model in running] == [
        ("Qwen/Qwen3-0.6B", 8192),
        ("sql-lora", 8192),
    ]


async def test_vllm_capabilities_claim_only_what_the_api_shows(fake_runtime) -> None:
    server = await fake_runtime(
        {"POST /v1/completions": refuses_empty, "POST /v1/chat/completions": refuses_empty}
    )
    async with connect("vllm", server.url) as runtime:
        capabilities = await runtime.capabilities()
    assert capabilities.chat and capabilities.completions and capabilities.streaming
    assert not capabilities.tools and not capabilities.embeddings


async def test_warmup_is_a_one_token_completion(fake_runtime) -> None:
    completion = {
        "id": "cmpl-1",
        "object": "text_completion",
        "model": "Qwen/Qwen3-0.6B",
        "choices": [{"index": 0, "text": " the", "finish_reason": "length"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }
    server = await fake_runtime({"POST /v1/completions": completion})
    async with connect("vllm", server.url) as runtime:
        result = await runtime.warmup("Qwen/Qwen3-0.6B", timeout=10, unload_others=True)
    # The first, empty request asks whether the route exists (a generating model, not pooling).
    route_check, request = server.bodies("/v1/completions")
    assert route_check == {}
    assert request["model"] == "Qwen/Qwen3-0.6B"
    assert request["max_tokens"] == 1
    assert request["prompt"]
    assert result.model == "Qwen/Qwen3-0.6B"
    assert result.elapsed_seconds > 0


async def test_warmup_of_a_model_vllm_does_not_serve_is_model_not_found(fake_runtime) -> None:
    missing = {
        "object": "error",
        "message": "The model `other` does not exist.",
        "type": "NotFoundError",
        "param": None,
        "code": 404,
    }
    server = await fake_runtime({"POST /v1/completions": lambda request: json_reply(missing, 404)})
    async with connect("vllm", server.url) as runtime:
        with pytest.raises(ModelNotFound, match="The model `other` does not exist"):
            await runtime.warmup("other", timeout=10)


async def test_warmup_on_a_server_without_the_endpoint_is_not_model_not_found(fake_runtime) -> None:
    server = await fake_runtime({"GET /health": {}})
    async with connect("vllm", server.url) as runtime:
        with pytest.raises(RuntimeHTTPError) as caught:
            await runtime.warmup("Qwen/Qwen3-0.6B", timeout=10)
    assert not isinstance(caught.value, ModelNotFound)
    assert "really vLLM" in str(caught.value)


async def test_warmup_answer_without_choices_is_malformed(fake_runtime) -> None:
    server = await fake_runtime({"POST /v1/completions": {"id": "x"}})
    async with connect("vllm", server.url) as runtime:
        with pytest.raises(MalformedResponse, match="choices"):
            await runtime.warmup("m", timeout=10)


async def test_llamacpp_models_combine_v1_models_and_props(fake_runtime) -> None:
    server = await fake_runtime({"GET /v1/models": LLAMACPP_MODELS, "GET /props": llamacpp_props()})
    async with connect("llamacpp", server.url) as runtime:
        (model,) = await runtime.list_models()
        capabilities = await runtime.capabilities()
    assert model.name == "tiny.gguf"
    assert model.size_bytes == 640000
    assert model.context_length == 512  # what a request gets (--ctx-size)
    assert model.trained_context_length == 2048
    assert model.capabilities == {ModelCapability.CHAT, ModelCapability.COMPLETION}
    assert not capabilities.tools


async def test_llamacpp_tools_when_the_template_handles_them(fake_runtime) -> None:
    server = await fake_runtime(
        {"GET /v1/models": LLAMACPP_MODELS, "GET /props": llamacpp_props(chat_template=TOOLS_TEMPLATE)}
    )
    async with connect("llamacpp", server.url) as runtime:
        (model,) = await runtime.list_models()
        capabilities = await runtime.capabilities()
    assert ModelCapability.TOOLS in model.capabilities
    assert capabilities.tools


async def test_llamacpp_template_caps_win_over_the_template_text(fake_runtime) -> None:
    props = llamacpp_props(chat_template=TOOLS_TEMPLATE, chat_template_caps={"supports_tools": False})
    server = await fake_runtime({"GET /v1/models": LLAMACPP_MODELS, "GET /props": props})
    async with connect("llamacpp", server.url) as runtime:
        (model,) = await runtime.list_models()
    assert ModelCapability.TOOLS not in model.capabilities


async def test_llamacpp_vision_from_modalities(fake_runtime) -> None:
    props = llamacpp_props(modalities={"vision": True, "audio": False})
    server = await fake_runtime({"GET /v1/models": LLAMACPP_MODELS, "GET /props": props})
    async with connect("llamacpp", server.url) as runtime:
        (model,) = await runtime.list_models()
    assert ModelCapability.VISION in model.capabilities


async def test_llamacpp_while_loading_meta_is_null(fake_runtime) -> None:
    loading = {"object": "list", "data": [{"id": "tiny.gguf", "object": "model", "meta": None}]}
    props = llamacpp_props(default_generation_settings=None)
    server = await fake_runtime({"GET /v1/models": loading, "GET /props": props})
    async with connect("llamacpp", server.url) as runtime:
        (model,) = await runtime.list_models()
    assert model.name == "tiny.gguf"
    assert model.context_length is None
    assert model.size_bytes is None


async def test_llamacpp_running_is_the_served_model(fake_runtime) -> None:
    server = await fake_runtime({"GET /v1/models": LLAMACPP_MODELS, "GET /props": llamacpp_props()})
    async with connect("llamacpp", server.url) as runtime:
        (running,) = await runtime.list_running()
    assert running.name == "tiny.gguf"
    assert running.context_length == 512


@pytest.mark.parametrize(
    ("kind", "display_name", "has_embeddings", "lists_loaded"),
    [
        ("openai", "OpenAI-compatible server", True, False),
        ("tgi", "Text Generation Inference", False, True),
        ("sglang", "SGLang", False, True),
        ("localai", "LocalAI", True, False),
        ("lmstudio", "LM Studio", True, False),
    ],
)
async def test_profiles(
    fake_runtime, kind: str, display_name: str, has_embeddings: bool, lists_loaded: bool
) -> None:
    models = {"object": "list", "data": [{"id": "m1", "object": "model", "max_model_len": 4096}]}
    server = await fake_runtime({"GET /v1/models": models})
    async with connect(kind, server.url) as runtime:
        assert runtime.kind == kind
        assert runtime.display_name == display_name
        (model,) = await runtime.list_models()
        capabilities = await runtime.capabilities()
        assert model.name == "m1"
        assert ModelCapability.CHAT in model.capabilities
        assert capabilities.chat and capabilities.streaming
        assert capabilities.embeddings is has_embeddings
        if lists_loaded:
            assert [running.name for running in await runtime.list_running()] == ["m1"]
        else:
            with pytest.raises(Unsupported, match=f"{display_name} does not support listing loaded models"):
                await runtime.list_running()
            with pytest.raises(Unsupported, match="unloading models"):
                await runtime.warmup("m1", timeout=1, unload_others=True)


async def test_context_length_keys_are_per_profile(fake_runtime) -> None:
    models = {"data": [{"id": "m1", "max_model_len": 4096, "context_length": 1024}]}
    server = await fake_runtime({"GET /v1/models": models})
    expected = {"sglang": 4096, "openai": 4096, "tgi": None, "lmstudio": None}
    for kind, context_length in expected.items():
        async with connect(kind, server.url) as runtime:
            (model,) = await runtime.list_models()
        assert model.context_length == context_length, kind


@pytest.mark.parametrize("kind", [kind for kind in KNOWN_KINDS if kind != "ollama"])
async def test_pull_and_delete_are_unsupported_naming_runtime_and_operation(kind: str) -> None:
    async with connect(kind, "http://127.0.0.1:1") as runtime:
        with pytest.raises(Unsupported) as pulling:
            async for _ in runtime.pull("org/model"):
                pass
        with pytest.raises(Unsupported) as deleting:
            await runtime.delete_model("org/model")
    assert pulling.value.runtime == deleting.value.runtime == runtime.display_name
    assert pulling.value.operation == "pulling models"
    assert str(pulling.value).startswith(f"{runtime.display_name} does not support pulling models")
    assert deleting.value.operation == "deleting models"


@pytest.mark.parametrize(
    ("given", "normalized"),
    [
        ("Qwen/Qwen3-0.6B", "Qwen/Qwen3-0.6B"),
        ("hf://Qwen/Qwen3-0.6B", "Qwen/Qwen3-0.6B"),
        # llmop serves a pinned revision under the repo id, which is what clients send.
        ("hf://Qwen/Qwen3-0.6B@a1b2c3", "Qwen/Qwen3-0.6B"),
        ("hf://Qwen/Qwen3-0.6B-GGUF/qwen3-0.6b-q8_0.gguf", "Qwen/Qwen3-0.6B-GGUF/qwen3-0.6b-q8_0.gguf"),
        ("https://files.example/models/tiny.gguf", "tiny.gguf"),
        ("Qwen/Qwen3-0.6B@main", "Qwen/Qwen3-0.6B@main"),
        ("https://huggingface.co/Qwen/Qwen3-0.6B", "Qwen/Qwen3-0.6B"),
        (" tiny ", "tiny"),
    ],
)
def test_hugging_face_names(given: str, normalized: str) -> None:
    for kind in ("vllm", "llamacpp", "openai"):
        assert connect(kind, "http://127.0.0.1:1").normalize_model_name(given) == normalized


async def test_health_body_is_not_needed_for_serving(fake_runtime) -> None:
    """TGI and SGLang answer /health with an empty 200, like vLLM."""
    server = await fake_runtime({"GET /health": lambda request: web.Response(status=200)})
    for kind in ("tgi", "sglang", "vllm"):
        async with connect(kind, server.url) as runtime:
            assert (await runtime.probe()).serving


#: llama-server started without --model: a router (tools/server/server-models.cpp). A loaded
#: model's entry carries its instance's `meta`; /props describes the router.
ROUTER_MODELS = {
    "object": "list",
    "data": [
        {
            "id": "tiny",
            "object": "model",
            "status": {"value": "loaded", "args": ["llama-server", "-c", "512"]},
            "architecture": {"input_modalities": ["text", "image"], "output_modalities": ["text"]},
            "meta": {"n_ctx": 512, "n_ctx_train": 2048, "size": 640000},
        },
        {"id": "other", "object": "model", "status": {"value": "unloaded"}},
    ],
}
ROUTER_PROPS = {
    "role": "router",
    "max_instances": 4,
    "models_autoload": True,
    "model_path": "none",
    "default_generation_settings": {"params": {}, "n_ctx": 0},
}


async def test_llamacpp_router_tells_which_models_are_loaded(fake_runtime) -> None:
    server = await fake_runtime({"GET /v1/models": ROUTER_MODELS, "GET /props": ROUTER_PROPS})
    async with connect("llamacpp", server.url) as runtime:
        models = {model.name: model for model in await runtime.list_models()}
        running = await runtime.list_running()
    assert (models["tiny"].loaded, models["other"].loaded) == (True, False)
    assert [model.name for model in running] == ["tiny"]
    assert models["tiny"].context_length == 512
    assert models["other"].context_length is None  # the router's n_ctx 0 is no model's
    assert ModelCapability.VISION in models["tiny"].capabilities
    assert ModelCapability.VISION not in models["other"].capabilities


async def test_vllm_generating_model_serves_chat_and_completions_not_embeddings(fake_runtime) -> None:
    models = {"object": "list", "data": [{"id": "org/chat", "object": "model", "max_model_len": 4096}]}
    server = await fake_runtime(
        {
            "GET /v1/models": models,
            "POST /v1/completions": refuses_empty,
            "POST /v1/chat/completions": refuses_empty,
        }
    )
    async with connect("vllm", server.url) as runtime:
        (model,) = await runtime.list_models()
        capabilities = await runtime.capabilities()
    assert model.capabilities == {ModelCapability.CHAT, ModelCapability.COMPLETION}
    assert (capabilities.chat, capabilities.completions, capabilities.embeddings) == (True, True, False)


async def test_vllm_pooling_model_serves_embeddings_only(fake_runtime) -> None:
    models = {"object": "list", "data": [{"id": "org/embed", "object": "model", "max_model_len": 512}]}
    server = await fake_runtime({"GET /v1/models": models, "POST /v1/embeddings": refuses_empty})
    async with connect("vllm", server.url) as runtime:
        (model,) = await runtime.list_models()
        capabilities = await runtime.capabilities()
    assert model.capabilities == {ModelCapability.EMBEDDINGS}
    assert (capabilities.chat, capabilities.completions, capabilities.embeddings) == (False, False, True)
    # Asking is free of side effects: the empty requests were refused, nothing was generated.
    assert server.bodies("/v1/embeddings") == [{}]


async def test_vllm_health_503_is_a_dead_engine_not_a_load(fake_runtime) -> None:
    """vLLM keeps its port closed while it loads; /health answers 503 only once its engine died."""
    server = await fake_runtime({"GET /health": lambda request: web.Response(status=503)})
    async with connect("vllm", server.url) as runtime:
        result = await runtime.probe()
    assert result.state is ProbeState.ERROR
    assert "engine is dead" in result.reason and "503" in result.reason


async def test_vllm_warms_a_pooling_model_with_one_embedding(fake_runtime) -> None:
    embedded = {"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.1]}]}

    async def embeddings(request: web.Request) -> web.Response:
        body = await request.json()
        return json_reply(embedded) if body else refuses_empty(request)

    server = await fake_runtime({"POST /v1/embeddings": embeddings})
    async with connect("vllm", server.url) as runtime:
        result = await runtime.warmup("org/embed", timeout=10)
    assert result.model == "org/embed"
    assert server.bodies("/v1/embeddings")[-1] == {"model": "org/embed", "input": "Hello"}

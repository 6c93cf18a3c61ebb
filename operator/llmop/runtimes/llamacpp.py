"""llama.cpp's `llama-server`: one GGUF model, an OpenAI-compatible API, and its own `/props`.

/health answers 503 "Loading model" while weights load. /v1/models gives, per model, the context
each request gets (`meta.n_ctx`), the trained context (`meta.n_ctx_train`) and the size; /props
gives the chat template (tool calling works when the template handles tools) and the modalities. Started without `--model` it is a router over several
models: each /v1/models entry then has `status.value` (loaded, unloaded, ...), and /props
describes the router (`role: router`), not a model (tools/server/server-models.cpp).

API reference: https://github.com/ggml-org/llama.cpp/blob/master/tools/server/README.md
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from llmop.models.backend import LLMBackendSpec
from llmop.runtimes.descriptor import PodRecipe, RuntimeDescriptor, served_model_path, user_sets_flag
from llmop.runtimes.openai_compatible import OpenAICompatibleAdapter, OpenAIProfile
from llmop.runtimes.results import (
    ModelCapability,
    ModelInfo,
    ProbeResult,
    ProbeState,
    RuntimeCapabilities,
)
from llmop.runtimes.transport import HTTPAnswer, runtime_error_text
from llmop.sources import served_model_name

LLAMACPP = OpenAIProfile(
    kind="llamacpp",
    display_name="llama.cpp server",
    health_path="/health",
    # Embeddings need --embeddings, which the API does not reveal; tools depend on the template.
    capabilities=RuntimeCapabilities(chat=True, completions=True, streaming=True),
    lists_loaded_models=True,
)


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _Meta(_Wire):
    #: The context each request (slot) gets; the trained context of the model.
    n_ctx: int | None = None
    n_ctx_train: int | None = None
    size: int | None = None


class _Status(_Wire):
    #: Router mode only: downloading, downloaded, unloaded, loading, loaded, sleeping.
    value: str | None = None


class _Architecture(_Wire):
    input_modalities: list[str] | None = None


class _Model(_Wire):
    id: str
    #: null while the model is still loading; in router mode, present once loaded.
    meta: _Meta | None = None
    status: _Status | None = None
    architecture: _Architecture | None = None


class _Models(_Wire):
    data: list[_Model]


class _GenerationSettings(_Wire):
    n_ctx: int | None = None


class _Props(_Wire):
    #: "router" when llama-server serves several models (started without --model).
    role: str | None = None
    default_generation_settings: _GenerationSettings | None = None
    chat_template: str | None = None
    chat_template_caps: dict[str, Any] | None = None
    modalities: dict[str, bool] | None = None


class LlamaCppAdapter(OpenAICompatibleAdapter):
    default_profile: ClassVar[OpenAIProfile] = LLAMACPP

    def interpret_health(self, answer: HTTPAnswer) -> ProbeResult:
        result = super().interpret_health(answer)
        if result.state is ProbeState.SERVING and b"loading" in answer.body.lower():
            # Builds before 2024 answered 200 {"status": "loading model"} while loading.
            said = runtime_error_text(answer.body)
            return result.model_copy(
                update={"state": ProbeState.LOADING, "reason": f"{self.http.where} is not ready: {said}"}
            )
        return result

    async def list_models(self) -> list[ModelInfo]:
        models, props = await asyncio.gather(
            self.http.call_wire(_Models, "GET", "/v1/models"), self.http.call_wire(_Props, "GET", "/props")
        )
        # A router's /props describes the router, not a model: its n_ctx is 0, its template none.
        router = props.role == "router"
        shared = set(self.profile.model_capabilities)
        if not router and _template_handles_tools(props):
            shared.add(ModelCapability.TOOLS)
        if not router and (props.modalities or {}).get("vision"):
            shared.add(ModelCapability.VISION)
        settings = props.default_generation_settings
        fallback_context = settings.n_ctx if settings and settings.n_ctx and not router else None
        return [_model_info(model, shared, fallback_context) for model in models.data]

    async def capabilities(self) -> RuntimeCapabilities:
        found: set[ModelCapability] = set()
        for model in await self.list_models():
            found |= model.capabilities
        return self.profile.capabilities.model_copy(update={"tools": ModelCapability.TOOLS in found})


def _model_info(model: _Model, shared: set[ModelCapability], fallback_context: int | None) -> ModelInfo:
    meta = model.meta or _Meta()
    capabilities = set(shared)
    if "image" in ((model.architecture and model.architecture.input_modalities) or []):
        capabilities.add(ModelCapability.VISION)
    # One model: loaded whenever the server answers. A router says per model.
    loaded = model.status.value == "loaded" if model.status and model.status.value else None
    return ModelInfo(
        name=model.id,
        size_bytes=meta.size,
        context_length=meta.n_ctx or fallback_context,
        trained_context_length=meta.n_ctx_train,
        capabilities=frozenset(capabilities),
        loaded=loaded,
    )


def _template_handles_tools(props: _Props) -> bool:
    caps = props.chat_template_caps or {}
    if "supports_tools" in caps:
        return bool(caps["supports_tools"])
    return "tools" in (props.chat_template or "")


def _args(spec: LLMBackendSpec, port: int) -> list[str]:
    path = served_model_path(spec)
    model = ["--model", path, "--alias", served_model_name(spec.models[0].name)] if path else []
    # --metrics: Prometheus' /metrics on the serving port (the chart's runtimes PodMonitor).
    metrics = [] if user_sets_flag(spec, "--metrics") else ["--metrics"]
    return ["--host", "0.0.0.0", "--port", str(port), *model, *_gpu_layers(spec), *metrics]


#: More layers than any model has: every layer goes to the GPUs (builds before 'all' take a number).
ALL_LAYERS = "999"


def _gpu_layers(spec: LLMBackendSpec) -> list[str]:
    # llama-server's own default fits what it guesses into memory; a GPU backend wants the whole
    # model on its GPUs. The user's flag, or LLAMA_ARG_N_GPU_LAYERS in env, wins.
    flags = ("-ngl", "--gpu-layers", "--n-gpu-layers")
    set_in_env = any(var.get("name") == "LLAMA_ARG_N_GPU_LAYERS" for var in spec.env or [])
    if spec.gpu.count > 0 and not set_in_env and not user_sets_flag(spec, *flags):
        return ["--n-gpu-layers", ALL_LAYERS]
    return []


DESCRIPTOR = RuntimeDescriptor(
    kind="llamacpp",
    adapter=LlamaCppAdapter,
    # The image's entrypoint is `llama-server`; common/arg.cpp: --api-key reads LLAMA_API_KEY.
    pod=PodRecipe(
        args=_args, health_path=LLAMACPP.health_path, api_key_env="LLAMA_API_KEY", needs_agent=True
    ),
    default_port=8080,
    default_image="ghcr.io/ggml-org/llama.cpp:server-b11312",
    model_sources=frozenset({"huggingface", "url"}),
    one_file=True,
)

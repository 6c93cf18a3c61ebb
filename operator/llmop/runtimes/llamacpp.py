"""llama.cpp's `llama-server`: one GGUF model, an OpenAI-compatible API, and its own `/props`.

/health answers 503 "Loading model" while weights load. /v1/models gives the model's trained
context (`meta.n_ctx_train`) and size; /props gives the context each request gets (`n_ctx`), the
chat template (tool calling works when the template handles tools) and the modalities.

API reference: https://github.com/ggml-org/llama.cpp/blob/master/tools/server/README.md
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from llmop.runtimes.openai_compatible import OpenAICompatibleAdapter, OpenAIProfile
from llmop.runtimes.results import (
    ModelCapability,
    ModelInfo,
    ProbeResult,
    ProbeState,
    RuntimeCapabilities,
)
from llmop.runtimes.transport import HTTPAnswer, runtime_error_text

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
    n_ctx_train: int | None = None
    size: int | None = None


class _Model(_Wire):
    id: str
    #: null while the model is still loading.
    meta: _Meta | None = None


class _Models(_Wire):
    data: list[_Model]


class _GenerationSettings(_Wire):
    n_ctx: int | None = None


class _Props(_Wire):
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
        capabilities = set(self.profile.model_capabilities)
        if _template_handles_tools(props):
            capabilities.add(ModelCapability.TOOLS)
        if (props.modalities or {}).get("vision"):
            capabilities.add(ModelCapability.VISION)
        settings = props.default_generation_settings
        served_context = settings.n_ctx if settings and settings.n_ctx else None
        infos = []
        for model in models.data:
            trained = model.meta.n_ctx_train if model.meta else None
            infos.append(
                ModelInfo(
                    name=model.id,
                    size_bytes=model.meta.size if model.meta else None,
                    context_length=served_context or trained,
                    trained_context_length=trained,
                    capabilities=frozenset(capabilities),
                )
            )
        return infos

    async def capabilities(self) -> RuntimeCapabilities:
        found: set[ModelCapability] = set()
        for model in await self.list_models():
            found |= model.capabilities
        return self.profile.capabilities.model_copy(update={"tools": ModelCapability.TOOLS in found})


def _template_handles_tools(props: _Props) -> bool:
    caps = props.chat_template_caps or {}
    if "supports_tools" in caps:
        return bool(caps["supports_tools"])
    return "tools" in (props.chat_template or "")

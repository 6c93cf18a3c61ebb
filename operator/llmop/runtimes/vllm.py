"""vLLM's OpenAI-compatible server (`vllm serve`).

It serves the models it was started with (a base model and any LoRA adapters), all loaded; it
cannot pull. It builds its engine (loads weights) before it accepts connections: the port
refuses connections for the whole load, then /health answers 200 at once. When the engine dies
/health answers 503 and the server exits a few seconds later. Its /v1/models entries carry
`max_model_len`, the context it serves with.

What a server does depends on its model's runner: a generating model gets /v1/completions and
/v1/chat/completions, a pooling model (`--runner pooling`, embeddings) /v1/embeddings; the other
routes are not registered at all (vllm/entrypoints/openai/api_server.py, `build_app`), so an
empty request to each tells which it is without generating anything.
"""

from __future__ import annotations

import asyncio
from typing import ClassVar

from llmop.models.backend import LLMBackendSpec
from llmop.runtimes.descriptor import PodRecipe, RuntimeDescriptor, served_model_path, user_sets_flag
from llmop.runtimes.openai_compatible import (
    OpenAICompatibleAdapter,
    OpenAIProfile,
    SmallestRequest,
    one_embedding_request,
    one_token_request,
)
from llmop.runtimes.results import ModelCapability, ModelInfo, ProbeResult, ProbeState, RuntimeCapabilities
from llmop.runtimes.transport import HTTPAnswer, is_route_missing, runtime_error_text
from llmop.sources import served_model_name

VLLM = OpenAIProfile(
    kind="vllm",
    display_name="vLLM",
    health_path="/health",
    # Tool calling needs --enable-auto-tool-choice, which the API does not show: not claimed.
    capabilities=RuntimeCapabilities(chat=True, completions=True, streaming=True),
    context_length_keys=("max_model_len",),
    lists_loaded_models=True,
)
_GENERATE_ROUTE = "/v1/completions"
_EMBED_ROUTE = "/v1/embeddings"


class VLLMAdapter(OpenAICompatibleAdapter):
    default_profile: ClassVar[OpenAIProfile] = VLLM
    #: Asked once per adapter: list_models and capabilities of one observation share the answer.
    _served: asyncio.Task[frozenset[ModelCapability]] | None = None

    def interpret_health(self, answer: HTTPAnswer) -> ProbeResult:
        result = super().interpret_health(answer)
        if answer.status_code == 503:
            # vLLM never answers while it loads (its port is closed): a 503 is its engine gone.
            reason = (
                f"{self.http.where} answered GET /health with 503: its engine is dead "
                "(the server exits and its container restarts)"
            )
            return result.model_copy(update={"state": ProbeState.ERROR, "reason": reason})
        return result

    async def list_models(self) -> list[ModelInfo]:
        models, served = await asyncio.gather(super().list_models(), self._served_capabilities())
        return [model.model_copy(update={"capabilities": served}) for model in models]

    async def capabilities(self) -> RuntimeCapabilities:
        served = await self._served_capabilities()
        generates = ModelCapability.COMPLETION in served
        return RuntimeCapabilities(
            chat=generates,
            completions=generates,
            embeddings=ModelCapability.EMBEDDINGS in served,
            streaming=generates,
        )

    async def _smallest_request(self, model: str) -> SmallestRequest:
        # A pooling model has no completion route: one embedding proves it answers.
        if ModelCapability.COMPLETION in await self._served_capabilities():
            return one_token_request(model, completions=True)
        return one_embedding_request(model)

    async def _served_capabilities(self) -> frozenset[ModelCapability]:
        if self._served is None:
            self._served = asyncio.ensure_future(self._ask_served_capabilities())
        return await asyncio.shield(self._served)

    async def _ask_served_capabilities(self) -> frozenset[ModelCapability]:
        generates, embeds = await asyncio.gather(
            self._route_exists(_GENERATE_ROUTE), self._route_exists(_EMBED_ROUTE)
        )
        found = {ModelCapability.COMPLETION, ModelCapability.CHAT} if generates else set()
        return frozenset(found | ({ModelCapability.EMBEDDINGS} if embeds else set()))

    async def _route_exists(self, path: str) -> bool:
        """An empty body is refused by the route's validation (400/422) if the route exists; the
        web framework's own 404 says it does not. A refused key raises, as for any request."""
        answer = await self.http.exchange("POST", path, json_body={})
        if answer.status_code in (401, 403):
            raise self.http.status_error(answer, "POST", path)
        return not (answer.status_code == 404 and is_route_missing(runtime_error_text(answer.body)))


def _args(spec: LLMBackendSpec, port: int) -> list[str]:
    # With no model, --model is left out rather than invented; the status reports the backend as
    # serving nothing instead of the operator guessing a model. Served under the name clients
    # send (`org/repo`), not the spec's `hf://org/repo`.
    path = served_model_path(spec)
    model = ["--model", path, "--served-model-name", served_model_name(spec.models[0].name)] if path else []
    return [*model, "--host", "0.0.0.0", "--port", str(port), *_tensor_parallel(spec)]


def _tensor_parallel(spec: LLMBackendSpec) -> list[str]:
    # vLLM runs on one GPU unless told otherwise: every GPU of the replica shares the model.
    if spec.gpu.count > 1 and not user_sets_flag(spec, "--tensor-parallel-size", "-tp"):
        return ["--tensor-parallel-size", str(spec.gpu.count)]
    return []


DESCRIPTOR = RuntimeDescriptor(
    kind="vllm",
    adapter=VLLMAdapter,
    # The image's entrypoint is `vllm serve`.
    pod=PodRecipe(
        args=_args, health_path=VLLM.health_path, api_key_env="VLLM_API_KEY", needs_agent=True, needs_shm=True
    ),
    default_port=8000,
    default_image="docker.io/vllm/vllm-openai:v0.32.0",
    model_sources=frozenset({"huggingface", "url"}),
)

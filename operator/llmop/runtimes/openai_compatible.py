"""Servers that speak the OpenAI HTTP API (`/v1/models`, `/v1/completions`, ...), told apart by a
profile: where health lives, where context length hides, what the server can do.

vLLM and llama.cpp build on this adapter in their own modules; the rest are plain profiles.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from llmop.runtimes.base import HTTPRuntimeAdapter
from llmop.runtimes.descriptor import RuntimeDescriptor
from llmop.runtimes.errors import ModelNotFound, RuntimeHTTPError, Unsupported
from llmop.runtimes.results import (
    ModelCapability,
    ModelInfo,
    RunningModel,
    RuntimeCapabilities,
    WarmupResult,
)
from llmop.runtimes.transport import Endpoint, is_route_missing
from llmop.sources import served_model_name

_HF_URL_PREFIXES = ("https://huggingface.co/", "huggingface.co/")


@dataclass(frozen=True)
class OpenAIProfile:
    """How one OpenAI-compatible server differs from the others."""

    kind: str
    display_name: str
    #: Servers without a health endpoint are healthy when they list their models.
    health_path: str
    capabilities: RuntimeCapabilities
    models_path: str = "/v1/models"
    #: Keys of a `/v1/models` entry that carry the context length the model is served with.
    context_length_keys: tuple[str, ...] = ()
    #: True for single-model servers, whose list is exactly what is loaded; False where the list
    #: also holds models the server would load on demand.
    lists_loaded_models: bool = False
    #: Model capabilities implied by the server's own (no per-model information in /v1/models).
    model_capabilities: frozenset[ModelCapability] = field(init=False)

    def __post_init__(self) -> None:
        implied = {
            ModelCapability.CHAT: self.capabilities.chat,
            ModelCapability.COMPLETION: self.capabilities.completions,
            ModelCapability.TOOLS: self.capabilities.tools,
        }
        object.__setattr__(
            self, "model_capabilities", frozenset(cap for cap, present in implied.items() if present)
        )


_EVERYTHING = RuntimeCapabilities(chat=True, completions=True, embeddings=True, streaming=True, tools=True)

OPENAI = OpenAIProfile(
    kind="openai",
    display_name="OpenAI-compatible server",
    health_path="/v1/models",
    capabilities=_EVERYTHING,
    context_length_keys=("max_model_len", "context_length", "context_window"),
)
TGI = OpenAIProfile(
    kind="tgi",
    display_name="Text Generation Inference",
    health_path="/health",
    # Embeddings are a separate server (TEI).
    capabilities=RuntimeCapabilities(chat=True, completions=True, streaming=True, tools=True),
    lists_loaded_models=True,
)
SGLANG = OpenAIProfile(
    kind="sglang",
    display_name="SGLang",
    health_path="/health",
    capabilities=RuntimeCapabilities(chat=True, completions=True, streaming=True, tools=True),
    context_length_keys=("max_model_len",),
    lists_loaded_models=True,
)
LOCALAI = OpenAIProfile(
    kind="localai",
    display_name="LocalAI",
    health_path="/readyz",
    capabilities=_EVERYTHING,
)
LMSTUDIO = OpenAIProfile(
    kind="lmstudio",
    display_name="LM Studio",
    health_path="/v1/models",
    capabilities=_EVERYTHING,
)


class _Wire(BaseModel):
    model_config = ConfigDict(extra="allow")


class _ModelEntry(_Wire):
    id: str


class _ModelList(_Wire):
    data: list[_ModelEntry]


class _Completion(_Wire):
    choices: list[Any]


class _Embeddings(_Wire):
    data: list[Any]


#: The smallest request that proves a model answers: where it goes, its body, the answer's shape.
SmallestRequest = tuple[str, dict[str, Any], type[_Wire]]


class OpenAICompatibleAdapter(HTTPRuntimeAdapter):
    """An OpenAI-compatible server, described by `profile`."""

    default_profile: ClassVar[OpenAIProfile] = OPENAI

    def __init__(self, endpoint: Endpoint, profile: OpenAIProfile | None = None) -> None:
        self.profile = profile or self.default_profile
        self.kind = self.profile.kind
        self.display_name = self.profile.display_name
        self.health_path = self.profile.health_path
        self._listing: asyncio.Future[list[ModelInfo]] | None = None
        super().__init__(endpoint)

    def normalize_model_name(self, name: str) -> str:
        """The name the server lists for `name`: a Hugging Face id as clients send it (`org/repo`;
        `hf://org/repo@rev` and huggingface.co URLs become `org/repo`), anything else as written."""
        text = name.strip()
        if not text:
            raise ValueError("a model name cannot be empty")
        for prefix in _HF_URL_PREFIXES:
            if text.startswith(prefix):
                text = "hf://" + text.removeprefix(prefix)
        return served_model_name(text)

    async def list_models(self) -> list[ModelInfo]:
        """The model list; callers asking at the same time (list_models and list_running of one
        observation) share one request, later callers get a fresh one."""
        if self._listing is None:
            listing = asyncio.ensure_future(self._fetch_models())
            listing.add_done_callback(self._listing_done)
            self._listing = listing
        return list(await asyncio.shield(self._listing))

    def _listing_done(self, listing: asyncio.Future[list[ModelInfo]]) -> None:
        if self._listing is listing:
            self._listing = None
        if not listing.cancelled():
            listing.exception()  # retrieved here too, so a caller that left never leaves it unread

    async def _fetch_models(self) -> list[ModelInfo]:
        listing = await self.http.call_wire(_ModelList, "GET", self.profile.models_path)
        return [
            ModelInfo(
                name=entry.id,
                context_length=self._context_length(entry),
                capabilities=self.profile.model_capabilities,
            )
            for entry in listing.data
        ]

    def _context_length(self, entry: _ModelEntry) -> int | None:
        extra = entry.model_extra or {}
        for key in self.profile.context_length_keys:
            value = extra.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
        return None

    async def list_running(self) -> list[RunningModel]:
        if not self.profile.lists_loaded_models:
            raise Unsupported(
                self.display_name,
                "listing loaded models",
                "its model list also holds models it loads on demand",
            )
        # A listing that tells per model (llama.cpp's router) leaves out what is not loaded.
        return [
            RunningModel(name=model.name, context_length=model.context_length)
            for model in await self.list_models()
            if model.loaded is not False
        ]

    async def capabilities(self) -> RuntimeCapabilities:
        return self.profile.capabilities

    async def warmup(
        self,
        model: str,
        timeout: float,  # noqa: ASYNC109 - it sets httpx's read timeout too, which a caller's cannot
        unload_others: bool = False,
    ) -> WarmupResult:
        """One real token: the cheapest request that proves the model answers."""
        if unload_others and not self.profile.lists_loaded_models:
            raise Unsupported(self.display_name, "unloading models")
        started = time.monotonic()
        path, request, answer = await self._smallest_request(model)
        try:
            await self.http.call_wire(answer, "POST", path, json_body=request, limit_seconds=timeout)
        except RuntimeHTTPError as error:
            if error.status_code == 404 and not is_route_missing(error.runtime_message):
                raise ModelNotFound(
                    f"{self.http.where} does not serve model {model!r}: {error.runtime_message}",
                    status_code=404,
                    runtime_message=error.runtime_message,
                ) from error
            raise
        # A single-model server has nothing else loaded, so unload_others is already true.
        return WarmupResult(model=model, elapsed_seconds=time.monotonic() - started)

    async def _smallest_request(self, model: str) -> SmallestRequest:
        return one_token_request(model, completions=self.profile.capabilities.completions)


def one_token_request(model: str, *, completions: bool) -> SmallestRequest:
    if completions:
        body = {"model": model, "prompt": "Hello", "max_tokens": 1, "temperature": 0}
        return "/v1/completions", body, _Completion
    messages = [{"role": "user", "content": "Hello"}]
    body = {"model": model, "messages": messages, "max_tokens": 1, "temperature": 0}
    return "/v1/chat/completions", body, _Completion


def one_embedding_request(model: str) -> SmallestRequest:
    return "/v1/embeddings", {"model": model, "input": "Hello"}, _Embeddings


#: Servers llmop observes but does not deploy, one per profile.
DESCRIPTORS = tuple(
    RuntimeDescriptor(kind=profile.kind, adapter=partial(OpenAICompatibleAdapter, profile=profile))
    for profile in (OPENAI, TGI, SGLANG, LOCALAI, LMSTUDIO)
)

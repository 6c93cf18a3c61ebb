"""Which adapter serves which runtime kind. Adding a runtime: one module and one line here."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from llmop.runtimes import openai_compatible
from llmop.runtimes.errors import UnknownRuntimeKind
from llmop.runtimes.llamacpp import LlamaCppAdapter
from llmop.runtimes.ollama import OllamaAdapter
from llmop.runtimes.openai_compatible import OpenAICompatibleAdapter
from llmop.runtimes.protocol import RuntimeAdapter
from llmop.runtimes.transport import Endpoint
from llmop.runtimes.vllm import VLLMAdapter

AdapterFactory = Callable[[Endpoint], RuntimeAdapter]

ADAPTERS: dict[str, AdapterFactory] = {
    "ollama": OllamaAdapter,
    "vllm": VLLMAdapter,
    "llamacpp": LlamaCppAdapter,
    "openai": partial(OpenAICompatibleAdapter, profile=openai_compatible.OPENAI),
    "tgi": partial(OpenAICompatibleAdapter, profile=openai_compatible.TGI),
    "sglang": partial(OpenAICompatibleAdapter, profile=openai_compatible.SGLANG),
    "localai": partial(OpenAICompatibleAdapter, profile=openai_compatible.LOCALAI),
    "lmstudio": partial(OpenAICompatibleAdapter, profile=openai_compatible.LMSTUDIO),
}

KNOWN_KINDS: tuple[str, ...] = tuple(ADAPTERS)


def adapter_factory(kind: str) -> AdapterFactory:
    try:
        return ADAPTERS[kind.strip().lower()]
    except KeyError:
        raise UnknownRuntimeKind(kind, KNOWN_KINDS) from None

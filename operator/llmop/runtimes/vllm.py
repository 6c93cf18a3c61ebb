"""vLLM's OpenAI-compatible server (`vllm serve`).

It serves the models it was started with (a base model and any LoRA adapters), all loaded; it
cannot pull. While weights load, its port refuses connections or /health answers 503. Its
/v1/models entries carry `max_model_len`, the context it serves with.
"""

from __future__ import annotations

from typing import ClassVar

from llmop.runtimes.openai_compatible import OpenAICompatibleAdapter, OpenAIProfile
from llmop.runtimes.results import RuntimeCapabilities

VLLM = OpenAIProfile(
    kind="vllm",
    display_name="vLLM",
    health_path="/health",
    # Tool calling needs --enable-auto-tool-choice and embeddings a pooling model; neither shows
    # in the API, so neither is claimed.
    capabilities=RuntimeCapabilities(chat=True, completions=True, streaming=True),
    context_length_keys=("max_model_len",),
    lists_loaded_models=True,
)


class VLLMAdapter(OpenAICompatibleAdapter):
    default_profile: ClassVar[OpenAIProfile] = VLLM

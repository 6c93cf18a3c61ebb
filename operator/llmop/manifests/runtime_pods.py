"""The runtime's part of the pod, as its runtime module describes it (llmop.runtimes.registry)."""

from __future__ import annotations

from llmop.models.backend import LLMBackendSpec
from llmop.runtimes.descriptor import PodRecipe
from llmop.runtimes.registry import managed_descriptor


def managed_runtime(spec: LLMBackendSpec) -> str:
    """The runtime llmop deploys; ValueError for an external backend, which has no objects."""
    return managed_descriptor(spec).kind


def runtime_pod(spec: LLMBackendSpec) -> PodRecipe:
    recipe = managed_descriptor(spec).pod
    assert recipe is not None  # every managed runtime has one
    return recipe


def has_agent(spec: LLMBackendSpec) -> bool:
    """Whether the pods carry the download agent: vLLM and llama.cpp, unless they read their models
    from a ModelCache, which its own filler downloads into."""
    return runtime_pod(spec).needs_agent and spec.model_cache is None

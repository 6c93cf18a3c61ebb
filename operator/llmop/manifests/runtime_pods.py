"""What differs between runtimes inside the pod: arguments, environment, health path, the agent.

Adding a runtime: one `RuntimePod` and one line in `RUNTIME_PODS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llmop.manifests.storage import MODELS_DIR
from llmop.models.backend import LLMBackendSpec
from llmop.sources import parse_model_source, served_model_name


def served_models(spec: LLMBackendSpec) -> list[str]:
    """Names of the models a one-model runtime serves: the first entry of `spec.models`."""
    return [spec.models[0].name] if spec.models else []


def served_model_path(spec: LLMBackendSpec) -> str | None:
    """Absolute path of the served model in the pod; None when the spec names no model.

    A model name llmop cannot read raises `InvalidModelSource` (a ValueError whose message says
    which forms are accepted), for the caller to report in status.
    """
    names = served_models(spec)
    if not names:
        return None
    return f"{MODELS_DIR}/{parse_model_source(names[0]).local_path}"


def _vllm_args(spec: LLMBackendSpec) -> list[str]:
    # With no model, --model is left out rather than invented; the status reports the backend as
    # serving nothing instead of the operator guessing a model.
    path = served_model_path(spec)
    # Served under the name clients send (`org/repo`), not the spec's `hf://org/repo`.
    model = ["--model", path, "--served-model-name", served_model_name(spec.models[0].name)] if path else []
    return [*model, "--host", "0.0.0.0", "--port", str(spec.effective_port)]


def _llamacpp_args(spec: LLMBackendSpec) -> list[str]:
    path = served_model_path(spec)
    model = ["--model", path, "--alias", served_model_name(spec.models[0].name)] if path else []
    return ["--host", "0.0.0.0", "--port", str(spec.effective_port), *model]


def _ollama_args(spec: LLMBackendSpec) -> list[str]:
    return ["serve"]


def _ollama_env(spec: LLMBackendSpec) -> list[dict[str, Any]]:
    return [
        {"name": "OLLAMA_HOST", "value": f"0.0.0.0:{spec.effective_port}"},
        {"name": "OLLAMA_MODELS", "value": f"{MODELS_DIR}/ollama"},
        # Keep models in memory: an unloaded model makes the next request pay the cold start.
        {"name": "OLLAMA_KEEP_ALIVE", "value": "-1"},
    ]


def _no_env(spec: LLMBackendSpec) -> list[dict[str, Any]]:
    return []


@dataclass(frozen=True)
class RuntimePod:
    """One runtime's part of the pod template."""

    args: Callable[[LLMBackendSpec], list[str]]
    env: Callable[[LLMBackendSpec], list[dict[str, Any]]]
    health_path: str
    # Environment variable the server reads its API key from; None when it has no API keys.
    api_key_env: str | None
    # Runtimes that cannot pull models get the llmop agent as a native sidecar.
    needs_agent: bool
    # Memory-backed /dev/shm: PyTorch and NCCL need more than the container default of 64Mi.
    needs_shm: bool = False


RUNTIME_PODS: dict[str, RuntimePod] = {
    "vllm": RuntimePod(
        args=_vllm_args,
        env=_no_env,
        health_path="/health",
        api_key_env="VLLM_API_KEY",
        needs_agent=True,
        needs_shm=True,
    ),
    "llamacpp": RuntimePod(
        args=_llamacpp_args,
        env=_no_env,
        health_path="/health",
        api_key_env="LLAMA_API_KEY",  # llama.cpp common/arg.cpp: --api-key reads LLAMA_API_KEY
        needs_agent=True,
    ),
    "ollama": RuntimePod(
        args=_ollama_args,
        env=_ollama_env,
        health_path="/",
        api_key_env=None,
        needs_agent=False,
    ),
}


def managed_runtime(spec: LLMBackendSpec) -> str:
    """The runtime llmop deploys; ValueError for an external backend, which has no objects."""
    if spec.runtime is None:
        raise ValueError("an external backend has no Deployment or Service: llmop only observes it")
    return spec.runtime


def runtime_pod(spec: LLMBackendSpec) -> RuntimePod:
    return RUNTIME_PODS[managed_runtime(spec)]

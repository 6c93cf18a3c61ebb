"""What llmop knows about one runtime, in one object: how to talk to it and, for the runtimes it
deploys, how to run it. Each runtime's module defines its `DESCRIPTOR`; `registry` lists them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from llmop.models.backend import LLMBackendSpec
from llmop.runtimes.protocol import RuntimeAdapter
from llmop.runtimes.transport import Endpoint
from llmop.sources import MODELS_DIR, SourceKind, parse_model_source

AdapterFactory = Callable[[Endpoint], RuntimeAdapter]
EnvVar = dict[str, Any]


@dataclass(frozen=True)
class PodRecipe:
    """The runtime's part of a pod: what its container runs and how the kubelet checks it."""

    #: Container args for (spec, port); the image's entrypoint runs the server.
    args: Callable[[LLMBackendSpec, int], list[str]]
    health_path: str
    #: Variable the server reads its API key from; None when it has no API keys.
    api_key_env: str | None
    #: Runtimes that cannot pull models get the llmop agent as a native sidecar.
    needs_agent: bool
    env: Callable[[LLMBackendSpec, int], list[EnvVar]] = lambda spec, port: []
    #: Memory-backed /dev/shm: PyTorch and NCCL need more than the container default of 64Mi.
    needs_shm: bool = False


@dataclass(frozen=True)
class RuntimeDescriptor:
    kind: str
    adapter: AdapterFactory
    #: Only for the runtimes llmop deploys (spec.runtime); None for servers it only observes.
    pod: PodRecipe | None = None
    default_port: int | None = None
    #: An exact release, the one the tests run: tests/unit/test_runtime_images.py.
    default_image: str | None = None
    #: The model sources its pods accept (sources.SourceKind).
    model_sources: frozenset[SourceKind] = field(default_factory=frozenset)
    #: True when it loads exactly one model file (llama.cpp), not a repo.
    one_file: bool = False
    #: True when it pulls models through its own API (Ollama); else the agent does.
    pulls_itself: bool = False

    @property
    def managed(self) -> bool:
        return self.pod is not None


def served_model_path(spec: LLMBackendSpec) -> str | None:
    """Absolute path of the served model (the first of spec.models) in the pod; None when the
    spec names none. A name llmop cannot read raises `InvalidModelSource`."""
    if not spec.models:
        return None
    return f"{MODELS_DIR}/{parse_model_source(spec.models[0].name).local_path}"


def user_sets_flag(spec: LLMBackendSpec, *names: str) -> bool:
    """Whether spec.args already give one of these flags, as `--flag N` or `--flag=N` (vLLM's
    parser also takes `--flag_name` for `--flag-name`): llmop then adds none of its own."""
    wanted = {name.replace("_", "-") for name in names}
    for arg in spec.args or []:
        flag = arg.split("=", 1)[0]
        if flag.startswith("--"):
            flag = flag.replace("_", "-")
        if flag in wanted:
            return True
    return False

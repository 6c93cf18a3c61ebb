"""Typed results of runtime operations: what the runtime said, in one shape for every runtime."""

from __future__ import annotations

import enum
from datetime import datetime

from pydantic import BaseModel, ConfigDict, field_serializer


class ProbeState(enum.StrEnum):
    """Where a runtime stands, as far as one health request can tell."""

    SERVING = "serving"
    #: Connection refused or reset: nothing listens yet, the process is still starting.
    STARTING = "starting"
    #: The server answers but is still loading weights (HTTP 503, "Loading model").
    LOADING = "loading"
    TIMEOUT = "timeout"
    #: The API key is missing or wrong (HTTP 401/403); waiting will not fix it.
    UNAUTHORIZED = "unauthorized"
    #: The address is in the operator's deny list: nothing was sent, waiting will not fix it.
    DENIED = "denied"
    ERROR = "error"


class ModelCapability(enum.StrEnum):
    CHAT = "chat"
    COMPLETION = "completion"
    EMBEDDINGS = "embeddings"
    TOOLS = "tools"
    VISION = "vision"
    #: Reasoning output kept apart from the answer (Ollama's `think`).
    THINKING = "thinking"
    #: Fill-in-the-middle: a suffix after the prompt (Ollama's `insert`).
    INSERT = "insert"


class _Result(BaseModel):
    model_config = ConfigDict(frozen=True)


class ProbeResult(_Result):
    state: ProbeState
    #: One sentence a user can read in a status field or an event.
    reason: str
    url: str
    http_status: int | None = None
    latency_seconds: float
    #: The runtime's version when its health answer carries one (Ollama's /api/version).
    version: str | None = None

    @property
    def serving(self) -> bool:
        return self.state is ProbeState.SERVING


class ModelInfo(_Result):
    #: The name the runtime uses for the model, as requests must spell it.
    name: str
    size_bytes: int | None = None
    digest: str | None = None
    modified_at: datetime | None = None
    #: The context the runtime serves the model with, only when its API says so (vLLM's
    #: max_model_len, llama-server's n_ctx, an Ollama Modelfile's num_ctx); never the trained one.
    context_length: int | None = None
    #: The longest context the model was trained for, from its own metadata, when known.
    trained_context_length: int | None = None
    capabilities: frozenset[ModelCapability] = frozenset()
    #: Whether it is in memory, when the listing itself tells (llama.cpp's router, LM Studio);
    #: None: ask `list_running`.
    loaded: bool | None = None
    #: Ollama's details: architecture family, parameter count and quantization as it words them.
    family: str | None = None
    parameter_size: str | None = None
    quantization: str | None = None

    @field_serializer("capabilities")
    def _sorted_capabilities(self, capabilities: frozenset[ModelCapability]) -> list[str]:
        return sorted(str(capability) for capability in capabilities)


class RunningModel(_Result):
    """A model loaded in memory and ready to answer without a load delay."""

    name: str
    size_bytes: int | None = None
    size_vram: int | None = None
    #: When the runtime will unload the model if idle (Ollama's keep_alive); None: never or unknown.
    expires_at: datetime | None = None
    context_length: int | None = None


class PullLine(_Result):
    """One line of pull progress, in Ollama's shape: a status text and, while downloading a layer,
    that layer's digest with completed and total bytes."""

    status: str
    digest: str | None = None
    completed: int | None = None
    total: int | None = None

    @property
    def done(self) -> bool:
        return self.status == "success"


class WarmupResult(_Result):
    model: str
    elapsed_seconds: float
    #: Time the runtime spent loading the model, when it reports it (Ollama's load_duration).
    load_seconds: float | None = None
    #: Models unloaded first to make room (`unload_others=True`).
    unloaded: tuple[str, ...] = ()


class RuntimeCapabilities(_Result):
    """What a client can ask of this runtime, as far as its API tells."""

    chat: bool = False
    completions: bool = False
    embeddings: bool = False
    streaming: bool = False
    tools: bool = False

"""The one interface every runtime adapter offers; the operator depends on this and nothing else."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

from llmop.runtimes.results import (
    ModelInfo,
    ProbeResult,
    PullLine,
    RunningModel,
    RuntimeCapabilities,
    WarmupResult,
)

#: Called with each probe result while `wait_ready` waits (to report "loading" as it happens).
ProbeObserver = Callable[[ProbeResult], object]


@runtime_checkable
class RuntimeAdapter(Protocol):
    """Talks to one running inference server through its own HTTP API.

    Operations a runtime cannot do raise `Unsupported`; every other failure raises a subclass of
    `RuntimeAPIError`. `probe` and `wait_ready` never raise for runtime trouble: they report it.
    """

    #: The registry name (`ollama`, `vllm`, `llamacpp`, `openai`, ...).
    kind: str
    #: The name users know it by (`Ollama`, `vLLM`, `llama.cpp server`), used in messages.
    display_name: str
    base_url: str

    async def probe(self, *, limit_seconds: float | None = None) -> ProbeResult:
        """Ask the runtime once whether it serves; classify the answer or its absence."""
        ...

    async def wait_ready(
        self,
        deadline_seconds: float,
        *,
        initial_interval: float = 0.5,
        max_interval: float = 5.0,
        on_probe: ProbeObserver | None = None,
    ) -> ProbeResult:
        """Probe with exponential backoff and jitter until serving or the deadline; return the last
        result. Stops early on UNAUTHORIZED, which waiting cannot fix."""
        ...

    async def list_models(self) -> list[ModelInfo]:
        """Models the runtime can serve, with size, digest, context length and capabilities."""
        ...

    async def find_model(self, model: str) -> ModelInfo | None:
        """`model` as the runtime lists it (spelled as `normalize_model_name` does); None when it
        does not have it."""
        ...

    async def list_running(self) -> list[RunningModel]:
        """Models loaded in memory now (single-model servers: the model they serve)."""
        ...

    async def capabilities(self) -> RuntimeCapabilities:
        """What clients can ask of this runtime, from its API and the models it has."""
        ...

    def normalize_model_name(self, name: str) -> str:
        """The spelling the runtime itself reports for `name`, so names from a spec compare equal
        to names from `list_models`."""
        ...

    async def warmup(
        self,
        model: str,
        timeout: float,  # noqa: ASYNC109 - it sets httpx's read timeout too, which a caller's cannot
        unload_others: bool = False,
    ) -> WarmupResult:
        """Load `model` into memory with the smallest real request; optionally unload the others."""
        ...

    def pull(
        self, model: str, *, insecure: bool = False, sha256: str | None = None
    ) -> AsyncGenerator[PullLine, None]:
        """Stream progress of a model download; raise `PullFailed` with the runtime's own text.

        `insecure` allows a plain-HTTP registry; `sha256` is the digest the download must have,
        for servers that check one (llmop's agent, which speaks Ollama's pull API)."""
        ...

    async def delete_model(self, model: str) -> bool:
        """Delete a model from the runtime's store; False when it was not there."""
        ...

    async def aclose(self) -> None:
        """Close the HTTP client if the adapter created it (a shared client stays open)."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...

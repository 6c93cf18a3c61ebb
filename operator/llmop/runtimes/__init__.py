"""Adapters for LLM inference runtimes (Ollama, vLLM, llama.cpp and OpenAI-compatible servers).

Async, over httpx, and free of Kubernetes: `connect()` gives a `RuntimeAdapter` for one server,
whose operations return typed results or raise a `RuntimeAPIError` with a readable message.

    async with httpx.AsyncClient() as client:           # one client, reused for every backend
        runtime = connect("ollama", "http://10.0.0.7:11434", client=client)
        result = await runtime.wait_ready(600)
        if result.serving:
            models = await runtime.list_models()
"""

from __future__ import annotations

import httpx

from llmop.runtimes.errors import (
    AuthFailed,
    MalformedResponse,
    ModelNotFound,
    PullFailed,
    ResponseTooLarge,
    RuntimeAPIError,
    RuntimeHTTPError,
    RuntimeTimeout,
    RuntimeUnavailable,
    TargetRefused,
    UnknownRuntimeKind,
    Unsupported,
)
from llmop.runtimes.protocol import RuntimeAdapter
from llmop.runtimes.registry import KNOWN_KINDS, adapter_factory
from llmop.runtimes.results import (
    ModelCapability,
    ModelInfo,
    ProbeResult,
    ProbeState,
    PullLine,
    RunningModel,
    RuntimeCapabilities,
    WarmupResult,
)
from llmop.runtimes.transport import DEFAULT_MAX_BODY_BYTES, DEFAULT_TIMEOUT_SECONDS, Endpoint

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_TIMEOUT_SECONDS",
    "KNOWN_KINDS",
    "AuthFailed",
    "MalformedResponse",
    "ModelCapability",
    "ModelInfo",
    "ModelNotFound",
    "ProbeResult",
    "ProbeState",
    "PullFailed",
    "PullLine",
    "ResponseTooLarge",
    "RunningModel",
    "RuntimeAPIError",
    "RuntimeAdapter",
    "RuntimeCapabilities",
    "RuntimeHTTPError",
    "RuntimeTimeout",
    "RuntimeUnavailable",
    "TargetRefused",
    "UnknownRuntimeKind",
    "Unsupported",
    "WarmupResult",
    "connect",
]


def connect(
    kind: str,
    base_url: str,
    *,
    api_key: str | None = None,
    client: httpx.AsyncClient | None = None,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> RuntimeAdapter:
    """An adapter for the `kind` of runtime listening at `base_url` (`http://host:port`; a
    trailing `/v1` is accepted too).

    Pass one long-lived `client` to share connections across many runtimes; without one the
    adapter creates its own, closed by `aclose()` or `async with`. `timeout` bounds each request
    as a whole (pulls bound the silence between progress lines instead); answers larger than
    `max_body_bytes` raise `ResponseTooLarge`. Raises `UnknownRuntimeKind` (listing the known
    kinds) or `ValueError` for a URL that is not http(s).
    """
    factory = adapter_factory(kind)
    endpoint = Endpoint.parse(
        base_url, api_key=api_key, client=client, timeout=timeout, max_body_bytes=max_body_bytes
    )
    return factory(endpoint)

"""What all HTTP adapters share: probing and its classification, waiting out a cold start, the
defaults for operations a runtime lacks, and the client's lifetime."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncGenerator
from types import TracebackType
from typing import Self

from llmop.runtimes.errors import RuntimeAPIError, Unsupported
from llmop.runtimes.protocol import ProbeObserver
from llmop.runtimes.results import ModelInfo, ProbeResult, ProbeState, PullLine
from llmop.runtimes.transport import Endpoint, HTTPAnswer, RuntimeHTTP

_BACKOFF_FACTOR = 2.0
#: Each sleep is shortened by up to this fraction so that many backends do not probe in lockstep.
_JITTER = 0.2
_SHORTEST_PROBE_SECONDS = 0.5


class HTTPRuntimeAdapter:
    """Base of the adapters; a subclass names its health path and implements the listings."""

    kind: str
    display_name: str
    health_path: str = "/health"

    def __init__(self, endpoint: Endpoint) -> None:
        self.http = RuntimeHTTP(self.display_name, endpoint)
        self.base_url = endpoint.base_url

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.kind} {self.http.display_url}>"

    async def probe(self, *, limit_seconds: float | None = None) -> ProbeResult:
        started = time.monotonic()
        url = self.http.display_url + self.health_path
        try:
            answer = await self.http.exchange("GET", self.health_path, limit_seconds=limit_seconds)
        except RuntimeAPIError as error:
            return ProbeResult(
                state=error.probe_state,
                reason=error.message,
                url=url,
                latency_seconds=time.monotonic() - started,
            )
        return self.interpret_health(answer)

    def interpret_health(self, answer: HTTPAnswer) -> ProbeResult:
        """Classify the health endpoint's answer; subclasses refine what a 200 body means."""
        url = self.http.display_url + self.health_path
        if answer.status_code >= 400:
            error = self.http.status_error(answer, "GET", self.health_path)
            return ProbeResult(
                state=error.probe_state,
                reason=error.message,
                url=url,
                http_status=answer.status_code,
                latency_seconds=answer.latency_seconds,
            )
        return ProbeResult(
            state=ProbeState.SERVING,
            reason=f"{self.http.where} is serving (GET {self.health_path} answered {answer.status_code})",
            url=url,
            http_status=answer.status_code,
            latency_seconds=answer.latency_seconds,
        )

    async def wait_ready(
        self,
        deadline_seconds: float,
        *,
        initial_interval: float = 0.5,
        max_interval: float = 5.0,
        on_probe: ProbeObserver | None = None,
    ) -> ProbeResult:
        deadline = time.monotonic() + deadline_seconds
        interval = initial_interval
        while True:
            remaining = deadline - time.monotonic()
            # Never wait past the deadline by more than a short probe.
            probe_timeout = min(self.http.endpoint.timeout, max(remaining, _SHORTEST_PROBE_SECONDS))
            result = await self.probe(limit_seconds=probe_timeout)
            if on_probe is not None:
                on_probe(result)
            if result.serving or result.state in (ProbeState.UNAUTHORIZED, ProbeState.DENIED):
                return result
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return result
            await asyncio.sleep(min(interval * (1 - random.uniform(0, _JITTER)), remaining))
            interval = min(interval * _BACKOFF_FACTOR, max_interval)

    async def find_model(self, model: str) -> ModelInfo | None:
        wanted = self.normalize_model_name(model)
        listed = await self.list_models()
        return next((info for info in listed if self.normalize_model_name(info.name) == wanted), None)

    def normalize_model_name(self, name: str) -> str:
        raise NotImplementedError  # each adapter spells names as its runtime does

    async def list_models(self) -> list[ModelInfo]:
        raise NotImplementedError  # each adapter lists as its runtime does

    async def pull(
        self, model: str, *, insecure: bool = False, sha256: str | None = None
    ) -> AsyncGenerator[PullLine, None]:
        raise Unsupported(
            self.display_name,
            "pulling models",
            "put the model files in the runtime's model volume and restart it",
        )
        yield  # pragma: no cover - makes this an async generator, like the adapters that can pull

    async def delete_model(self, model: str) -> bool:
        raise Unsupported(
            self.display_name, "deleting models", "remove the files from the runtime's model volume"
        )

    async def aclose(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

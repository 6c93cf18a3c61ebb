"""Ollama, through its native API (`/api/*`): the one runtime here that pulls, lists many models and
loads and unloads them on demand.

API reference: https://github.com/ollama/ollama/blob/main/docs/api.md
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from llmop.models.backend import LLMBackendSpec
from llmop.runtimes.base import HTTPRuntimeAdapter
from llmop.runtimes.descriptor import EnvVar, PodRecipe, RuntimeDescriptor
from llmop.runtimes.errors import (
    MalformedResponse,
    ModelNotFound,
    PullFailed,
    RuntimeHTTPError,
    RuntimeUnavailable,
)
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
from llmop.runtimes.transport import HTTPAnswer
from llmop.sources import MODELS_DIR

DEFAULT_REGISTRY = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"
#: Ollama writes nothing while it verifies the sha256 of a finished layer, which takes minutes
#: for tens of gigabytes; silence longer than this means the pull is stuck.
PULL_IDLE_TIMEOUT_SECONDS = 300.0
#: /api/show is one request per model; a few at a time keeps a large library quick to list
#: without queueing many requests on a busy server.
_SHOW_CONCURRENCY = 4
#: Models described with /api/show, in name order; any more are listed with what /api/tags says:
#: a library of thousands must not cost thousands of requests every round (status shows at most
#: 100 models anyway).
DESCRIBED_MODELS = 100
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")

# Ollama's capability words, mapped to ours; "completion" means generate, and chat with it.
_CAPABILITIES: dict[str, tuple[ModelCapability, ...]] = {
    "completion": (ModelCapability.COMPLETION, ModelCapability.CHAT),
    "embedding": (ModelCapability.EMBEDDINGS,),
    "tools": (ModelCapability.TOOLS,),
    "vision": (ModelCapability.VISION,),
    "thinking": (ModelCapability.THINKING,),
    "insert": (ModelCapability.INSERT,),
}


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _Version(_Wire):
    version: str


class _Details(_Wire):
    family: str | None = None
    parameter_size: str | None = None
    quantization_level: str | None = None


class _Tag(_Wire):
    name: str
    size: int | None = None
    digest: str | None = None
    modified_at: datetime | None = None
    details: _Details | None = None


class _Tags(_Wire):
    models: list[_Tag] | None = None


class _Show(_Wire):
    model_info: dict[str, Any] | None = None
    parameters: str | None = None
    #: Absent before Ollama 0.6; then we fall back to "chat and completion".
    capabilities: list[str] | None = None


class _Loaded(_Wire):
    name: str
    size: int | None = None
    size_vram: int | None = None
    expires_at: datetime | None = None
    context_length: int | None = None


class _Ps(_Wire):
    models: list[_Loaded] | None = None


class _Generated(_Wire):
    done: bool = True
    #: Nanoseconds, like every Ollama duration.
    load_duration: int | None = None


class _PullLine(_Wire):
    status: str = ""
    digest: str | None = None
    completed: int | None = None
    total: int | None = None
    error: str | None = None


class OllamaAdapter(HTTPRuntimeAdapter):
    kind = "ollama"
    display_name = "Ollama"
    # /api/version answers as soon as the server listens and tells the version; "/" says only
    # "Ollama is running".
    health_path = "/api/version"

    def interpret_health(self, answer: HTTPAnswer) -> ProbeResult:
        result = super().interpret_health(answer)
        if result.state is not ProbeState.SERVING:
            return result
        try:
            data = self.http.decode_answer(answer, "GET", self.health_path)
            version = self.http.parse_wire(_Version, data, "GET", self.health_path, answer=answer).version
        except MalformedResponse as error:  # a 200 that is not Ollama's: something else listens there
            return result.model_copy(update={"state": ProbeState.ERROR, "reason": str(error)})
        return result.model_copy(
            update={"version": version, "reason": f"{self.http.where} is serving (version {version})"}
        )

    def normalize_model_name(self, name: str) -> str:
        """Ollama's own short form: `llama3` is `llama3:latest`, the default registry and the
        `library` namespace are implied, other hosts and namespaces are kept."""
        text = name.strip()
        if not text:
            raise ValueError("a model name cannot be empty")
        text, at, digest = text.partition("@")
        text = text.removeprefix("https://").removeprefix("http://")
        path, _, last = text.rpartition("/")
        # The tag is after a colon in the last segment only: `host:5000/ns/model` has no tag.
        model, _, tag = last.partition(":")
        parts = path.split("/") if path else []
        if parts[:1] == [DEFAULT_REGISTRY]:
            parts = parts[1:]
        if parts == [DEFAULT_NAMESPACE]:
            parts = []
        if not tag and not digest:
            tag = DEFAULT_TAG
        return "/".join([*parts, model]) + (f":{tag}" if tag else "") + (at + digest)

    async def list_models(self) -> list[ModelInfo]:
        tags = await self.http.call_wire(_Tags, "GET", "/api/tags")
        limit = asyncio.Semaphore(_SHOW_CONCURRENCY)

        async def describe(tag: _Tag) -> ModelInfo | None:
            if tag.name not in described_names:
                return _model_info(tag, _Show())
            async with limit:
                try:
                    show = await self.http.call_wire(
                        _Show, "POST", "/api/show", json_body={"model": tag.name}
                    )
                except RuntimeHTTPError as error:
                    if error.status_code == 404:
                        return None  # deleted between the two requests
                    # One model Ollama cannot describe (a broken manifest) is still listed, with
                    # what /api/tags says of it; the others keep their details.
                    show = _Show()
            return _model_info(tag, show)

        described_names = set(sorted(tag.name for tag in tags.models or [])[:DESCRIBED_MODELS])
        described = await asyncio.gather(*(describe(tag) for tag in tags.models or []))
        return [info for info in described if info is not None]

    async def find_model(self, model: str) -> ModelInfo | None:
        """`model` as /api/tags lists it (name, size, digest), without describing it: what a pull
        left on disk. None when it is not there."""
        wanted = self.normalize_model_name(model)
        tags = await self.http.call_wire(_Tags, "GET", "/api/tags")
        for tag in tags.models or []:
            if self.normalize_model_name(tag.name) == wanted:
                return ModelInfo(name=tag.name, size_bytes=tag.size, digest=_prefixed_digest(tag.digest))
        return None

    async def list_running(self) -> list[RunningModel]:
        ps = await self.http.call_wire(_Ps, "GET", "/api/ps")
        return [
            RunningModel(
                name=loaded.name,
                size_bytes=loaded.size,
                size_vram=loaded.size_vram,
                expires_at=_real_time(loaded.expires_at),
                context_length=loaded.context_length,
            )
            for loaded in ps.models or []
        ]

    async def capabilities(self) -> RuntimeCapabilities:
        found: set[ModelCapability] = set()
        for model in await self.list_models():
            found |= model.capabilities
        return RuntimeCapabilities(
            chat=ModelCapability.CHAT in found,
            completions=ModelCapability.COMPLETION in found,
            embeddings=ModelCapability.EMBEDDINGS in found,
            streaming=True,
            tools=ModelCapability.TOOLS in found,
        )

    async def warmup(
        self,
        model: str,
        timeout: float,  # noqa: ASYNC109 - it sets httpx's read timeout too, which a caller's cannot
        unload_others: bool = False,
        *,
        keep_alive: str | int | None = None,
    ) -> WarmupResult:
        """Load with an empty prompt (Ollama's documented way to load without generating);
        `keep_alive` (`"10m"`, `-1` for ever) says how long it then stays loaded."""
        started = time.monotonic()
        unloaded: list[str] = []
        if unload_others:
            wanted = self.normalize_model_name(model)
            for running in await self.list_running():
                if self.normalize_model_name(running.name) != wanted:
                    await self._generate({"model": running.name, "keep_alive": 0}, timeout)
                    unloaded.append(running.name)
        request: dict[str, Any] = {"model": model, "prompt": "", "stream": False}
        if keep_alive is not None:
            request["keep_alive"] = keep_alive
        try:
            generated = await self._generate(request, timeout)
        except RuntimeHTTPError as error:
            if "does not support generate" not in error.runtime_message:
                raise
            # Embedding models refuse /api/generate; an empty /api/embed loads them the same way.
            embed = {key: value for key, value in request.items() if key != "prompt"} | {"input": ""}
            generated = await self.http.call_wire(
                _Generated, "POST", "/api/embed", json_body=embed, limit_seconds=timeout
            )
        return WarmupResult(
            model=model,
            elapsed_seconds=time.monotonic() - started,
            load_seconds=generated.load_duration / 1e9 if generated.load_duration is not None else None,
            unloaded=tuple(unloaded),
        )

    async def _generate(self, request: dict[str, Any], limit_seconds: float) -> _Generated:
        try:
            return await self.http.call_wire(
                _Generated, "POST", "/api/generate", json_body=request, limit_seconds=limit_seconds
            )
        except RuntimeHTTPError as error:
            if error.status_code == 404:
                raise ModelNotFound(
                    f"{self.http.where} does not have model {request['model']!r}: {error.runtime_message}",
                    status_code=404,
                    runtime_message=error.runtime_message,
                ) from error
            raise

    async def pull(
        self,
        model: str,
        *,
        insecure: bool = False,
        sha256: str | None = None,
        idle_timeout: float = PULL_IDLE_TIMEOUT_SECONDS,
    ) -> AsyncGenerator[PullLine, None]:
        request: dict[str, Any] = {"model": model, "insecure": insecure, "stream": True}
        if sha256 is not None:
            # Not Ollama's (it ignores the field): llmop's agent verifies downloads against it.
            request["sha256"] = sha256
        succeeded = False
        last_status = ""
        lines = self.http.stream_ndjson("POST", "/api/pull", json_body=request, idle_timeout=idle_timeout)
        try:
            # aclosing: a caller that stops early must not leave the download's connection open.
            async with aclosing(lines):
                async for data in lines:
                    progress = self._pull_progress(model, data)
                    last_status = progress.status
                    succeeded = progress.done
                    yield progress
        except RuntimeHTTPError as error:
            # Refusals before the stream starts (an invalid name, a registry error) carry the
            # runtime's text the same way.
            raise PullFailed(
                f"{self.http.where} refused to pull {model!r}: {error.runtime_message}",
                runtime_message=error.runtime_message,
            ) from error
        if not succeeded:
            raise RuntimeUnavailable(
                f"{self.http.where} ended the pull of {model!r} without reporting success "
                f"(last status: {last_status[:100] or 'none'})"
            )

    def _pull_progress(self, model: str, data: Any) -> PullLine:
        line = self.http.parse_wire(_PullLine, data, "POST", "/api/pull")
        if line.error is not None:
            # Ollama reports failures inside the stream, after a 200 status.
            raise PullFailed(
                f"{self.http.where} failed to pull {model!r}: {line.error}", runtime_message=line.error
            )
        return PullLine(status=line.status, digest=line.digest, completed=line.completed, total=line.total)

    async def delete_model(self, model: str) -> bool:
        try:
            await self.http.send("DELETE", "/api/delete", json_body={"model": model})
        except RuntimeHTTPError as error:
            if error.status_code == 404:
                return False
            raise
        return True


def _model_info(tag: _Tag, show: _Show) -> ModelInfo:
    info = show.model_info or {}
    architecture = info.get("general.architecture")
    trained = info.get(f"{architecture}.context_length") if architecture else None
    trained = trained if isinstance(trained, int) and not isinstance(trained, bool) else None
    words = show.capabilities if show.capabilities is not None else ["completion"]
    capabilities = {ours for word in words for ours in _CAPABILITIES.get(word, ())}
    details = tag.details or _Details()
    return ModelInfo(
        name=tag.name,
        size_bytes=tag.size,
        digest=_prefixed_digest(tag.digest),
        modified_at=tag.modified_at,
        # Ollama runs a model with its Modelfile's num_ctx, else OLLAMA_CONTEXT_LENGTH, else a
        # default it picks by VRAM (4k/32k/256k, envconfig/config.go), never the trained
        # context: unknown until /api/ps tells it (`context_length`) once loaded.
        context_length=_num_ctx(show.parameters or ""),
        trained_context_length=trained,
        capabilities=frozenset(capabilities),
        family=details.family or None,
        parameter_size=details.parameter_size or None,
        quantization=details.quantization_level or None,
    )


def _num_ctx(parameters: str) -> int | None:
    """`num_ctx` from /api/show's `parameters` text (one `name value` per line), if the
    Modelfile sets it."""
    for line in parameters.splitlines():
        name, _, value = line.strip().partition(" ")
        if name == "num_ctx" and value.strip().isdigit():
            return int(value.strip())
    return None


def _prefixed_digest(digest: str | None) -> str | None:
    """/api/tags gives bare hex; layers and registries say `sha256:<hex>`, as status does."""
    if digest and _SHA256_HEX.match(digest):
        return f"sha256:{digest}"
    return digest or None


def _real_time(moment: datetime | None) -> datetime | None:
    # Go's zero time (year 1) stands for "not set".
    return moment if moment is not None and moment.year > 1 else None


def _env(spec: LLMBackendSpec, port: int) -> list[EnvVar]:
    return [
        {"name": "OLLAMA_HOST", "value": f"0.0.0.0:{port}"},
        {"name": "OLLAMA_MODELS", "value": f"{MODELS_DIR}/ollama"},
        # Keep models in memory: an unloaded model makes the next request pay the cold start.
        {"name": "OLLAMA_KEEP_ALIVE", "value": "-1"},
    ]


DESCRIPTOR = RuntimeDescriptor(
    kind="ollama",
    adapter=OllamaAdapter,
    # Ollama has no API keys.
    pod=PodRecipe(
        args=lambda spec, port: ["serve"],
        env=_env,
        health_path=OllamaAdapter.health_path,
        api_key_env=None,
        needs_agent=False,
    ),
    default_port=11434,
    default_image="docker.io/ollama/ollama:0.34.4",
    model_sources=frozenset({"ollama"}),
    pulls_itself=True,
)

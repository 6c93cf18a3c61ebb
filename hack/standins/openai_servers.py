#!/usr/bin/env python3
"""Stand-ins for four OpenAI-compatible servers: LM Studio, LocalAI, Hugging Face TGI and SGLang.
They are NOT those servers.

None of them runs on the machines that test llmop (LM Studio is a closed-source desktop app,
TGI and SGLang need a GPU, LocalAI is a multi-gigabyte Go/C++ build), so this one aiohttp
program answers the way each does, as far as llmop's adapters or an `openai` client can tell.
Each shape was taken from the server's own source or documentation:

TGI (huggingface/text-generation-inference @ db931fc, router/src/server.rs, router/src/lib.rs)
- The router binds its port only after the shards are warmed up ("Connected", server.rs
  `run`), so a loading TGI refuses connections: use --bind-delay for that.
- GET /health, /ping and GET /: 200, empty body; 503 {"error": "unhealthy", "error_type":
  "healthcheck"} while the shard fails its health check (`health`; --loading-seconds).
- GET /info: `Info` (model_id, max_input_tokens, max_total_tokens, router, version, ...).
- GET /v1/models: one `ModelInfo` {id, object, created: 0, owned_by: model_id}; no context.
- POST /v1/chat/completions, /v1/completions, /generate. `model` is not checked: "tgi" or
  none means model_id, any other name is echoed back (and used as a LoRA adapter id).
- Errors are `ErrorResponse` {"error", "error_type"}; too long an input is 422 "validation".
- --api-key (env API_KEY) guards only the generation routes (`base_routes`); /health, /info
  and /v1/models stay open. A wrong key is 401 with an empty body; the comparison of
  "Bearer KEY" is case-insensitive, as in the router.
- No /v1/embeddings (that is TEI, another server).

SGLang (sgl-project/sglang: python/sglang/srt/entrypoints/http_server.py, .../openai/protocol.py,
python/sglang/srt/utils/auth.py)
- GET /health and /health_generate: 200 empty; 503 empty while `server_status` is Starting
  (--loading-seconds; the port itself stays closed while weights load: --bind-delay).
- GET /v1/models: `ModelCard` {id, object, created, owned_by: "sglang", root, parent,
  max_model_len}; GET /v1/models/{id}: the card, or 404 {"error": {message, type, param,
  code: "model_not_found"}}. GET /get_model_info and /model_info: model_path, is_generation.
- The Python OpenAI routes do not check `model` (sgl-project/sglang#31404): any name answers.
- Request errors are `ErrorResponse` at the top level {"object": "error", "message", "type",
  "param", "code"}.
- --api-key: 401 {"error": "Unauthorized"}; paths starting /health or /metrics stay open.

LocalAI (mudler/LocalAI @ 82c191a: core/http/routes/health.go, core/http/auth/middleware.go,
core/http/auth/public_routes.go, core/http/endpoints/openai/list.go, core/schema/openai.go,
core/http/middleware/request.go)
- GET /healthz: 200 empty. GET /readyz: 200 empty; 503 {"status": "starting", "reason":
  "startup preload in progress"} during the startup preload (--loading-seconds; before
  mudler/LocalAI#10989, July 2026, /readyz was always 200).
- GET /v1/models: {"object": "list", "data": [{"id", "object": "model"}]}, nothing more.
- A model name that is neither configured nor a file: 404 {"error": {"code": 404, "message":
  "model \\"x\\" not found. To see available models, call GET /v1/models", "type":
  "invalid_request_error"}}. Names with a "/" skip that check and fail when loaded (modelled
  as a 500 in LocalAI's error shape; the exact text there is the backend's).
- API keys (--api-key, env LOCALAI_API_KEY or API_KEY): Bearer, raw Authorization or
  x-api-key; otherwise 401 {"error": {"code": 401, "message": "An authentication key is
  required", "type": "invalid_request_error"}} with WWW-Authenticate: Bearer. /healthz and
  /readyz are public.
- /v1/chat/completions, /v1/completions, /v1/embeddings.

LM Studio (lmstudio-ai/docs @ c6854fb: 1_developer/3_openai-compat/*, 1_developer/2_rest/
endpoints.mdx (REST v0), 1_developer/2_rest/list.md (REST v1), 1_developer/0_core/
authentication.mdx; error bodies as LM Studio users quote them in lmstudio-ai/lms#107,
lmstudio-ai/lmstudio-bug-tracker#1730, assafelovic/gpt-researcher#1556, agustif/opencode-
lmstudio#41, lmstudio-ai/lmstudio-bug-tracker#1879)
- No health endpoint. Any unknown path answers 200 {"error": "Unexpected endpoint or method.
  (GET /x)"} ("Returning 200 anyway").
- GET /v1/models: {"data": [{"id", "object": "model", "owned_by": "organization_owner"}],
  "object": "list"}, no `created`; with just-in-time loading on (as here) it lists every
  downloaded model, loaded or not.
- GET /api/v0/models[/{id}]: id, object, type (llm | vlm | embeddings), publisher, arch,
  compatibility_type, quantization, state (loaded | not-loaded), max_context_length.
  GET /api/v1/models: {"models": [{type: llm | embedding, key, loaded_instances: [{id,
  config: {context_length}}], max_context_length, ...}]}.
- An unknown model: 400 {"error": {"message": "Invalid model identifier \\"x\\". Please specify
  a valid downloaded model (e.g., a, b).", "type": "invalid_request_error", "param": "model",
  "code": "model_not_found"}}. A model that is downloaded but not loaded is loaded on demand.
- "Require Authentication" (LM Studio 0.4+; here --api-key) guards every route: 401 {"error":
  {"type": "invalid_request", "code": "invalid_api_key", "message": "An LM Studio API token is
  required ..."}}. The text for a wrong (not missing) token is not published; this one is ours.
- --loading-seconds: the models are still loading (state not-loaded; requests wait).
- A model whose name contains "embed" is listed as an embeddings model (stand-in rule).

All flavors: chat completions and completions, JSON or `stream: true` server-sent events that
end with `data: [DONE]`; the text is words chosen deterministically from the prompt, tokens are
words; prompt + max_tokens over --max-model-len is refused in the flavor's error shape.

    python hack/standins/openai_servers.py --flavor sglang --host 127.0.0.1 --port 30000 \\
        --model Qwen/Qwen3-0.6B --max-model-len 4096 [--api-key KEY] [--loading-seconds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import math
import os
import secrets
import signal
import string
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

log = logging.getLogger("openai.standin")

WORDS = (
    "the model answers with words picked from its prompt so tests can see the same text each time "
    "while the server keeps its promise to speak the protocol exactly"
).split()
TGI_VERSION = "3.3.6"
#: LM Studio loads a model with this context unless told otherwise (the REST v1 example's value).
LMSTUDIO_DEFAULT_LOAD_CONTEXT = 4096
EMBEDDING_DIMENSIONS = 8

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# --- state --------------------------------------------------------------------------------------


@dataclass
class Server:
    flavor: Flavor
    models: list[str]
    api_keys: list[str]
    max_model_len: int
    loaded_context_length: int
    token_delay: float
    ready_at: float
    #: LM Studio: models that are downloaded but not loaded (loaded on first use).
    not_loaded: set[str] = field(default_factory=set)
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def ready(self) -> bool:
        return time.monotonic() >= self.ready_at

    async def wait_ready(self) -> None:
        await asyncio.sleep(max(0.0, self.ready_at - time.monotonic()))

    def loaded(self, name: str) -> bool:
        return self.ready and name not in self.not_loaded


SERVER = web.AppKey("server", Server)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(body, status=status, headers=headers)


# --- per-flavor pieces ---------------------------------------------------------------------------

# Error bodies: (status, message, type, param) -> response, in each server's own shape.


def tgi_error(status: int, message: str, err_type: str, param: str | None = None) -> web.Response:
    return json_response({"error": message, "error_type": err_type}, status)


def sglang_error(status: int, message: str, err_type: str, param: str | None = None) -> web.Response:
    body = {"object": "error", "message": message, "type": err_type, "param": param, "code": status}
    return json_response(body, status)


def localai_error(status: int, message: str, err_type: str, param: str | None = None) -> web.Response:
    return json_response({"error": {"code": status, "message": message, "type": err_type}}, status)


def lmstudio_error(status: int, message: str, err_type: str, param: str | None = None) -> web.Response:
    body = {"error": {"message": message, "type": err_type, "param": param, "code": None}}
    return json_response(body, status)


# Which requests need a key: (method, path) -> bool.


def tgi_guarded(method: str, path: str) -> bool:
    generation = ("/generate", "/generate_stream", "/v1/chat/completions", "/v1/completions")
    others = ("/vertex", "/invocations", "/tokenize")
    return path in generation + others or (path == "/" and method == "POST")


def sglang_guarded(method: str, path: str) -> bool:
    return method != "OPTIONS" and not path.startswith(("/health", "/metrics"))


def localai_guarded(method: str, path: str) -> bool:
    return not (method == "GET" and path in ("/healthz", "/readyz"))


def lmstudio_guarded(method: str, path: str) -> bool:
    return True


# Key checks: (request, keys) -> None when allowed, else the refusal.


def bearer(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token if scheme.lower() == "bearer" else None


def any_key_matches(token: str | None, keys: list[str]) -> bool:
    return token is not None and any(secrets.compare_digest(token.encode(), k.encode()) for k in keys)


def tgi_refusal(request: web.Request, keys: list[str]) -> web.Response | None:
    given = request.headers.get("Authorization", "").lower()
    if any(given == f"bearer {key}".lower() for key in keys):
        return None
    return web.Response(status=401)  # axum's StatusCode::UNAUTHORIZED: no body


def sglang_refusal(request: web.Request, keys: list[str]) -> web.Response | None:
    if any_key_matches(bearer(request), keys):
        return None
    return json_response({"error": "Unauthorized"}, 401)


def localai_refusal(request: web.Request, keys: list[str]) -> web.Response | None:
    header = request.headers.get("Authorization", "")
    token = header.removeprefix("Bearer ") if header else request.headers.get("x-api-key")
    if any_key_matches(token, keys):
        return None
    body = {
        "error": {
            "code": 401,
            "message": "An authentication key is required",
            "type": "invalid_request_error",
        }
    }
    return json_response(body, 401, headers={"WWW-Authenticate": "Bearer"})


def lmstudio_refusal(request: web.Request, keys: list[str]) -> web.Response | None:
    token = bearer(request)
    if any_key_matches(token, keys):
        return None
    if token is None:
        message = (
            "An LM Studio API token is required to make requests to this server, but none was provided "
            "using the Authorization header using the 'Bearer' scheme (i.e., 'Authorization: Bearer "
            "$LM_API_TOKEN'). Learn more at: https://lmstudio.ai/docs/developer/core/authentication."
        )
    else:
        message = "The LM Studio API token provided is not valid (stand-in wording)."
    return json_response(
        {"error": {"type": "invalid_request", "code": "invalid_api_key", "message": message}}, 401
    )


# /v1/models entries.


def tgi_model_entry(server: Server, name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": name}


def sglang_model_entry(server: Server, name: str) -> dict[str, Any]:
    return {
        "id": name,
        "object": "model",
        "created": server.created,
        "owned_by": "sglang",
        "root": name,
        "parent": None,
        "max_model_len": server.max_model_len,
    }


def localai_model_entry(server: Server, name: str) -> dict[str, Any]:
    return {"id": name, "object": "model"}


def lmstudio_model_entry(server: Server, name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "owned_by": "organization_owner"}


# Which model a request is for: (server, requested) -> the name to answer with, or a refusal.


def tgi_pick(server: Server, requested: str | None) -> str | web.Response:
    return server.models[0] if requested in (None, "", "tgi") else str(requested)


def sglang_pick(server: Server, requested: str | None) -> str | web.Response:
    return str(requested) if requested else server.models[0]


def localai_pick(server: Server, requested: str | None) -> str | web.Response:
    if not requested:
        return server.models[0]
    if requested in server.models:
        return requested
    if "/" not in requested:
        message = f'model "{requested}" not found. To see available models, call GET /v1/models'
        return localai_error(404, message, "invalid_request_error")
    return localai_error(500, f"could not load model {requested!r}: no backend could load it", "")


def lmstudio_pick(server: Server, requested: str | None) -> str | web.Response:
    if not requested:
        loaded = [name for name in server.models if name not in server.not_loaded]
        if not loaded:
            message = (
                "No models loaded. Please load a model in the developer page or use the 'lms load' command."
            )
            return lmstudio_error(400, message, "invalid_request_error", "model")
        return loaded[0]
    if requested not in server.models:
        examples = ", ".join(server.models[:3])
        message = f'Invalid model identifier "{requested}". Please specify a valid downloaded model (e.g., {examples}).'
        body = {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": "model",
                "code": "model_not_found",
            }
        }
        return json_response(body, 400)
    server.not_loaded.discard(requested)  # just-in-time loading
    return requested


# Flavor-only routes.


async def tgi_health(request: web.Request) -> web.Response:
    if not request.app[SERVER].ready:
        return tgi_error(503, "unhealthy", "healthcheck")
    return web.Response(status=200)


async def tgi_info(request: web.Request) -> web.Response:
    server = request.app[SERVER]
    return json_response(
        {
            "model_id": server.models[0],
            "model_sha": None,
            "model_pipeline_tag": "text-generation",
            "max_concurrent_requests": 128,
            "max_best_of": 2,
            "max_stop_sequences": 4,
            "max_input_tokens": server.max_model_len - 1,
            "max_total_tokens": server.max_model_len,
            "validation_workers": 2,
            "max_client_batch_size": 4,
            "router": "text-generation-router",
            "version": TGI_VERSION,
            "sha": None,
            "docker_label": None,
        }
    )


async def tgi_generate(request: web.Request) -> web.StreamResponse:
    server = request.app[SERVER]
    body = await read_json(request, server)
    if isinstance(body, web.Response):
        return body
    inputs = body.get("inputs")
    if not isinstance(inputs, str):
        return tgi_error(422, "Input validation error: `inputs` must be a string", "validation")
    parameters = body.get("parameters") or {}
    max_new = parameters.get("max_new_tokens") or 100
    refusal = check_length(server, count_tokens(inputs), max_new)
    if refusal is not None:
        return refusal
    await server.wait_ready()
    return json_response({"generated_text": " ".join(generate_words(inputs, max_new))})


async def sglang_health(request: web.Request) -> web.Response:
    return web.Response(status=200 if request.app[SERVER].ready else 503)


async def sglang_model_info(request: web.Request) -> web.Response:
    server = request.app[SERVER]
    name = server.models[0]
    return json_response({"model_path": name, "tokenizer_path": name, "is_generation": True})


async def sglang_retrieve_model(request: web.Request) -> web.Response:
    server = request.app[SERVER]
    name = request.match_info["model"]
    if name not in server.models:
        error = {
            "message": f"The model '{name}' does not exist",
            "type": "invalid_request_error",
            "param": "model",
            "code": "model_not_found",
        }
        return json_response({"error": error}, 404)
    return json_response(sglang_model_entry(server, name))


async def localai_healthz(request: web.Request) -> web.Response:
    return web.Response(status=200)


async def localai_readyz(request: web.Request) -> web.Response:
    if not request.app[SERVER].ready:
        return json_response({"status": "starting", "reason": "startup preload in progress"}, 503)
    return web.Response(status=200)


def lmstudio_is_embedding(name: str) -> bool:
    return "embed" in name.lower()


def lmstudio_v0_entry(server: Server, name: str) -> dict[str, Any]:
    embedding = lmstudio_is_embedding(name)
    return {
        "id": name,
        "object": "model",
        "type": "embeddings" if embedding else "llm",
        "publisher": name.split("/")[0] if "/" in name else "lmstudio-community",
        "arch": "nomic-bert" if embedding else "llama",
        "compatibility_type": "gguf",
        "quantization": "Q4_K_M",
        "state": "loaded" if server.loaded(name) else "not-loaded",
        "max_context_length": server.max_model_len,
    }


def lmstudio_v1_entry(server: Server, name: str) -> dict[str, Any]:
    embedding = lmstudio_is_embedding(name)
    instances = (
        [{"id": name, "config": {"context_length": server.loaded_context_length}}]
        if server.loaded(name)
        else []
    )
    entry: dict[str, Any] = {
        "type": "embedding" if embedding else "llm",
        "publisher": name.split("/")[0] if "/" in name else "lmstudio-community",
        "key": name,
        "display_name": name.rsplit("/", 1)[-1],
        "quantization": {"name": "Q4_K_M", "bits_per_weight": 4},
        "size_bytes": 1_000_000,
        "params_string": None,
        "loaded_instances": instances,
        "max_context_length": server.max_model_len,
        "format": "gguf",
    }
    if not embedding:
        entry["architecture"] = "llama"
        entry["capabilities"] = {"vision": False, "trained_for_tool_use": True}
    return entry


async def lmstudio_v0_models(request: web.Request) -> web.Response:
    server = request.app[SERVER]
    return json_response({"object": "list", "data": [lmstudio_v0_entry(server, n) for n in server.models]})


async def lmstudio_v0_model(request: web.Request) -> web.Response:
    server = request.app[SERVER]
    name = request.match_info["model"]
    if name not in server.models:
        return lmstudio_error(404, f"Model {name!r} not found", "invalid_request_error", "model")
    return json_response(lmstudio_v0_entry(server, name))


async def lmstudio_v1_models(request: web.Request) -> web.Response:
    server = request.app[SERVER]
    return json_response({"models": [lmstudio_v1_entry(server, n) for n in server.models]})


async def lmstudio_unexpected(request: web.Request) -> web.Response:
    log.error("Unexpected endpoint or method. (%s %s). Returning 200 anyway", request.method, request.path)
    return json_response({"error": f"Unexpected endpoint or method. ({request.method} {request.path})"})


def tgi_routes(app: web.Application) -> None:
    for path in ("/health", "/ping", "/"):
        app.router.add_get(path, tgi_health)
    app.router.add_get("/info", tgi_info)
    app.router.add_post("/generate", tgi_generate)


def sglang_routes(app: web.Application) -> None:
    app.router.add_get("/health", sglang_health)
    app.router.add_get("/health_generate", sglang_health)
    app.router.add_get("/get_model_info", sglang_model_info)
    app.router.add_get("/model_info", sglang_model_info)
    app.router.add_get("/v1/models/{model:.+}", sglang_retrieve_model)


def localai_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", localai_healthz)
    app.router.add_get("/readyz", localai_readyz)


def lmstudio_routes(app: web.Application) -> None:
    app.router.add_get("/api/v0/models", lmstudio_v0_models)
    app.router.add_get("/api/v0/models/{model:.+}", lmstudio_v0_model)
    app.router.add_get("/api/v1/models", lmstudio_v1_models)


@dataclass(frozen=True)
class Flavor:
    name: str
    title: str
    #: Environment variables the real server reads its API key(s) from.
    key_env: tuple[str, ...]
    guarded: Callable[[str, str], bool]
    refusal: Callable[[web.Request, list[str]], web.Response | None]
    error: Callable[..., web.Response]
    model_entry: Callable[[Server, str], dict[str, Any]]
    pick_model: Callable[[Server, str | None], str | web.Response]
    routes: Callable[[web.Application], None]
    #: Serves exactly one model (the first --model).
    single_model: bool
    embeddings: bool
    #: The status of "prompt plus max_tokens is over the context" and its error type.
    too_long: tuple[int, str]
    #: Top-level fields every completion answer carries besides the OpenAI ones.
    extra_fields: dict[str, Any] = field(default_factory=dict)
    #: Whether an unknown path answers 200 (LM Studio) instead of the framework's 404.
    catch_all: bool = False


FLAVORS: dict[str, Flavor] = {
    "tgi": Flavor(
        name="tgi",
        title="text-generation-inference",
        key_env=("API_KEY",),
        guarded=tgi_guarded,
        refusal=tgi_refusal,
        error=tgi_error,
        model_entry=tgi_model_entry,
        pick_model=tgi_pick,
        routes=tgi_routes,
        single_model=True,
        embeddings=False,
        too_long=(422, "validation"),
        extra_fields={"system_fingerprint": f"{TGI_VERSION}-native"},
    ),
    "sglang": Flavor(
        name="sglang",
        title="SGLang",
        key_env=(),
        guarded=sglang_guarded,
        refusal=sglang_refusal,
        error=sglang_error,
        model_entry=sglang_model_entry,
        pick_model=sglang_pick,
        routes=sglang_routes,
        single_model=True,
        embeddings=False,
        too_long=(400, "BadRequestError"),
    ),
    "localai": Flavor(
        name="localai",
        title="LocalAI",
        key_env=("LOCALAI_API_KEY", "API_KEY"),
        guarded=localai_guarded,
        refusal=localai_refusal,
        error=localai_error,
        model_entry=localai_model_entry,
        pick_model=localai_pick,
        routes=localai_routes,
        single_model=False,
        embeddings=True,
        too_long=(500, ""),
    ),
    "lmstudio": Flavor(
        name="lmstudio",
        title="LM Studio",
        key_env=(),
        guarded=lmstudio_guarded,
        refusal=lmstudio_refusal,
        error=lmstudio_error,
        model_entry=lmstudio_model_entry,
        pick_model=lmstudio_pick,
        routes=lmstudio_routes,
        single_model=False,
        embeddings=True,
        too_long=(400, "invalid_request_error"),
        catch_all=True,
    ),
}


# --- shared OpenAI routes ------------------------------------------------------------------------


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    server = request.app[SERVER]
    if server.api_keys and server.flavor.guarded(request.method, request.path):
        refusal = server.flavor.refusal(request, server.api_keys)
        if refusal is not None:
            return refusal
    return await handler(request)


def generate_words(prompt: str, n: int) -> list[str]:
    """Deterministic output: the same prompt always gives the same words."""
    seed = hashlib.sha256(prompt.encode()).digest()
    pool = prompt.split() + WORDS
    return [pool[seed[i % len(seed)] % len(pool)] for i in range(n)]


def count_tokens(text: str) -> int:
    return max(1, len(text.split()))


def render_chat(messages: list[Any]) -> str:
    parts = []
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):  # OpenAI content parts
            content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
        role = message.get("role", "user") if isinstance(message, dict) else "user"
        parts.append(f"{role}: {content or ''}")
    return "\n".join(parts)


async def read_json(request: web.Request, server: Server) -> dict[str, Any] | web.Response:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return server.flavor.error(400, "Invalid JSON in request body", "invalid_request_error")
    if not isinstance(body, dict):
        return server.flavor.error(400, "Request body must be a JSON object", "invalid_request_error")
    return body


def check_length(server: Server, prompt_tokens: int, max_tokens: int) -> web.Response | None:
    if prompt_tokens + max_tokens <= server.max_model_len:
        return None
    status, err_type = server.flavor.too_long
    message = (
        f"Input validation error: `inputs` tokens + `max_new_tokens` must be <= {server.max_model_len}. "
        f"Given: {prompt_tokens} `inputs` tokens and {max_tokens} `max_new_tokens`"
        if server.flavor.name == "tgi"
        else f"Requested {prompt_tokens + max_tokens} tokens ({prompt_tokens} in the prompt, {max_tokens} "
        f"to generate) but the context length is {server.max_model_len}"
    )
    return server.flavor.error(status, message, err_type)


def completion_id(flavor: Flavor, chat: bool) -> str:
    if flavor.name == "tgi":
        return ""  # the router leaves it empty
    if flavor.name == "lmstudio":
        alphabet = string.ascii_lowercase + string.digits
        return f"{'chatcmpl' if chat else 'cmpl'}-" + "".join(secrets.choice(alphabet) for _ in range(21))
    return uuid.uuid4().hex if flavor.name == "sglang" else str(uuid.uuid4())


async def complete(request: web.Request, chat: bool) -> web.StreamResponse:
    server = request.app[SERVER]
    flavor = server.flavor
    body = await read_json(request, server)
    if isinstance(body, web.Response):
        return body
    if chat:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return flavor.error(400, "messages must be a non-empty list", "invalid_request_error", "messages")
        prompt = render_chat(messages)
    else:
        raw = body.get("prompt")
        if isinstance(raw, list):
            raw = " ".join(map(str, raw))
        if not isinstance(raw, str):
            return flavor.error(
                400, "prompt must be a string or a list of strings", "invalid_request_error", "prompt"
            )
        prompt = raw
    model = flavor.pick_model(server, body.get("model"))
    if isinstance(model, web.Response):
        return model
    requested = body.get("max_completion_tokens") or body.get("max_tokens")
    if requested is not None and (not isinstance(requested, int) or requested < -1 or requested == 0):
        return flavor.error(
            400, "max_tokens must be a positive integer", "invalid_request_error", "max_tokens"
        )
    prompt_tokens = count_tokens(prompt)
    max_tokens = requested if isinstance(requested, int) and requested > 0 else 16
    refusal = check_length(server, prompt_tokens, max_tokens)
    if refusal is not None:
        return refusal
    await server.wait_ready()  # a loading model answers once loaded

    words = generate_words(prompt, max_tokens)
    finish = "length"
    stops = body.get("stop")
    for stop in [stops] if isinstance(stops, str) else stops or []:
        if stop in words:
            words, finish = words[: words.index(stop)], "stop"
            break
    common = {
        "id": completion_id(flavor, chat),
        "object": "chat.completion" if chat else "text_completion",
        "created": int(time.time()),
        "model": model,
        **flavor.extra_fields,
    }
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": len(words),
        "total_tokens": prompt_tokens + len(words),
    }
    if body.get("stream"):
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return await stream(request, chat, common, words, finish, usage if include_usage else None)
    await asyncio.sleep(server.token_delay * len(words))
    text = " ".join(words)
    choice: dict[str, Any] = {"index": 0, "logprobs": None, "finish_reason": finish}
    if chat:
        choice["message"] = {"role": "assistant", "content": text}
    else:
        choice["text"] = text
    return json_response({**common, "choices": [choice], "usage": usage})


async def stream(
    request: web.Request,
    chat: bool,
    common: dict[str, Any],
    words: list[str],
    finish: str,
    usage: dict[str, Any] | None,
) -> web.StreamResponse:
    """Server-sent events, one JSON chunk per `data:` line, ending with `data: [DONE]`."""
    server = request.app[SERVER]
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    obj = "chat.completion.chunk" if chat else "text_completion"
    # TGI repeats the role in every delta; the others open with a role-only chunk.
    role_each = server.flavor.name == "tgi"

    async def send(choices: list[dict[str, Any]], with_usage: dict[str, Any] | None = None) -> None:
        chunk: dict[str, Any] = {**common, "object": obj, "choices": choices}
        if with_usage is not None:
            chunk["usage"] = with_usage
        await response.write(f"data: {json.dumps(chunk)}\n\n".encode())

    def choice(text: str | None, finish_reason: str | None) -> dict[str, Any]:
        if not chat:
            return {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish_reason}
        delta: dict[str, Any] = {} if text is None else {"content": text}
        if role_each:
            delta["role"] = "assistant"
        return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}

    if chat and not role_each:
        await send(
            [
                {
                    "index": 0,
                    "delta": {"role": "assistant", "content": ""},
                    "logprobs": None,
                    "finish_reason": None,
                }
            ]
        )
    for i, word in enumerate(words):
        await asyncio.sleep(server.token_delay)
        await send([choice(word if i == 0 else " " + word, None)])
    await send([choice(None if chat else "", finish)])
    if usage is not None:
        await send([], usage)
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await complete(request, chat=True)


async def completions(request: web.Request) -> web.StreamResponse:
    return await complete(request, chat=False)


def embed(text: str) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    vector = [(b - 127.5) / 127.5 for b in digest[:EMBEDDING_DIMENSIONS]]
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [round(v / norm, 6) for v in vector]


async def embeddings(request: web.Request) -> web.StreamResponse:
    server = request.app[SERVER]
    body = await read_json(request, server)
    if isinstance(body, web.Response):
        return body
    raw = body.get("input")
    texts = [raw] if isinstance(raw, str) else raw
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        return server.flavor.error(
            400, "input must be a string or a list of strings", "invalid_request_error", "input"
        )
    model = server.flavor.pick_model(server, body.get("model"))
    if isinstance(model, web.Response):
        return model
    await server.wait_ready()
    tokens = sum(count_tokens(t) for t in texts)
    data = [{"object": "embedding", "embedding": embed(t), "index": i} for i, t in enumerate(texts)]
    return json_response(
        {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )


async def list_models(request: web.Request) -> web.Response:
    server = request.app[SERVER]
    return json_response(
        {"object": "list", "data": [server.flavor.model_entry(server, n) for n in server.models]}
    )


def build_app(server: Server) -> web.Application:
    app = web.Application(middlewares=[authenticate])
    app[SERVER] = server
    server.flavor.routes(app)
    app.router.add_get("/v1/models", list_models)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/completions", completions)
    if server.flavor.embeddings:
        app.router.add_post("/v1/embeddings", embeddings)
    if server.flavor.catch_all:
        app.router.add_route("*", "/{tail:.*}", lmstudio_unexpected)
    return app


# --- command line ---------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Stand-ins for LM Studio, LocalAI, TGI and SGLang (not those servers)."
    )
    p.add_argument("--flavor", required=True, choices=sorted(FLAVORS))
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--model", action="append", required=True, help="a model the server has (repeatable)")
    p.add_argument("--api-key", action="append", default=[], help="an accepted API key (repeatable)")
    p.add_argument("--max-model-len", type=int, default=4096, help="context length, in tokens (words)")
    p.add_argument(
        "--loading-seconds", type=float, default=0.0, help="seconds the server says it is not ready"
    )
    p.add_argument("--bind-delay", type=float, default=0.0, help="seconds the port refuses connections")
    p.add_argument("--token-delay", type=float, default=0.0, help="seconds per generated token")
    p.add_argument("--not-loaded", action="append", default=[], help="LM Studio: downloaded, not loaded")
    p.add_argument("--loaded-context-length", type=int, help="LM Studio: context a model is loaded with")
    args = p.parse_args(argv)
    flavor = FLAVORS[args.flavor]
    if flavor.single_model and len(args.model) > 1:
        p.error(f"{flavor.title} serves exactly one model")
    if set(args.not_loaded) - set(args.model):
        p.error("--not-loaded names a model that is not a --model")
    return args


async def serve(args: argparse.Namespace) -> None:
    flavor = FLAVORS[args.flavor]
    keys = list(args.api_key)
    for variable in flavor.key_env:
        if not keys and os.environ.get(variable):
            keys = [k for k in os.environ[variable].split(",") if k]
    server = Server(
        flavor=flavor,
        models=list(args.model),
        api_keys=keys,
        max_model_len=args.max_model_len,
        loaded_context_length=args.loaded_context_length
        or min(args.max_model_len, LMSTUDIO_DEFAULT_LOAD_CONTEXT),
        token_delay=args.token_delay,
        ready_at=0.0,
        not_loaded=set(args.not_loaded),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info("%s stand-in, models %s", flavor.title, ", ".join(server.models))
    try:
        await asyncio.wait_for(stop.wait(), timeout=args.bind_delay)
        return
    except TimeoutError:
        pass
    server.ready_at = time.monotonic() + args.loading_seconds
    runner = web.AppRunner(build_app(server), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, args.host, args.port).start()
    log.info("listening on http://%s:%d", args.host, args.port)
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="INFO %(asctime)s %(message)s", stream=sys.stderr)
    asyncio.run(serve(parse_args(sys.argv[1:])))


if __name__ == "__main__":
    main()

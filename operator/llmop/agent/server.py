"""The agent's HTTP API, in Ollama's shape where Ollama has one.

POST   /api/pull     {"model", "stream"?, "sha256"?}  NDJSON progress, or one JSON answer
DELETE /api/pull     ?model= or {"model"}             cancel a transfer (the partial stays)
GET    /api/tags                                      completed models on disk
DELETE /api/delete   {"model"}                        remove a model and its partials
GET    /api/version
GET    /api/space                                     free and total bytes of the models volume
POST   /api/verify   {"model"}                        hash a complete model again; remove it if changed
GET    /startup      200 once every LLMOP_REQUIRED_MODELS path is complete, else 503
GET    /healthz

Every request but GET /startup and GET /healthz (the kubelet's probes, which carry no
credentials) needs `Authorization: Bearer <token>`, the token the operator mounts into the pod;
without it the answer is 401 and nothing starts. A pull may name only a model the backend declares
(LLMOP_DECLARED_MODELS); another gets 403.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from pydantic import BaseModel, ConfigDict, ValidationError

from llmop import __version__
from llmop.agent.download import FileClient
from llmop.agent.errors import BadPullRequest, UnsafeVolumePath
from llmop.agent.plan import normalize_sha256
from llmop.agent.pull import ModelPuller
from llmop.agent.settings import AgentSettings
from llmop.agent.store import ModelRecord, ModelStore, UnsafeLocalPath, check_relative_path
from llmop.agent.transfers import Line, TransferRegistry, is_final
from llmop.agent.verify import verify_model
from llmop.sources import InvalidModelSource, ModelSource, parse_model_source

logger = logging.getLogger("llmop.agent")
NDJSON = "application/x-ndjson"


class _ModelBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str | None = None
    name: str | None = None  # Ollama's older spelling


class _PullBody(_ModelBody):
    insecure: bool = False  # accepted for Ollama compatibility; the URL's scheme decides
    stream: bool = True
    sha256: str | None = None


@dataclass
class Agent:
    settings: AgentSettings
    store: ModelStore
    transfers: TransferRegistry
    puller: ModelPuller


AGENT = web.AppKey("agent", Agent)


def error_response(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def agent_source(name: str | None) -> ModelSource:
    """The source a request names, if the agent can fetch it; otherwise BadPullRequest."""
    if not name:
        raise BadPullRequest('the request names no model: send {"model": "hf://org/repo"}')
    try:
        source = parse_model_source(name)
    except InvalidModelSource as error:
        raise BadPullRequest(str(error)) from error
    if source.kind == "ollama":
        raise BadPullRequest(
            f"{name!r} is an Ollama model; the llmop agent fetches hf://org/repo[@rev][/file] "
            "and https:// files (Ollama pulls its own models)"
        )
    try:
        check_relative_path(source.local_path)
    except UnsafeLocalPath as error:
        raise BadPullRequest(f"{name!r} does not name a file to store: {error}") from error
    return source


async def _json_body(request: web.Request, model: type[_ModelBody]) -> Any:
    raw = await request.read()
    try:
        return model.model_validate_json(raw or b"{}")
    except ValidationError as error:
        raise BadPullRequest(f"the request body is not valid: {error.errors()[0]['msg']}") from error


#: The kubelet's probes: they carry no credentials, and they reveal only which models are complete.
UNAUTHENTICATED = frozenset({("GET", "/startup"), ("GET", "/healthz")})


def has_token(request: web.Request, token: str) -> bool:
    """Whether the request carries `Authorization: Bearer <token>` (compared in constant time)."""
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    # surrogateescape: a header of stray bytes is a wrong token, not a server error.
    return hmac.compare_digest(given.strip().encode("utf-8", "surrogateescape"), token.encode())


@web.middleware
async def require_token(request: web.Request, handler: Any) -> web.StreamResponse:
    token = request.app[AGENT].settings.token
    if token is not None and (request.method, request.path) not in UNAUTHENTICATED:
        if not has_token(request, token):
            logger.warning(
                "refused %s %s from %s: no valid token", request.method, request.path, request.remote
            )
            return web.json_response(
                {
                    "error": "this agent takes requests from the llmop operator only: send its token as "
                    "Authorization: Bearer <token>"
                },
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="llmop-agent"'},
            )
    response: web.StreamResponse = await handler(request)
    return response


class UndeclaredModel(Exception):
    """A pull of a model the backend does not declare: 403."""


def check_declared(source: ModelSource, declared: tuple[str, ...] | None) -> None:
    """Refuse (403) a source the backend does not declare: the model itself, or a file of a
    declared repo at the same revision."""
    if declared is None:
        return
    for name in declared:
        try:
            allowed = parse_model_source(name)
        except InvalidModelSource:
            continue
        if source.belongs_to(allowed):
            return
    raise UndeclaredModel(
        f"{source.name!r} is not among the models this backend declares: list it in the LLMBackend's "
        "spec.models to pull it"
    )


@web.middleware
async def bad_requests_as_400(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except BadPullRequest as error:
        return error_response(400, str(error))
    except UndeclaredModel as error:
        return error_response(403, str(error))
    except UnsafeVolumePath as error:
        return error_response(409, str(error))


async def pull(request: web.Request) -> web.StreamResponse:
    agent = request.app[AGENT]
    body = await _json_body(request, _PullBody)
    source = agent_source(body.model or body.name)
    check_declared(source, agent.settings.declared_models)
    expected_sha256 = normalize_sha256(body.sha256)
    if expected_sha256 is not None and not source.is_single_file:
        raise BadPullRequest(
            f"sha256 applies to one file; {source.name} is a whole repo, whose files Hugging Face lists "
            "with their own digests"
        )
    transfer = agent.transfers.start_or_join(
        source.local_path,
        source.name,
        expected_sha256,
        lambda publish: agent.puller.pull(source, expected_sha256, publish),
    )
    if expected_sha256 is not None and transfer.expected_sha256 != expected_sha256:
        return error_response(
            409,
            f"a pull of {source.local_path} expecting sha256 {transfer.expected_sha256 or '(none)'} is "
            "in progress; cancel it with DELETE /api/pull first",
        )
    if not body.stream:
        async with aclosing(transfer.lines()) as lines:
            final = await _final_line(lines)
        return web.json_response(final, status=200 if "error" not in final else 500)
    response = web.StreamResponse(headers={"Content-Type": NDJSON})
    await response.prepare(request)
    try:
        async with aclosing(transfer.lines()) as lines:
            async for line in lines:
                await response.write(json.dumps(line).encode() + b"\n")
        await response.write_eof()
    except ConnectionError:
        # The client left; the transfer goes on for the next caller.
        logger.info("a follower of the pull of %s disconnected", source.name)
    return response


async def _final_line(lines: AsyncIterator[Line]) -> Line:
    async for line in lines:
        if is_final(line):
            return line
    raise AssertionError("a transfer ends with a final line")


async def cancel_pull(request: web.Request) -> web.Response:
    agent = request.app[AGENT]
    name = request.query.get("model") or request.query.get("name")
    if not name:
        body = await _json_body(request, _ModelBody)
        name = body.model or body.name
    source = agent_source(name)
    if not await agent.transfers.cancel(source.local_path):
        return error_response(404, f"no pull of {source.name} is in progress")
    return web.json_response({"status": "cancelled"})


def tag_entry(record: ModelRecord, changed: list[str]) -> dict[str, Any]:
    """A complete model as /api/tags lists it; `changed`: its files written since they were
    verified (to be hashed again before they are trusted)."""
    return {
        "name": record.name,
        "model": record.name,
        "size": record.size,
        "digest": record.digest,
        "modified_at": record.modified_at.isoformat(),
        "details": {"local_path": record.local_path, "files": len(record.files) or 1, "changed": changed},
    }


def _tag_entries(store: ModelStore) -> list[dict[str, Any]]:
    return [tag_entry(record, store.changed_files(record)) for record in store.completed_records()]


async def tags(request: web.Request) -> web.Response:
    entries = await asyncio.to_thread(_tag_entries, request.app[AGENT].store)
    return web.json_response({"models": entries})


async def delete(request: web.Request) -> web.Response:
    agent = request.app[AGENT]
    body = await _json_body(request, _ModelBody)
    source = agent_source(body.model or body.name)
    await agent.transfers.cancel(source.local_path)
    if not await asyncio.to_thread(agent.store.delete, source.local_path):
        return error_response(404, f"model {source.name!r} not found")
    return web.json_response({})


async def startup(request: web.Request) -> web.Response:
    agent = request.app[AGENT]
    required = agent.settings.required_models
    missing = await asyncio.to_thread(agent.store.missing, required)
    complete = [path for path in required if path not in missing]
    if missing:
        return web.json_response({"ready": False, "missing": missing, "complete": complete}, status=503)
    return web.json_response({"ready": True, "complete": complete})


async def space(request: web.Request) -> web.Response:
    """The models volume's free and total bytes, under its size limit when it has one (a
    ModelCache shows them in its status)."""
    agent = request.app[AGENT]
    stats = await asyncio.to_thread(os.statvfs, agent.settings.models_dir)
    free = await asyncio.to_thread(agent.store.room.free)
    capacity = agent.settings.volume_limit or stats.f_blocks * stats.f_frsize
    return web.json_response({"free": free, "capacity": capacity})


async def verify(request: web.Request) -> web.Response:
    """Hash a complete model again against its record; a model whose bytes changed on disk is
    removed (404 for one not complete). Never while it is being pulled: that pull lands it."""
    agent = request.app[AGENT]
    body = await _json_body(request, _ModelBody)
    source = agent_source(body.model or body.name)
    if agent.transfers.get(source.local_path) is not None:
        return error_response(409, f"{source.name} is being pulled; its pull verifies it")
    result = await asyncio.to_thread(verify_model, agent.store, source.local_path)
    if not result.found:
        return error_response(404, f"model {source.name!r} is not complete here")
    if result.corrupt:
        logger.warning("%s: bytes changed on disk (%s); removed it", source.name, ", ".join(result.corrupt))
    return web.json_response({"verified": result.verified, "corrupt": result.corrupt})


async def healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def version(_: web.Request) -> web.Response:
    return web.json_response({"version": __version__})


def build_app(settings: AgentSettings) -> web.Application:
    app = web.Application(middlewares=[require_token, bad_requests_as_400])

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        # No total limit: a model takes as long as it takes; silence is what fails it.
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=settings.connect_timeout, sock_read=settings.read_timeout
        )
        user_agent = f"llmop-agent/{__version__}"
        # The listings through aiohttp (the agent serves with it); the files' bytes through a
        # blocking client in a thread per file (llmop.agent.download: a third of the CPU).
        files = FileClient(
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
            user_agent=user_agent,
            connections=settings.parallel_downloads,
        )
        async with aiohttp.ClientSession(
            timeout=timeout,
            auto_decompress=False,  # the bytes on disk are the file's bytes
            headers={"User-Agent": user_agent},
        ) as client:
            store = ModelStore(settings.models_dir, settings.volume_limit)
            transfers = TransferRegistry()
            app[AGENT] = Agent(settings, store, transfers, ModelPuller(settings, client, files, store))
            yield
            await transfers.cancel_all()
        files.close()

    async def stop_transfers(app: web.Application) -> None:
        # Before aiohttp waits for open requests: followers get their final line and end. Every
        # partial stays; the next agent resumes it.
        if AGENT in app:
            await app[AGENT].transfers.cancel_all()

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(stop_transfers)
    app.router.add_post("/api/pull", pull)
    app.router.add_delete("/api/pull", cancel_pull)
    app.router.add_get("/api/tags", tags)
    app.router.add_delete("/api/delete", delete)
    app.router.add_get("/api/version", version)
    app.router.add_get("/api/space", space)
    app.router.add_post("/api/verify", verify)
    app.router.add_get("/startup", startup)
    app.router.add_get("/healthz", healthz)
    return app

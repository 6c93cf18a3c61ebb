#!/usr/bin/env python3
"""A named stand-in for vLLM's OpenAI-compatible API server (`vllm serve`). It is NOT vLLM.

Real vLLM (its CPU build) runs here, but needs about 3.7 GB of memory and a minute to start; this
server answers the same HTTP protocol in a fraction of a second and 40 MB, so tests and benchmarks
that need many vLLM servers (or ones that start slowly on purpose) use it. It models what vLLM
0.32 does, observed against the real server:

- Cold start: vLLM loads its weights before it listens, so the port refuses connections for the
  whole load (`--bind-delay`); there is no phase where /health answers 503. Then it serves at once.
- GET  /health              200 with an empty body; 503 with an empty body once the engine is dead
- GET  /version             {"version": "..."} (VLLM_VERSION from hack/versions.env)
- GET  /v1/models           one ModelCard per served name (`--served-model-name a b`), the same
                            root (the model path), max_model_len, permission; `created` is now.
                            Only the served names are models: the path is not, once names are given.
- POST /v1/chat/completions and /v1/completions, JSON or `stream: true` server-sent events; the
  response's "model" is always the first served name. An empty body {} is refused with vLLM's
  400s; an unknown model is 404 "The model `X` does not exist. Valid aliases: a, b." (paths written
  `<path>`, as vLLM's error sanitizer does). There is no /v1/embeddings: a generating model's server
  does not register it, and any unknown route is FastAPI's 404 {"detail": "Not Found"}.
- GET  /metrics             Prometheus text with vllm:* series
- `--api-key`: /v1/* needs `Authorization: Bearer KEY`, else 401 {"error": "Unauthorized"};
  /health, /version and /metrics stay open.
- Engine death: once listening, the server runs a child process named `VLLM::EngineCore` (its
  /proc cmdline's first element), as vLLM does. Kill it (`kill -9`, as a test does to the real
  one) and /health answers 503, /v1/models still answers, a chat or completion request answers
  500 "EngineCore encountered an issue. ..."; the server then exits with code 0: right after
  answering such a request, else `--engine-exit-delay` seconds later (vLLM's watchdog, every 5 s).

tests/integration/runtimes/test_vllm_conformance.py runs the same assertions against this
stand-in and the real vLLM, which is what makes tests against the stand-in mean something.

Completions are words chosen deterministically from the prompt; token counts are word counts.
Unknown vLLM flags (--dtype, --enforce-eager, ...) are accepted and ignored, so a pod's real vLLM
arguments can be passed through unchanged.

    python hack/standins/vllm_server.py --model /models/tiny --served-model-name tiny \\
        --host 127.0.0.1 --port 8000 --max-model-len 2048
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

log = logging.getLogger("vllm.standin")

WORDS = (
    "the model answers with words picked from its prompt so tests can see the same text each time "
    "while the runtime keeps its promise to speak the protocol exactly"
).split()

#: What vLLM's own 500 says when a request meets a dead engine (EngineDeadError).
ENGINE_DEAD_MESSAGE = "EngineCore encountered an issue. See stack trace (above) for the root cause."
#: The engine process's /proc cmdline starts with this, as vLLM's does (setproctitle).
ENGINE_CORE_TITLE = "VLLM::EngineCore"
#: The engine stand-in: it names itself (comm, as `ps -C` sees it; 15 bytes at most) and
#: sleeps until its parent, the API server, is gone.
ENGINE_CORE_CODE = """
import os, sys, time
parent = int(sys.argv[1])
try:
    import ctypes
    ctypes.CDLL(None).prctl(15, b"VLLM::EngineCor", 0, 0, 0)
except Exception:
    pass
while os.getppid() == parent:
    time.sleep(0.5)
"""


def default_version() -> str:
    """VLLM_VERSION from hack/versions.env, the vLLM this stand-in is checked against."""
    versions = Path(__file__).resolve().parents[1] / "versions.env"
    try:
        for line in versions.read_text().splitlines():
            if line.startswith("VLLM_VERSION="):
                return line.split("=", 1)[1].strip()
    except OSError:
        pass
    return "0.32.0"


@dataclass
class Settings:
    model: str
    served_model_names: list[str]
    max_model_len: int
    api_keys: list[str]
    version: str
    token_delay: float = 0.0


@dataclass
class State:
    settings: Settings
    #: The `VLLM::EngineCore` child; None in unit tests (an engine that never dies).
    engine: subprocess.Popen[bytes] | None = None
    #: Set to shut the server down (vLLM: uvicorn's should_exit).
    shutdown: asyncio.Event = field(default_factory=asyncio.Event)
    running: int = 0
    prompt_tokens_total: int = 0
    generation_tokens_total: int = 0
    success_total: dict[str, int] = field(default_factory=lambda: {"stop": 0, "length": 0})

    @property
    def engine_dead(self) -> bool:
        return self.engine is not None and self.engine.poll() is not None


STATE = web.AppKey("state", State)


def sanitize_message(message: str) -> str:
    """vLLM's error sanitizer (entrypoints/serve/exception_handling/utils.py): paths become <path>."""
    message = re.sub(r"/(?:home|usr|opt|var|tmp|root|lib|mnt|srv)(?:/[\w.\-]+)+", "<path>", message)
    message = re.sub(r"(?:/[\w\-]+)+/[\w\-]+\.\w+", "<path>", message)
    return message.strip()


def error(status: int, message: str, err_type: str, param: str | None = None) -> web.Response:
    """vLLM's ErrorResponse: {"error": {"message", "type", "param", "code"}}, code = HTTP status."""
    body = {"error": {"message": sanitize_message(message), "type": err_type, "param": param, "code": status}}
    return web.json_response(body, status=status)


def validation_error(loc: str, kind: str, msg: str, given: Any) -> web.Response:
    """A request body FastAPI/pydantic refuses, as vLLM's validation handler words it."""
    shape = (
        f"<{type(given).__name__} of {len(given)} items>" if isinstance(given, dict | list) else repr(given)
    )
    detail = {"type": kind, "loc": loc, "msg": msg, "input": shape}
    return error(400, f"1 validation error:\n  {detail}", "Bad Request", loc)


@web.middleware
async def auth_and_routes(request: web.Request, handler: Any) -> web.StreamResponse:
    state = request.app[STATE]
    guarded = request.path.startswith(("/v1", "/v2", "/inference", "/cohere"))
    # Authentication is vLLM's outermost middleware: it answers before any route, known or not.
    if guarded and state.settings.api_keys and request.method != "OPTIONS":
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not any(
            secrets.compare_digest(token.encode(), k.encode()) for k in state.settings.api_keys
        ):
            return web.json_response({"error": "Unauthorized"}, status=401)
    try:
        return await handler(request)
    except web.HTTPNotFound:  # FastAPI's bodies, not aiohttp's "404: Not Found" text
        return web.json_response({"detail": "Not Found"}, status=404)
    except web.HTTPMethodNotAllowed as refused:
        allow = {"Allow": ", ".join(sorted(refused.allowed_methods))}
        return web.json_response({"detail": "Method Not Allowed"}, status=405, headers=allow)


async def health(request: web.Request) -> web.Response:
    return web.Response(status=503 if request.app[STATE].engine_dead else 200)


async def version(request: web.Request) -> web.Response:
    return web.json_response({"version": request.app[STATE].settings.version})


def model_card(state: State, name: str) -> dict[str, Any]:
    s = state.settings
    now = int(time.time())  # vLLM's ModelCard: created when the list is asked for
    return {
        "id": name,
        "object": "model",
        "created": now,
        "owned_by": "vllm",
        "root": s.model,
        "parent": None,
        "max_model_len": s.max_model_len,
        "permission": [
            {
                "id": f"modelperm-{secrets.token_hex(8)}",
                "object": "model_permission",
                "created": now,
                "allow_create_engine": False,
                "allow_sampling": True,
                "allow_logprobs": True,
                "allow_search_indices": False,
                "allow_view": True,
                "allow_fine_tuning": False,
                "organization": "*",
                "group": None,
                "is_blocking": False,
            }
        ],
    }


async def models(request: web.Request) -> web.Response:
    state = request.app[STATE]
    cards = [model_card(state, name) for name in state.settings.served_model_names]
    return web.json_response({"object": "list", "data": cards})


def generate_words(prompt: str, n: int) -> list[str]:
    """Deterministic output: the same prompt always gives the same words."""
    seed = hashlib.sha256(prompt.encode()).digest()
    pool = prompt.split() or WORDS
    return [(pool + WORDS)[seed[i % len(seed)] % (len(pool) + len(WORDS))] for i in range(n)]


def count_tokens(text: str) -> int:
    return max(1, len(text.split()))


def render_chat(messages: list[dict[str, Any]]) -> str:
    parts = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, list):  # OpenAI content parts
            content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
        parts.append(f"{m.get('role', 'user')}: {content or ''}")
    return "\n".join(parts)


async def read_request(request: web.Request) -> dict[str, Any] | web.Response:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return validation_error("body.0", "json_invalid", "JSON decode error", {})
    if not isinstance(body, dict):
        msg = "Input should be a valid dictionary or object to extract fields from"
        return validation_error("body", "model_attributes_type", msg, body)
    return body


def check_model(state: State, body: dict[str, Any]) -> web.Response | None:
    names = state.settings.served_model_names
    model = body.get("model") or names[0]
    if model not in names:
        message = f"The model `{model}` does not exist. Valid aliases: {', '.join(names)}."
        return error(404, message, "NotFoundError", "model")
    return None


def engine_dead(state: State) -> web.Response:
    """vLLM's EngineDeadError handler: answer 500, and shut the server down (terminate_if_errored)."""
    log.error("Engine Exception caught: %s is dead; shutting down", ENGINE_CORE_TITLE)
    state.shutdown.set()
    return error(500, ENGINE_DEAD_MESSAGE, "InternalServerError")


async def complete(request: web.Request, chat: bool) -> web.StreamResponse:
    state = request.app[STATE]
    body = await read_request(request)
    if isinstance(body, web.Response):
        return body
    # The body's validation comes first (FastAPI, then the request's own validators).
    prompt: Any
    if chat:
        messages = body.get("messages")
        if messages is None:
            return validation_error("body.messages", "missing", "Field required", body)
        if not isinstance(messages, list) or not messages:
            return error(400, "messages must be a non-empty list.", "BadRequestError", "messages")
        prompt = render_chat(messages)
    else:
        prompt = body.get("prompt")
        if isinstance(prompt, list):
            prompt = " ".join(map(str, prompt))
        if not prompt:
            message = "Either prompt or prompt_embeds must be provided and non-empty. (parameter=prompt)"
            return error(400, message, "BadRequestError", "prompt")
        if not isinstance(prompt, str):
            return error(400, "prompt must be a string or a list of strings.", "BadRequestError", "prompt")
    if (missing := check_model(state, body)) is not None:
        return missing
    if state.engine_dead:
        return engine_dead(state)

    max_len = state.settings.max_model_len
    prompt_tokens = count_tokens(prompt)
    requested = body.get("max_completion_tokens") or body.get("max_tokens")
    if requested is not None and (not isinstance(requested, int) or requested < 1):
        return error(400, "max_tokens must be a positive integer.", "BadRequestError", "max_tokens")
    max_tokens = requested or max(1, min(16, max_len - prompt_tokens))
    if prompt_tokens + max_tokens > max_len:
        where = "messages" if chat else "prompt"
        return error(
            400,
            f"This model's maximum context length is {max_len} tokens. However, you requested "
            f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the {where}, {max_tokens} in "
            f"the completion). Please reduce the length of the {where} or completion.",
            "BadRequestError",
        )

    words = generate_words(prompt, max_tokens)
    finish_reason = "length"
    stop = body.get("stop")
    for s in [stop] if isinstance(stop, str) else stop or []:
        if s in words:
            words, finish_reason = words[: words.index(s)], "stop"
            break

    state.running += 1
    try:
        common = {
            "id": f"{'chatcmpl' if chat else 'cmpl'}-{secrets.token_hex(8)}",
            "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()),
            # vLLM answers with its first served name, whichever alias was asked for.
            "model": state.settings.served_model_names[0],
        }
        usage = {
            "prompt_tokens": prompt_tokens,
            "total_tokens": prompt_tokens + len(words),
            "completion_tokens": len(words),
            "prompt_tokens_details": None,
        }
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            response = await stream(request, chat, common, words, finish_reason, usage, include_usage)
        else:
            await asyncio.sleep(state.settings.token_delay * len(words))
            text = " ".join(words)
            if chat:
                choice: dict[str, Any] = {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "tool_calls": []},
                    "logprobs": None,
                    "finish_reason": finish_reason,
                    "stop_reason": None,
                }
                response = web.json_response({**common, "choices": [choice], "usage": usage})
            else:
                choice = {
                    "index": 0,
                    "text": text,
                    "logprobs": None,
                    "finish_reason": finish_reason,
                    "stop_reason": None,
                    "prompt_logprobs": None,
                }
                response = web.json_response({**common, "choices": [choice], "usage": usage})
        state.prompt_tokens_total += prompt_tokens
        state.generation_tokens_total += len(words)
        state.success_total[finish_reason] += 1
        return response
    finally:
        state.running -= 1


async def stream(
    request: web.Request,
    chat: bool,
    common: dict[str, Any],
    words: list[str],
    finish_reason: str,
    usage: dict[str, Any],
    include_usage: bool,
) -> web.StreamResponse:
    """Server-sent events, one JSON chunk per `data:` line, ending with `data: [DONE]`."""
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8"})
    await response.prepare(request)
    obj = "chat.completion.chunk" if chat else "text_completion"

    async def send(choices: list[dict[str, Any]], with_usage: dict[str, Any] | None = None) -> None:
        chunk: dict[str, Any] = {**common, "object": obj, "choices": choices}
        if with_usage is not None:
            chunk["usage"] = with_usage
        await response.write(f"data: {json.dumps(chunk)}\n\n".encode())

    def choice(text: str, finish: str | None) -> dict[str, Any]:
        if chat:
            return {"index": 0, "delta": {"content": text}, "logprobs": None, "finish_reason": finish}
        return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish, "stop_reason": None}

    if chat:  # vLLM opens a chat stream with the role
        opening = {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None}
        await send([{**opening, "finish_reason": None}])
    for i, word in enumerate(words):
        await asyncio.sleep(request.app[STATE].settings.token_delay)
        await send([choice(word if i == 0 else " " + word, None)])
    await send([choice("", finish_reason)])
    if include_usage:
        await send([], usage)
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await complete(request, chat=True)


async def completions(request: web.Request) -> web.StreamResponse:
    return await complete(request, chat=False)


async def metrics(request: web.Request) -> web.Response:
    state = request.app[STATE]
    name = state.settings.served_model_names[0]
    labels = f'engine="0",model_name="{name}"'
    lines = [
        "# HELP vllm:num_requests_running Number of requests in model execution batches.",
        "# TYPE vllm:num_requests_running gauge",
        f"vllm:num_requests_running{{{labels}}} {float(state.running)}",
        "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.",
        "# TYPE vllm:num_requests_waiting gauge",
        f"vllm:num_requests_waiting{{{labels}}} 0.0",
        "# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.",
        "# TYPE vllm:kv_cache_usage_perc gauge",
        f"vllm:kv_cache_usage_perc{{{labels}}} 0.0",
        "# HELP vllm:prompt_tokens_total Number of prefill tokens processed.",
        "# TYPE vllm:prompt_tokens_total counter",
        f"vllm:prompt_tokens_total{{{labels}}} {float(state.prompt_tokens_total)}",
        "# HELP vllm:generation_tokens_total Number of generation tokens processed.",
        "# TYPE vllm:generation_tokens_total counter",
        f"vllm:generation_tokens_total{{{labels}}} {float(state.generation_tokens_total)}",
        "# HELP vllm:request_success_total Count of successfully processed requests.",
        "# TYPE vllm:request_success_total counter",
    ]
    for reason, n in state.success_total.items():
        by_reason = f'engine="0",finished_reason="{reason}",model_name="{name}"'
        lines.append(f"vllm:request_success_total{{{by_reason}}} {float(n)}")
    return web.Response(
        text="\n".join(lines) + "\n",
        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
    )


def build_app(settings: Settings, engine: subprocess.Popen[bytes] | None = None) -> web.Application:
    app = web.Application(middlewares=[auth_and_routes])
    app[STATE] = State(settings=settings, engine=engine)
    app.router.add_get("/health", health)
    app.router.add_get("/version", version)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/completions", completions)
    return app


def start_engine_core() -> subprocess.Popen[bytes]:
    """The engine's stand-in: a child whose /proc cmdline starts with `VLLM::EngineCore`."""
    return subprocess.Popen(
        [ENGINE_CORE_TITLE, "-I", "-S", "-c", ENGINE_CORE_CODE, str(os.getpid())],
        executable=sys.executable,
        stdin=subprocess.DEVNULL,
    )


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(description="Stand-in for vLLM's OpenAI-compatible server (not vLLM).")
    p.add_argument("positional", nargs="*", help="`[serve] MODEL`, as `vllm serve MODEL` takes it")
    p.add_argument("--model", help="model path or Hugging Face id (vLLM: --model)")
    p.add_argument("--served-model-name", nargs="+", action="extend", help="name(s) the API answers to")
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-model-len", type=int, default=2048)
    p.add_argument("--api-key", nargs="+", action="extend", help="accepted bearer token(s)")
    g = p.add_argument_group("stand-in only")
    g.add_argument("--bind-delay", type=float, default=0.0, help="seconds the port refuses connections")
    g.add_argument(
        "--engine-exit-delay",
        type=float,
        default=3.0,
        help="seconds from the engine's death to the server's exit, when no request meets it first",
    )
    g.add_argument("--token-delay", type=float, default=0.0, help="seconds per generated token")
    g.add_argument("--report-version", default=default_version(), help="what GET /version answers")
    args, unknown = p.parse_known_args(argv)
    positional = args.positional[1:] if args.positional[:1] == ["serve"] else args.positional
    if positional and not args.model:
        args.model = positional[0]
    if not args.model:
        p.error("a model is required: --model MODEL or `serve MODEL`")
    return args, unknown


async def watch_engine(state: State, listening: asyncio.Event, exit_delay: float) -> int:
    """Wait for the engine's death; then the server goes down, as vLLM's does. Returns the exit code."""
    assert state.engine is not None
    # Polled, not waited on in a thread: /health polls it too, and Popen's wait would hold its lock.
    while state.engine.poll() is None:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    if not listening.is_set():
        log.error(
            "Engine core initialization failed: %s died (%s)", ENGINE_CORE_TITLE, state.engine.returncode
        )
        state.shutdown.set()
        return 1
    log.error(
        "%s died (%s): /health answers 503 until the server exits", ENGINE_CORE_TITLE, state.engine.returncode
    )
    await asyncio.sleep(exit_delay)
    state.shutdown.set()
    return 0


async def serve(args: argparse.Namespace) -> int:
    settings = Settings(
        model=args.model,
        served_model_names=args.served_model_name or [args.model],
        max_model_len=args.max_model_len,
        api_keys=args.api_key or ([os.environ["VLLM_API_KEY"]] if os.environ.get("VLLM_API_KEY") else []),
        version=args.report_version,
        token_delay=args.token_delay,
    )
    log.info("vLLM API server stand-in version %s, model %s", settings.version, settings.model)
    # vLLM starts its engine (which loads the weights) before it accepts connections: the port is
    # closed meanwhile.
    app = build_app(settings, engine=start_engine_core())
    state = app[STATE]
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, state.shutdown.set)
    listening = asyncio.Event()
    watcher = asyncio.create_task(watch_engine(state, listening, args.engine_exit_delay))
    runner = web.AppRunner(app, access_log=None)
    try:
        try:
            await asyncio.wait_for(state.shutdown.wait(), timeout=args.bind_delay)
        except TimeoutError:
            await runner.setup()
            await web.TCPSite(runner, args.host, args.port).start()
            listening.set()
            log.info("Starting vLLM API server on http://%s:%d", args.host, args.port)
            await state.shutdown.wait()
        log.info("Shutting down")
        await runner.cleanup()
    finally:
        watcher.cancel()
        assert state.engine is not None
        if state.engine.poll() is None:
            state.engine.terminate()
            state.engine.wait()
    return watcher.result() if watcher.done() and not watcher.cancelled() else 0


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(asctime)s %(message)s", stream=sys.stderr)
    args, unknown = parse_args(sys.argv[1:])
    if unknown:
        log.info("ignoring vLLM arguments this stand-in does not model: %s", " ".join(unknown))
    sys.exit(asyncio.run(serve(args)))


if __name__ == "__main__":
    main()

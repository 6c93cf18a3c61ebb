#!/usr/bin/env python3
"""The processes of the gateway benchmark (bench/gateway.py), each started on its own:

gateway_servers.py upstream PORT
    an OpenAI-shaped server that answers at once: a chat completion (JSON, with usage) or,
    for `"stream": true`, an SSE stream of EVENTS chunks, a final usage chunk and [DONE]
gateway_servers.py gateway PORT UPSTREAM_PORT [PROFILE]
    llmop's gateway (the code `llmop gateway` runs) routing model `bench` to that upstream;
    with PROFILE, under cProfile, the stats written there on SIGTERM
"""

from __future__ import annotations

import asyncio
import cProfile
import json
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "operator"))

MODEL = "bench"
EVENTS = 100


def _chunk(payload: dict[str, object]) -> bytes:
    event = b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(event), event)


def _answers() -> tuple[bytes, list[bytes]]:
    usage = {"prompt_tokens": 12, "completion_tokens": EVENTS, "total_tokens": 12 + EVENTS}
    body = json.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": 0,
            "model": MODEL,
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "ok " * 20}, "finish_reason": "stop"}
            ],
            "usage": usage,
        }
    ).encode()
    plain = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
        len(body),
        body,
    )
    chunk = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 0, "model": MODEL}
    events = [b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"]
    events += [
        _chunk({**chunk, "choices": [{"index": 0, "delta": {"content": "ok "}}], "usage": None})
        for _ in range(EVENTS)
    ]
    events.append(_chunk({**chunk, "choices": [], "usage": usage}))
    events.append(b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n")
    return plain, events


class Upstream(asyncio.Protocol):
    """HTTP/1.1 keep-alive, one request at a time per connection, as the gateway and nginx send."""

    plain, events = _answers()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.buffer = b""
        self.streaming: asyncio.Task[None] | None = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head = self.buffer[:end].lower()
            at = head.find(b"content-length:")
            length = int(head[at + 15 :].split(b"\r\n", 1)[0]) if at >= 0 else 0
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4 : end + 4 + length]
            self.buffer = self.buffer[end + 4 + length :]
            if b'"stream":true' in body.replace(b" ", b""):
                self.streaming = asyncio.ensure_future(self.stream())
            else:
                self.transport.write(self.plain)

    async def stream(self) -> None:
        # Each event is its own write, the loop turning between them: events arrive one by one,
        # interleaved with the other streams, as a runtime sends tokens.
        for event in self.events:
            if self.transport.is_closing():
                return
            self.transport.write(event)
            await asyncio.sleep(0)


async def serve_upstream(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Upstream, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


async def serve_gateway(port: int, upstream_port: int, profile_to: str | None) -> None:
    from aiohttp import web

    from llmop.gateway.server import Gateway, GatewaySettings
    from llmop.gateway.table import build_table

    backend = {
        "metadata": {"name": "bench", "namespace": "bench"},
        "spec": {"runtime": "vllm", "port": upstream_port},
        "status": {
            "phase": "Ready",
            "runtime": "vllm",
            "pods": [
                {"name": "pod-0", "ip": "127.0.0.1", "ready": True, "phase": "Serving", "models": [MODEL]}
            ],
            "models": [{"name": MODEL, "capabilities": ["chat", "completion"]}],
        },
    }
    gateway = Gateway(GatewaySettings(), build_table([backend], {}))
    runner = web.AppRunner(gateway.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    # Profiled from here: the requests, not the imports and start.
    profile = cProfile.Profile() if profile_to else None
    if profile is not None:
        profile.enable()
    await stop.wait()
    if profile is not None:
        profile.disable()
        profile.dump_stats(profile_to)
    await runner.cleanup()


def main() -> None:
    role, port = sys.argv[1], int(sys.argv[2])
    if role == "upstream":
        asyncio.run(serve_upstream(port))
        return
    upstream_port = int(sys.argv[3])
    asyncio.run(serve_gateway(port, upstream_port, sys.argv[4] if len(sys.argv) > 4 else None))


if __name__ == "__main__":
    main()

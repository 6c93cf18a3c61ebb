"""Servers on 127.0.0.1 that answer the way runtimes do, well and badly: the pieces the fixtures
in conftest.py assemble.

The adapters are tested over real sockets: refused and reset connections, silence and trickled
bodies are behaviours of the wire, which mocks of the HTTP client would only imitate.
"""

from __future__ import annotations

import asyncio
import inspect
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
RawBehaviour = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class FakeRuntime:
    """An aiohttp server with the routes a test gives it; it records every request."""

    url: str
    requests: list[Recorded] = field(default_factory=list)

    def bodies(self, path: str) -> list[Any]:
        return [request.body for request in self.requests if request.path == path]


def json_reply(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


def as_handler(answer: Any) -> Handler:
    """A coroutine handler as is; a plain function of the request (a lambda) or a constant JSON
    value wrapped into one."""
    if inspect.iscoroutinefunction(answer):
        return answer  # type: ignore[no-any-return]

    async def handle(request: web.Request) -> web.StreamResponse:
        if callable(answer):
            return answer(request)  # type: ignore[no-any-return]
        return web.json_response(answer)

    return handle


async def read_request_head(reader: asyncio.StreamReader) -> None:
    await reader.readuntil(b"\r\n\r\n")


async def reset_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Read the request, then abort with a TCP RST (SO_LINGER 0), as a crashing process does."""
    await read_request_head(reader)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


async def close_without_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request_head(reader)


async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request_head(reader)
    await asyncio.sleep(3600)


async def half_answer_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Promise 1000 bytes, send 10, hang up: a server killed in the middle of its answer."""
    await read_request_head(reader)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n")
    writer.write(b'{"data": [')
    await writer.drain()


async def trickle_forever(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A byte every 50 ms, for ever: every read succeeds, the answer never ends."""
    await read_request_head(reader)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
    while True:
        writer.write(b"1\r\n \r\n")
        await writer.drain()
        await asyncio.sleep(0.05)

"""Fixtures that start small real servers on 127.0.0.1 for the adapters to talk to."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from fake_runtimes import FakeRuntime, Handler, RawBehaviour, Recorded, as_handler


@pytest.fixture
async def fake_runtime() -> AsyncIterator[Callable[[dict[str, Handler | Any]], Awaitable[FakeRuntime]]]:
    """`await fake_runtime({"GET /api/tags": handler_or_json, ...})` -> a running FakeRuntime.

    A route's value is either a handler or a JSON-able value answered with 200.
    """
    runners: list[web.AppRunner] = []

    async def start(routes: dict[str, Handler | Any]) -> FakeRuntime:
        fake = FakeRuntime(url="")

        @web.middleware
        async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
            raw = await request.read()
            body = json.loads(raw) if raw.strip() else None
            fake.requests.append(Recorded(request.method, request.path, dict(request.headers), body))
            return await handler(request)

        app = web.Application(middlewares=[record])
        for route, answer in routes.items():
            method, path = route.split(" ", 1)
            app.router.add_route(method, path, as_handler(answer))
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        host, port = runner.addresses[0][:2]
        fake.url = f"http://{host}:{port}"
        return fake

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def raw_server() -> AsyncIterator[Callable[[RawBehaviour], Awaitable[str]]]:
    """A TCP server whose behaviour is a coroutine given the connection: for resets, silence,
    half answers and other things no well-behaved HTTP server does."""
    servers: list[asyncio.Server] = []
    tasks: set[asyncio.Task[None]] = set()

    async def start(behaviour: RawBehaviour) -> str:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            tasks.add(task)
            try:
                await behaviour(reader, writer)
            finally:
                tasks.discard(task)
                writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    yield start
    for task in list(tasks):
        task.cancel()
    for server in servers:
        server.close()
        await server.wait_closed()

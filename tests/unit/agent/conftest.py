"""Fixtures: the agent in-process on 127.0.0.1, and a real model source beside it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from agent_source import RunningAgent, SourceServer, StartAgent, build_source, serve
from aiohttp import web

from llmop.agent.server import build_app
from llmop.agent.settings import AgentSettings


@pytest.fixture
async def source() -> AsyncIterator[SourceServer]:
    runners: list[web.AppRunner] = []
    server = SourceServer()
    server.url = await serve(build_source(server), runners)
    yield server
    for file in server.all_files():
        file.release.set()  # no handler may wait for ever
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def start_agent(tmp_path: Path) -> AsyncIterator[StartAgent]:
    """`await start_agent(hf_endpoint=..., required_models=(...))` -> a running agent."""
    runners: list[web.AppRunner] = []
    clients: list[httpx.AsyncClient] = []

    async def start(**settings: Any) -> RunningAgent:
        models_dir = settings.pop("models_dir", tmp_path / "models")
        settings = {"connect_timeout": 5, "read_timeout": 5, **settings}
        app = build_app(AgentSettings(models_dir=models_dir, **settings))
        url = await serve(app, runners)
        runner = runners[-1]
        http = httpx.AsyncClient(timeout=30)
        clients.append(http)

        async def stop() -> None:
            runners.remove(runner)
            await runner.cleanup()

        return RunningAgent(url, models_dir, http, stop)

    yield start
    for client in clients:
        await client.aclose()
    for runner in runners:
        await runner.cleanup()

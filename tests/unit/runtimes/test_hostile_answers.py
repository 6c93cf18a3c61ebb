"""What a tenant's runtime image may answer: every answer is read up to a bound, and any shape of
nonsense becomes an observation that says what came back, never an exception or a memory spike."""

from __future__ import annotations

import json

import httpx
import pytest
from aiohttp import web

from llmop.observer import observe_runtime
from llmop.runtimes import DEFAULT_MAX_BODY_BYTES, ProbeState
from llmop.runtimes.ollama import DESCRIBED_MODELS

OLLAMA_HEALTH = {"GET /api/version": {"version": "0.9.0"}, "GET /api/ps": {"models": []}}


def raw_json(body: bytes, *, chunked: bool = False):  # type: ignore[no-untyped-def]
    """A handler answering `body` as JSON, with a Content-Length or chunked (no size announced)."""

    async def stream(request: web.Request) -> web.StreamResponse:
        if not chunked:
            return web.Response(body=body, content_type="application/json")
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for start in range(0, len(body), 64 * 1024):
            await response.write(body[start : start + 64 * 1024])
        return response

    return stream


async def observe_ollama(fake_runtime, tags) -> tuple:  # type: ignore[no-untyped-def]
    server = await fake_runtime({**OLLAMA_HEALTH, "GET /api/tags": tags, "POST /api/show": {}})
    async with httpx.AsyncClient() as client:
        seen = await observe_runtime("ollama", server.url, client=client)
    return server, seen


def test_the_operator_reads_at_most_a_few_mib_of_any_answer() -> None:
    assert DEFAULT_MAX_BODY_BYTES <= 4 * 1024 * 1024


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000 + b"]" * 100_000,  # nested deeper than Python's parser recurses
        b'{"models": [{"name": "a", "size": ' + b"9" * 5000 + b"}]}",  # an integer Python refuses to read
        b'{"models": "all of them"}',
        b'{"models": [{"name": {"nested": true}}]}',
        b"[]",
        b"\xff\xfe not even text",
    ],
    ids=["deep", "huge-integer", "models-not-a-list", "name-not-a-string", "a-list", "binary"],
)
async def test_a_malformed_model_list_is_an_error_that_says_what_came_back(fake_runtime, body: bytes) -> None:
    _, seen = await observe_ollama(fake_runtime, raw_json(body))
    assert seen.probe.state is ProbeState.ERROR
    assert "answered GET /api/tags with" in seen.probe.reason


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_an_oversized_model_list_is_refused_with_the_limit_in_words(
    fake_runtime, chunked: bool
) -> None:
    models = [{"name": f"m{index}:" + "x" * 200} for index in range(20_000)]
    body = json.dumps({"models": models}).encode()
    assert len(body) > DEFAULT_MAX_BODY_BYTES
    _, seen = await observe_ollama(fake_runtime, raw_json(body, chunked=chunked))
    assert seen.probe.state is ProbeState.ERROR
    assert "answered GET /api/tags with" in seen.probe.reason
    assert f"the limit is {DEFAULT_MAX_BODY_BYTES} bytes" in seen.probe.reason


async def test_a_library_of_thousands_costs_a_bounded_number_of_requests(fake_runtime) -> None:
    tags = {"models": [{"name": f"m{index:05d}:latest"} for index in range(3000)]}
    server, seen = await observe_ollama(fake_runtime, tags)
    assert seen.probe.serving, seen.probe.reason
    assert len(seen.models) == 3000, "every model is still listed"
    described = {body["model"] for body in server.bodies("/api/show")}
    assert len(described) == DESCRIBED_MODELS

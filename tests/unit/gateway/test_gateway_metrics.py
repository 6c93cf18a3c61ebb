"""The gateway's /metrics, as Prometheus scrapes them, after requests through the real server."""
# ruff: noqa: F811 (the fixtures of test_gateway_server, imported, are the tests' arguments)

from __future__ import annotations

import asyncio
import json
import socket

import httpx
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families
from test_gateway_server import CHAT, backend_of, gateway_for, pods  # noqa: F401

from llmop.gateway.metrics import start_metrics_server, usage_in
from llmop.gateway.server import Gateway
from llmop.gateway.table import build_table

BACKEND = "team-a/be-p0"


async def scrape(gateway: Gateway) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The samples of the gateway's /metrics, served on a port of its own."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    runner = await start_metrics_server("127.0.0.1", port, gateway.metrics)
    assert runner is not None
    try:
        async with httpx.AsyncClient() as client:
            text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    finally:
        await runner.cleanup()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def sample(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def test_a_json_answer_counts_the_request_its_code_and_its_usage(gateway_for, pods) -> None:
    async def answer(_: web.Request) -> web.Response:
        usage = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
        return web.json_response({"object": "chat.completion", "choices": [], "usage": usage})

    pod = await pods("p0", answer)
    gateway, client = await gateway_for(build_table([backend_of(pod)]))
    for _ in range(2):
        assert (await client.post("/v1/chat/completions", json=CHAT)).status == 200
    samples = await scrape(gateway)
    assert sample(samples, "llmop_gateway_requests_total", model="tiny", backend=BACKEND, code="200") == 2
    tokens = "llmop_gateway_tokens_total"
    assert sample(samples, tokens, model="tiny", backend=BACKEND, direction="in") == 14
    assert sample(samples, tokens, model="tiny", backend=BACKEND, direction="out") == 6
    assert sample(samples, "llmop_gateway_request_duration_seconds_count", model="tiny", backend=BACKEND) == 2


async def test_a_stream_counts_its_first_token_and_the_usage_of_its_final_chunk(gateway_for, pods) -> None:
    async def stream(request: web.Request) -> web.StreamResponse:
        out = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await out.prepare(request)
        for _ in range(50):  # more than the tail the gateway keeps: only the end is read
            await out.write(
                b'data: {"choices": [{"delta": {"content": "' + b"x" * 500 + b'"}}], "usage": null}\n\n'
            )
        final = {"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 50}}
        body = b"data: " + json.dumps(final).encode() + b"\n\ndata: [DONE]\n\n"
        await out.write(body[:20])  # the final event split across chunks
        await out.write(body[20:])
        await out.write_eof()
        return out

    pod = await pods("p0", stream)
    gateway, client = await gateway_for(build_table([backend_of(pod)]))
    response = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert (await response.read()).endswith(b"data: [DONE]\n\n")
    samples = await scrape(gateway)
    first = "llmop_gateway_time_to_first_token_seconds_count"
    assert sample(samples, first, model="tiny", backend=BACKEND) == 1
    assert sample(samples, "llmop_gateway_tokens_total", model="tiny", backend=BACKEND, direction="in") == 11
    assert sample(samples, "llmop_gateway_tokens_total", model="tiny", backend=BACKEND, direction="out") == 50


async def test_a_made_up_model_is_counted_without_its_name(gateway_for, pods) -> None:
    """A client cannot grow the series: the 404 is counted under an empty model."""
    pod = await pods("p0")
    gateway, client = await gateway_for(build_table([backend_of(pod)]))
    for n in range(3):
        response = await client.post("/v1/chat/completions", json={**CHAT, "model": f"made-up-{n}"})
        assert response.status == 404
    samples = await scrape(gateway)
    assert sample(samples, "llmop_gateway_requests_total", model="", backend="", code="404") == 3
    assert not any("made-up" in value for _, labels in samples for _, value in labels)
    # Nothing was timed or counted for a backend: no empty-labelled series of the rest.
    assert sample(samples, "llmop_gateway_request_duration_seconds_count", model="", backend="") is None


async def test_requests_in_flight_are_shown_per_pod_while_they_last(gateway_for, pods) -> None:
    arrived, release = asyncio.Event(), asyncio.Event()

    async def slow(_: web.Request) -> web.Response:
        arrived.set()
        await release.wait()
        return web.json_response({"object": "chat.completion"})

    pod = await pods("p0", slow)
    gateway, client = await gateway_for(build_table([backend_of(pod)]))
    pending = asyncio.ensure_future(client.post("/v1/chat/completions", json=CHAT))
    await arrived.wait()
    during = await scrape(gateway)
    release.set()
    assert (await pending).status == 200
    after = await scrape(gateway)
    assert sample(during, "llmop_gateway_in_flight_requests", backend=BACKEND, pod="p0") == 1
    assert sample(after, "llmop_gateway_in_flight_requests", backend=BACKEND, pod="p0") is None


@pytest.mark.parametrize(
    "tail",
    [
        b'{"usage": {"prompt_tokens": -4, "completion_tokens": true}}',
        b'{"usage": {"prompt_tokens": "7", "completion_tokens": 10000000000}}',
        b'{"usage": {"prompt_tokens": 7, "completion_to',  # cut off
        b'{"usage": null}',
        b'{"content": "say \\"usage\\": {\\"prompt_tokens\\": 5}"}',  # a model's words, not usage
        b"\xff\xfe not even text",
    ],
)
def test_usage_that_is_not_plausible_is_not_counted(tail: bytes) -> None:
    assert usage_in(tail) == {}


def test_the_last_usage_is_the_answers() -> None:
    tail = b'data: {"usage": null}\n\ndata: {"usage": {"prompt_tokens": 3, "completion_tokens": 4}}\n\n'
    assert usage_in(tail) == {"in": 3, "out": 4}

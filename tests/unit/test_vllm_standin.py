"""hack/standins/vllm_server.py answers with vLLM's shapes, so adapter tests against it mean something."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from standins import vllm_server as vllm_standin  # hack/ is on pytest's pythonpath

AUTH = {"Authorization": "Bearer sk-test"}


async def client_for(*argv: str) -> TestClient:
    args, _ = vllm_standin.parse_args(["--model", "/models/tiny", *argv])
    settings = vllm_standin.Settings(
        model=args.model,
        served_model_names=args.served_model_name or [args.model],
        max_model_len=args.max_model_len,
        api_keys=args.api_key or [],
        version=args.report_version,
        loading_seconds=args.loading_seconds,
        token_delay=0.0,
    )
    client = TestClient(TestServer(vllm_standin.build_app(settings)))
    await client.start_server()
    return client


@pytest.fixture
async def vllm() -> AsyncIterator[TestClient]:
    client = await client_for("--served-model-name", "tiny", "--max-model-len", "64", "--api-key", "sk-test")
    yield client
    await client.close()


async def test_api_key_guards_v1_but_not_health_or_metrics(vllm: TestClient) -> None:
    denied = await vllm.get("/v1/models")
    assert denied.status == 401
    assert await denied.json() == {"error": "Unauthorized"}
    assert (await vllm.get("/health")).status == 200
    assert (await vllm.get("/metrics")).status == 200
    assert (await vllm.get("/v1/models", headers=AUTH)).status == 200


async def test_models_lists_served_names_with_root_and_max_model_len(vllm: TestClient) -> None:
    body = await (await vllm.get("/v1/models", headers=AUTH)).json()
    assert body["object"] == "list"
    [card] = body["data"]
    assert card["id"] == "tiny"
    assert card["root"] == "/models/tiny"
    assert card["owned_by"] == "vllm"
    assert card["max_model_len"] == 64


async def test_unknown_model_and_too_long_requests_are_openai_errors(vllm: TestClient) -> None:
    missing = await vllm.post("/v1/completions", headers=AUTH, json={"model": "other", "prompt": "hi"})
    assert missing.status == 404
    assert (await missing.json())["error"]["type"] == "NotFoundError"
    long = await vllm.post(
        "/v1/completions", headers=AUTH, json={"model": "tiny", "prompt": "hi", "max_tokens": 100}
    )
    assert long.status == 400
    assert "maximum context length is 64 tokens" in (await long.json())["error"]["message"]


async def test_chat_stream_is_server_sent_events_ending_in_done(vllm: TestClient) -> None:
    request: dict[str, Any] = {
        "model": "tiny",
        "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": 3,
        "stream": True,
    }
    response = await vllm.post("/v1/chat/completions", headers=AUTH, json=request)
    assert response.headers["Content-Type"].startswith("text/event-stream")
    events = [line.removeprefix("data: ") for line in (await response.text()).split("\n\n") if line]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks).count(" ") == 2


async def test_loading_answers_503_until_ready() -> None:
    client = await client_for("--loading-seconds", "60")
    try:
        assert (await client.get("/health")).status == 503
        assert (await client.get("/v1/models")).status == 503
        assert (await client.get("/version")).status == 200
    finally:
        await client.close()

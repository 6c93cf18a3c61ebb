"""hack/standins/vllm_server.py answers with vLLM's shapes, so tests against it mean something.

Fast checks of the stand-in alone; tests/integration/runtimes/test_vllm_conformance.py holds it to
the real vLLM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from standins import vllm_server as vllm_standin  # hack/ is on pytest's pythonpath

AUTH = {"Authorization": "Bearer sk-test"}


async def client_for(*argv: str, engine: subprocess.Popen[bytes] | None = None) -> TestClient:
    args, _ = vllm_standin.parse_args(["--model", "/models/tiny", *argv])
    settings = vllm_standin.Settings(
        model=args.model,
        served_model_names=args.served_model_name or [args.model],
        max_model_len=args.max_model_len,
        api_keys=args.api_key or [],
        version=args.report_version,
        token_delay=0.0,
    )
    client = TestClient(TestServer(vllm_standin.build_app(settings, engine=engine)))
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


async def test_unknown_routes_and_empty_bodies_answer_as_fastapi_and_vllm_do(vllm: TestClient) -> None:
    missing = await vllm.post("/v1/embeddings", headers=AUTH, json={})
    assert missing.status == 404
    assert await missing.json() == {"detail": "Not Found"}
    empty = await vllm.post("/v1/completions", headers=AUTH, json={})
    assert empty.status == 400
    assert (await empty.json())["error"]["param"] == "prompt"
    empty_chat = await vllm.post("/v1/chat/completions", headers=AUTH, json={})
    assert empty_chat.status == 400
    assert (await empty_chat.json())["error"]["param"] == "body.messages"


async def test_answers_as_the_first_name_and_names_the_aliases() -> None:
    client = await client_for("--served-model-name", "a", "b")
    try:
        done = await client.post("/v1/completions", json={"model": "b", "prompt": "hi", "max_tokens": 1})
        assert (await done.json())["model"] == "a"
        path = await client.post("/v1/completions", json={"model": "/models/tiny", "prompt": "hi"})
        assert path.status == 404
        message = (await path.json())["error"]["message"]
        assert message == "The model `/models/tiny` does not exist. Valid aliases: a, b."
    finally:
        await client.close()


def test_error_messages_hide_paths_as_vllm_does() -> None:
    assert vllm_standin.sanitize_message("Valid aliases: /tmp/x/tiny.") == "Valid aliases: <path>"
    assert vllm_standin.sanitize_message("see /models/a/b.json") == "see <path>"


def test_version_and_engine_exit_delay_defaults() -> None:
    args, _ = vllm_standin.parse_args(["--model", "/models/tiny"])
    versions = (vllm_standin.Path(vllm_standin.__file__).parents[1] / "versions.env").read_text()
    assert f"VLLM_VERSION={args.report_version}\n" in versions
    assert args.engine_exit_delay == 3.0
    _, unknown = vllm_standin.parse_args(["--model", "/models/tiny", "--loading-seconds", "1"])
    assert "--loading-seconds" in unknown, "the 503-while-loading phase is gone: vLLM has none"


async def test_a_dead_engine_core_fails_health_and_generation_but_not_the_model_list() -> None:
    engine = vllm_standin.start_engine_core()
    client = await client_for(engine=engine)
    try:
        cmdline = vllm_standin.Path(f"/proc/{engine.pid}/cmdline")
        for _ in range(100):  # a child's cmdline reads empty until its exec is done
            if argv0 := cmdline.read_bytes().split(b"\0")[0]:
                break
            await asyncio.sleep(0.05)
        assert argv0 == b"VLLM::EngineCore"
        assert (await client.get("/health")).status == 200
        os.kill(engine.pid, signal.SIGKILL)
        engine.wait(5)
        health = await client.get("/health")
        assert (health.status, await health.read()) == (503, b"")
        assert (await client.get("/v1/models")).status == 200
        chat = await client.post(
            "/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]}
        )
        assert chat.status == 500
        assert (await chat.json())["error"]["type"] == "InternalServerError"
        assert client.app is not None
        assert client.app[vllm_standin.STATE].shutdown.is_set(), "a request that meets it ends the server"
    finally:
        await client.close()
        if engine.poll() is None:
            engine.kill()
            engine.wait()

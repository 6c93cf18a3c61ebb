"""The official `openai` client through the gateway to a real llama-server, beside a replica that
died (its requests are retried on the live one).

The gateway's table comes from the status llmop computes from its own observation of that
server (the real adapter and status code, no hand-written status); only the watch of the API
server is left out: the test hands the gateway the backend object the operator would write.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import openai
import pytest
from aiohttp.test_utils import TestServer

from llmop.gateway.server import Gateway
from llmop.gateway.table import build_table
from llmop.models.backend import LLMBackendSpec, LLMBackendStatus
from llmop.observer import observe_runtime
from llmop.reconcile.backend_status import BackendSnapshot, PodFacts, compute_backend_status
from llmop.runtimes import connect

RUNTIME_KEY = "runtime-only-secret"
REPLICAS = {"tiny-0": "127.0.0.1", "tiny-1": "127.0.0.2"}


async def observed_backend(url: str, port: int) -> dict[str, Any]:
    """The LLMBackend as the operator would store it after one round of observing the server."""
    spec = LLMBackendSpec(runtime="llamacpp", port=port)
    async with httpx.AsyncClient() as client:
        seen = await observe_runtime("llamacpp", url, client=client, api_key=RUNTIME_KEY)
    now = datetime.now(UTC)
    status = compute_backend_status(
        BackendSnapshot(
            generation=1,
            spec=spec,
            endpoint=url,
            openai_base_url=url + "/v1",
            now=now,
            observing_since=now,
            previous=LLMBackendStatus(),
            # A second replica that died since the operator saw it serving: same port, an address
            # where nothing listens (connections refused).
            pods=[PodFacts(name=name, ip=ip, phase="Running") for name, ip in REPLICAS.items()],
            runtimes=dict.fromkeys(REPLICAS, seen),
        )
    )
    assert status.phase == "Ready", status.last_error
    return {
        "metadata": {"name": "tiny", "namespace": "team-a"},
        "spec": spec.to_api(),
        "status": status.to_api(),
    }


async def test_chat_streaming_completions_and_errors_through_the_gateway(llama_server) -> None:
    server = llama_server("--api-key", RUNTIME_KEY).start()
    async with connect("llamacpp", server.url, api_key=RUNTIME_KEY) as runtime:
        assert (await runtime.wait_ready(60)).serving, server.log_tail()
    body = await observed_backend(server.url, server.port)
    (model,) = [m["name"] for m in body["status"]["models"]]
    gateway = Gateway(table=build_table([body], {("team-a", "tiny"): RUNTIME_KEY}))
    async with TestServer(gateway.app(), host="127.0.0.1") as front:
        # The client's own key is not the runtime's: the gateway sends the runtime's.
        client = openai.AsyncOpenAI(base_url=str(front.make_url("/v1")), api_key="client-key", max_retries=0)
        async with client:
            await chat_and_completions(client, model)
            await errors_a_client_can_act_on(client, model)
    assert gateway.balancer.in_flight == {}, server.log_tail()
    # Requests that went to the dead replica first were answered by the live one.
    assert set(gateway.balancer.failed_until) == {"team-a/tiny/tiny-1"}


async def chat_and_completions(client: openai.AsyncOpenAI, model: str) -> None:
    messages: Any = [{"role": "user", "content": "Say hi"}]
    chat = await client.chat.completions.create(model=model, messages=messages, max_tokens=4)
    assert chat.choices[0].message.role == "assistant"
    assert chat.usage is not None and chat.usage.completion_tokens > 0
    stream = await client.chat.completions.create(model=model, messages=messages, max_tokens=4, stream=True)
    chunks = [chunk async for chunk in stream]
    assert len(chunks) >= 2  # event by event, not one body
    assert chunks[-1].choices == [] or chunks[-1].choices[0].finish_reason is not None
    assert any(c.choices and c.choices[0].finish_reason for c in chunks)
    text = await client.completions.create(model=model, prompt="Once upon a time", max_tokens=4)
    assert text.choices[0].finish_reason in ("length", "stop")
    listed = await client.models.list()
    assert [m.id for m in listed.data] == [model]


async def errors_a_client_can_act_on(client: openai.AsyncOpenAI, model: str) -> None:
    messages: Any = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.NotFoundError) as unknown:
        await client.chat.completions.create(model="no-such-model", messages=messages, max_tokens=1)
    assert model in unknown.value.message and unknown.value.code == "model_not_found"
    with pytest.raises(openai.APIStatusError) as unsupported:
        await client.embeddings.create(model=model, input="hello")
    assert unsupported.value.status_code == 501
    assert "embeddings" in unsupported.value.message and unsupported.value.code == "capability_not_supported"

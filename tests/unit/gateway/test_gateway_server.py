"""The gateway's answers, against pods played by small aiohttp servers: what a client sees."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from llmop.gateway.guard import denied_targets
from llmop.gateway.server import Gateway, GatewaySettings
from llmop.gateway.table import RoutingTable, build_table

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Pod:
    """A runtime pod: answers chat completions with `handler`, and records what it was sent."""

    def __init__(self, name: str, handler: Handler | None = None) -> None:
        self.name = name
        self.handler = handler or self.answer
        self.seen: list[dict[str, Any]] = []
        self.server: TestServer | None = None

    async def answer(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"object": "chat.completion", "served_by": self.name})

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append({"headers": dict(request.headers), "body": await request.read()})
        return await self.handler(request)

    async def start(self) -> Pod:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.handle)
        app.router.add_post("/v1/embeddings", self.handle)
        self.server = TestServer(app, host="127.0.0.1")
        await self.server.start_server()
        return self

    @property
    def port(self) -> int:
        assert self.server is not None and self.server.port is not None
        return self.server.port


def backend_of(pod: Pod, model: str = "tiny", phase: str = "Ready", **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": f"be-{pod.name}", "namespace": "team-a"},
        "spec": {"runtime": "llamacpp", "port": pod.port, "apiKeySecretRef": {"name": "key", "key": "k"}},
        "status": {
            "phase": phase,
            "runtime": "llamacpp",
            "pods": [
                {"name": pod.name, "ip": "127.0.0.1", "ready": True, "phase": "Serving", "models": [model]}
            ],
            "models": [{"name": model, "capabilities": ["chat", "completion"]}],
            **status,
        },
    }


@pytest.fixture
async def gateway_for() -> AsyncIterator[Callable[..., Awaitable[tuple[Gateway, TestClient]]]]:
    started: list[Any] = []

    async def make(table: RoutingTable, hold: float = 30.0, denied: Any = None) -> tuple[Gateway, TestClient]:
        gateway = Gateway(GatewaySettings(hold_seconds=hold, denied=denied), table)
        client = TestClient(TestServer(gateway.app()))
        await client.start_server()
        started.append(client)
        return gateway, client

    yield make
    for client in started:
        await client.close()


@pytest.fixture
async def pods() -> AsyncIterator[Callable[..., Awaitable[Pod]]]:
    made: list[Pod] = []

    async def make(name: str, handler: Handler | None = None) -> Pod:
        pod = await Pod(name, handler).start()
        made.append(pod)
        return pod

    yield make
    for pod in made:
        assert pod.server is not None
        await pod.server.close()


CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}


async def test_a_request_reaches_the_pod_with_the_runtime_key_and_not_the_clients(gateway_for, pods) -> None:
    pod = await pods("p0")
    _, client = await gateway_for(build_table([backend_of(pod)], {("team-a", "be-p0"): "runtime-key"}))
    response = await client.post("/v1/chat/completions", json=CHAT, headers={"Authorization": "Bearer mine"})
    assert response.status == 200
    assert (await response.json())["served_by"] == "p0"
    (seen,) = pod.seen
    assert seen["headers"]["Authorization"] == "Bearer runtime-key"
    assert json.loads(seen["body"]) == CHAT


async def test_an_unknown_model_is_404_in_openais_shape_listing_the_models(gateway_for, pods) -> None:
    pod = await pods("p0")
    _, client = await gateway_for(build_table([backend_of(pod)]))
    response = await client.post("/v1/chat/completions", json={**CHAT, "model": "gpt-5"})
    assert response.status == 404
    error = (await response.json())["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["code"], error["param"], error["type"]) == (
        "model_not_found",
        "model",
        "invalid_request_error",
    )
    assert "'gpt-5' does not exist" in error["message"] and "tiny" in error["message"]


async def test_embeddings_on_a_chat_only_model_is_501_naming_the_capability(gateway_for, pods) -> None:
    pod = await pods("p0")
    _, client = await gateway_for(build_table([backend_of(pod)]))
    response = await client.post("/v1/embeddings", json={"model": "tiny", "input": "x"})
    assert response.status == 501
    error = (await response.json())["error"]
    assert error["code"] == "capability_not_supported"
    assert "embeddings" in error["message"] and "team-a/be-p0" in error["message"]
    assert pod.seen == []


@pytest.mark.parametrize(
    ("body", "wanted"),
    [(b"{not json", "not JSON"), (b'{"messages": []}', "names no model"), (b"[1]", "names no model")],
)
async def test_a_body_without_a_model_is_400(gateway_for, body: bytes, wanted: str) -> None:
    _, client = await gateway_for(RoutingTable())
    response = await client.post("/v1/chat/completions", data=body)
    assert response.status == 400
    assert wanted in (await response.json())["error"]["message"]


async def test_a_model_still_loading_is_held_then_503_with_retry_after(gateway_for) -> None:
    loading = {
        "metadata": {"name": "slow", "namespace": "team-a"},
        "spec": {"runtime": "ollama", "models": [{"name": "qwen3:0.6b"}]},
        "status": {"phase": "Loading"},
    }
    _, client = await gateway_for(build_table([loading]), hold=0.01)
    response = await client.post("/v1/chat/completions", json={**CHAT, "model": "qwen3:0.6b"})
    assert response.status == 503
    assert response.headers["Retry-After"] == "5"
    error = (await response.json())["error"]
    assert error["code"] == "model_not_ready" and "team-a/slow is Loading" in error["message"]


async def test_a_held_request_is_answered_once_a_pod_serves_the_model(gateway_for, pods) -> None:
    pod = await pods("p0")
    loading = backend_of(pod, phase="Loading")
    loading["status"]["pods"][0].update(phase="Loading", ready=False)
    gateway, client = await gateway_for(build_table([loading]))
    holding = asyncio.Event()
    hold = gateway.wait_for_change

    async def held(seconds: float) -> None:
        holding.set()
        await hold(seconds)  # it holds the table's lock until it waits: no change slips by

    gateway.wait_for_change = held  # type: ignore[method-assign]
    request = asyncio.ensure_future(client.post("/v1/chat/completions", json=CHAT))
    await holding.wait()
    await gateway.set_table(build_table([backend_of(pod)]))
    response = await request
    assert response.status == 200 and (await response.json())["served_by"] == "p0"


async def test_a_pod_that_fails_before_answering_is_replaced_by_another(
    gateway_for, pods, closed_port_url
) -> None:
    good = await pods("good")

    async def busy(request: web.Request) -> web.StreamResponse:
        return web.json_response({"error": "loading"}, status=503)

    bad = await pods("bad", busy)
    dead = backend_of(good)
    dead["metadata"]["name"] = "be-dead"
    dead["spec"]["port"] = int(closed_port_url.rsplit(":", 1)[1])
    gateway, client = await gateway_for(build_table([dead, backend_of(bad), backend_of(good)]))
    for _ in range(3):
        response = await client.post("/v1/chat/completions", json=CHAT)
        assert response.status == 200 and (await response.json())["served_by"] == "good"
    assert gateway.balancer.in_flight == {}


async def test_when_every_pod_fails_the_client_gets_502_or_the_last_answer(
    gateway_for, pods, closed_port_url
) -> None:
    dead = backend_of(await pods("p0"))
    dead["spec"]["port"] = int(closed_port_url.rsplit(":", 1)[1])
    _, client = await gateway_for(build_table([dead]))
    response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status == 502
    error = (await response.json())["error"]
    assert error["code"] == "upstream_unavailable" and "p0 did not answer" in error["message"]


async def test_a_stream_passes_through_before_it_ends(gateway_for, pods) -> None:
    """The first event reaches the client while the pod still holds back the rest."""
    release = asyncio.Event()

    async def stream(request: web.Request) -> web.StreamResponse:
        out = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await out.prepare(request)
        await out.write(b'data: {"n": 1}\n\n')
        await release.wait()
        await out.write(b"data: [DONE]\n\n")
        await out.write_eof()
        return out

    pod = await pods("p0", stream)
    _, client = await gateway_for(build_table([backend_of(pod)]))
    response = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert response.headers["Content-Type"].startswith("text/event-stream")
    assert await response.content.readuntil(b"\n\n") == b'data: {"n": 1}\n\n'
    release.set()
    assert await response.content.read() == b"data: [DONE]\n\n"


async def test_a_pod_dying_mid_stream_ends_the_stream_with_an_error_event(gateway_for, pods) -> None:
    async def dies(request: web.Request) -> web.StreamResponse:
        out = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await out.prepare(request)
        await out.write(b'data: {"n": 1}\n\n')
        assert request.transport is not None
        request.transport.close()  # the runtime dies: the chunked body never ends
        return out

    pod = await pods("p0", dies)
    gateway, client = await gateway_for(build_table([backend_of(pod)]))
    response = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    text = (await response.content.read()).decode()
    first, error_event = [part for part in text.split("\n\n") if part]
    assert first == 'data: {"n": 1}'
    error = json.loads(error_event.removeprefix("data: "))["error"]
    assert error["code"] == "upstream_stream_broken" and "p0" in error["message"]
    assert gateway.balancer.failed_until  # the next request goes elsewhere while another serves


async def test_models_lists_each_model_with_llmops_facts(gateway_for, pods) -> None:
    pod = await pods("p0")
    body = backend_of(pod)
    body["status"]["models"][0].update(contextLength=256, loaded=True)
    _, client = await gateway_for(build_table([body]))
    listing = await (await client.get("/v1/models")).json()
    (entry,) = listing["data"]
    assert (listing["object"], entry["id"], entry["object"]) == ("list", "tiny", "model")
    (facts,) = entry["llmop"]["backends"]
    assert facts == {
        "namespace": "team-a",
        "name": "be-p0",
        "runtime": "llamacpp",
        "contextLength": 256,
        "capabilities": ["chat", "completion"],
        "loaded": True,
        "servingPods": 1,
    }


async def test_ready_only_once_the_backends_were_listed(gateway_for) -> None:
    gateway = Gateway()
    client = TestClient(TestServer(gateway.app()))
    await client.start_server()
    try:
        assert (await client.get("/readyz")).status == 503
        await gateway.set_table(RoutingTable())
        assert (await client.get("/readyz")).status == 200
    finally:
        await client.close()


def external_backend(url: str) -> dict[str, Any]:
    return {
        "metadata": {"name": "outside", "namespace": "team-a"},
        "spec": {"external": {"url": url}},
        "status": {"phase": "Ready", "openaiBaseURL": url, "models": [{"name": "tiny"}]},
    }


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_an_external_server_in_the_deny_list_is_never_sent_a_request(
    gateway_for, pods, host: str
) -> None:
    """The operator checked the address when it probed; a name may resolve elsewhere since."""
    pod = await pods("p0")
    table = build_table([external_backend(f"http://{host}:{pod.port}/v1")])
    _, guarded = await gateway_for(table, denied=denied_targets({}, "https://10.96.0.1:443"))
    response = await guarded.post("/v1/chat/completions", json=CHAT)
    assert response.status == 502
    assert "refuses" in (await response.json())["error"]["message"]
    assert pod.seen == []
    # With an empty deny list (LLMOP_EXTERNAL_DENY_CIDRS=""), the same server is reached.
    _, open_ = await gateway_for(table, denied=denied_targets({"LLMOP_EXTERNAL_DENY_CIDRS": ""}, None))
    assert (await open_.post("/v1/chat/completions", json=CHAT)).status == 200


def test_the_deny_list_is_the_operators_and_a_bad_entry_is_named() -> None:
    denied = denied_targets({}, "https://10.96.0.1:6443")
    assert "169.254.0.0/16" in {str(n) for n in denied.networks}
    assert denied.services == (("10.96.0.1", 6443, "the cluster's API server"),)
    with pytest.raises(ValueError, match=r"metadata\.internal"):
        denied_targets({"LLMOP_EXTERNAL_DENY_CIDRS": "10.0.0.0/8,metadata.internal"}, None)


async def test_a_path_or_method_the_gateway_does_not_serve_is_an_openai_shaped_404(gateway_for) -> None:
    _, client = await gateway_for(RoutingTable())
    for method, path in (("POST", "/v1/responses"), ("GET", "/v1/chat/completions")):
        response = await client.request(method, path)
        assert response.status == 404
        error = (await response.json())["error"]
        assert error["code"] == "unknown_url" and "POST /v1/chat/completions" in error["message"]


TOOL_CHAT = {**CHAT, "tools": [{"type": "function", "function": {"name": "now", "parameters": {}}}]}


async def test_tools_on_a_model_whose_runtime_says_it_has_none_is_501(gateway_for, pods) -> None:
    pod = await pods("p0")
    _, client = await gateway_for(build_table([backend_of(pod)]))
    response = await client.post("/v1/chat/completions", json=TOOL_CHAT)
    assert response.status == 501
    error = (await response.json())["error"]
    assert error["code"] == "capability_not_supported" and "tool calls" in error["message"]
    assert pod.seen == []
    # Without `tools` the same model chats.
    assert (await client.post("/v1/chat/completions", json={**CHAT, "tools": []})).status == 200


async def test_tools_reach_a_model_with_tools_and_a_runtime_that_does_not_say(gateway_for, pods) -> None:
    with_tools, vllm = await pods("p0"), await pods("p1")
    capable = backend_of(with_tools, model="tools")
    capable["status"]["models"][0]["capabilities"].append("tools")
    unknown = backend_of(vllm, model="vllm")
    unknown["status"]["runtime"] = "vllm"
    _, client = await gateway_for(build_table([capable, unknown]))
    for model in ("tools", "vllm"):
        response = await client.post("/v1/chat/completions", json={**TOOL_CHAT, "model": model})
        assert response.status == 200, await response.text()


async def test_a_model_whose_backend_failed_is_503_at_once_with_a_longer_retry_after(gateway_for) -> None:
    failed = {
        "metadata": {"name": "broken", "namespace": "team-a"},
        "spec": {"runtime": "ollama", "models": [{"name": "qwen3:0.6b"}]},
        "status": {"phase": "Failed", "models": [{"name": "qwen3:0.6b"}]},
    }
    _, client = await gateway_for(build_table([failed]), hold=30)
    response = await client.post("/v1/chat/completions", json={**CHAT, "model": "qwen3:0.6b"})
    assert response.status == 503
    assert response.headers["Retry-After"] == "60"
    message = (await response.json())["error"]["message"]
    assert "none on its way" in message and "team-a/broken is Failed" in message


async def test_a_pod_closing_a_kept_alive_connection_as_a_request_arrives_still_answers_it(
    gateway_for, pods
) -> None:
    """llama-server and vLLM close idle connections; one closed just as the gateway reuses it must
    not turn into a 502 for a backend of one pod."""
    requests = 0

    async def closes_the_second(request: web.Request) -> web.StreamResponse:
        nonlocal requests
        requests += 1
        if requests == 2:
            assert request.transport is not None
            request.transport.close()  # as a runtime whose idle timer fires on this connection
        return web.json_response({"object": "chat.completion", "served_by": "only"})

    pod = await pods("only", closes_the_second)
    gateway, client = await gateway_for(build_table([backend_of(pod)]))
    answers = [await client.post("/v1/chat/completions", json=CHAT) for _ in range(3)]
    assert [answer.status for answer in answers] == [200, 200, 200]
    assert requests == 4, "the request on the closed connection was sent once more"
    assert gateway.balancer.in_flight == {}

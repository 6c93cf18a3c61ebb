"""The vLLM stand-in (hack/standins/vllm_server.py) behaves as the real vLLM: one set of assertions,
run against both.

The stand-in exists because a real vLLM takes a minute and 3.7 GB to start here: tests and
benchmarks that need many vLLM servers, or ones that start slowly on purpose, run it instead. What
they learn from it holds for vLLM only as far as it answers as vLLM does; each test below runs
against the real vLLM (hack/build-runtimes.sh's CPU build, serving a tiny Qwen3-layout repo) and
against the stand-in, with the same arguments and the same assertions. A test that passes for the
real server and fails for the stand-in is a stand-in to fix; one that fails for the real server
means vLLM changed, and the stand-in and llmop's vLLM adapter may need to follow.

Real servers are shared (conftest.py's `vllm_servers`): three starts for this file.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from standins.vllm_server import sanitize_message  # vLLM's own regexes, checked here against vLLM
from vllm_servers import (
    API_KEY,
    ENGINE_CORE,
    FLAVORS,
    MAX_MODEL_LEN,
    SECOND_NAME,
    SERVED_NAME,
    VLLMServer,
    VLLMServers,
    hack_version,
)

HI = [{"role": "user", "content": "hi"}]
ROUTE_MISSING = {"detail": "Not Found"}


@dataclass
class Flavor:
    """The servers of one flavor, "real" or "standin"."""

    name: str
    servers: VLLMServers
    binary: Path | None

    def get(self, config: str) -> VLLMServer:
        return self.servers.get(self.name, config, self.binary)

    def take(self, config: str) -> VLLMServer:
        return self.servers.take(self.name, config, self.binary)


@pytest.fixture(params=FLAVORS)
def vllm(request: pytest.FixtureRequest, vllm_servers: VLLMServers) -> Flavor:
    binary = request.getfixturevalue("vllm_binary") if request.param == "real" else None
    return Flavor(request.param, vllm_servers, binary)


def error_body(status: int, message: str, err_type: str, param: str | None) -> dict[str, object]:
    return {"error": {"message": message, "type": err_type, "param": param, "code": status}}


def not_found(model: str, aliases: list[str]) -> dict[str, object]:
    message = sanitize_message(f"The model `{model}` does not exist. Valid aliases: {', '.join(aliases)}.")
    return error_body(404, message, "NotFoundError", "model")


# (a), (b), (c), (f), (g): one served name, no API key.


async def test_the_port_refuses_connections_for_the_whole_load_then_health_is_200(vllm: Flavor) -> None:
    server = vllm.get("plain")
    *before, first = server.startup
    assert first == 200
    assert before, "polled from its start, it was seen before it listened"
    # No phase where /health answers 503 while the model loads: a closed port, then serving.
    assert set(before) == {"refused"}, Counter(before)


async def test_health_is_empty_and_version_is_the_release(vllm: Flavor) -> None:
    server = vllm.get("plain")
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        health = await client.get("/health")
        version = await client.get("/version")
    assert (health.status_code, health.content) == (200, b"")
    assert (version.status_code, version.json()) == (200, {"version": hack_version("VLLM_VERSION")})


async def test_models_is_one_model_card_per_served_name(vllm: Flavor) -> None:
    server = vllm.get("plain")
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        before = int(time.time())
        answer = await client.get("/v1/models")
        after = int(time.time())
    assert answer.status_code == 200
    body = answer.json()
    assert body["object"] == "list"
    (card,) = body["data"]
    (permission,) = card.pop("permission")
    assert before <= card.pop("created") <= after, "created is when the list was asked for"
    assert card == {
        "id": SERVED_NAME,
        "object": "model",
        "owned_by": "vllm",
        "root": server.model_path,
        "parent": None,
        "max_model_len": MAX_MODEL_LEN,
    }
    assert permission.pop("id").startswith("modelperm-")
    assert before <= permission.pop("created") <= after
    assert permission == {
        "object": "model_permission",
        "allow_create_engine": False,
        "allow_sampling": True,
        "allow_logprobs": True,
        "allow_search_indices": False,
        "allow_view": True,
        "allow_fine_tuning": False,
        "organization": "*",
        "group": None,
        "is_blocking": False,
    }


async def test_an_unknown_model_is_a_404_naming_the_aliases(vllm: Flavor) -> None:
    server = vllm.get("plain")
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        chat = await client.post("/v1/chat/completions", json={"model": "X", "messages": HI, "max_tokens": 1})
        completion = await client.post(
            "/v1/completions", json={"model": "X", "prompt": "hi", "max_tokens": 1}
        )
    for answer in (chat, completion):
        assert answer.status_code == 404
        assert answer.json() == not_found("X", [SERVED_NAME])
    assert answer.json()["error"]["message"] == f"The model `X` does not exist. Valid aliases: {SERVED_NAME}."


async def test_a_generating_model_has_completions_and_chat_but_no_embeddings(vllm: Flavor) -> None:
    server = vllm.get("plain")
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        completion = await client.post("/v1/completions", json={})
        chat = await client.post("/v1/chat/completions", json={})
        embeddings = await client.post("/v1/embeddings", json={})
        nowhere = await client.get("/v1/no-such-route")
        wrong_method = await client.get("/v1/completions")
    # An existing route refuses the empty body with a 400 (vLLM turns FastAPI's 422 into a 400).
    assert completion.status_code == 400
    assert completion.json() == error_body(
        400,
        "Either prompt or prompt_embeds must be provided and non-empty. (parameter=prompt)",
        "BadRequestError",
        "prompt",
    )
    assert chat.status_code == 400
    missing = (
        "{'type': 'missing', 'loc': 'body.messages', 'msg': 'Field required', 'input': '<dict of 0 items>'}"
    )
    assert chat.json() == error_body(400, f"1 validation error:\n  {missing}", "Bad Request", "body.messages")
    # A route that is not there is FastAPI's own 404.
    assert (embeddings.status_code, embeddings.json()) == (404, ROUTE_MISSING)
    assert (nowhere.status_code, nowhere.json()) == (404, ROUTE_MISSING)
    assert (wrong_method.status_code, wrong_method.json()) == (405, {"detail": "Method Not Allowed"})


# (c), (d): two served names and an API key.


async def test_two_served_names_share_the_root_and_answers_name_the_first(vllm: Flavor) -> None:
    server = vllm.get("keyed")
    async with httpx.AsyncClient(base_url=server.url, headers=server.headers, timeout=60) as client:
        models = (await client.get("/v1/models")).json()["data"]
        completion = await client.post(
            "/v1/completions", json={"model": SECOND_NAME, "prompt": "hi", "max_tokens": 1}
        )
        chat = await client.post(
            "/v1/chat/completions", json={"model": SECOND_NAME, "messages": HI, "max_tokens": 1}
        )
        by_path = await client.post(
            "/v1/completions", json={"model": server.model_path, "prompt": "hi", "max_tokens": 1}
        )
    assert [(card["id"], card["root"]) for card in models] == [
        (SERVED_NAME, server.model_path),
        (SECOND_NAME, server.model_path),
    ]
    assert (completion.status_code, completion.json()["model"]) == (200, SERVED_NAME)
    assert (chat.status_code, chat.json()["model"]) == (200, SERVED_NAME)
    # Named, the model is its names only: its path is no model.
    assert by_path.status_code == 404
    assert by_path.json() == not_found(server.model_path, [SERVED_NAME, SECOND_NAME])


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong", API_KEY, f"Basic {API_KEY}"],
    ids=["none", "wrong", "bare", "basic"],
)
async def test_the_api_key_guards_v1_but_not_health_version_or_metrics(
    vllm: Flavor, authorization: str | None
) -> None:
    server = vllm.get("keyed")
    headers = {"Authorization": authorization} if authorization else {}
    async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=30) as client:
        guarded = [
            await client.get("/v1/models"),
            await client.post("/v1/chat/completions", json={"messages": HI, "max_tokens": 1}),
            await client.post("/v1/embeddings", json={}),  # no such route: the key is asked first
        ]
        public = [await client.get(path) for path in ("/health", "/version", "/metrics")]
    for answer in guarded:
        assert (answer.status_code, answer.json()) == (401, {"error": "Unauthorized"}), answer.request.url
    for answer in public:
        assert answer.status_code == 200, answer.request.url


# (f) with no served name, then (e): the server ends.


async def test_an_unnamed_model_is_its_path_and_errors_write_it_as_path(vllm: Flavor) -> None:
    server = vllm.get("unnamed")
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        (card,) = (await client.get("/v1/models")).json()["data"]
        completion = await client.post("/v1/completions", json={"prompt": "hi", "max_tokens": 1})
        unknown = await client.post("/v1/completions", json={"model": "X", "prompt": "hi", "max_tokens": 1})
    assert card["id"] == card["root"] == server.model_path
    assert completion.json()["model"] == server.model_path
    assert unknown.status_code == 404
    assert unknown.json() == not_found("X", [server.model_path])
    if server.model_path.startswith("/tmp/"):  # pytest's default base; vLLM's sanitizer eats the "."
        assert unknown.json()["error"]["message"] == "The model `X` does not exist. Valid aliases: <path>"


async def test_killing_the_engine_core_fails_health_then_the_server_exits(vllm: Flavor) -> None:
    server = vllm.take("unnamed")
    killed_at = await asyncio.to_thread(server.kill_engine_core)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        while (health := await client.get("/health")).status_code == 200:
            assert time.monotonic() - killed_at < 3, f"/health still 200 3 s after {ENGINE_CORE} died"
            await asyncio.sleep(0.02)
        unhealthy_after = time.monotonic() - killed_at
        models = await client.get("/v1/models")
        chat = await client.post("/v1/chat/completions", json={"messages": HI, "max_tokens": 1})
    assert (health.status_code, health.content) == (503, b"")
    assert unhealthy_after < 1.0
    assert models.status_code == 200, "the model list does not need the engine"
    assert chat.status_code == 500
    assert chat.json() == error_body(
        500,
        "EngineCore encountered an issue. See stack trace (above) for the root cause.",
        "InternalServerError",
        None,
    )
    # The request that met the dead engine shuts the server down; the exit is a clean one.
    assert await asyncio.to_thread(server.wait_exit, 10) == 0, server.process.log_tail()
    async with httpx.AsyncClient(timeout=5) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(server.url + "/health")

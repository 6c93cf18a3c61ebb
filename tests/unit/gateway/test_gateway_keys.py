"""The gateway's own keys: which Secrets give one, what each may reach, and what a client sees
without one, with an unknown one, or with one that may not reach the model's backend."""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from llmop.gateway.keys import Keyring, build_keyring, read_key_secret
from llmop.gateway.keywatch import KeyWatch
from llmop.gateway.server import Gateway, GatewaySettings
from llmop.gateway.table import build_table

ADMIN_NS = "llmop-system"
TEAM_A_KEY = "team-a-key-0123456789"
TEAM_B_KEY = "team-b-key-0123456789"
ADMIN_KEY = "admin-key-0123456789ab"


def key_secret(namespace: str, name: str, **data: str) -> dict[str, Any]:
    return {
        "metadata": {"namespace": namespace, "name": name},
        "data": {item: base64.b64encode(value.encode()).decode() for item, value in data.items()},
    }


def test_a_tenants_key_reaches_its_own_namespace_by_default() -> None:
    key = read_key_secret(key_secret("team-a", "k", key=TEAM_A_KEY), ADMIN_NS)
    assert key.may_reach("team-a", "chat") and not key.may_reach("team-b", "chat")
    assert key.describe_reach() == "namespaces team-a"


def test_a_tenants_key_never_reaches_another_namespace_whatever_its_secret_says() -> None:
    secret = key_secret("team-a", "k", key=TEAM_A_KEY, namespaces="team-a, team-b *", backends="team-c/x")
    key = read_key_secret(secret, ADMIN_NS)
    assert not key.may_reach("team-b", "chat") and not key.may_reach("team-c", "x")
    assert not key.everything
    assert set(key.dropped) == {"team-b", "*", "team-c/x"}


def test_a_key_in_the_gateways_namespace_may_grant_namespaces_and_single_backends() -> None:
    secret = key_secret(ADMIN_NS, "k", key=ADMIN_KEY, namespaces="team-b", backends="team-c/embed")
    key = read_key_secret(secret, ADMIN_NS)
    assert key.may_reach("team-b", "any") and key.may_reach("team-c", "embed")
    assert not key.may_reach("team-c", "chat") and not key.may_reach(ADMIN_NS, "x")
    everything = read_key_secret(key_secret(ADMIN_NS, "all", key=ADMIN_KEY, namespaces="*"), ADMIN_NS)
    assert everything.may_reach("team-z", "x")


def test_backends_named_without_a_namespace_are_the_secrets_own() -> None:
    key = read_key_secret(key_secret("team-a", "k", key=TEAM_A_KEY, backends="chat"), ADMIN_NS)
    assert key.may_reach("team-a", "chat") and not key.may_reach("team-a", "embed")


@pytest.mark.parametrize(
    ("data", "wanted"),
    [
        ({}, "no data `key`"),
        ({"key": "short"}, "16 to 4096"),
        ({"key": "has a space in the middle"}, "without spaces"),
    ],
)
def test_an_unusable_key_secret_is_named_and_its_value_never_shown(data: dict[str, str], wanted: str) -> None:
    keyring = build_keyring([key_secret("team-a", "bad", **data)], ADMIN_NS)
    (problem,) = keyring.problems
    assert "team-a/bad" in problem and wanted in problem
    assert all(value not in problem for value in data.values())
    assert keyring.keys == ()


def test_a_key_is_found_only_whole() -> None:
    keyring = build_keyring([key_secret("team-a", "k", key=TEAM_A_KEY)], ADMIN_NS)
    assert keyring.find(TEAM_A_KEY) is not None
    assert keyring.find(TEAM_A_KEY[:-1]) is None and keyring.find(TEAM_A_KEY + "x") is None
    assert TEAM_A_KEY not in repr(keyring)


class Pod:
    def __init__(self) -> None:
        self.seen: list[dict[str, str]] = []

    async def answer(self, request: web.Request) -> web.Response:
        self.seen.append(dict(request.headers))
        return web.json_response({"object": "chat.completion"})


def backend(namespace: str, name: str, port: int, model: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"runtime": "llamacpp", "port": port},
        "status": {
            "phase": "Ready",
            "runtime": "llamacpp",
            "pods": [
                {"name": f"{name}-0", "ip": "127.0.0.1", "ready": True, "phase": "Serving", "models": [model]}
            ],
            "models": [{"name": model, "capabilities": ["chat", "completion"]}],
        },
    }


@pytest.fixture
async def keyed_gateway() -> AsyncIterator[tuple[Gateway, TestClient, Pod]]:
    pod = Pod()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", pod.answer)
    runtime = TestServer(app, host="127.0.0.1")
    await runtime.start_server()
    assert runtime.port is not None
    table = build_table(
        [
            backend("team-a", "chat", runtime.port, "a-model"),
            backend("team-b", "chat", runtime.port, "b-model"),
        ]
    )
    gateway = Gateway(GatewaySettings(require_keys=True), table)
    client = TestClient(TestServer(gateway.app()))
    await client.start_server()
    yield gateway, client, pod
    await client.close()
    await runtime.close()


async def give_keys(gateway: Gateway) -> None:
    secrets = [key_secret("team-a", "a", key=TEAM_A_KEY), key_secret("team-b", "b", key=TEAM_B_KEY)]
    await gateway.set_keyring(build_keyring(secrets, ADMIN_NS))


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_not_ready_until_the_keys_were_listed(keyed_gateway) -> None:
    gateway, client, _ = keyed_gateway
    assert (await client.get("/readyz")).status == 503
    await give_keys(gateway)
    assert (await client.get("/readyz")).status == 200


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Basic eDp5"}, bearer("not-a-key-0123456789")])
async def test_without_a_known_key_every_request_is_401_in_openais_shape(keyed_gateway, headers) -> None:
    gateway, client, pod = keyed_gateway
    await give_keys(gateway)
    chat = {"model": "a-model", "messages": []}
    for response in (
        await client.post("/v1/chat/completions", json=chat, headers=headers),
        await client.get("/v1/models", headers=headers),
    ):
        assert response.status == 401
        error = (await response.json())["error"]
        assert error["code"] == "invalid_api_key" and "llmop.dev/gateway-key" in error["message"]
    assert pod.seen == []


async def test_a_key_reaches_its_namespace_and_never_passes_to_the_runtime(keyed_gateway) -> None:
    gateway, client, pod = keyed_gateway
    await give_keys(gateway)
    response = await client.post(
        "/v1/chat/completions", json={"model": "a-model", "messages": []}, headers=bearer(TEAM_A_KEY)
    )
    assert response.status == 200
    assert "Authorization" not in pod.seen[0]


async def test_a_tenants_key_gets_403_naming_what_it_may_reach(keyed_gateway) -> None:
    gateway, client, pod = keyed_gateway
    await give_keys(gateway)
    response = await client.post(
        "/v1/chat/completions", json={"model": "b-model", "messages": []}, headers=bearer(TEAM_A_KEY)
    )
    assert response.status == 403
    error = (await response.json())["error"]
    assert (error["code"], error["type"]) == ("model_not_permitted", "permission_error")
    assert "team-a/a" in error["message"] and "namespaces team-a" in error["message"]
    assert "team-b" not in error["message"]
    assert pod.seen == []


async def test_models_and_404s_list_only_what_the_key_may_reach(keyed_gateway) -> None:
    gateway, client, _ = keyed_gateway
    await give_keys(gateway)
    models = await (await client.get("/v1/models", headers=bearer(TEAM_A_KEY))).json()
    assert [model["id"] for model in models["data"]] == ["a-model"]
    missing = await client.post(
        "/v1/chat/completions", json={"model": "nope", "messages": []}, headers=bearer(TEAM_A_KEY)
    )
    assert missing.status == 404
    message = (await missing.json())["error"]["message"]
    assert "a-model" in message and "b-model" not in message


class FakeSecrets:
    """The API server's answers to the key watch: one list, then a watch that ends."""

    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = items
        self.selectors: list[str | None] = []

    async def list_versioned(self, resource: Any, namespace: str, label_selector: str | None = None) -> Any:
        self.selectors.append(label_selector)
        return [item for item in self.items if item["metadata"]["namespace"] == namespace], "1"


async def test_the_watch_reads_labelled_secrets_and_names_what_it_drops(caplog) -> None:
    secrets = FakeSecrets(
        [
            key_secret("team-a", "a", key=TEAM_A_KEY, namespaces="team-b"),
            key_secret("team-b", "bad", key="short"),
        ]
    )
    published: list[Keyring] = []

    async def publish(keyring: Keyring) -> None:
        published.append(keyring)

    watch = KeyWatch(secrets, ["team-a", "team-b"], ADMIN_NS, publish)  # type: ignore[arg-type]
    caplog.set_level(logging.WARNING)
    for namespace in watch.namespaces:
        await watch.relist(namespace)
    assert secrets.selectors == ["llmop.dev/use=true,llmop.dev/gateway-key=true"] * 3
    (keyring,) = published
    assert keyring.find(TEAM_A_KEY) is not None
    assert "team-b/bad" in caplog.text and "team-a/a names team-b" in caplog.text
    assert TEAM_A_KEY not in caplog.text

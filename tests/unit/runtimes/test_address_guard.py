"""The deny list for tenants' URLs: checked on the address actually connected to, before a byte
is sent, with a message that names the address and the rule."""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httpcore
import httpx
import pytest

from llmop.config import OperatorConfig
from llmop.runtimes import ProbeState, TargetRefused, connect
from llmop.runtimes.address_guard import (
    DEFAULT_DENIED_CIDRS,
    DeniedTargets,
    GuardedNetworkBackend,
    guarded_client,
    parse_cidrs,
)

LIMITS = httpx.Limits(max_connections=10)
MODELS = {"GET /v1/models": {"object": "list", "data": [{"id": "tiny", "object": "model"}]}}


@pytest.fixture
async def client_for() -> AsyncIterator:
    clients: list[httpx.AsyncClient] = []

    def make(denied: DeniedTargets) -> httpx.AsyncClient:
        clients.append(guarded_client(denied, LIMITS))
        return clients[-1]

    yield make
    for client in clients:
        await client.aclose()


def port_of(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port


async def test_a_loopback_server_is_refused_by_default_and_never_asked(fake_runtime, client_for) -> None:
    server = await fake_runtime(MODELS)
    client = client_for(DeniedTargets(networks=parse_cidrs(DEFAULT_DENIED_CIDRS)))
    async with connect("openai", server.url, client=client) as runtime:
        probe = await runtime.probe()
    assert probe.state is ProbeState.DENIED
    assert f"llmop refuses to connect to 127.0.0.1:{port_of(server.url)}" in probe.reason
    assert (
        "127.0.0.0/8 in the operator's deny list (LLMOP_EXTERNAL_DENY_CIDRS, Helm value externalDenyCIDRs)"
        in probe.reason
    )
    assert server.requests == []


async def test_a_name_is_checked_on_the_addresses_it_resolves_to(fake_runtime, client_for) -> None:
    server = await fake_runtime(MODELS)
    client = client_for(DeniedTargets(networks=parse_cidrs(DEFAULT_DENIED_CIDRS)))
    async with connect("openai", f"http://localhost:{port_of(server.url)}", client=client) as runtime:
        with pytest.raises(TargetRefused, match=r"what localhost resolves to"):
            await runtime.list_models()
    assert server.requests == []


async def test_an_ipv4_mapped_ipv6_literal_is_the_ipv4_address(client_for) -> None:
    client = client_for(DeniedTargets(networks=parse_cidrs(["169.254.0.0/16"])))
    async with connect("openai", "http://[::ffff:169.254.169.254]:80", client=client) as runtime:
        probe = await runtime.probe()
    assert probe.state is ProbeState.DENIED
    assert "169.254.169.254" in probe.reason


async def test_a_loopback_server_is_reached_when_loopback_is_not_in_the_list(
    fake_runtime, client_for
) -> None:
    server = await fake_runtime(MODELS)
    client = client_for(DeniedTargets(networks=parse_cidrs(["169.254.0.0/16", "fe80::/10"])))
    async with connect("openai", server.url, client=client) as runtime:
        assert (await runtime.probe()).serving
        assert [m.name for m in await runtime.list_models()] == ["tiny"]


async def test_the_api_servers_address_is_refused_whatever_the_list_says(fake_runtime, client_for) -> None:
    api_server = await fake_runtime(MODELS)
    other = await fake_runtime(MODELS)
    api = ("127.0.0.1", port_of(api_server.url), "the cluster's API server")
    client = client_for(DeniedTargets(networks=(), services=(api,)))
    async with connect("openai", api_server.url, client=client) as runtime:
        probe = await runtime.probe()
    assert probe.state is ProbeState.DENIED
    assert f"the cluster's API server (127.0.0.1:{port_of(api_server.url)})" in probe.reason
    assert api_server.requests == []
    # Another port on the same address is another server.
    async with connect("openai", other.url, client=client) as runtime:
        assert (await runtime.probe()).serving


async def test_the_socket_connects_to_the_address_that_was_checked() -> None:
    """Resolved once, connected by address: a name that answers differently the second time (DNS
    rebinding) never gets a second lookup."""
    asked: list[str] = []

    class Recording(httpcore.AsyncNetworkBackend):
        async def connect_tcp(self, host: str, port: int, *args: object, **kwargs: object):  # type: ignore[override]
            asked.append(host)
            raise httpcore.ConnectError("recorded")

        async def sleep(self, seconds: float) -> None:
            return None

    backend = GuardedNetworkBackend(DeniedTargets(networks=parse_cidrs(["::1/128"])), Recording())
    with pytest.raises(httpcore.ConnectError):
        await backend.connect_tcp("localhost", 8000)
    assert asked and all(host == "127.0.0.1" for host in asked)


def test_the_setting_defaults_to_link_local_and_loopback_and_can_be_replaced() -> None:
    default = OperatorConfig.from_env({}).external_deny_cidrs
    for cidr in ("169.254.0.0/16", "fe80::/10", "127.0.0.0/8", "::1/128"):
        assert cidr in default
    chosen = OperatorConfig.from_env({"LLMOP_EXTERNAL_DENY_CIDRS": "169.254.0.0/16, fe80::/10,10.1.2.3"})
    assert chosen.external_deny_cidrs == ["169.254.0.0/16", "fe80::/10", "10.1.2.3/32"]
    assert OperatorConfig.from_env({"LLMOP_EXTERNAL_DENY_CIDRS": ""}).external_deny_cidrs == []


def test_a_bad_entry_stops_the_operator_with_its_name() -> None:
    with pytest.raises(ValueError, match=r"LLMOP_EXTERNAL_DENY_CIDRS.*'10.0.0.0/33'"):
        OperatorConfig.from_env({"LLMOP_EXTERNAL_DENY_CIDRS": "169.254.0.0/16,10.0.0.0/33"})

"""Connections to servers a tenant names (`spec.external.url`), only to addresses the operator allows.

A tenant may name any host; llmop must not become their way into what the cluster keeps from
them (the cloud metadata endpoint, the node's own services, the API server). The check happens
where the connection is made: the host is resolved here, every address is checked, and the
socket connects to the address that passed, so a name that resolves differently the second time
(DNS rebinding) cannot slip past it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, urlsplit

import httpcore
import httpx

from llmop.runtimes.errors import TargetRefused

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Link-local (cloud metadata endpoints live at 169.254.169.254, fd00:ec2::254 aside), loopback
#: (the operator's own pod, a node's local services) and "this host" (0.0.0.0 reaches loopback).
DEFAULT_DENIED_CIDRS = (
    "169.254.0.0/16",
    "fe80::/10",
    "127.0.0.0/8",
    "::1/128",
    "0.0.0.0/8",
    "::/128",
    # Metadata and host endpoints outside link-local: Alibaba Cloud, Azure's wireserver, AWS IPv6.
    "100.100.100.200/32",
    "168.63.129.16/32",
    "fd00:ec2::254/128",
)
#: Where the deny list comes from, for messages.
SETTING = "LLMOP_EXTERNAL_DENY_CIDRS, Helm value externalDenyCIDRs"


def parse_cidrs(cidrs: Iterable[str]) -> tuple[IPNetwork, ...]:
    """`169.254.0.0/16, ::1` -> networks; a bad entry raises ValueError naming it."""
    networks = []
    for entry in cidrs:
        text = entry.strip()
        if not text:
            continue
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError as error:
            raise ValueError(f"{SETTING}: {text!r} is not an address or CIDR ({error})") from None
    return tuple(networks)


@dataclass(frozen=True)
class DeniedTargets:
    """Where connections to tenants' servers must not go."""

    networks: tuple[IPNetwork, ...] = ()
    #: (host, port) of services denied on that port only: the API server, whose address may be
    #: a loopback one that the deny list otherwise allows (a local test cluster).
    services: tuple[tuple[str, int, str], ...] = ()

    async def rule_for(self, address: IPAddress, port: int) -> str | None:
        """Why connecting to `address:port` is refused, or None."""
        checked = _unmapped(address)
        for network in self.networks:
            if checked.version == network.version and checked in network:
                return f"{network} in the operator's deny list ({SETTING})"
        for host, service_port, what in self.services:
            if port == service_port and checked in await resolve(host, port):
                return f"{what} ({host}:{service_port}), which llmop never lets a tenant's URL reach"
        return None


def deny_list(cidrs: Iterable[str], api_server: str | None) -> DeniedTargets:
    """The deny list `cidrs`, and always the API server at `api_server` (a URL) on its port; a bad
    entry raises ValueError naming it. The operator and the gateway build theirs with it."""
    services: tuple[tuple[str, int, str], ...] = ()
    if api_server:
        url = urlsplit(api_server)
        services = ((url.hostname or "", url_port(url), "the cluster's API server"),)
    return DeniedTargets(networks=parse_cidrs(cidrs), services=services)


def configured_cidrs(setting: str | None) -> list[str]:
    """$LLMOP_EXTERNAL_DENY_CIDRS: unset, the defaults; set (even empty), exactly the listed CIDRs.
    A bad entry stops the operator or the gateway at start with its name rather than leaving a hole."""
    if setting is None:
        return list(DEFAULT_DENIED_CIDRS)
    return [str(network) for network in parse_cidrs(setting.split(","))]


def url_port(url: SplitResult) -> int:
    """The port a URL connects to: its own, else its scheme's."""
    return url.port or (443 if url.scheme == "https" else 80)


def _unmapped(address: IPAddress) -> IPAddress:
    """`::ffff:127.0.0.1` is 127.0.0.1 on the wire."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


async def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to, in the resolver's order (an address literal is itself)."""
    try:
        return [_unmapped(ipaddress.ip_address(host.strip("[]").split("%")[0]))]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        found = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as error:
        raise httpcore.ConnectError(f"cannot resolve {host}: {error}") from error
    addresses: list[IPAddress] = []
    for *_, sockaddr in found:
        address = _unmapped(ipaddress.ip_address(str(sockaddr[0]).split("%")[0]))
        if address not in addresses:
            addresses.append(address)
    return addresses


class GuardedNetworkBackend(httpcore.AsyncNetworkBackend):
    """Resolves, checks and connects to the checked address; refuses when no address is allowed."""

    def __init__(self, denied: DeniedTargets, inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self.denied = denied
        self.inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        refused: list[tuple[IPAddress, str]] = []
        failure: Exception | None = None
        for address in await resolve(host, port):
            rule = await self.denied.rule_for(address, port)
            if rule is not None:
                refused.append((address, rule))
                continue
            try:
                return await self.inner.connect_tcp(
                    str(address), port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as error:
                failure = error
        if failure is not None or not refused:
            raise failure or httpcore.ConnectError(f"{host} resolves to no address")
        address, rule = refused[0]
        shown = str(address) if host.strip("[]") == str(address) else f"{address} (what {host} resolves to)"
        raise TargetRefused(
            f"llmop refuses to connect to {shown}:{port}: the address is in {rule}; "
            "spec.external.url must name a server outside it. Nothing was sent.",
            address=str(address),
        )

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("a tenant's server is never reached through a Unix socket")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


def guarded_client(denied: DeniedTargets, limits: httpx.Limits) -> httpx.AsyncClient:
    """A pooled client for tenants' servers: every connection passes the deny list; no proxy from
    the environment (a proxy would connect on our behalf, unchecked), no redirects."""
    transport = httpx.AsyncHTTPTransport(limits=limits)
    # httpx has no parameter for the network backend: the pool is rebuilt with ours, as httpx
    # builds it (same TLS context and limits).
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=httpx.create_ssl_context(),
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=GuardedNetworkBackend(denied),
    )
    return httpx.AsyncClient(transport=transport, trust_env=False, follow_redirects=False)

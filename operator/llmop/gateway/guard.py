"""An external backend's server is a tenant's choice: the gateway connects to it only where the
operator would (the operator's deny list, and never the API server).

The operator checked the address when it probed; a name can resolve elsewhere later (DNS
rebinding), so the gateway checks again where it connects: names through its resolver, whose
answers are the addresses the socket connects to, and address literals (which aiohttp does not
resolve) before it sends.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import httpcore
from aiohttp.abc import AbstractResolver, ResolveResult

from llmop.runtimes.address_guard import DeniedTargets, configured_cidrs, deny_list, resolve, url_port


def denied_targets(environ: Mapping[str, str], api_server: str | None) -> DeniedTargets:
    """The operator's deny list ($LLMOP_EXTERNAL_DENY_CIDRS, else its defaults), and the API
    server; a bad entry raises ValueError naming it."""
    return deny_list(configured_cidrs(environ.get("LLMOP_EXTERNAL_DENY_CIDRS")), api_server)


async def literal_refusal(denied: DeniedTargets, base_url: str) -> str | None:
    """Why the address literal in `base_url` is refused; None for an allowed one, or a name."""
    url = urlsplit(base_url)
    try:
        address = ipaddress.ip_address((url.hostname or "").split("%")[0])
    except ValueError:
        return None  # a name: the resolver checks what it resolves to
    return await denied.rule_for(address, url_port(url))


class GuardedResolver(AbstractResolver):
    """Resolves names to the addresses the deny list allows; none allowed is a connection error."""

    def __init__(self, denied: DeniedTargets) -> None:
        self.denied = denied

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> list[ResolveResult]:
        try:
            addresses = await resolve(host, port)
        except httpcore.ConnectError as error:
            raise OSError(str(error)) from None
        allowed: list[ResolveResult] = []
        refused: list[str] = []
        for address in addresses:
            rule = await self.denied.rule_for(address, port)
            if rule is not None:
                refused.append(f"{address}: {rule}")
                continue
            inet = socket.AF_INET6 if address.version == 6 else socket.AF_INET
            allowed.append(_result(host, str(address), port, inet))
        if not allowed:
            raise OSError(f"llmop refuses to connect to {host}: " + "; ".join(refused or ["no address"]))
        return allowed

    async def close(self) -> None:
        return None


def _result(host: str, address: str, port: int, family: int) -> Any:
    return {
        "hostname": host,
        "host": address,
        "port": port,
        "family": family,
        "proto": 0,
        "flags": socket.AI_NUMERICHOST,
    }

"""Keep the gateway's table current: list and watch the LLMBackends of each namespace the gateway
serves, and read each backend's runtime API key (by the operator's rule: only from a Secret that
opts in)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from llmop.api_keys import SecretNotUsable, read_api_key
from llmop.gateway.table import BackendKey, Offer, RoutingTable, assemble, backend_key, read_backend
from llmop.k8s.client import LLMBACKENDS, KubeAPIError, KubeClient
from llmop.models.backend import LLMBackendSpec

logger = logging.getLogger(__name__)

#: After a failed list or watch, wait this long before listing again.
RETRY_SECONDS = 5.0
#: The server ends each watch after about this long; listing again then re-reads the API keys.
WATCH_SECONDS = 120


class BackendWatch:
    def __init__(
        self,
        kube: KubeClient,
        namespaces: list[str],
        publish: Callable[[RoutingTable], Awaitable[None]],
    ) -> None:
        self.kube = kube
        self.namespaces = namespaces
        self.publish = publish
        self.backends: dict[BackendKey, dict[str, Any]] = {}
        self.api_keys: dict[BackendKey, str | None] = {}
        self.offers: dict[BackendKey, Offer] = {}
        self.listed: set[str] = set()

    async def run(self) -> None:
        await asyncio.gather(*(self.follow(namespace) for namespace in self.namespaces))

    async def follow(self, namespace: str) -> None:
        """List, then watch until the watch ends; again, for as long as the gateway runs."""
        while True:
            try:
                version = await self.relist(namespace)
                await self.watch(namespace, version)
            except (KubeAPIError, ValueError) as error:
                logger.warning("gateway: reading LLMBackends in %s failed: %s", namespace, error)
                await asyncio.sleep(RETRY_SECONDS)

    async def relist(self, namespace: str) -> str:
        items, version = await self.kube.list_versioned(LLMBACKENDS, namespace)
        for key in [key for key in self.backends if key[0] == namespace]:
            self.forget(key)
        for body in items:
            await self.remember(body)
        self.listed.add(namespace)
        await self.republish()
        return version

    async def watch(self, namespace: str, version: str) -> None:
        async for event in self.kube.watch(LLMBACKENDS, namespace, version, WATCH_SECONDS):
            kind, body = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                return  # e.g. 410 Gone: the version is too old; list again
            if kind == "DELETED":
                self.forget(backend_key(body))
            elif kind in ("ADDED", "MODIFIED"):
                await self.remember(body)
            else:
                continue  # BOOKMARK
            await self.republish()

    async def remember(self, body: dict[str, Any]) -> None:
        """Keep the backend; read its key when it is new or names another Secret (status changes
        often; the key is read again at each list, every few minutes)."""
        key = backend_key(body)
        before = self.backends.get(key)
        self.backends[key] = body
        if before is None or _key_ref(before) != _key_ref(body):
            self.api_keys[key] = await self.api_key(key, body)
        self.offers[key] = read_backend(body, self.api_keys[key])

    def forget(self, key: BackendKey) -> None:
        self.backends.pop(key, None)
        self.api_keys.pop(key, None)
        self.offers.pop(key, None)

    async def api_key(self, key: BackendKey, body: dict[str, Any]) -> str | None:
        """The runtime's key; without a usable one, requests go without (the operator's status
        already says what is wrong with the Secret)."""
        try:
            spec = LLMBackendSpec.model_validate(body.get("spec") or {})
            return await read_api_key(self.kube, key[0], spec)
        except SecretNotUsable as problem:
            logger.warning("gateway: no API key for %s/%s: %s", *key, problem.message)
        except ValueError:
            pass  # an unreadable spec: the table leaves the backend out
        return None

    async def republish(self) -> None:
        if self.listed >= set(self.namespaces):
            await self.publish(assemble(self.offers))


def _key_ref(body: dict[str, Any]) -> Any:
    return (body.get("spec") or {}).get("apiKeySecretRef")

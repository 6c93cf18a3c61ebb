"""Keep the gateway's table current: list and watch the LLMBackends of each namespace the gateway
serves, and read each backend's runtime API key (by the operator's rule: only from a Secret that
opts in)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from llmop.api_keys import SecretNotUsable, read_api_key
from llmop.gateway.follow import NamespaceFollower
from llmop.gateway.table import BackendKey, Offer, RoutingTable, assemble, backend_key, read_backend
from llmop.k8s.client import LLMBACKENDS, KubeClient
from llmop.models.backend import LLMBackendSpec

logger = logging.getLogger(__name__)


class BackendWatch(NamespaceFollower):
    resource = LLMBACKENDS
    #: Listing again re-reads the API keys.
    watch_seconds = 120
    what = "LLMBackends"

    def __init__(
        self,
        kube: KubeClient,
        namespaces: list[str],
        publish: Callable[[RoutingTable], Awaitable[None]],
    ) -> None:
        super().__init__(kube, namespaces)
        self.publish = publish
        self.backends: dict[BackendKey, dict[str, Any]] = {}
        self.api_keys: dict[BackendKey, str | None] = {}
        self.offers: dict[BackendKey, Offer] = {}

    async def replace(self, namespace: str, items: list[dict[str, Any]]) -> None:
        for key in [key for key in self.backends if key[0] == namespace]:
            self.forget(key)
        for body in items:
            await self.remember(body)

    async def changed(self, namespace: str, body: dict[str, Any]) -> None:
        await self.remember(body)

    def removed(self, namespace: str, body: dict[str, Any]) -> None:
        self.forget(backend_key(body))

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
        if self.synced:
            await self.publish(assemble(self.offers))


def _key_ref(body: dict[str, Any]) -> Any:
    return (body.get("spec") or {}).get("apiKeySecretRef")

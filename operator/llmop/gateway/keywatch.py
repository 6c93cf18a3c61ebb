"""Keep the gateway's keys current: list and watch the key Secrets (labelled
`llmop.dev/use=true` and `llmop.dev/gateway-key=true`) of the namespaces it serves and its own."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from llmop.gateway.keys import KEY_SELECTOR, Keyring, build_keyring
from llmop.k8s.client import SECRETS, KubeAPIError, KubeClient

logger = logging.getLogger(__name__)

RETRY_SECONDS = 5.0
WATCH_SECONDS = 300


class KeyWatch:
    def __init__(
        self,
        kube: KubeClient,
        namespaces: list[str],
        own_namespace: str | None,
        publish: Callable[[Keyring], Awaitable[None]],
    ) -> None:
        self.kube = kube
        self.namespaces = sorted(set(namespaces) | ({own_namespace} if own_namespace else set()))
        self.own_namespace = own_namespace
        self.publish = publish
        self.secrets: dict[tuple[str, str], dict[str, Any]] = {}
        self.listed: set[str] = set()
        self.reported: set[str] = set()

    async def run(self) -> None:
        await asyncio.gather(*(self.follow(namespace) for namespace in self.namespaces))

    async def follow(self, namespace: str) -> None:
        while True:
            try:
                version = await self.relist(namespace)
                await self.watch(namespace, version)
            except (KubeAPIError, ValueError) as error:
                logger.warning("gateway: reading key Secrets in %s failed: %s", namespace, error)
                await asyncio.sleep(RETRY_SECONDS)

    async def relist(self, namespace: str) -> str:
        items, version = await self.kube.list_versioned(SECRETS, namespace, KEY_SELECTOR)
        for key in [key for key in self.secrets if key[0] == namespace]:
            del self.secrets[key]
        for body in items:
            self.secrets[_name(body, namespace)] = body
        self.listed.add(namespace)
        await self.republish()
        return version

    async def watch(self, namespace: str, version: str) -> None:
        events = self.kube.watch(SECRETS, namespace, version, WATCH_SECONDS, KEY_SELECTOR)
        async for event in events:
            kind, body = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                return
            if kind == "DELETED":
                self.secrets.pop(_name(body, namespace), None)
            elif kind in ("ADDED", "MODIFIED"):
                self.secrets[_name(body, namespace)] = body
            else:
                continue
            await self.republish()

    async def republish(self) -> None:
        if not self.listed >= set(self.namespaces):
            return
        keyring = build_keyring(self.secrets.values(), self.own_namespace)
        self.report(keyring)
        await self.publish(keyring)

    def report(self, keyring: Keyring) -> None:
        """Say once what is wrong with a key Secret: by its name, never its value."""
        said = set(keyring.problems)
        for key in keyring.keys:
            if key.dropped:
                said.add(
                    f"Secret {key.source} names {', '.join(key.dropped)}, outside its namespace: only "
                    f"keys in the gateway's namespace ({self.own_namespace}) may reach other namespaces"
                )
        for problem in sorted(said - self.reported):
            logger.warning("gateway: key not used as written: %s", problem)
        self.reported = said


def _name(body: dict[str, Any], namespace: str) -> tuple[str, str]:
    metadata = body.get("metadata") or {}
    return str(metadata.get("namespace") or namespace), str(metadata.get("name", ""))

"""What the gateway keeps current, one way for all of it: list a kind of object in each namespace
it serves, then watch from the list's version until the watch ends; list again, and again after a
failure, for as long as the gateway runs. Nothing is published until every namespace was listed."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from llmop.k8s.client import KubeAPIError, KubeClient, Resource

logger = logging.getLogger(__name__)

#: After a failed list or watch, wait this long before listing again.
RETRY_SECONDS = 5.0


class NamespaceFollower:
    """Subclasses say what to follow and what each object means to them."""

    resource: Resource
    #: Only objects with these labels (a label selector); None: all.
    selector: str | None = None
    #: The server ends each watch after about this long, and the objects are listed again.
    watch_seconds = 300
    #: For the log: what could not be read.
    what = "objects"

    def __init__(self, kube: KubeClient, namespaces: list[str]) -> None:
        self.kube = kube
        self.namespaces = namespaces
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
                logger.warning("gateway: reading %s in %s failed: %s", self.what, namespace, error)
                await asyncio.sleep(RETRY_SECONDS)

    async def relist(self, namespace: str) -> str:
        items, version = await self.kube.list_versioned(self.resource, namespace, self.selector)
        await self.replace(namespace, items)
        self.listed.add(namespace)
        await self.republish()
        return version

    async def watch(self, namespace: str, version: str) -> None:
        events = self.kube.watch(self.resource, namespace, version, self.watch_seconds, self.selector)
        async for event in events:
            kind, body = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                return  # e.g. 410 Gone: the version is too old; list again
            if kind == "DELETED":
                self.removed(namespace, body)
            elif kind in ("ADDED", "MODIFIED"):
                await self.changed(namespace, body)
            else:
                continue  # BOOKMARK
            await self.republish()

    @property
    def synced(self) -> bool:
        return self.listed >= set(self.namespaces)

    async def replace(self, namespace: str, items: list[dict[str, Any]]) -> None:
        """What a list found in `namespace` replaces all that was known there."""
        raise NotImplementedError

    async def changed(self, namespace: str, body: dict[str, Any]) -> None:
        raise NotImplementedError

    def removed(self, namespace: str, body: dict[str, Any]) -> None:
        raise NotImplementedError

    async def republish(self) -> None:
        raise NotImplementedError

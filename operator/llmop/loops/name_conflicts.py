"""Before llmop writes a backend's objects: is each name free, or already this backend's?

The rule is llmop.manifests.ownership.name_conflict; this reads the objects it judges. One GET per
object, on the ensure path only (create, update, resume and their retries), never per probe.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from llmop.k8s.client import KubeClient, Resource
from llmop.manifests.ownership import NameTaken, name_conflict


class NameConflict(Exception):
    """An object the backend would write exists and is not the backend's; the message says which
    and what to do."""

    def __init__(self, taken: NameTaken) -> None:
        super().__init__(taken.message)
        self.message = taken.message
        self.leftover = taken.leftover


async def check_names_free(
    kube: KubeClient,
    backend: str,
    uid: str,
    objects: Sequence[tuple[Resource, dict[str, Any]]],
    already_read: Mapping[Resource, dict[str, Any] | None] | None = None,
) -> None:
    """Raise NameConflict for the first of `objects` whose name an object the backend does not
    control already has; read all at once, so the check costs one round trip. What the caller
    `already_read` this reconcile (by kind, under the object's name) is not read again."""
    known = already_read or {}

    async def read(resource: Resource, body: dict[str, Any]) -> dict[str, Any] | None:
        if resource in known:
            return known[resource]
        return await kube.get(resource, body["metadata"]["name"], body["metadata"]["namespace"])

    existing = await asyncio.gather(*(read(resource, body) for resource, body in objects))
    for (_, body), found in zip(objects, existing, strict=True):
        taken = name_conflict(found, body["kind"], backend, uid)
        if taken is not None:
            raise NameConflict(taken)

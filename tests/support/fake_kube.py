"""The API server as llmop's ensure path uses it, in memory: objects by (plural, name)."""

from __future__ import annotations

from typing import Any

from llmop.k8s.client import Resource


class FakeKube:
    """Objects by (plural, name): applied and created ones are stored, deleted ones removed;
    `applied` and `deleted` record what llmop wrote, in order."""

    def __init__(self, *existing: tuple[Resource, dict[str, Any]]) -> None:
        self.objects = {(resource.plural, body["metadata"]["name"]): body for resource, body in existing}
        self.applied: list[tuple[str, str]] = []
        self.deleted: list[tuple[str, str]] = []

    async def get(self, resource: Resource, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        return self.objects.get((resource.plural, name))

    async def list(
        self, resource: Resource, namespace: str | None = None, label_selector: str = ""
    ) -> list[Any]:
        return []

    async def apply(self, resource: Resource, body: dict[str, Any]) -> dict[str, Any]:
        self.objects[(resource.plural, body["metadata"]["name"])] = body
        self.applied.append((resource.plural, body["metadata"]["name"]))
        return body

    async def create(self, resource: Resource, body: dict[str, Any]) -> dict[str, Any]:
        return await self.apply(resource, body)

    async def delete(self, resource: Resource, name: str, namespace: str | None = None) -> bool:
        self.deleted.append((resource.plural, name))
        return self.objects.pop((resource.plural, name), None) is not None

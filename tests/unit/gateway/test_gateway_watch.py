"""The table follows the LLMBackends: listed, then changed by watch events; keys by the opt-in rule."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

from llmop.gateway.table import RoutingTable
from llmop.gateway.watch import BackendWatch
from support.gateway_backends import backend, pod


class FakeKube:
    def __init__(
        self, items: list[dict[str, Any]], events: list[dict[str, Any]], secrets: dict[str, Any]
    ) -> None:
        self.items, self.events, self.secrets = items, events, secrets
        self.secret_reads = 0

    async def list_versioned(
        self, resource: Any, namespace: str | None = None, label_selector: str | None = None
    ) -> tuple[list[Any], str]:
        return self.items, "41"

    async def watch(
        self,
        resource: Any,
        namespace: Any,
        version: str,
        timeout_seconds: int = 0,
        label_selector: str | None = None,
    ) -> AsyncIterator[Any]:
        for event in self.events:
            yield event

    async def get(self, resource: Any, name: str, namespace: str | None = None) -> Any:
        self.secret_reads += 1
        return self.secrets.get(name)


def keyed(body: dict[str, Any], secret: str) -> dict[str, Any]:
    body["spec"]["apiKeySecretRef"] = {"name": secret, "key": "k"}
    return body


def secret(value: str, opted_in: bool = True) -> dict[str, Any]:
    labels = {"llmop.dev/use": "true"} if opted_in else {}
    return {"metadata": {"labels": labels}, "data": {"k": base64.b64encode(value.encode()).decode()}}


async def test_list_then_events_shape_the_table_and_keys_are_read_by_the_opt_in_rule() -> None:
    serving = keyed(backend(pods=[pod("a", "10.0.0.1", ["m"])], models=[{"name": "m"}]), "good")
    other = keyed(
        backend(name="other", pods=[pod("b", "10.0.0.2", ["n"])], models=[{"name": "n"}]), "private"
    )
    moved = backend(pods=[pod("a", "10.0.0.9", ["m"])], models=[{"name": "m"}])
    keyed(moved, "good")
    events = [
        {"type": "MODIFIED", "object": moved},  # status changed, same Secret: not read again
        {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "50"}}},
        {"type": "DELETED", "object": other},
        {"type": "ERROR", "object": {"code": 410}},
        {"type": "ADDED", "object": backend(name="never")},  # after ERROR: the caller lists again
    ]
    kube = FakeKube([serving, other], events, {"good": secret("k1"), "private": secret("k2", opted_in=False)})
    tables: list[RoutingTable] = []

    async def publish(table: RoutingTable) -> None:
        tables.append(table)

    watch = BackendWatch(kube, ["team-a"], publish)  # type: ignore[arg-type]
    await watch.watch("team-a", await watch.relist("team-a"))
    listed, modified, deleted = tables
    assert listed.model_names() == ["m", "n"]
    assert listed.lookup("m")[0].serving[0].api_key == "k1"
    assert listed.lookup("n")[0].serving[0].api_key is None  # its Secret did not opt in
    assert modified.lookup("m")[0].serving[0].base_url == "http://10.0.0.9:8080/v1"
    assert modified.lookup("m")[0].serving[0].api_key == "k1"
    assert kube.secret_reads == 2
    assert deleted.model_names() == ["m"]


async def test_nothing_is_published_until_every_namespace_was_listed() -> None:
    tables: list[RoutingTable] = []

    async def publish(table: RoutingTable) -> None:
        tables.append(table)

    watch = BackendWatch(FakeKube([], [], {}), ["a", "b"], publish)  # type: ignore[arg-type]
    await watch.relist("a")
    assert tables == []
    await watch.relist("b")
    assert len(tables) == 1

"""The gateway's table follows real LLMBackends on a real API server: listed, then changed by watch
events (status written, backend deleted), with the runtime key read from a Secret that opts in."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable

import pytest

from llmop.gateway.table import RoutingTable
from llmop.gateway.watch import BackendWatch
from llmop.k8s.client import LLMBACKENDS, KubeClient
from support.kube import Kube

pytestmark = pytest.mark.integration


def serving_status(ip: str, model: str) -> dict[str, object]:
    return {
        "phase": "Ready",
        "runtime": "llamacpp",
        "pods": [{"name": "chat-0", "ip": ip, "ready": True, "phase": "Serving", "models": [model]}],
        "models": [{"name": model, "capabilities": ["chat", "completion"]}],
    }


async def next_table(
    tables: asyncio.Queue[RoutingTable], wanted: Callable[[RoutingTable], bool]
) -> RoutingTable:
    while not wanted(table := await tables.get()):
        pass
    return table


async def test_the_table_follows_backends_written_and_deleted(kube: Kube, namespace: str) -> None:
    key = base64.b64encode(b"runtime-key").decode()
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "chat-key", "labels": {"llmop.dev/use": "true"}},
            "data": {"key": key},
        },
        namespace,
    )
    spec = {"runtime": "llamacpp", "apiKeySecretRef": {"name": "chat-key", "key": "key"}}
    kube.apply(
        {
            "apiVersion": "llmop.dev/v1alpha1",
            "kind": "LLMBackend",
            "metadata": {"name": "chat"},
            "spec": spec,
        },
        namespace,
    )
    client = KubeClient.from_environment(str(kube.kubeconfig))
    await client.patch_status(LLMBACKENDS, "chat", namespace, serving_status("10.0.0.1", "tiny"))
    tables: asyncio.Queue[RoutingTable] = asyncio.Queue()
    following = asyncio.create_task(BackendWatch(client, [namespace], tables.put).follow(namespace))
    try:
        listed = await next_table(tables, lambda t: bool(t.lookup("tiny")))
        (upstream,) = listed.lookup("tiny")[0].serving
        assert (upstream.base_url, upstream.api_key) == ("http://10.0.0.1:8080/v1", "runtime-key")
        await client.patch_status(LLMBACKENDS, "chat", namespace, serving_status("10.0.0.2", "tiny"))
        moved = await next_table(
            tables, lambda t: t.lookup("tiny")[0].serving[0].base_url.startswith("http://10.0.0.2")
        )
        assert moved.model_names() == ["tiny"]
        kube.run("delete", "llmbackend", "chat", "-n", namespace)
        await next_table(tables, lambda t: t.model_names() == [])
    finally:
        following.cancel()
        await client.close()

"""The GPU memory of the nodes a backend's pods run on, read with `get nodes` and kept a while.

A node's GPUs do not change while it lives, so each is read once per READ_AGAIN_SECONDS at most;
a read that failed (no right to read nodes, the API server away) is tried again after
RETRY_SECONDS, and its reason is what the Fits condition says meanwhile.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from llmop.k8s.client import NODES, KubeAPIError, KubeClient
from llmop.reconcile.conditions import describe_failure
from llmop.reconcile.fits import NodeGpus, node_gpus

READ_AGAIN_SECONDS = 300.0
RETRY_SECONDS = 30.0
#: A backend's pods sit on few nodes; a bound keeps a churning one from growing the cache.
MAX_NODES = 64


@dataclass
class NodeGpuReader:
    #: node name -> (monotonic seconds when to read it again, what was read)
    read: dict[str, tuple[float, NodeGpus]] = field(default_factory=dict)

    async def nodes(self, kube: KubeClient, names: Iterable[str]) -> dict[str, NodeGpus]:
        wanted = sorted(set(names))[:MAX_NODES]
        now = time.monotonic()
        self.read = {name: seen for name, seen in self.read.items() if name in wanted}
        for name in wanted:
            again, _ = self.read.get(name, (now, None))
            if now >= again:
                found = await read_node(kube, name)
                wait = READ_AGAIN_SECONDS if found.memory_mib is not None else RETRY_SECONDS
                self.read[name] = (now + wait, found)
        return {name: self.read[name][1] for name in wanted}


async def read_node(kube: KubeClient, name: str) -> NodeGpus:
    try:
        node = await kube.get(NODES, name)
    except KubeAPIError as error:
        if error.status_code == 403:
            return NodeGpus(
                problem=f"llmop may not read node {name} (it needs get on nodes): {error.message}"
            )
        return NodeGpus(problem=f"reading node {name} failed: {describe_failure(error)}")
    if node is None:
        return NodeGpus(problem=f"node {name} does not exist")
    return node_gpus(node.get("metadata", {}).get("labels"))

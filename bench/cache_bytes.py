"""Scenario 7: bytes the model source sends for a 3-replica backend, before and after ModelCache.

The local model source (hack/modelsource.py) serves a Hugging Face style repo of 4 files of random
bytes (vLLM's sharded safetensors). A vLLM backend of 3 replicas (the vLLM stand-in of
hack/standins serving at each pod's address: what is measured is the download, not the runtime)
is created twice, in its own namespace each time, and timed from its creation to the watch event
that says Ready:

- before: the backend as it was before ModelCache, its model volume an emptyDir: the agent of
  each pod downloads the repo (a claim of llmop's would be ReadWriteOnce, one node, Recreate);
- after: a ModelCache holding the repo and the backend naming it (`spec.modelCache`): the cache's
  filler downloads the repo once, the pods mount it read-only.

The source's own byte counters (GET /_stats, the repo's files only) say how much each way was sent.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from harness import (
    LLMBACKENDS,
    REPO,
    BenchCluster,
    OperatorRun,
    Watcher,
    delete_namespace,
    ensure_namespace,
    load_average,
)
from llmop.k8s.client import MODELCACHES, KubeClient
from repo_pull import _write_shards

REPO_ID = "bench/cached"
REPLICAS = 3
VLLM_STANDIN = REPO / "hack" / "standins" / "vllm_server.py"


def _phase(obj: dict[str, Any]) -> dict[str, Any]:
    status = obj.get("status") or {}
    return {"phase": status.get("phase"), "conditions": status.get("conditions")}


def _backend(name: str, namespace: str, cache: str | None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "runtime": "vllm",
        "replicas": REPLICAS,
        "models": [{"name": f"hf://{REPO_ID}"}],
        "startup": {"timeout": "30m", "probeInterval": "1s"},
        "warmup": {"enabled": False},
    }
    if cache:
        spec["modelCache"] = {"name": cache}
    return {
        "apiVersion": "llmop.dev/v1alpha1",
        "kind": "LLMBackend",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def _cache(name: str, namespace: str, mib: int) -> dict[str, Any]:
    return {
        "apiVersion": "llmop.dev/v1alpha1",
        "kind": "ModelCache",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"storage": {"size": f"{mib * 2}Mi"}, "models": [{"name": f"hf://{REPO_ID}"}]},
    }


def _repo_bytes(stats: dict[str, Any]) -> int:
    return sum(int(found["bytes_sent"]) for path, found in stats.items() if f"/{REPO_ID}/resolve/" in path)


async def _one_way(kube: KubeClient, source: Any, namespace: str, mib: int, cached: bool) -> dict[str, Any]:
    await ensure_namespace(kube, namespace)
    backends = Watcher(kube, LLMBACKENDS, namespace, _phase)
    await backends.start()
    source.reset_stats()
    try:
        began = time.time()
        if cached:
            await kube.create(MODELCACHES, _cache("shared", namespace, mib))
        await kube.create(LLMBACKENDS, _backend("chat", namespace, "shared" if cached else None))
        ready = await backends.wait_for(lambda: backends.ready_at.get("chat"), 1800)
        return {
            "seconds_to_ready": ready - began,
            "bytes_sent": _repo_bytes(source.stats()),
            "load": load_average(),
        }
    finally:
        await backends.stop()
        await delete_namespace(kube, namespace, timeout=300)


async def run_cache_bytes(kube: KubeClient, cluster: BenchCluster, workdir: Path, mib: int) -> dict[str, Any]:
    from support.runtimes import run_modelsource, run_podrunner

    root = workdir / "cache" / "source"
    await asyncio.to_thread(_write_shards, root / "hf" / REPO_ID, mib)
    repo_size = sum(path.stat().st_size for path in (root / "hf" / REPO_ID).iterdir())
    results: dict[str, Any] = {"mib": mib, "files": 4, "replicas": REPLICAS, "repo_bytes": repo_size}
    with (
        run_modelsource(root, populate=False) as source,
        run_podrunner(
            cluster.kubeconfig,
            workdir / "cache" / "pods",
            runtimes={"vllm": str(VLLM_STANDIN)},
            namespaces=["cache-before", "cache-after"],
        ),
    ):
        operator = OperatorRun(cluster.kubeconfig, workdir / "cache", env={"LLMOP_HF_ENDPOINT": source.url})
        await operator.start()
        try:
            results["before"] = await _one_way(kube, source, "cache-before", mib, cached=False)
            results["after"] = await _one_way(kube, source, "cache-after", mib, cached=True)
        finally:
            await operator.stop()
    return results

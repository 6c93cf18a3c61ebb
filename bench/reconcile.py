"""Scenario 3: a spec change, applied; how soon the Deployment carries it.

Managed Ollama backends (no models, no GPUs, so nothing but the Deployment and Service is made).
Each run sets one environment variable in one backend's spec with a merge patch; the latency runs
from just before the patch is sent to the watch event of the Deployment whose pod template has
the new value. The same run also times the backend's status catching up (observedGeneration).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from harness import (
    DEPLOYMENTS,
    LLMBACKENDS,
    BenchCluster,
    OperatorRun,
    Watcher,
    create_all,
    delete_namespace,
    ensure_namespace,
    load_average,
    median,
    percentile,
)
from llmop.k8s.client import KubeClient

BACKENDS = 10
VARIABLE = "LLMOP_BENCH_RUN"


def _env_value(obj: dict[str, Any]) -> dict[str, Any]:
    for container in obj.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
        for env in container.get("env") or []:
            if env.get("name") == VARIABLE:
                return {"value": env.get("value")}
    return {"value": None}


def _generations(obj: dict[str, Any]) -> dict[str, Any]:
    return {"observed": (obj.get("status") or {}).get("observedGeneration")}


def ollama_backend(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "llmop.dev/v1alpha1",
        "kind": "LLMBackend",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"runtime": "ollama", "env": [{"name": VARIABLE, "value": "start"}]},
    }


async def run_reconcile(kube: KubeClient, cluster: BenchCluster, workdir: Path, runs: int) -> dict[str, Any]:
    namespace = "reconcile"
    await ensure_namespace(kube, namespace)
    operator = OperatorRun(cluster.kubeconfig, workdir / "reconcile")
    deployments = Watcher(kube, DEPLOYMENTS, namespace, _env_value)
    backends = Watcher(kube, LLMBACKENDS, namespace, _generations)
    await deployments.start()
    await backends.start()
    await operator.start()
    names = [f"rc-{i:02d}" for i in range(BACKENDS)]
    to_deployment: list[float] = []
    to_status: list[float] = []
    loads = [load_average()]
    try:
        await create_all(kube, LLMBACKENDS, [ollama_backend(name, namespace) for name in names])
        await deployments.wait_for(lambda: {e.name for e in deployments.events} >= set(names), 120)
        await asyncio.sleep(3)  # let the first round of status settle
        for run in range(runs):
            name = names[run % BACKENDS]
            value = f"run-{run}"
            patch = {"spec": {"env": [{"name": VARIABLE, "value": value}]}}
            sent = time.time()
            response = await kube._request(
                "PATCH",
                LLMBACKENDS.path(namespace, name),
                content=json.dumps(patch),
                headers={"Content-Type": "application/merge-patch+json"},
            )
            generation = response.json()["metadata"]["generation"]

            def applied(name: str = name, value: str = value, sent: float = sent) -> float | None:
                for event in deployments.events:
                    if event.at >= sent and event.name == name and event.object["value"] == value:
                        return event.at
                return None

            def observed(name: str = name, generation: int = generation, sent: float = sent) -> float | None:
                for event in backends.events:
                    if event.at >= sent and event.name == name and event.object["observed"] == generation:
                        return event.at
                return None

            to_deployment.append(await deployments.wait_for(applied, 60) - sent)
            to_status.append(await backends.wait_for(observed, 60) - sent)
            await asyncio.sleep(0.5)
        loads.append(load_average())
    finally:
        await deployments.stop()
        await backends.stop()
        await delete_namespace(kube, namespace, timeout=120)
        await operator.stop()
    return {
        "runs": len(to_deployment),
        "deployment": {
            "median": median(to_deployment),
            "p95": percentile(to_deployment, 95),
            "max": max(to_deployment),
            "values": to_deployment,
        },
        "status": {
            "median": median(to_status),
            "p95": percentile(to_status, 95),
            "max": max(to_status),
            "values": to_status,
        },
        "loads": loads,
    }

"""Scenario 2: how soon Ready=True follows a runtime that starts answering.

Each run is an `external` backend at default settings pointing at its own vLLM stand-in, which
refuses connections for a random 5-20 s (`--bind-delay`) and then binds. The bind time is the
stand-in's own log line (millisecond stamp, written right after the socket listens); the Ready
time is when the benchmark's watch receives the backend with Ready=True. Runs overlap: a batch of
them starts together, each with its own delay.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from harness import (
    LLMBACKENDS,
    BenchCluster,
    OperatorRun,
    Watcher,
    create_all,
    delete_namespace,
    ensure_namespace,
    external_backend,
    load_average,
    median,
    percentile,
    seeded,
    standins,
    start_vllm_standin,
)
from llmop.k8s.client import KubeClient

BATCH = 20
DELAY_RANGE = (5.0, 20.0)


async def run_detection(kube: KubeClient, cluster: BenchCluster, workdir: Path, runs: int) -> dict[str, Any]:
    namespace = "ready-detection"
    await ensure_namespace(kube, namespace)
    operator = OperatorRun(cluster.kubeconfig, workdir / "ready")
    watcher = Watcher(kube, LLMBACKENDS, namespace, lambda obj: {})
    await watcher.start()
    await operator.start()
    rng = seeded(2)
    latencies: list[float] = []
    early: list[str] = []
    loads = [load_average()]
    try:
        for first in range(0, runs, BATCH):
            count = min(BATCH, runs - first)
            names = [f"r-{first + i:03d}" for i in range(count)]
            delays = [rng.uniform(*DELAY_RANGE) for _ in names]
            with standins(
                [
                    start_vllm_standin(workdir / "ready" / "standins", name, bind_delay=delay)
                    for name, delay in zip(names, delays, strict=True)
                ]
            ) as running:
                bodies = [
                    external_backend(name, namespace, item.url)
                    for name, item in zip(names, running, strict=True)
                ]
                await create_all(kube, LLMBACKENDS, bodies)
                await watcher.wait_for(lambda names=names: all(n in watcher.ready_at for n in names), 120)
                for name, item in zip(names, running, strict=True):
                    bound = item.bound_at()
                    if bound is None:
                        raise RuntimeError(f"{item.log} has no bind line")
                    latency = watcher.ready_at[name] - bound
                    if latency < 0:
                        early.append(name)
                    latencies.append(latency)
            loads.append(load_average())
            for name in names:
                await kube.delete(LLMBACKENDS, name, namespace)
            await asyncio.sleep(2)
    finally:
        await watcher.stop()
        await operator.stop()
        await delete_namespace(kube, namespace, timeout=120)
    return {
        "runs": len(latencies),
        "median": median(latencies),
        "p95": percentile(latencies, 95),
        "max": max(latencies),
        "min": min(latencies),
        "latencies": latencies,
        "ready_before_bind": early,
        "loads": loads,
        "finished": time.time(),
    }

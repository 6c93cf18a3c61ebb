"""Scenario 1 (scale) and 5 (reference limit).

Scale: N `external` backends pointing at one shared vLLM stand-in, created by the benchmark's own
async client; seconds until every one is Ready=True (as a watch sees it), the API requests the
operator made meanwhile, its peak RSS and CPU seconds; then, with everything Ready and nothing
changing, status writes per minute and CPU percent over a quiet window.

Reference: the same creates and the same number of status writes, done by a plain async client
with no operator at all: what the API server alone takes for that work on this machine.
"""

from __future__ import annotations

import asyncio
import copy
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness import (
    LLMBACKENDS,
    BenchCluster,
    OperatorRun,
    Watcher,
    api_requests,
    counter_delta,
    create_all,
    delete_namespace,
    ensure_namespace,
    external_backend,
    load_average,
    strip_finalizers,
)
from llmop.k8s.client import KubeClient

CREATE_CONCURRENCY = 32
#: Seconds after the last backend turned Ready before the quiet window opens.
SETTLE_SECONDS = 15.0


def _keep(obj: dict[str, Any]) -> dict[str, Any]:
    return {"phase": (obj.get("status") or {}).get("phase")}


async def run_scale(
    kube: KubeClient,
    cluster: BenchCluster,
    workdir: Path,
    n: int,
    runtime_url: str,
    quiet_seconds: float,
    deadline: float = 600.0,
) -> dict[str, Any]:
    namespace = f"scale-{n}"
    await ensure_namespace(kube, namespace)
    operator = OperatorRun(cluster.kubeconfig, workdir / f"scale-{n}")
    watcher = Watcher(kube, LLMBACKENDS, namespace, _keep)
    await watcher.start()
    await operator.start()
    try:
        return await _measure_scale(
            kube, cluster, operator, watcher, namespace, n, runtime_url, quiet_seconds, deadline
        )
    finally:
        await watcher.stop()
        await operator.stop()


async def _measure_scale(
    kube: KubeClient,
    cluster: BenchCluster,
    operator: OperatorRun,
    watcher: Watcher,
    namespace: str,
    n: int,
    runtime_url: str,
    quiet_seconds: float,
    deadline: float,
) -> dict[str, Any]:
    await asyncio.sleep(2)  # kopf has listed and watches now
    names = [f"b-{i:04d}" for i in range(n)]
    bodies = [external_backend(name, namespace, runtime_url) for name in names]
    load_before = load_average()
    counters0 = await operator.counters()
    cpu0, server0 = operator.cpu_seconds(), cluster.cpu_seconds()
    operator.reset_peak()
    started = time.time()
    create_seconds = await create_all(kube, LLMBACKENDS, bodies, CREATE_CONCURRENCY)
    try:
        await watcher.wait_for(lambda: len(watcher.ready_at) >= n, timeout=deadline)
    except TimeoutError:
        # Not all Ready in time (the operator before these changes, at 1000): say where they were.
        phases: dict[str, int] = {}
        for item in await kube.list(LLMBACKENDS, namespace):
            phase = (item.get("status") or {}).get("phase") or "(no status)"
            phases[phase] = phases.get(phase, 0) + 1
        counters = api_requests(counter_delta(await operator.counters(), counters0))
        await _delete_all(kube, namespace)
        return {
            "n": n,
            "load_before": load_before,
            "deadline": deadline,
            "not_all_ready": phases,
            "ready_seen": len(watcher.ready_at),
            "requests": counters,
            "status_writes": counters["status_patches"],
            "peak_rss_mib": operator.peak_rss / 2**20,
            "cpu_seconds": operator.cpu_seconds() - cpu0,
        }
    all_ready = max(watcher.ready_at.values())
    counters1 = await operator.counters()
    cpu1, server1 = operator.cpu_seconds(), cluster.cpu_seconds()
    ready_requests = api_requests(counter_delta(counters1, counters0))
    status_writes = ready_requests["status_patches"]
    result: dict[str, Any] = {
        "n": n,
        "load_before": load_before,
        "load_after": load_average(),
        "create_seconds": create_seconds,
        "seconds_to_all_ready": all_ready - started,
        "ready_curve": sorted(t - started for t in watcher.ready_at.values()),
        "requests": ready_requests,
        "status_writes": status_writes,
        "peak_rss_mib": operator.peak_rss / 2**20,
        "cpu_seconds": cpu1 - cpu0,
        "server_cpu_seconds": {k: server1.get(k, 0) - server0.get(k, 0) for k in server1},
        "modified_events": len(watcher.modified_between(started, all_ready + 0.001)),
    }
    sample = await kube.get(LLMBACKENDS, names[0], namespace)
    result["sample_status"] = (sample or {}).get("status")

    # Quiet window: everything Ready, nothing changing.
    await asyncio.sleep(SETTLE_SECONDS)
    counters2, cpu2 = await operator.counters(), operator.cpu_seconds()
    operator.reset_peak()
    window_start = time.time()
    await asyncio.sleep(quiet_seconds)
    counters3, cpu3 = await operator.counters(), operator.cpu_seconds()
    window_end = time.time()
    quiet = api_requests(counter_delta(counters3, counters2))
    minutes = (window_end - window_start) / 60
    result["steady"] = {
        "seconds": window_end - window_start,
        "load": load_average(),
        "status_writes_per_minute": quiet["status_patches"] / minutes,
        "object_writes_per_minute": len(watcher.modified_between(window_start, window_end)) / minutes,
        "api_requests_per_minute": quiet["total"] / minutes,
        "probes_per_second": quiet["probes"] / (window_end - window_start),
        "cpu_percent": 100 * (cpu3 - cpu2) / (window_end - window_start),
        "rss_mib": operator.rss() / 2**20,
        "peak_rss_mib": operator.peak_rss / 2**20,
    }
    result["peak_rss_mib"] = max(result["peak_rss_mib"], operator.peak_rss / 2**20)
    not_ready = [e for e in watcher.events if e.at >= window_start and e.object.get("phase") != "Ready"]
    result["steady"]["left_ready"] = len(not_ready)

    # Deleting them all: the operator stops each daemon and removes its finalizer.
    seconds = await delete_namespace(kube, namespace, timeout=300)
    result["delete_seconds"] = seconds if seconds != float("inf") else None
    if result["delete_seconds"] is None:
        await _delete_all(kube, namespace)
    return result


async def _delete_all(kube: KubeClient, namespace: str) -> None:
    """Without waiting for the operator: strip the finalizers, delete the namespace."""
    await strip_finalizers(kube, LLMBACKENDS, namespace)
    await delete_namespace(kube, namespace, timeout=300)


async def run_reference(
    kube: KubeClient, cluster: BenchCluster, n: int, runtime_url: str, writes: int, status: dict[str, Any]
) -> dict[str, Any]:
    """The same creates and `writes` status writes with a plain client and no operator logic."""
    namespace = f"reference-{n}"
    await ensure_namespace(kube, namespace)
    watcher = Watcher(kube, LLMBACKENDS, namespace, _keep)
    await watcher.start()
    names = [f"b-{i:04d}" for i in range(n)]
    per_backend = [writes // n + (1 if i < writes % n else 0) for i in range(n)]
    per_backend = [max(1, count) for count in per_backend]
    gate = asyncio.Semaphore(CREATE_CONCURRENCY)
    load_before = load_average()
    server0 = cluster.cpu_seconds()
    requests = 0

    async def one(name: str, count: int) -> None:
        nonlocal requests
        async with gate:
            await kube.create(LLMBACKENDS, external_backend(name, namespace, runtime_url))
            requests += 1
        for _ in range(count):
            body = copy.deepcopy(status)
            now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            for cond in body.get("conditions", []):
                cond["lastTransitionTime"] = now
            await kube._request(
                "PATCH",
                LLMBACKENDS.path(namespace, name, "status"),
                content=json.dumps({"status": body}),
                headers={"Content-Type": "application/merge-patch+json"},
            )
            requests += 1

    started = time.time()
    await asyncio.gather(*(one(name, count) for name, count in zip(names, per_backend, strict=True)))
    await watcher.wait_for(lambda: len(watcher.ready_at) >= n, timeout=900)
    all_ready = max(watcher.ready_at.values())
    server1 = cluster.cpu_seconds()
    await watcher.stop()
    await delete_namespace(kube, namespace, timeout=300)
    return {
        "n": n,
        "load_before": load_before,
        "seconds_to_all_ready": all_ready - started,
        "ready_curve": sorted(t - started for t in watcher.ready_at.values()),
        "requests": requests,
        "status_writes": sum(per_backend),
        "server_cpu_seconds": {k: server1.get(k, 0) - server0.get(k, 0) for k in server1},
    }

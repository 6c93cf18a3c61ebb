"""Scenario: a request for a model whose backend is at zero replicas (spec.autoscaling with
minReplicas 0), from its arrival at the gateway to its answer, and where the time goes.

One llama.cpp backend (real llama-server, the tiny GGUF from the local model source, pods faked by
kwok and run by hack/podrunner.py) with minReplicas 0 and a short scaleDownDelay; `llmop gateway`
and `llmop run` as processes of their own. Each run waits for the backend to be Idle, sends one
chat completion through the gateway and stamps, on this machine's clock:

- sent: the request leaves the benchmark;
- demand stamped: the `time` of the gateway's first entry with a request waiting (when the gateway
  built the write);
- demand written: the benchmark's watch receives the backend with that entry;
- replicas 1: its watch receives the Deployment with spec.replicas 1;
- runtime answers: the pod's llama-server answers /health with 200 (polled every 20 ms at the pod's
  address, as soon as the pod has one);
- status serving: the watch receives the backend with a pod ready and Serving;
- routed: the answer is back, less the time llama-server says it spent on it (`timings`: prompt
  and generation): about when the gateway sent the request on;
- answered: the answer is back.

llmop's own share is the gateway's decision (sent -> demand written), the operator's (demand
written -> replicas 1) and the detection (runtime answers -> routed); what lies between
(scheduling, the agent's download, llama-server's start and load) is the cluster's and the
runtime's, and so is the runtime's work on the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from harness import (
    LLMBACKENDS,
    PYTHON,
    BenchCluster,
    OperatorRun,
    Watcher,
    delete_namespace,
    ensure_namespace,
    free_port,
    load_average,
    median,
    strip_finalizers,
)
from llmop.k8s.client import DEPLOYMENTS, PODS, KubeClient
from support.runtimes import run_modelsource, run_podrunner

NAMESPACE = "wake"
NAME = "wake"
GATEWAY_ID = "bench-gateway"
MODEL = "ggml-org/models/tinyllamas/stories260K.gguf"
#: llama-server's port in llmop's pods (the runtime's default).
RUNTIME_PORT = 8080
#: llmop's target for its own share of a wake: decisions plus detection.
TARGET_SECONDS = 1.5


def backend_manifest() -> dict[str, Any]:
    return {
        "apiVersion": "llmop.dev/v1alpha1",
        "kind": "LLMBackend",
        "metadata": {"name": NAME, "namespace": NAMESPACE},
        "spec": {
            "runtime": "llamacpp",
            "gpu": {"count": 0},
            "models": [{"name": f"hf://{MODEL}"}],
            "storage": {"size": "2Gi"},
            "autoscaling": {"minReplicas": 0, "maxReplicas": 1, "targetInFlight": 1, "scaleDownDelay": "2s"},
        },
    }


async def run_wake(kube: KubeClient, cluster: BenchCluster, workdir: Path, runs: int) -> dict[str, Any]:
    work = workdir / "wake"
    await ensure_namespace(kube, NAMESPACE)
    with (
        run_modelsource(work / "models") as source,
        run_podrunner(cluster.kubeconfig, work / "pods", namespaces=[NAMESPACE], backoff_initial=1.0),
        gateway_process(cluster.kubeconfig, work) as gateway_url,
    ):
        operator = OperatorRun(cluster.kubeconfig, work / "operator", env={"LLMOP_HF_ENDPOINT": source.url})
        backends = Watcher(kube, LLMBACKENDS, NAMESPACE)
        deployments = Watcher(kube, DEPLOYMENTS, NAMESPACE)
        await backends.start()
        await deployments.start()
        await operator.start()
        try:
            await kube.create(LLMBACKENDS, backend_manifest())
            found = [await one_wake(kube, backends, deployments, gateway_url, run) for run in range(runs)]
        finally:
            await operator.stop()
            await backends.stop()
            await deployments.stop()
            await strip_finalizers(kube, LLMBACKENDS, NAMESPACE)  # the operator that removes them is gone
            await delete_namespace(kube, NAMESPACE, timeout=120)
    return summarize(found)


@contextlib.contextmanager
def gateway_process(kubeconfig: Path, work: Path) -> Any:
    """`llmop gateway` for the namespace, keys off, on a free loopback port."""
    port = free_port()
    work.mkdir(parents=True, exist_ok=True)
    argv = [str(Path(PYTHON).parent / "llmop"), "gateway", "--namespace", NAMESPACE, "--auth", "none"]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--metrics-port", "0", "--hold", "5m"]
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "POD_NAME": GATEWAY_ID}
    with open(work / "gateway.log", "ab") as log:
        process = subprocess.Popen(
            argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while not _ready(url):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"the gateway did not start:\n{(work / 'gateway.log').read_text()[-3000:]}"
                )
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(30)


def _ready(url: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(url + "/readyz", timeout=2).status_code == 200
    return False


async def one_wake(
    kube: KubeClient, backends: Watcher, deployments: Watcher, gateway_url: str, run: int
) -> dict[str, float]:
    await backends.wait_for(lambda: _latest_phase(backends) == "Idle", 180)
    await asyncio.sleep(1.0)  # the Idle status settled; the pods' processes stopped
    print(f"bench: wake, run {run + 1}", flush=True)
    runtime_up: dict[str, float] = {}
    async with httpx.AsyncClient(timeout=300) as client:
        await client.get(gateway_url + "/healthz")  # connected: the request goes at once
        poller = asyncio.create_task(_runtime_answers(kube, runtime_up))
        try:
            sent = time.time()
            response = await client.post(
                gateway_url + "/v1/chat/completions",
                json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3},
            )
            answered = time.time()
        finally:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
    if response.status_code != 200:
        raise RuntimeError(f"the wake request got {response.status_code}: {response.text[:500]}")
    timings = response.json().get("timings") or {}
    runtime_seconds = (timings.get("prompt_ms", 0.0) + timings.get("predicted_ms", 0.0)) / 1000
    stamps = {
        "sent": sent,
        "demand_stamped": _entry_time(backends, sent),
        "demand_written": _first(backends, sent, _waiting),
        "replicas_1": _first(deployments, sent, lambda obj: (obj.get("spec") or {}).get("replicas", 0) >= 1),
        "runtime_answers": runtime_up.get("at", float("nan")),
        "status_serving": _first(backends, sent, _serving),
        "routed": answered - runtime_seconds,
        "answered": answered,
    }
    legs = _legs(stamps)
    print("  " + ", ".join(f"{k} {v:.2f}s" for k, v in legs.items()), flush=True)
    return legs


def _legs(t: dict[str, float]) -> dict[str, float]:
    legs = {
        "gateway_decision": t["demand_written"] - t["sent"],
        "gateway_decision_own": t["demand_stamped"] - t["sent"],
        "operator_decision": t["replicas_1"] - t["demand_written"],
        "scheduling_and_runtime_start": t["runtime_answers"] - t["replicas_1"],
        "detection_status": t["status_serving"] - t["runtime_answers"],
        "detection_gateway_routes": t["routed"] - t["status_serving"],
        "runtime_answering": t["answered"] - t["routed"],
        "total": t["answered"] - t["sent"],
    }
    legs["detection"] = legs["detection_status"] + legs["detection_gateway_routes"]
    legs["llmop_share"] = legs["gateway_decision"] + legs["operator_decision"] + legs["detection"]
    return legs


def _latest_phase(watcher: Watcher) -> str | None:
    mine = [e for e in watcher.events if e.name == NAME]
    return ((mine[-1].object.get("status") or {}).get("phase")) if mine else None


def _first(watcher: Watcher, after: float, check: Any) -> float:
    return next(
        (e.at for e in watcher.events if e.at >= after and e.name == NAME and check(e.object)), float("nan")
    )


def _entry_time(watcher: Watcher, after: float) -> float:
    """The gateway's own stamp on its first entry with a request waiting."""
    for event in watcher.events:
        if event.at >= after and event.name == NAME and _waiting(event.object):
            stamp = event.object["status"]["demand"][GATEWAY_ID]["time"]
            return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    return float("nan")


def _waiting(obj: dict[str, Any]) -> bool:
    entry = ((obj.get("status") or {}).get("demand") or {}).get(GATEWAY_ID) or {}
    return int(entry.get("waiting") or 0) >= 1


def _serving(obj: dict[str, Any]) -> bool:
    pods = (obj.get("status") or {}).get("pods") or []
    return any(p.get("ready") and p.get("phase") == "Serving" for p in pods)


async def _runtime_answers(kube: KubeClient, found: dict[str, float]) -> None:
    """When the backend's pod first answers /health with 200, at its address (the pods are
    listed every 0.2 s until one has an address, which is then asked every 20 ms)."""
    await asyncio.sleep(0.2)  # the request on its way first: no pod can answer this soon
    async with httpx.AsyncClient(timeout=1) as client:
        addresses: list[str] = []
        while True:
            if not addresses or time.time() - found.get("listed", 0.0) > 0.2:
                pods = await kube.list(PODS, NAMESPACE, f"llmop.dev/backend={NAME}")
                addresses = [p["status"]["podIP"] for p in pods if (p.get("status") or {}).get("podIP")]
                found["listed"] = time.time()
            for ip in addresses:
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"http://{ip}:{RUNTIME_PORT}/health")).status_code == 200:
                        found["at"] = time.time()
                        return
            await asyncio.sleep(0.02)


def summarize(runs: list[dict[str, float]]) -> dict[str, Any]:
    medians = {leg: median(run[leg] for run in runs) for leg in runs[0]}
    return {
        "runs": runs,
        "median": medians,
        "target_seconds": TARGET_SECONDS,
        "within_target": medians["llmop_share"] <= TARGET_SECONDS,
        "load": load_average(),
        "finished": time.time(),
    }


def summary_line(result: dict[str, Any]) -> str:
    m = result["median"]
    return (
        f"  wake (median of {len(result['runs'])}): answered after {m['total']:.2f}s; gateway decision "
        f"{m['gateway_decision']:.2f}s ({m['gateway_decision_own']:.2f}s to build the write), operator decision {m['operator_decision']:.2f}s, scheduling + "
        f"runtime start {m['scheduling_and_runtime_start']:.2f}s, Ready detection {m['detection']:.2f}s "
        f"(status {m['detection_status']:.2f}s + gateway {m['detection_gateway_routes']:.2f}s), the runtime's "
        f"answer {m['runtime_answering']:.2f}s; llmop's "
        f"share {m['llmop_share']:.2f}s against {TARGET_SECONDS}s"
    )

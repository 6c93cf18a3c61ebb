"""Scenario 4: what a ModelPull costs over fetching the same bytes yourself.

One local model source (hack/modelsource.py) serves a file of random bytes (1 GiB by default).
Each repetition fetches it three ways, each going first in turn, under names that are hard links of
one file (the same bytes, the same page cache, other URLs, so nothing is "already there"):

- direct: `curl -o` into a folder beside the pod volumes;
- verified: the same, then `openssl dgst -sha256` of the file: a direct download checked as the
  agent checks every pull (openssl's sha256 is the fastest at hand; coreutils' sha256sum takes
  five times as long here);
- llmop: a ModelPull of the URL into a running llama.cpp backend (the agent pulls the same way
  beside vLLM); the pod's llmop agent (started by hack/podrunner.py, as the kubelet would)
  downloads it, hashing as it goes. Timed from just before the ModelPull is created to the watch
  event that says Succeeded. An agent pulls only what its backend declares, so the backend lists
  this one URL in spec.models and each timed pull fetches it again, its file removed from the
  pod's volume before.

Status writes during the pull: every change the watch sees to the ModelPull and the backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from harness import (
    LLMBACKENDS,
    MODELPULLS,
    BenchCluster,
    OperatorRun,
    Watcher,
    delete_namespace,
    ensure_namespace,
    load_average,
    median,
)
from llmop.k8s.client import KubeClient

NAMESPACE = "pull"
THROTTLE_MIB_PER_SECOND = 100
#: The one file the backend declares besides its model: every timed ModelPull fetches it.
DECLARED = "llmop.bin"


def _write_random(path: Path, mib: int) -> None:
    if path.exists() and path.stat().st_size == mib << 20:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as out:
        for _ in range(mib):
            out.write(os.urandom(1 << 20))


def _phase(obj: dict[str, Any]) -> dict[str, Any]:
    status = obj.get("status") or {}
    return {"phase": status.get("phase"), "status": status}


def _status_writes(events: list[Any]) -> int:
    """MODIFIED events that changed the status; kopf's own patches (its finalizer, its
    annotations) modify the object too, but are not status writes."""
    writes, last = 0, None
    for event in events:
        if event.type == "MODIFIED" and event.object["status"] != last:
            writes += 1
        last = event.object["status"]
    return writes


async def run_pull(
    kube: KubeClient, cluster: BenchCluster, workdir: Path, mib: int, repeats: int
) -> dict[str, Any]:
    from support.runtimes import run_modelsource, run_podrunner

    root = workdir / "pull" / "source"
    original = root / "files" / "bench" / "original.bin"
    await asyncio.to_thread(_write_random, original, mib)
    direct_dir = workdir / "pull" / "direct"
    direct_dir.mkdir(parents=True, exist_ok=True)
    await ensure_namespace(kube, NAMESPACE)
    operator = OperatorRun(cluster.kubeconfig, workdir / "pull")
    pulls = Watcher(kube, MODELPULLS, NAMESPACE, _phase)
    backends = Watcher(kube, LLMBACKENDS, NAMESPACE, _phase)
    direct: list[float] = []
    verified: list[float] = []
    ours: list[float] = []
    writes: list[dict[str, Any]] = []
    loads = [load_average()]
    with (
        run_modelsource(root) as source,
        run_podrunner(cluster.kubeconfig, workdir / "pull" / "pods", namespaces=[NAMESPACE]) as podrunner,
    ):
        await pulls.start()
        await backends.start()
        await operator.start()
        try:
            # The agent pulls only what its backend declares: the timed ModelPulls fetch this
            # declared URL again each time, its file removed from the pod's volume in between.
            declared = root / "files" / "bench" / DECLARED
            declared.unlink(missing_ok=True)
            os.link(original, declared)
            backend = {
                "apiVersion": "llmop.dev/v1alpha1",
                "kind": "LLMBackend",
                "metadata": {"name": "puller", "namespace": NAMESPACE},
                # The agent pulls the same way beside vLLM; llama-server serves this tiny GGUF.
                "spec": {
                    "runtime": "llamacpp",
                    "models": [
                        {"name": f"{source.url}/files/tiny.gguf"},
                        {"name": f"{source.url}/files/bench/{DECLARED}"},
                    ],
                },
            }
            await kube.create(LLMBACKENDS, backend)
            # Both declared files pulled (llama-server serves the first).
            await pulls.wait_for(lambda: len(pulls.ready_at) >= 2, 180)
            await backends.wait_for(lambda: "puller" in backends.ready_at, 180)
            _remove_landed(podrunner.workdir, DECLARED)
            kinds = ["direct", "verified", "llmop"]
            for rep in range(repeats):
                name = f"big-{rep}"
                for kind in kinds[rep % 3 :] + kinds[: rep % 3]:  # each goes first in turn
                    link = root / "files" / "bench" / (DECLARED if kind == "llmop" else f"{name}-{kind}.bin")
                    link.unlink(missing_ok=True)
                    os.link(original, link)
                    url = f"{source.url}/files/bench/{link.name}"
                    if kind == "llmop":
                        seconds, counted = await _model_pull(kube, pulls, backends, name, url)
                        ours.append(seconds)
                        writes.append(counted)
                        _remove_landed(podrunner.workdir, DECLARED)
                    else:
                        seconds = await asyncio.to_thread(
                            _download, url, direct_dir / link.name, verify=kind == "verified"
                        )
                        (direct if kind == "direct" else verified).append(seconds)
                    link.unlink()
                loads.append(load_average())
            # A source slower than the machine, as a network link is: what the pull adds then.
            source.throttle(THROTTLE_MIB_PER_SECOND << 20)
            throttled: dict[str, Any] = {"mib_per_second": THROTTLE_MIB_PER_SECOND}
            for kind in ("direct", "llmop"):
                link = root / "files" / "bench" / (DECLARED if kind == "llmop" else f"throttled-{kind}.bin")
                link.unlink(missing_ok=True)
                os.link(original, link)
                url = f"{source.url}/files/bench/{link.name}"
                if kind == "direct":
                    throttled["direct_seconds"] = await asyncio.to_thread(
                        _download, url, direct_dir / link.name, verify=False
                    )
                else:
                    seconds, counted = await _model_pull(kube, pulls, backends, "throttled", url)
                    throttled["llmop_seconds"] = seconds
                    throttled["status_writes_per_second"] = counted["per_second"]
                    _remove_landed(podrunner.workdir, DECLARED)
                link.unlink()
            throttled["ratio"] = throttled["llmop_seconds"] / throttled["direct_seconds"]
            source.throttle(0)
            loads.append(load_average())
        finally:
            await pulls.stop()
            await backends.stop()
            await delete_namespace(kube, NAMESPACE, timeout=120)
            await operator.stop()
    shutil.rmtree(workdir / "pull" / "source" / "files" / "bench", ignore_errors=True)
    ratios = [a / b for a, b in zip(ours, direct, strict=True)]
    return {
        "mib": mib,
        "repeats": repeats,
        "direct_seconds": direct,
        "verified_seconds": verified,
        "llmop_seconds": ours,
        "ratio_of_medians": median(ours) / median(direct),
        "ratio_to_verified": median(ours) / median(verified),
        "ratios": ratios,
        "direct_mib_per_second": mib / median(direct),
        "llmop_mib_per_second": mib / median(ours),
        "writes": writes,
        "status_writes_per_second": median(w["per_second"] for w in writes),
        "loads": loads,
        "throttled": throttled,
    }


def _download(url: str, target: Path, *, verify: bool) -> float:
    """Seconds for `curl -o` (and, verifying, `openssl dgst -sha256` of the file)."""
    started = time.monotonic()
    subprocess.run(["curl", "-sSf", "-o", str(target), url], check=True)
    if verify:
        subprocess.run(["openssl", "dgst", "-sha256", str(target)], check=True, stdout=subprocess.DEVNULL)
    seconds = time.monotonic() - started
    target.unlink()
    return seconds


def _remove_landed(pods_dir: Path, name: str) -> None:
    """The pulled file gone from the pod's volume: the next ModelPull of it fetches it again."""
    for landed in pods_dir.rglob(name):
        with contextlib.suppress(OSError):
            landed.unlink()


async def _model_pull(
    kube: KubeClient, pulls: Watcher, backends: Watcher, name: str, url: str
) -> tuple[float, dict[str, Any]]:
    body = {
        "apiVersion": "llmop.dev/v1alpha1",
        "kind": "ModelPull",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"backendRef": {"name": "puller"}, "model": url},
    }
    sent = time.time()
    await kube.create(MODELPULLS, body)

    def done() -> float | None:
        for event in pulls.events:
            if event.at >= sent and event.name == name:
                if event.object["phase"] == "Failed":
                    raise RuntimeError(f"the ModelPull {name} failed")
                if event.object["phase"] == "Succeeded":
                    return event.at
        return None

    finished = await pulls.wait_for(done, 1800)
    await asyncio.sleep(0.5)
    pull_events = [e for e in pulls.events if e.name == name and e.at < finished + 0.001]
    pull_writes = _status_writes(pull_events)
    object_writes = len([e for e in pulls.modified_between(sent, finished + 0.001) if e.name == name])
    backend_writes = _status_writes([e for e in backends.events if e.at < finished + 0.001]) - _status_writes(
        [e for e in backends.events if e.at < sent]
    )
    seconds = finished - sent
    await kube.delete(MODELPULLS, name, NAMESPACE)
    return seconds, {
        "modelpull": pull_writes,
        "modelpull_object_writes": object_writes,
        "backend": backend_writes,
        "per_second": (pull_writes + backend_writes) / seconds,
    }

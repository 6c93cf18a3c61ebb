"""ModelCache end to end: one download of a model's bytes from the model source serves every pod
of every backend that uses the cache, with real llama-server processes reading the cache's claim.
"""

from __future__ import annotations

import hashlib
import shutil
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from support.kube import Kube, eventually, ready_condition, wait_backend_ready
from support.operator import OperatorProcess
from support.runtimes import ModelSource, PodRunner

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cache_ns(kube: Kube, operator_process: OperatorProcess, podrunner: PodRunner) -> Iterator[str]:
    with kube.namespace("e2e-cache") as name:
        # The filler and the backends' pods are admitted where Pod Security enforces baseline.
        kube.run("label", "namespace", name, "pod-security.kubernetes.io/enforce=baseline")
        yield name


def publish(source: ModelSource) -> tuple[str, str, int, str]:
    """A copy of the tiny GGUF under a name of its own: (model URL, the path the source counts its
    bytes under, size, sha256)."""
    name = f"cached-{uuid.uuid4().hex[:6]}.gguf"
    target = source.root / "files" / "e2e" / name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source.root / "files" / "tiny.gguf", target)
    data = target.read_bytes()
    return f"{source.url}/files/e2e/{name}", f"/files/e2e/{name}", len(data), hashlib.sha256(data).hexdigest()


def cache(model: str, name: str = "shared") -> dict[str, Any]:
    return {
        "apiVersion": "llmop.dev/v1alpha1",
        "kind": "ModelCache",
        "metadata": {"name": name},
        "spec": {"storage": {"size": "1Gi"}, "models": [{"name": model}]},
    }


def backend(name: str, model: str, replicas: int, cache_name: str = "shared") -> dict[str, Any]:
    return {
        "apiVersion": "llmop.dev/v1alpha1",
        "kind": "LLMBackend",
        "metadata": {"name": name},
        "spec": {
            "runtime": "llamacpp",
            "replicas": replicas,
            "models": [{"name": model}],
            "modelCache": {"name": cache_name},
            "startup": {"timeout": "10m", "probeInterval": "1s"},
            "warmup": {"enabled": False},
        },
    }


def served_by_each_pod(kube: Kube, name: str, namespace: str) -> dict[str, list[str]]:
    """Each pod's own answer to /v1/models, asked at its address."""
    pods = kube.list("pods", namespace, selector=f"llmop.dev/backend={name}")
    served = {}
    for pod in pods:
        url = f"http://{pod['status']['podIP']}:8080"
        served[pod["metadata"]["name"]] = [
            m["id"] for m in httpx.get(f"{url}/v1/models", timeout=5).json()["data"]
        ]
    return served


def test_one_download_serves_every_pod_of_every_backend_on_the_cache(
    kube: Kube, cache_ns: str, modelsource: ModelSource
) -> None:
    model, counted, size, sha256 = publish(modelsource)
    served_name = model.rsplit("/", 1)[-1]
    kube.apply(backend("chat", model, replicas=3), cache_ns)
    kube.apply(backend("chat-b", model, replicas=1), cache_ns)
    # Before the cache exists the backends say what they wait for, and deploy nothing.
    # The observer may write its first status before the backend's objects were looked at; what
    # it says once they were is what the user reads.
    ready = eventually(
        lambda: (c := ready_condition(kube, "chat", cache_ns)) and c["reason"] == "ModelCacheNotFound" and c,
        timeout=60,
        message="the backend saying its cache does not exist",
    )
    assert "shared" in ready["message"], ready
    assert kube.get_or_none("deployment", "chat", cache_ns) is None

    kube.apply(cache(model), cache_ns)
    wait_backend_ready(kube, "chat", cache_ns, timeout="120s")
    wait_backend_ready(kube, "chat-b", cache_ns, timeout="60s")

    sent = modelsource.stats(counted)
    assert sent["bytes_sent"] == size and sent["completed"] == 1, sent
    served = {**served_by_each_pod(kube, "chat", cache_ns), **served_by_each_pod(kube, "chat-b", cache_ns)}
    assert len(served) == 4 and all(names == [served_name] for names in served.values()), served

    status = eventually(
        lambda: (
            (s := kube.get("modelcache", "shared", cache_ns).get("status", {})).get("models")
            and s["models"][0].get("usedBy") == ["chat", "chat-b"]
            and s
        ),
        timeout=30,
        message="the cache's status naming both backends",
    )
    entry = status["models"][0]
    assert status["phase"] == "Ready" and status["summary"] == "1/1"
    assert entry["phase"] == "Ready" and entry["sizeBytes"] == size and entry["digest"] == f"sha256:{sha256}"
    assert status["freeBytes"] > 0 and status["capacityBytes"] >= status["freeBytes"]
    # Pods read the cache: no download agent, the claim read-only, no single node or Recreate.
    deployment = kube.get("deployment", "chat", cache_ns)
    pod = deployment["spec"]["template"]["spec"]
    assert "initContainers" not in pod and deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    assert {"claimName": status["claimName"], "readOnly": True} in [
        v.get("persistentVolumeClaim") for v in pod["volumes"]
    ]

    kube.run("scale", "llmb/chat", "-n", cache_ns, "--replicas=5")
    eventually(
        lambda: kube.get("llmb", "chat", cache_ns).get("status", {}).get("replicas", {}).get("ready") == 5,
        timeout=90,
        message="five replicas serving",
    )
    assert len(served_by_each_pod(kube, "chat", cache_ns)) == 5
    assert modelsource.stats(counted)["bytes_sent"] == size, "scaling up downloaded nothing more"


@pytest.fixture
def upgrade(operator: OperatorProcess) -> Iterator[Any]:
    """Restart the operator with settings of a newer release; the session's own again after."""
    before = dict(operator.env)

    def restart(env: dict[str, str]) -> None:
        operator.stop()
        operator.env.update(env)
        operator.start()
        operator.wait_started()

    yield restart
    if operator.env != before:
        operator.stop()
        operator.env.clear()
        operator.env.update(before)
        operator.start()
        operator.wait_started()


def cache_status(kube: Kube, name: str, namespace: str) -> dict[str, Any]:
    return dict(kube.get("modelcache", name, namespace).get("status") or {})


def test_an_operator_upgrade_mid_fill_sends_no_byte_twice_and_bytes_changed_on_disk_are_replaced(
    kube: Kube, cache_ns: str, modelsource: ModelSource, upgrade: Any, podrunner: PodRunner
) -> None:
    model, counted, size, _ = publish(modelsource)
    original = (modelsource.root / counted.lstrip("/")).read_bytes()
    slow = f"{model}?throttle=60000"  # about 10 s: long enough to upgrade the operator meanwhile
    kube.apply(cache(slow, name="resume"), cache_ns)
    eventually(
        lambda: (
            (m := cache_status(kube, "resume", cache_ns).get("models")) and m[0].get("completedBytes", 0) > 0
        ),
        timeout=60,
        interval=0.2,
        message="the cache filling",
    )
    (filler,) = kube.list("pods", cache_ns, selector="llmop.dev/model-cache=resume")
    image = filler["spec"]["containers"][0]["image"]
    # An operator upgrade in the middle of the fill: a new release, with a new default agent image.
    upgrade({"LLMOP_AGENT_IMAGE": "ghcr.io/llmop/llmop:9.9.9"})
    status = eventually(
        lambda: (s := cache_status(kube, "resume", cache_ns)).get("phase") == "Ready" and s,
        timeout=90,
        message="the cache Ready after the upgrade",
    )
    sent = modelsource.stats(counted)
    assert sent["bytes_sent"] == size and sent["range_requests"] == 0, sent
    # The filler runs on with the agent it had: the upgrade restarted nothing.
    (still,) = kube.list("pods", cache_ns, selector="llmop.dev/model-cache=resume")
    assert still["metadata"]["uid"] == filler["metadata"]["uid"]
    template = kube.get("deployment", "resume-filler", cache_ns)["spec"]["template"]["spec"]
    assert template["containers"][0]["image"] == image

    # Bytes changed on the volume behind llmop's back, the filler running on: the file's stamp
    # (its ctime) changed, so llmop hashes it again, finds it wrong and replaces it.
    on_disk = (
        podrunner.workdir / "volumes" / cache_ns / status["claimName"] / status["models"][0]["localPath"]
    )
    assert on_disk.read_bytes() == original
    on_disk.write_bytes(b"X" + original[1:])
    eventually(
        lambda: events_of(kube, cache_ns, "CorruptModelReplaced", "resume"),
        timeout=60,
        message=f"a CorruptModelReplaced Event (status {cache_status(kube, 'resume', cache_ns)})",
    )
    eventually(
        lambda: (
            cache_status(kube, "resume", cache_ns).get("phase") == "Ready"
            and on_disk.read_bytes() == original
        ),
        timeout=60,
        message="the cache Ready again with the source's bytes",
    )
    assert modelsource.stats(counted)["bytes_sent"] == 2 * size
    pods = kube.list("pods", cache_ns, selector="llmop.dev/model-cache=resume")
    assert [p["metadata"]["uid"] for p in pods] == [filler["metadata"]["uid"]], "the filler was not restarted"

    # A filler that restarts hashes what it did not see written: the same bytes, nothing sent.
    podrunner.kill(cache_ns, filler["metadata"]["name"], container="agent", restart_after=0.5)
    again = eventually(
        lambda: (
            (s := cache_status(kube, "resume", cache_ns)).get("phase") == "Ready"
            and s.get("verifiedFiller") != status.get("verifiedFiller")
            and s
        ),
        timeout=60,
        message="the cache Ready again, checked by the restarted filler",
    )
    assert modelsource.stats(counted)["bytes_sent"] == 2 * size
    assert again["models"][0]["phase"] == "Ready"
    # A backend on the cache now serves the replaced bytes.
    kube.apply(backend("late", slow, replicas=1, cache_name="resume"), cache_ns)
    wait_backend_ready(kube, "late", cache_ns, timeout="90s")


def events_of(kube: Kube, namespace: str, reason: str, name: str) -> list[str]:
    return [
        e.get("message", "")
        for e in kube.list("events", namespace)
        if e.get("reason") == reason and e["involvedObject"]["name"] == name
    ]


def phases(kube: Kube, name: str, namespace: str) -> list[str]:
    return [m["phase"] for m in cache_status(kube, name, namespace).get("models") or []]


def test_a_full_cache_evicts_the_least_recently_used_model_no_backend_uses(
    kube: Kube, cache_ns: str, modelsource: ModelSource
) -> None:
    a, a_counted, size, _ = publish(modelsource)
    b, b_counted, _, _ = publish(modelsource)
    small = cache(a, name="small")
    small["spec"]["storage"]["size"] = "1000Ki"  # room for one tiny model (590 KiB), not two
    kube.apply(small, cache_ns)
    eventually(lambda: phases(kube, "small", cache_ns) == ["Ready"], timeout=60, message="a cached")

    small["spec"]["models"].append({"name": b})
    kube.apply(small, cache_ns)
    eventually(
        lambda: phases(kube, "small", cache_ns) == ["Evicted", "Ready"],
        timeout=60,
        message="a evicted for b",
    )
    (evicted,) = events_of(kube, cache_ns, "ModelEvicted", "small")
    assert a in evicted and b in evicted, evicted
    assert modelsource.stats(a_counted)["bytes_sent"] == size
    # b's size was unknown until its source answered, so the volume's room was checked then: a
    # first attempt may have been sent bytes (a tiny file, all of them) before it was refused.
    assert modelsource.stats(b_counted)["bytes_sent"] >= size

    # A backend that needs the evicted model gets it back; b, which no backend uses, makes room.
    kube.apply(backend("needs-a", a, replicas=1, cache_name="small"), cache_ns)
    wait_backend_ready(kube, "needs-a", cache_ns, timeout="90s")
    status = cache_status(kube, "small", cache_ns)
    assert [m["phase"] for m in status["models"]] == ["Ready", "Evicted"]
    assert status["models"][0]["usedBy"] == ["needs-a"]
    # a's size was known: room was made before it was asked for, and it came once more, whole.
    assert modelsource.stats(a_counted)["bytes_sent"] == 2 * size

    # A model a backend uses is never evicted: b does not fit beside it, and says why.
    kube.apply(backend("needs-b", b, replicas=1, cache_name="small"), cache_ns)
    failed = eventually(
        lambda: (
            (m := cache_status(kube, "small", cache_ns).get("models") or [])
            and m[1]["phase"] == "Failed"
            and m[1]
        ),
        timeout=60,
        message="b failing for want of room",
    )
    assert "needs" in failed["message"] and "free" in failed["message"], failed
    assert phases(kube, "small", cache_ns)[0] == "Ready"
    assert len(events_of(kube, cache_ns, "ModelEvicted", "small")) == 2
    eventually(
        lambda: any(
            c["type"] == "Ready" and c["reason"] == "WaitingForModelCache" and f"{b} Failed" in c["message"]
            for c in kube.get("llmb", "needs-b", cache_ns)["status"]["conditions"]
        ),
        timeout=30,
        message="the backend that needs b saying that b failed",
    )

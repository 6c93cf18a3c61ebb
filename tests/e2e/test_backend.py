"""LLMBackend end to end: real runtimes at the pods' addresses, the operator as its own process.

What a user sees through kubectl: Ready only once the runtime's API answers, the scheduler's
own words when GPUs run out, Degraded when a runtime dies, nothing written when nothing changes.
"""

from __future__ import annotations

import copy
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from support.gateway_process import run_gateway
from support.kube import REPO, Kube, eventually, wait_backend_ready
from support.operator import TEST_DENY_CIDRS, OperatorProcess
from support.runtimes import ModelSource, PodRunner, run_vllm_standin

pytestmark = pytest.mark.e2e


def example(name: str) -> dict[str, Any]:
    return dict(yaml.safe_load((REPO / "examples" / f"{name}.yaml").read_text()))


def condition(kube: Kube, name: str, namespace: str, type_: str) -> dict[str, Any] | None:
    body = kube.get_or_none("llmb", name, namespace) or {}
    return next((c for c in body.get("status", {}).get("conditions", []) if c["type"] == type_), None)


def runtime_models(url: str) -> list[str]:
    return [model["id"] for model in httpx.get(f"{url}/v1/models", timeout=5).json()["data"]]


@pytest.fixture
def backend_ns(kube: Kube, operator: OperatorProcess, podrunner: PodRunner) -> Any:
    with kube.namespace("e2e") as name:
        yield name


@pytest.mark.timeout(600)  # the real vLLM loads for a minute or two on 2 cores
def test_each_example_reaches_ready_with_the_models_the_runtime_reports(
    kube: Kube, backend_ns: str, podrunner: PodRunner, ollama_registry: str, tmp_path: Path
) -> None:
    """Every example Ready, serving what its runtime lists, to the openai client and through the
    gateway. The real vLLM's start is watched on the way (its port stays closed for the whole load:
    RuntimeStarting until it binds, Ready within one probe after), and its engine is killed at the
    end (the server fails, the backend turns Degraded): one vLLM start in this tier serves it all."""
    manifests = {name: example(name) for name in ("llamacpp", "vllm", "ollama", "external")}
    # The hubs cannot be reached here: Ollama pulls the examples' tag from the local registry.
    ollama = manifests["ollama"]["spec"]
    ollama["models"] = [
        {"name": f"{ollama_registry}/library/{m['name']}", "insecure": True} for m in ollama["models"]
    ]
    vllm = manifests["vllm"]
    vllm["spec"]["startup"] = {**vllm["spec"]["startup"], "probeInterval": "1s"}
    # The external example needs a server outside the cluster; the stand-in is enough here (the
    # real servers behind each external kind: test_external_kinds.py).
    with run_vllm_standin(tmp_path, served_model_name="gateway-model") as gateway:
        manifests["external"]["spec"]["external"]["url"] = gateway
        for manifest in manifests.values():
            kube.apply(manifest, backend_ns)
        vllm_pod = running_pod_of(kube, podrunner, backend_ns, vllm["metadata"]["name"])
        assert_ready_one_probe_after_it_binds(kube, vllm["metadata"]["name"], backend_ns, vllm_pod)
        for manifest in manifests.values():
            wait_backend_ready(kube, manifest["metadata"]["name"], backend_ns, timeout="300s")

        table = kube.run("get", "llmb", "-n", backend_ns).stdout.splitlines()
        header = ["NAME", "RUNTIME", "PHASE", "READY", "MODELS", "ENDPOINT", "STAGE", "AGE"]
        assert table[0].split() == header
        for row in table[1:]:  # STAGE is empty once a backend is Ready: seven words
            _name, runtime, phase, ready, models, endpoint, _age = row.split()
            assert runtime in ("llamacpp", "vllm", "ollama") and phase == "Ready" and ready == "1/1", row
            assert models and endpoint.startswith("http"), row

        for manifest in manifests.values():
            name = manifest["metadata"]["name"]
            status = kube.get("llmb", name, backend_ns)["status"]
            if name == "external-openai":
                url = gateway
            else:
                pod = kube.list("pods", backend_ns, f"llmop.dev/backend={name}")[0]
                url = f"http://{pod['status']['podIP']}:{status['endpoint'].rsplit(':', 1)[1]}"
            if manifest["spec"].get("runtime") == "ollama":
                listed = [m["name"] for m in httpx.get(f"{url}/api/tags", timeout=5).json()["models"]]
            else:
                listed = runtime_models(url)
            assert sorted(m["name"] for m in status["models"]) == sorted(listed), name
            if manifest["spec"].get("runtime"):
                assert_openai_client_chats(status, url)
        assert_each_runtime_answers_through_the_gateway(kube, manifests, backend_ns, tmp_path)
    assert_a_dead_engine_degrades(kube, vllm["metadata"]["name"], backend_ns, vllm_pod)


def running_pod_of(kube: Kube, podrunner: PodRunner, namespace: str, backend: str) -> dict[str, Any]:
    """The backend's pod once its runtime container runs (its agent has put the model in place)."""
    pod = eventually(
        lambda: kube.list("pods", namespace, f"llmop.dev/backend={backend}"),
        timeout=60,
        message=f"a pod of {backend}",
    )[0]
    return podrunner.wait_running(namespace, timeout=180, name=pod["metadata"]["name"])


def assert_ready_one_probe_after_it_binds(kube: Kube, name: str, namespace: str, pod: dict[str, Any]) -> None:
    seen, delay = watch_cold_start(kube, name, namespace, f"http://{pod['podIP']}:8000/health")
    assert ("Loading", "RuntimeStarting") in seen, seen
    # One probe interval (1 s), plus the time kubectl takes to read it back.
    assert delay <= 1.0 + 1.5, f"Ready {delay:.1f}s after vLLM answered"


def assert_a_dead_engine_degrades(kube: Kube, name: str, namespace: str, pod: dict[str, Any]) -> None:
    os.kill(engine_core_of(int(pod["containers"]["runtime"]["pid"])), signal.SIGKILL)
    status = eventually(
        lambda: (s := kube.get("llmb", name, namespace).get("status", {})).get("phase") == "Degraded" and s,
        timeout=30,
        message="phase Degraded",
    )
    ready = condition(kube, name, namespace, "Ready") or {}
    assert ready.get("reason") == "RuntimeUnavailable", ready
    # The server says its engine is dead (/health 503) for the seconds before it exits; after that
    # its port is closed until the container restarts.
    said = status["lastError"]
    assert pod["podIP"] in said and ("engine is dead" in said or "refused" in said or "closed" in said), said


def assert_each_runtime_answers_through_the_gateway(
    kube: Kube, manifests: dict[str, dict[str, Any]], namespace: str, tmp_path: Path
) -> None:
    """The same names through the gateway, to each real runtime (the gateway's own cases:
    test_gateway_e2e.py)."""
    gateway = run_gateway(
        ["-n", namespace, "--auth", "none"],
        kube.kubeconfig,
        tmp_path / "gateway.log",
        {"LLMOP_EXTERNAL_DENY_CIDRS": TEST_DENY_CIDRS},
    )
    with gateway as base:
        for manifest in manifests.values():
            if manifest["spec"].get("runtime"):
                status = kube.get("llmb", manifest["metadata"]["name"], namespace)["status"]
                assert_answers_through_the_gateway(status, base)


def assert_openai_client_chats(status: dict[str, Any], pod_url: str) -> None:
    """A user copies the model name from status into the openai client; it answers. The base URL
    is status.openaiBaseURL with the Service's address swapped for the pod's (no cluster DNS here)."""
    base = status["openaiBaseURL"]
    assert base == f"{status['endpoint']}/v1"
    client = openai.OpenAI(base_url=base.replace(status["endpoint"], pod_url), api_key="none", timeout=60)
    for model in status["models"]:
        answer = client.chat.completions.create(
            model=model["name"], messages=[{"role": "user", "content": "Hello"}], max_tokens=3
        )
        assert answer.choices and answer.choices[0].message.content is not None, (model["name"], answer)


def assert_answers_through_the_gateway(status: dict[str, Any], gateway: str) -> None:
    """Chat, streamed chat and completions by the names status lists, through `llmop gateway`."""
    client = openai.OpenAI(base_url=f"{gateway}/v1", api_key="none", timeout=60, max_retries=0)
    hello = [{"role": "user", "content": "Hello"}]
    for model in (m["name"] for m in status["models"]):
        answer = client.chat.completions.create(model=model, messages=hello, max_tokens=3)
        assert answer.choices and answer.choices[0].message.content is not None, (model, answer)
        chunks = list(client.chat.completions.create(model=model, messages=hello, max_tokens=3, stream=True))
        assert len(chunks) >= 2 and chunks[0].choices is not None, (model, chunks)
        text = client.completions.create(model=model, prompt="Hello", max_tokens=3)
        assert text.choices and text.choices[0].text is not None, (model, text)


def watch_cold_start(
    kube: Kube, name: str, namespace: str, health_url: str
) -> tuple[set[tuple[str, str]], float]:
    """Watch a backend while its runtime's port is closed: Ready never True meanwhile. Returns
    the (phase, Ready reason) pairs seen then, and how long after the runtime first answered
    200 the backend was Ready."""
    answered_at: list[float] = []

    def watch_port() -> None:
        while not answered_at:
            try:
                if httpx.get(health_url, timeout=1).status_code == 200:
                    answered_at.append(time.monotonic())
            except httpx.HTTPError:
                time.sleep(0.05)

    threading.Thread(target=watch_port, daemon=True).start()
    seen: set[tuple[str, str]] = set()
    while not answered_at:
        status = kube.get("llmb", name, namespace).get("status", {})
        ready = condition(kube, name, namespace, "Ready") or {}
        # Checked only while the port is closed: Ready must never be True then.
        if not answered_at:
            assert ready.get("status") != "True", f"{name} Ready before its runtime answered"
            seen.add((status.get("phase", ""), ready.get("reason", "")))
        time.sleep(0.3)
    ready_at = eventually(
        lambda: (
            (condition(kube, name, namespace, "Ready") or {}).get("status") == "True" and time.monotonic()
        ),
        timeout=30,
        interval=0.1,
        message="Ready after the runtime answered",
    )
    return seen, ready_at - answered_at[0]


def test_ready_is_never_reported_before_the_runtime_answers(
    kube: Kube, backend_ns: str, podrunner: PodRunner
) -> None:
    manifest = example("llamacpp")
    manifest["metadata"]["name"] = "slow-start"
    manifest["spec"]["startup"] = {"timeout": "5m", "probeInterval": "2s"}
    podrunner.set_delay(20, namespace=backend_ns, backend="slow-start")
    kube.apply(manifest, backend_ns)

    pod = eventually(
        lambda: [
            p
            for p in kube.list("pods", backend_ns, "llmop.dev/backend=slow-start")
            if p["status"].get("podIP")
        ],
        timeout=60,
        message="a pod with an IP",
    )[0]
    seen, delay = watch_cold_start(
        kube, "slow-start", backend_ns, f"http://{pod['status']['podIP']}:8080/health"
    )
    assert "Loading" in {phase for phase, _ in seen}
    # One probe interval (2 s), plus the time kubectl takes to read it back.
    assert delay <= 2.0 + 1.5, f"Ready {delay:.1f}s after the runtime answered"
    podrunner.clear_delays()


def engine_core_of(pid: int) -> int:
    """The pid of the real vLLM's engine process, a child of its API server (`VLLM::EngineCore`)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")[0]
        except OSError:
            continue
        if int(stat.rpartition(")")[2].split()[1]) == pid and cmdline == b"VLLM::EngineCore":
            return int(entry.name)
    raise AssertionError(f"no VLLM::EngineCore child of {pid}")


@pytest.mark.timeout(600)
def test_too_many_gpus_is_explained_in_status_without_spamming(
    kube: Kube, backend_ns: str, operator: OperatorProcess
) -> None:
    manifest = example("llamacpp")
    manifest["metadata"]["name"] = "greedy"
    manifest["spec"]["gpu"] = {"count": 8}
    kube.apply(manifest, backend_ns)
    scheduled = eventually(
        lambda: condition(kube, "greedy", backend_ns, "Scheduled"),
        timeout=60,
        message="a Scheduled condition",
    )
    assert scheduled["status"] == "False" and scheduled["reason"] == "InsufficientGPU"
    assert "nvidia.com/gpu" in scheduled["message"]
    ready = condition(kube, "greedy", backend_ns, "Ready")
    assert ready and ready["status"] == "False"

    def greedy_events() -> list[tuple[str, str, int]]:
        return [
            (e["type"], e["reason"], e.get("count", 1))
            for e in kube.list("events", backend_ns)
            if e["involvedObject"]["name"] == "greedy"
        ]

    version = kube.get("llmb", "greedy", backend_ns)["metadata"]["resourceVersion"]
    events = greedy_events()
    time.sleep(15)
    # Waiting for GPUs is a steady state: no status write and no new Event while it lasts.
    assert kube.get("llmb", "greedy", backend_ns)["metadata"]["resourceVersion"] == version, "status churned"
    assert greedy_events() == events, "Events kept coming while nothing changed"
    assert operator.alive()


def test_a_two_gpu_vllm_backend_asking_for_a_missing_product_says_which_and_carries_tensor_parallelism(
    kube: Kube, backend_ns: str, operator: OperatorProcess
) -> None:
    """On the real API server and scheduler: vLLM across two GPUs gets --tensor-parallel-size 2,
    and a GPU product no node has (the nodes carry NVIDIA-H100-80GB-HBM3) is named in status,
    where the scheduler's own words speak only of node affinity."""
    manifest = example("vllm")
    manifest["metadata"]["name"] = "picky"
    manifest["spec"]["gpu"] = {"count": 2, "product": ["NVIDIA-B200"]}
    kube.apply(manifest, backend_ns)
    scheduled = eventually(
        lambda: condition(kube, "picky", backend_ns, "Scheduled"),
        timeout=60,
        message="a Scheduled condition",
    )
    assert scheduled["status"] == "False" and "NVIDIA-B200" in scheduled["message"], scheduled
    assert "affinity" in scheduled["message"], "the scheduler's own words follow"

    runtime = next(
        c
        for c in kube.get("deployment", "picky", backend_ns)["spec"]["template"]["spec"]["containers"]
        if c["name"] == "runtime"
    )
    args = runtime.get("args", [])
    assert "--tensor-parallel-size" in args and args[args.index("--tensor-parallel-size") + 1] == "2", args


def test_a_model_larger_than_its_gpus_gives_fits_false_with_both_numbers_before_the_runtime_starts(
    kube: Kube, backend_ns: str, operator: OperatorProcess, modelsource: ModelSource
) -> None:
    """The source lists a 150 GiB repo (its weights file declared, no bytes behind it); the fake
    GPU node's label says 81559 MiB. Fits=False names both as soon as the pull announces the size,
    while vLLM has not started (its agent is still pulling: the runtime never gets a GPU to fail
    on), and a Warning Event says it once."""
    repo = modelsource.root / "hf" / "heavy-org" / "model-150g"
    repo.mkdir(parents=True, exist_ok=True)
    (repo / "config.json").write_text('{"model_type": "llama"}')
    (repo / "model.safetensors.declared-size").write_text(str(150 << 30))
    manifest = example("vllm")
    manifest["metadata"]["name"] = "heavy"
    manifest["spec"]["models"] = [{"name": "hf://heavy-org/model-150g"}]
    manifest["spec"].pop("storage")  # an emptyDir: nothing to provision
    kube.apply(manifest, backend_ns)

    def fits_false() -> dict[str, Any] | None:
        found = condition(kube, "heavy", backend_ns, "Fits")
        return found if found and found["status"] == "False" else None

    fits = eventually(fits_false, timeout=120, message="Fits=False")
    assert fits["reason"] == "ModelTooLarge", fits
    assert "150.0 GiB" in fits["message"] and "79.6 GiB (1 x 81559 MiB" in fits["message"], fits
    status = kube.get("llmb", "heavy", backend_ns)["status"]
    assert status["phase"] != "Ready"
    runtime_ran = [
        c
        for pod in kube.list("pods", backend_ns)
        if pod["metadata"]["labels"].get("llmop.dev/backend") == "heavy"
        for c in pod["status"].get("containerStatuses", [])
        if c["name"] == "runtime" and "waiting" not in c.get("state", {})
    ]
    assert runtime_ran == [], "Fits came before the runtime was started"
    warnings = eventually(
        lambda: [
            e
            for e in kube.list("events", backend_ns)
            if e["involvedObject"]["name"] == "heavy" and e["reason"] == "ModelTooLarge"
        ],
        timeout=30,
        message="a ModelTooLarge Event",
    )
    assert warnings[0]["type"] == "Warning" and "150.0 GiB" in warnings[0]["message"]


def test_a_killed_runtime_turns_the_backend_degraded_then_ready_again(
    kube: Kube, backend_ns: str, podrunner: PodRunner
) -> None:
    manifest = example("llamacpp")
    manifest["metadata"]["name"] = "fragile"
    kube.apply(manifest, backend_ns)
    wait_backend_ready(kube, "fragile", backend_ns)
    pod = kube.list("pods", backend_ns, "llmop.dev/backend=fragile")[0]["metadata"]["name"]
    podrunner.kill(backend_ns, pod, "runtime", restart_after=12)
    degraded = eventually(
        lambda: (
            (kube.get("llmb", "fragile", backend_ns).get("status", {}).get("phase") == "Degraded")
            and kube.get("llmb", "fragile", backend_ns)["status"]
        ),
        timeout=20,
        message="phase Degraded",
    )
    assert "refused" in degraded["lastError"] or "closed" in degraded["lastError"]
    assert condition(kube, "fragile", backend_ns, "Ready")["status"] == "False"  # type: ignore[index]
    wait_backend_ready(kube, "fragile", backend_ns, timeout="60s")
    events = [
        (e["type"], e["reason"])
        for e in kube.list("events", backend_ns)
        if e["involvedObject"]["name"] == "fragile"
    ]
    assert ("Warning", "RuntimeUnavailable") in events and ("Normal", "RuntimeServing") in events, events


def test_external_backend_at_a_dead_url_stalls_after_its_timeout(
    kube: Kube, backend_ns: str, operator: OperatorProcess
) -> None:
    manifest = copy.deepcopy(example("external"))
    manifest["metadata"]["name"] = "nowhere"
    manifest["spec"]["external"]["url"] = "http://127.0.0.1:9"  # discard port: nothing listens
    manifest["spec"]["startup"] = {"timeout": "8s", "probeInterval": "1s"}
    started = time.monotonic()
    kube.apply(manifest, backend_ns)
    stalled = eventually(
        lambda: (c := condition(kube, "nowhere", backend_ns, "Stalled")) and c["status"] == "True" and c,
        timeout=30,
        message="Stalled=True",
    )
    assert time.monotonic() - started >= 8
    assert stalled["reason"] == "StartupTimeout"
    assert "127.0.0.1:9" in stalled["message"] and "refused" in stalled["message"]
    assert kube.get("llmb", "nowhere", backend_ns)["status"]["lastError"] == stalled["message"]


def test_nothing_is_written_while_nothing_changes(kube: Kube, backend_ns: str, tmp_path: Path) -> None:
    with run_vllm_standin(tmp_path, served_model_name="steady") as url:
        for index in range(3):
            manifest = example("external")
            manifest["metadata"]["name"] = f"steady-{index}"
            manifest["spec"]["external"]["url"] = url
            manifest["spec"]["startup"] = {"timeout": "2m", "probeInterval": "1s"}
            kube.apply(manifest, backend_ns)
        for index in range(3):
            wait_backend_ready(kube, f"steady-{index}", backend_ns)
        time.sleep(3)  # let the last transition settle
        before = {
            b["metadata"]["name"]: b["metadata"]["resourceVersion"] for b in kube.list("llmb", backend_ns)
        }
        watch = kube.watch_changes("llmb", backend_ns, seconds=60)
        after = {
            b["metadata"]["name"]: b["metadata"]["resourceVersion"] for b in kube.list("llmb", backend_ns)
        }
    assert watch == [], f"{len(watch)} writes to backends that did not change"
    assert before == after


def test_deleting_a_backend_removes_what_it_owns(kube: Kube, backend_ns: str) -> None:
    manifest = example("llamacpp")
    manifest["metadata"]["name"] = "doomed"
    kube.apply(manifest, backend_ns)
    eventually(
        lambda: kube.get_or_none("deployment", "doomed", backend_ns), timeout=30, message="the Deployment"
    )
    assert kube.get_or_none("service", "doomed", backend_ns)
    assert kube.get_or_none("pvc", "doomed-models", backend_ns)
    kube.run("delete", "llmb", "doomed", "-n", backend_ns, "--timeout=60s")
    eventually(
        lambda: (
            not any(
                kube.get_or_none(kind, name, backend_ns)
                for kind, name in [("deployment", "doomed"), ("service", "doomed"), ("pvc", "doomed-models")]
            )
        ),
        timeout=60,
        message="owned objects deleted",
    )
    assert not kube.list("mpull", backend_ns, "llmop.dev/backend=doomed")

"""ModelPull end to end: real bytes from the local model source (or a local Ollama registry) into
real runtimes at the pods' addresses, with the operator as its own process.

What a user sees through kubectl: progress rising while bytes move, Succeeded with the digest and
size the runtime then lists, pulls that survive an operator or runtime restart without starting
over, Stalled with the source's own words, and a deleted pull that stops moving bytes.
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from llmop.agent.store import ModelStore
from support.kube import REPO, Kube, eventually
from support.operator import OperatorProcess
from support.runtimes import ModelSource, PodRunner

pytestmark = pytest.mark.e2e

AGENT_PORT = 8090
#: LLMOP_PULL_PROGRESS_INTERVAL of the operator under test (tests/e2e/conftest.py).
PROGRESS_INTERVAL = 1.0
#: Bytes a source may send beyond the file when a download resumes: what was in flight when
#: a process died (socket buffers), never a second copy of the file.
RESUME_SLACK = 256 * 1024


# --- models the tests publish on the model source ------------------------------------------------


@dataclass(frozen=True)
class Published:
    """A tiny GGUF on the model source under a name of its own, so its counters are its own."""

    model: str  # what spec.models / spec.model says
    stats_path: str  # the URL path the source counts its bytes under
    local_path: str  # where the agent lands it in the model volume
    size: int
    sha256: str


def _tiny(modelsource: ModelSource) -> Path:
    return modelsource.root / "files" / "tiny.gguf"


def _published(modelsource: ModelSource, target: Path, model: str, stats_path: str, local: str) -> Published:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_tiny(modelsource), target)
    data = target.read_bytes()
    return Published(model, stats_path, local, len(data), hashlib.sha256(data).hexdigest())


def publish_url(modelsource: ModelSource, stem: str) -> Published:
    """`http://<source>/files/e2e/<stem>-<random>.gguf`."""
    name = f"{stem}-{uuid.uuid4().hex[:6]}.gguf"
    host_port = modelsource.url.removeprefix("http://")
    return _published(
        modelsource,
        modelsource.root / "files" / "e2e" / name,
        f"{modelsource.url}/files/e2e/{name}",
        f"/files/e2e/{name}",
        f"url/http/{host_port}/files/e2e/{name}",
    )


def publish_hf(modelsource: ModelSource, stem: str) -> Published:
    """`hf://llmop-e2e/<stem>-<random>/tiny.gguf` on the source's Hugging Face endpoint."""
    repo = f"{stem}-{uuid.uuid4().hex[:6]}"
    published = _published(
        modelsource,
        modelsource.root / "hf" / "llmop-e2e" / repo / "tiny.gguf",
        f"hf://llmop-e2e/{repo}/tiny.gguf",
        "",
        f"hf-file/llmop-e2e/{repo}/main/tiny.gguf",
    )
    # The agent fetches from the commit `main` points at, never from the branch name.
    commit = modelsource.commit_of(f"llmop-e2e/{repo}")
    return replace(published, stats_path=f"/llmop-e2e/{repo}/resolve/{commit}/tiny.gguf")


def publish_hf_repo(source: ModelSource, stem: str) -> Published:
    """A copy of the source's Qwen3-0.6B mirror (a few files, one safetensors) as
    `hf://llmop-e2e/<stem>-<random>`; the Published file is its safetensors."""
    repo = f"{stem}-{uuid.uuid4().hex[:6]}"
    target = source.root / "hf" / "llmop-e2e" / repo
    shutil.copytree(source.root / "hf" / "Qwen" / "Qwen3-0.6B", target)
    data = (target / "model.safetensors").read_bytes()
    commit = source.commit_of(f"llmop-e2e/{repo}")
    return Published(
        f"hf://llmop-e2e/{repo}",
        f"/llmop-e2e/{repo}/resolve/{commit}/model.safetensors",
        f"hf/llmop-e2e/{repo}/main",
        len(data),
        hashlib.sha256(data).hexdigest(),
    )


def repo_size(source: ModelSource, model: Published) -> int:
    repo = source.root / "hf" / model.model.removeprefix("hf://")
    return sum(path.stat().st_size for path in repo.rglob("*") if path.is_file())


# --- manifests ------------------------------------------------------------------------------------


def llamacpp_backend(name: str, model: str, **model_fields: Any) -> dict[str, Any]:
    manifest = dict(yaml.safe_load((REPO / "examples" / "llamacpp.yaml").read_text()))
    manifest["metadata"]["name"] = name
    spec = manifest["spec"]
    spec["gpu"] = {"count": 0}  # pulls do not need GPUs; the fake nodes have few
    spec["models"] = [{"name": model, **model_fields}]
    spec["startup"] = {"timeout": "10m", "probeInterval": "1s"}
    return manifest


def vllm_backend(name: str, model: str) -> dict[str, Any]:
    manifest = dict(yaml.safe_load((REPO / "examples" / "vllm.yaml").read_text()))
    manifest["metadata"]["name"] = name
    spec = manifest["spec"]
    spec["gpu"] = {"count": 0}
    spec["models"] = [{"name": model}]
    spec["startup"] = {"timeout": "10m", "probeInterval": "1s"}
    return manifest


def ollama_backend(name: str, models: list[str]) -> dict[str, Any]:
    manifest = dict(yaml.safe_load((REPO / "examples" / "ollama.yaml").read_text()))
    manifest["metadata"]["name"] = name
    spec = manifest["spec"]
    spec["gpu"] = {"count": 0}
    spec["models"] = [{"name": model, "insecure": True} for model in models]
    spec["startup"] = {"timeout": "10m", "probeInterval": "1s"}
    return manifest


def model_pull(
    name: str, backend: str, model: str, *, retry: dict[str, Any] | None = None, **fields: Any
) -> dict[str, Any]:
    spec: dict[str, Any] = {"backendRef": {"name": backend}, "model": model, **fields}
    if retry:
        spec["retry"] = retry
    return {"apiVersion": "llmop.dev/v1alpha1", "kind": "ModelPull", "metadata": {"name": name}, "spec": spec}


# --- reading what kubectl shows -------------------------------------------------------------------


def pull_status(kube: Kube, name: str, namespace: str) -> dict[str, Any]:
    return dict((kube.get_or_none("mpull", name, namespace) or {}).get("status") or {})


def condition_of(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c["type"] == type_), {})


def completed_bytes(status: dict[str, Any]) -> int:
    return int((status.get("progress") or {}).get("completedBytes") or 0)


def backend_pull(kube: Kube, backend: str, namespace: str) -> str:
    """The name of the one ModelPull the backend owns."""
    pulls = eventually(
        lambda: kube.list("mpull", namespace, f"llmop.dev/backend={backend}"),
        timeout=30,
        message=f"the ModelPull of {backend}",
    )
    assert len(pulls) == 1, [p["metadata"]["name"] for p in pulls]
    return str(pulls[0]["metadata"]["name"])


def wait_phase(kube: Kube, name: str, namespace: str, phase: str, timeout: float = 120) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        status = pull_status(kube, name, namespace)
        if status.get("phase") == phase:
            return status
        if phase == "Succeeded" and status.get("phase") == "Failed":
            raise AssertionError(f"mpull/{name} failed:\n{yaml.safe_dump(status)}")
        return None

    try:
        return dict(eventually(reached, timeout=timeout, interval=0.3, message=f"mpull/{name} {phase}"))
    except AssertionError:
        raise AssertionError(
            f"mpull/{name} not {phase}:\n{yaml.safe_dump(pull_status(kube, name, namespace))}"
        ) from None


def wait_progress(
    kube: Kube, name: str, namespace: str, at_least: int, timeout: float = 60
) -> dict[str, Any]:
    """The status once it reports `at_least` bytes, before the pull finished."""

    def reached() -> dict[str, Any] | None:
        status = pull_status(kube, name, namespace)
        assert status.get("phase") != "Succeeded", "the pull finished before it could be interrupted"
        return status if completed_bytes(status) >= at_least else None

    return dict(
        eventually(reached, timeout=timeout, interval=0.2, message=f"mpull/{name} at {at_least} bytes")
    )


def wait_backend_ready(kube: Kube, name: str, namespace: str, timeout: str = "180s") -> None:
    result = kube.run(
        "wait", "-n", namespace, "--for=condition=Ready", f"llmb/{name}", f"--timeout={timeout}", check=False
    )
    if result.returncode != 0:
        status = kube.get("llmb", name, namespace).get("status")
        raise AssertionError(f"llmb/{name} not Ready: {result.stderr}\nstatus: {yaml.safe_dump(status)}")


def backend_ready(kube: Kube, name: str, namespace: str) -> str | None:
    body = kube.get_or_none("llmb", name, namespace) or {}
    return condition_of(body.get("status") or {}, "Ready").get("status")


def backend_pod(kube: Kube, backend: str, namespace: str) -> dict[str, Any]:
    pods = eventually(
        lambda: [
            p
            for p in kube.list("pods", namespace, f"llmop.dev/backend={backend}")
            # Pending too: the kubelet (here hack/podrunner.py) reports a pod Pending until its
            # agent has the model, and a pull goes on in it meanwhile.
            if p["status"].get("podIP") and not p["metadata"].get("deletionTimestamp")
        ],
        timeout=60,
        message=f"a running pod of {backend}",
    )
    return dict(pods[0])


def agent_url(kube: Kube, backend: str, namespace: str) -> str:
    return f"http://{backend_pod(kube, backend, namespace)['status']['podIP']}:{AGENT_PORT}"


def agent_tags(kube: Kube, backend: str, namespace: str) -> list[str]:
    """What the backend's agent lists, asked with the token the operator made for it."""
    secret = kube.get("secret", f"{backend}-agent-token", namespace)
    bearer = {"Authorization": f"Bearer {base64.b64decode(secret['data']['token']).decode()}"}
    url = agent_url(kube, backend, namespace)
    return [m["name"] for m in httpx.get(f"{url}/api/tags", headers=bearer, timeout=10).json()["models"]]


def events_for(kube: Kube, name: str, namespace: str) -> list[dict[str, Any]]:
    return [e for e in kube.list("events", namespace) if e["involvedObject"]["name"] == name]


class WriteWatch:
    """Every write kubectl's watch sees to one object, with the time it saw it."""

    def __init__(self, kube: Kube, kind: str, name: str, namespace: str) -> None:
        template = '{.type} {.object.metadata.resourceVersion}{"\\n"}'
        self.process = subprocess.Popen(
            kube.watch_command(kind, namespace, template, name),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.seen: list[float] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.strip():
                self.seen.append(time.monotonic())

    def stop(self) -> list[float]:
        self.process.terminate()
        self.process.wait(10)
        self._reader.join(10)
        return self.seen


# --- fixtures -------------------------------------------------------------------------------------


@pytest.fixture
def source(modelsource: ModelSource) -> Iterator[ModelSource]:
    """The model source, unthrottled and without faults before and after the test."""
    modelsource.throttle(0)
    modelsource.clear_faults()
    yield modelsource
    modelsource.throttle(0)
    modelsource.clear_faults()


@pytest.fixture
def pull_ns(kube: Kube, operator: OperatorProcess, podrunner: PodRunner) -> Iterator[str]:
    with kube.namespace("pull") as name:
        yield name


# --- the tests ------------------------------------------------------------------------------------


def test_a_pull_moves_real_bytes_with_rising_progress_and_the_runtime_then_lists_the_model(
    kube: Kube, pull_ns: str, source: ModelSource, podrunner: PodRunner
) -> None:
    model = publish_hf(source, "progress")
    source.throttle(model.size // 10)  # about ten seconds for the whole file
    kube.apply(llamacpp_backend("progress", model.model), pull_ns)
    name = backend_pull(kube, "progress", pull_ns)
    watch = WriteWatch(kube, "mpull", name, pull_ns)

    seen: list[int] = []  # distinct completedBytes values, in the order kubectl showed them
    first_bytes_at: float | None = None
    deadline = time.monotonic() + 120
    while True:
        status = pull_status(kube, name, pull_ns)
        done = completed_bytes(status)
        if done and first_bytes_at is None:
            first_bytes_at = time.monotonic()
        if done and (not seen or seen[-1] != done):
            seen.append(done)
        if status.get("phase") == "Succeeded":
            break
        assert status.get("phase") != "Failed", yaml.safe_dump(status)
        assert time.monotonic() < deadline, f"not Succeeded in 120s:\n{yaml.safe_dump(status)}"
        time.sleep(0.3)
    succeeded_at = time.monotonic()
    source.throttle(0)
    time.sleep(2 * PROGRESS_INTERVAL)
    writes = watch.stop()

    rising = [value for value in seen if value < model.size]
    assert len(rising) >= 3, f"progress seen: {seen}"
    assert rising == sorted(rising), f"progress went backwards: {seen}"
    assert first_bytes_at is not None and succeeded_at - first_bytes_at >= 5, "the pull was not throttled"
    # Writes at a bounded rate: about one per progress interval while bytes move, not one per chunk
    # (the source sends a chunk every 0.1 s), plus the phase changes.
    during = [t for t in writes if first_bytes_at - 1 <= t <= succeeded_at]
    budget = (succeeded_at - first_bytes_at) / PROGRESS_INTERVAL + 4
    assert len(during) <= budget, f"{len(during)} status writes in {succeeded_at - first_bytes_at:.1f}s"

    status = pull_status(kube, name, pull_ns)
    assert status["digest"] == f"sha256:{model.sha256}"
    assert status["sizeBytes"] == model.size
    progress = status["progress"]
    assert progress["completedBytes"] == progress["totalBytes"] == model.size
    assert progress["percent"] == 100
    assert status["attempts"] == 1 and status["startedAt"] and status["completedAt"]
    assert not status.get("lastError")
    assert condition_of(status, "Ready")["status"] == "True"
    assert condition_of(status, "Stalled")["status"] == "False"
    assert condition_of(status, "Reconciling")["status"] == "False"
    row = kube.run("get", "mpull", name, "-n", pull_ns).stdout.splitlines()
    assert row[0].split()[:5] == ["NAME", "BACKEND", "MODEL", "PHASE", "PROGRESS"], row
    assert row[1].split()[1:4] == ["progress", model.model, "Succeeded"], row
    assert "100%" in row[1], row

    # Real bytes: the source sent the file once, and they are the file's bytes on the volume.
    sent = source.stats(model.stats_path)
    assert sent["completed"] == 1 and model.size <= sent["bytes_sent"] <= model.size + RESUME_SLACK, sent
    landed = podrunner.workdir / "volumes" / pull_ns / "progress-models" / model.local_path
    assert hashlib.sha256(landed.read_bytes()).hexdigest() == model.sha256

    wait_backend_ready(kube, "progress", pull_ns)
    pod_ip = backend_pod(kube, "progress", pull_ns)["status"]["podIP"]
    # Served, and listed in status, under the name clients send: the repo's path, no hf://.
    served = httpx.get(f"http://{pod_ip}:8080/v1/models", timeout=10).json()["data"]
    assert [m["id"] for m in served] == [model.model.removeprefix("hf://")]
    listed = kube.get("llmb", "progress", pull_ns)["status"]["models"]
    assert [m["name"] for m in listed] == [model.model.removeprefix("hf://")]


def test_an_operator_killed_mid_pull_resumes_it_and_never_repeats_a_finished_pull(
    kube: Kube, pull_ns: str, source: ModelSource, operator: OperatorProcess
) -> None:
    model = publish_url(source, "restart")
    source.throttle(model.size // 12)
    kube.apply(llamacpp_backend("restart", model.model), pull_ns)
    name = backend_pull(kube, "restart", pull_ns)
    before = wait_progress(kube, name, pull_ns, model.size // 4)

    operator.kill()
    time.sleep(3)  # the pull is on its own while no operator runs
    operator.start()
    operator.wait_started()

    status = wait_phase(kube, name, pull_ns, "Succeeded")
    sent = source.stats(model.stats_path)
    resumed_mid_file = any(start > 0 for start in sent["range_starts"])
    assert sent["bytes_sent"] <= model.size + RESUME_SLACK or resumed_mid_file, (
        f"the pull started over: {sent}"
    )
    # The operator's restart is not a failed attempt: the same attempt carried on.
    assert status["attempts"] == 1, yaml.safe_dump(status)
    assert status["startedAt"] == before["startedAt"]
    assert status["digest"] == f"sha256:{model.sha256}" and status["sizeBytes"] == model.size
    wait_backend_ready(kube, "restart", pull_ns)

    # A finished pull is never repeated: another restart leaves it, and the source, alone.
    source.reset_stats()
    settled = {key: status[key] for key in ("phase", "attempts", "startedAt", "completedAt", "digest")}
    version = kube.get("mpull", name, pull_ns)["metadata"]["resourceVersion"]
    log_before = len(operator.log())
    operator.kill()
    operator.start()
    operator.wait_started()
    eventually(
        lambda: "Daemon 'run_model_pull' is invoked" in operator.log()[log_before:],
        timeout=30,
        message="the restarted operator looking at the ModelPull",
    )
    time.sleep(8)
    after = pull_status(kube, name, pull_ns)
    assert {key: after[key] for key in settled} == settled
    assert kube.get("mpull", name, pull_ns)["metadata"]["resourceVersion"] == version, "status rewritten"
    assert source.stats(model.stats_path)["requests"] == 0, source.stats()
    assert backend_ready(kube, "restart", pull_ns) == "True"


def _observe_until_succeeded(
    kube: Kube, name: str, namespace: str, timeout: float = 180
) -> tuple[dict[str, Any], set[str]]:
    """The final status, and every lastError shown on the way."""
    errors: set[str] = set()
    deadline = time.monotonic() + timeout
    while True:
        status = pull_status(kube, name, namespace)
        if status.get("lastError"):
            errors.add(status["lastError"])
        if status.get("phase") == "Succeeded":
            return status, errors
        assert status.get("phase") != "Failed", yaml.safe_dump(status)
        assert time.monotonic() < deadline, f"mpull/{name} not Succeeded:\n{yaml.safe_dump(status)}"
        time.sleep(0.3)


@pytest.mark.parametrize("runtime", ["llamacpp", "vllm"])
def test_a_killed_agent_mid_pull_is_retried_and_resumes_from_its_partial_file(
    kube: Kube, pull_ns: str, source: ModelSource, podrunner: PodRunner, runtime: str
) -> None:
    if runtime == "llamacpp":
        model = publish_url(source, "agentkill")
        backend = llamacpp_backend("agentkill", model.model)
        total = model.size
    else:
        model = publish_hf_repo(source, "agentkill")
        backend = vllm_backend("agentkill", model.model)
        total = repo_size(source, model)
    source.throttle(total // 12)
    kube.apply(backend, pull_ns)
    name = backend_pull(kube, "agentkill", pull_ns)
    wait_progress(kube, name, pull_ns, total // 4)
    pod = backend_pod(kube, "agentkill", pull_ns)["metadata"]["name"]

    podrunner.kill(pull_ns, pod, "agent", restart_after=2)

    status, errors = _observe_until_succeeded(kube, name, pull_ns)
    assert status["attempts"] >= 2, yaml.safe_dump(status)
    assert errors, "the failed attempt never showed in status.lastError"
    assert status["sizeBytes"] == total
    if runtime == "llamacpp":
        assert status["digest"] == f"sha256:{model.sha256}"
    sent = source.stats(model.stats_path)
    assert any(0 < start < model.size for start in sent["range_starts"]), f"not resumed: {sent}"
    assert sent["bytes_sent"] <= model.size + RESUME_SLACK, sent
    if runtime == "llamacpp":
        wait_backend_ready(kube, "agentkill", pull_ns)
    else:
        # The real vLLM's start on a pulled repo is test_backend.py's (a minute of CPU here); what
        # this test adds is that the resumed files are whole and the runtime is started on them.
        podrunner.wait_running(pull_ns, name=pod, timeout=60)
        assert_pod_holds_repo(podrunner, pull_ns, pod, source, model)


def assert_pod_holds_repo(
    podrunner: PodRunner, namespace: str, pod: str, source: ModelSource, model: Published
) -> None:
    """Each file of the source's repo is in the pod's volumes, byte for byte."""
    repo = source.root / "hf" / model.model.removeprefix("hf://")
    wanted = {
        path.relative_to(repo).as_posix(): path.read_bytes() for path in repo.rglob("*") if path.is_file()
    }
    held = [
        path
        for volume in (podrunner.pod(namespace, pod) or {}).get("volumes", {}).values()
        for path in Path(volume).rglob("*")
        if path.is_file()
    ]
    for name, data in wanted.items():
        copies = [path for path in held if path.as_posix().endswith("/" + name)]
        assert copies, f"{name} is not in the pod's volumes: {sorted(map(str, held))}"
        assert all(copy.read_bytes() == data for copy in copies), f"{name} differs from the source's"


def test_a_killed_ollama_mid_pull_is_retried_until_the_model_is_there(
    kube: Kube, pull_ns: str, podrunner: PodRunner, slow_ollama_registry: str
) -> None:
    model = f"{slow_ollama_registry}/library/slow-3:latest"
    kube.apply(ollama_backend("ollamakill", [model]), pull_ns)
    name = backend_pull(kube, "ollamakill", pull_ns)
    wait_progress(kube, name, pull_ns, 150_000)
    pod = backend_pod(kube, "ollamakill", pull_ns)

    podrunner.kill(pull_ns, pod["metadata"]["name"], "runtime", restart_after=2)

    status, errors = _observe_until_succeeded(kube, name, pull_ns)
    assert status["attempts"] >= 2, yaml.safe_dump(status)
    assert errors, "the failed attempt never showed in status.lastError"
    assert status["digest"].startswith("sha256:") and status["sizeBytes"] > 500_000
    wait_backend_ready(kube, "ollamakill", pull_ns)
    pod_ip = backend_pod(kube, "ollamakill", pull_ns)["status"]["podIP"]
    listed = httpx.get(f"http://{pod_ip}:11434/api/tags", timeout=10).json()["models"]
    assert [m["name"] for m in listed] == [model]
    assert f"sha256:{listed[0]['digest']}" == status["digest"]


@pytest.mark.parametrize("runtime", ["llamacpp", "ollama"])
def test_a_model_that_does_not_exist_stalls_with_the_sources_words(
    kube: Kube, pull_ns: str, source: ModelSource, ollama_registry: str, runtime: str
) -> None:
    if runtime == "llamacpp":
        ghost = "hf://llmop-e2e/no-such-repo/ghost.gguf"
        backend = llamacpp_backend("home", publish_url(source, "home").model)
        backend["spec"]["models"].append({"name": ghost})  # the agent pulls only what is declared
        words = '404 Not Found: {"error": "Repository not found"}'
        who = "the llmop agent at"
        fields: dict[str, Any] = {}
    else:
        backend = ollama_backend("home", [f"{ollama_registry}/library/tiny:latest"])
        ghost = f"{ollama_registry}/library/ghost:latest"
        words = "file does not exist"
        who = "Ollama at"
        fields = {"insecure": True}
    kube.apply(backend, pull_ns)
    started = time.monotonic()
    kube.apply(
        model_pull("ghost", "home", ghost, retry={"maxAttempts": 2, "backoff": "1s"}, **fields), pull_ns
    )

    status = wait_phase(kube, "ghost", pull_ns, "Failed", timeout=120)
    assert time.monotonic() - started >= 1, "no backoff between the two attempts"
    stalled = condition_of(status, "Stalled")
    assert stalled["status"] == "True", yaml.safe_dump(status)
    assert words in stalled["message"] and words in status["lastError"], yaml.safe_dump(status)
    assert "2 attempt" in stalled["message"] and who in stalled["message"], stalled["message"]
    assert status["attempts"] == 2
    assert condition_of(status, "Ready")["status"] == "False"
    assert condition_of(status, "Reconciling")["status"] == "False"
    warnings = [e for e in events_for(kube, "ghost", pull_ns) if e["type"] == "Warning"]
    assert any(words in e["message"] for e in warnings), warnings
    # Settled: no more attempts, no more writes.
    version = kube.get("mpull", "ghost", pull_ns)["metadata"]["resourceVersion"]
    time.sleep(5)
    assert kube.get("mpull", "ghost", pull_ns)["metadata"]["resourceVersion"] == version
    if runtime == "llamacpp":
        assert ghost not in agent_tags(kube, "home", pull_ns)
    else:
        pod_ip = backend_pod(kube, "home", pull_ns)["status"]["podIP"]
        listed = [
            m["name"] for m in httpx.get(f"http://{pod_ip}:11434/api/tags", timeout=10).json()["models"]
        ]
        assert ghost not in listed


def test_a_wrong_sha256_fails_naming_both_digests_and_nothing_partial_looks_complete(
    kube: Kube, pull_ns: str, source: ModelSource, podrunner: PodRunner
) -> None:
    model = publish_url(source, "badsha")
    wrong = hashlib.sha256(b"not the model").hexdigest()
    kube.apply(llamacpp_backend("badsha", model.model, sha256=wrong), pull_ns)
    name = backend_pull(kube, "badsha", pull_ns)

    status = eventually(
        lambda: (s := pull_status(kube, name, pull_ns)).get("lastError") and s,
        timeout=60,
        message=f"mpull/{name} lastError",
    )
    assert wrong in status["lastError"] and model.sha256 in status["lastError"], status["lastError"]
    assert status["phase"] != "Succeeded"
    assert source.stats(model.stats_path)["bytes_sent"] >= model.size  # it was downloaded, then refused

    url = agent_url(kube, "badsha", pull_ns)
    startup = httpx.get(f"{url}/startup", timeout=10)
    assert startup.status_code == 503 and startup.json()["missing"] == [model.local_path], startup.text
    assert model.model not in agent_tags(kube, "badsha", pull_ns)
    volume = podrunner.workdir / "volumes" / pull_ns / "badsha-models"
    assert not (volume / model.local_path).exists()
    assert not ModelStore(volume).partial_of(model.local_path, "").exists()
    pod = backend_pod(kube, "badsha", pull_ns)["metadata"]["name"]
    runtime = podrunner.container(pull_ns, pod, "runtime") or {}
    assert runtime.get("state") != "running", "the runtime started on a model that failed verification"
    assert backend_ready(kube, "badsha", pull_ns) == "False"


def test_deleting_a_pull_mid_flight_stops_the_transfer(
    kube: Kube, pull_ns: str, source: ModelSource, podrunner: PodRunner
) -> None:
    # The backend's own pull of the model it declares (its agent pulls nothing else).
    model = publish_url(source, "doomed")
    source.throttle(model.size // 20)
    kube.apply(llamacpp_backend("keeper", model.model), pull_ns)
    name = backend_pull(kube, "keeper", pull_ns)
    wait_progress(kube, name, pull_ns, 1)
    assert source.stats(model.stats_path)["bytes_sent"] > 0

    started = time.monotonic()
    kube.run("delete", "mpull", name, "-n", pull_ns, "--timeout=60s")
    assert time.monotonic() - started < 20

    time.sleep(1)
    stopped_at = source.stats(model.stats_path)["bytes_sent"]
    time.sleep(5)
    assert source.stats(model.stats_path)["bytes_sent"] == stopped_at < model.size
    pod = backend_pod(kube, "keeper", pull_ns)["metadata"]["name"]
    assert f"pull of {model.model} cancelled" in podrunner.log_of(pull_ns, pod, "agent")
    assert model.model not in agent_tags(kube, "keeper", pull_ns)
    assert not (podrunner.workdir / "volumes" / pull_ns / "keeper-models" / model.local_path).exists()


def test_a_backend_with_two_models_is_ready_only_once_both_are_pulled(
    kube: Kube, pull_ns: str, ollama_registry: str, slow_ollama_registry: str
) -> None:
    quick = f"{ollama_registry}/library/tiny:latest"
    slow = f"{slow_ollama_registry}/library/slow-2:latest"
    kube.apply(ollama_backend("pair", [quick, slow]), pull_ns)
    pulls = eventually(
        lambda: len(found := kube.list("mpull", pull_ns, "llmop.dev/backend=pair")) == 2 and found,
        timeout=30,
        message="two ModelPulls",
    )
    by_model = {p["spec"]["model"]: p["metadata"]["name"] for p in pulls}
    assert set(by_model) == {quick, slow}
    assert all(p["spec"]["backendRef"]["name"] == "pair" and p["spec"]["insecure"] for p in pulls)

    samples: list[tuple[str | None, str | None, str | None]] = []  # (Ready, quick phase, slow phase)
    deadline = time.monotonic() + 180
    while True:
        ready = backend_ready(kube, "pair", pull_ns)
        phases = [pull_status(kube, by_model[m], pull_ns).get("phase") for m in (quick, slow)]
        samples.append((ready, phases[0], phases[1]))
        if ready == "True":
            break
        assert time.monotonic() < deadline, f"not Ready: {samples[-5:]}"
        time.sleep(0.3)

    assert samples[-1] == ("True", "Succeeded", "Succeeded"), samples[-1]
    assert ("False", "Succeeded", "Pulling") in samples, f"never seen waiting for the second: {samples}"
    assert all(ready != "True" for ready, *_ in samples[:-1])
    body = kube.get("llmb", "pair", pull_ns)
    assert sorted(m["name"] for m in body["status"]["models"]) == sorted([quick, slow])


def test_a_pull_for_a_missing_backend_waits_and_starts_when_it_appears(
    kube: Kube, pull_ns: str, source: ModelSource
) -> None:
    model = publish_url(source, "early")
    kube.apply(model_pull("early", "later", model.model), pull_ns)
    ready = eventually(
        lambda: (
            (c := condition_of(pull_status(kube, "early", pull_ns), "Ready")).get("reason")
            == "BackendNotFound"
            and c
        ),
        timeout=30,
        message="Ready=False BackendNotFound",
    )
    assert ready["status"] == "False" and "'later'" in ready["message"], ready
    status = pull_status(kube, "early", pull_ns)
    assert status["phase"] == "Pending" and not status.get("attempts")
    assert source.stats(model.stats_path)["requests"] == 0

    later = llamacpp_backend("later", publish_url(source, "later").model)
    later["spec"]["models"].append({"name": model.model})  # the agent pulls only what is declared
    kube.apply(later, pull_ns)
    status = wait_phase(kube, "early", pull_ns, "Succeeded", timeout=120)
    assert status["digest"] == f"sha256:{model.sha256}"
    assert condition_of(status, "Ready")["status"] == "True"
    assert model.model in agent_tags(kube, "later", pull_ns)


def test_a_pod_that_replaces_a_pulled_one_gets_the_model_and_the_backend_serves_again(
    kube: Kube, pull_ns: str, source: ModelSource
) -> None:
    model = publish_hf(source, "again")
    backend = llamacpp_backend("again", model.model)
    del backend["spec"]["storage"]  # an emptyDir: each pod has a model volume of its own
    kube.apply(backend, pull_ns)
    name = backend_pull(kube, "again", pull_ns)
    wait_phase(kube, name, pull_ns, "Succeeded")
    wait_backend_ready(kube, "again", pull_ns)
    first = backend_pod(kube, "again", pull_ns)["metadata"]["name"]

    # A rescheduled pod, as after a node failure: a new pod with an empty model volume (emptyDir).
    kube.run("delete", "pod", first, "-n", pull_ns, "--wait=false")

    def serving_from_a_new_pod() -> dict[str, Any] | None:
        status = pull_status(kube, name, pull_ns)
        pods = [r["pod"] for r in status.get("replicas") or [] if r["phase"] == "Succeeded"]
        fresh = [pod for pod in pods if pod != first]
        ready = backend_ready(kube, "again", pull_ns) == "True"
        return status if fresh and ready and status.get("phase") == "Succeeded" else None

    status = eventually(serving_from_a_new_pod, timeout=120, interval=0.5, message="the new pod serving")
    assert status["digest"] == f"sha256:{model.sha256}"
    assert first not in [r["pod"] for r in status["replicas"]], status["replicas"]
    stats = source.stats(model.stats_path)
    assert stats["completed"] == 2, f"the new pod's volume was not filled from the source: {stats}"


def test_a_gated_repo_pulls_once_the_backend_has_a_token_from_a_secret(
    kube: Kube, pull_ns: str, source: ModelSource
) -> None:
    model = publish_hf(source, "gated")
    token = uuid.uuid4().hex
    repo = model.model.removeprefix("hf://").rsplit("/", 1)[0]  # llmop-e2e/gated-xxxxxx
    (source.root / "hf" / f"{repo}.token").write_text(token)
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        # llmop puts only Secrets that opt in into a pod.
        "metadata": {"name": "hf-token", "labels": {"llmop.dev/use": "true"}},
        "stringData": {"token": token},
    }
    kube.apply(secret, pull_ns)
    backend = llamacpp_backend("gated", model.model)
    kube.apply(backend, pull_ns)
    name = backend_pull(kube, "gated", pull_ns)

    def refused() -> dict[str, Any] | None:
        status = pull_status(kube, name, pull_ns)
        return status if "401" in (status.get("lastError") or "") else None

    status = eventually(refused, timeout=60, interval=0.5, message="the pull refused without a token")
    assert f"Access to model {repo} is restricted" in status["lastError"], status["lastError"]

    backend["spec"]["env"] = [
        {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "token"}}}
    ]
    kube.apply(backend, pull_ns)

    status = wait_phase(kube, name, pull_ns, "Succeeded", timeout=180)
    assert status["digest"] == f"sha256:{model.sha256}"
    wait_backend_ready(kube, "gated", pull_ns)
    deployment = kube.get("deployment", "gated", pull_ns)
    assert token not in yaml.safe_dump(deployment), "the token is a reference, never a value"

"""Real runtimes at the pods' addresses: hack/podrunner.py and hack/modelsource.py.

The pod runner stands in for the kubelet in the local cluster (kwok runs no containers): a
hand-written Deployment shaped like llmop's llama.cpp pod gets a real llama-server answering at
the pod's IP, the llmop agent sidecar holds it back until the model is pulled from the local
model source, a killed runtime is restarted, and deleting the pod stops its processes. A
runtime binary that is missing fails these tests; it never skips them.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import shutil
import socket
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from localcluster import pid_alive
from podrunner import Probe, expand_vars, map_args, map_value, ollama_host, set_flag

from llmop.sources import parse_model_source
from support.kube import Kube, eventually
from support.runtimes import (
    ModelSource,
    PodRunner,
    run_modelsource,
    run_podrunner,
    runtime_program,
)

pytestmark = pytest.mark.integration

TINY = parse_model_source("hf://ggml-org/models/tinyllamas/stories260K.gguf")
TINY_URL_PATH = "/ggml-org/models/resolve/main/tinyllamas/stories260K.gguf"
RUNTIME_PORT = 8080
AGENT_PORT = 8090


def http() -> httpx.Client:
    return httpx.Client(timeout=30, trust_env=False)


def port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, port)) == 0


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelSource]:
    with run_modelsource(tmp_path_factory.mktemp("modelsource") / "root") as server:
        yield server


@pytest.fixture
def runner(kube: Kube, namespace: str, source: ModelSource, tmp_path: Path) -> Iterator[PodRunner]:
    programs = {"llamacpp": runtime_program("llamacpp")}
    with run_podrunner(
        kube.kubeconfig,
        tmp_path / "podrunner",
        env={"HF_ENDPOINT": source.url},
        runtimes=programs,
        namespaces=[namespace],
    ) as pod_runner:
        yield pod_runner


def llamacpp_deployment(name: str, volume: dict[str, Any], with_agent: bool) -> dict[str, Any]:
    """What llmop's builders make for a llama.cpp backend (docs/architecture.md), written out."""
    labels = {
        "app.kubernetes.io/name": "llmop-backend",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/managed-by": "llmop",
        "llmop.dev/backend": name,
        "llmop.dev/runtime": "llamacpp",
    }
    mount = [{"name": "models", "mountPath": "/models"}]
    runtime = {
        "name": "runtime",
        "image": "ghcr.io/ggml-org/llama.cpp:server",
        "args": [
            "--host",
            "0.0.0.0",
            "--port",
            str(RUNTIME_PORT),
            "--model",
            f"/models/{TINY.local_path}",
            "--alias",
            TINY.name,
            "--ctx-size",
            "512",
        ],
        "ports": [{"name": "http", "containerPort": RUNTIME_PORT, "protocol": "TCP"}],
        "resources": {"limits": {"nvidia.com/gpu": "1"}, "requests": {"nvidia.com/gpu": "1"}},
        "volumeMounts": mount,
        "startupProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 1, "failureThreshold": 60},
        "readinessProbe": {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 1},
        "livenessProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 5, "failureThreshold": 6},
    }
    spec: dict[str, Any] = {
        "containers": [runtime],
        "volumes": [{"name": "models", **volume}],
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 5,
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    }
    if with_agent:
        spec["initContainers"] = [
            {
                "name": "agent",
                "image": "ghcr.io/llmop/llmop:0.1.0",
                "args": ["agent", "--models-dir", "/models", "--port", str(AGENT_PORT)],
                "env": [{"name": "LLMOP_REQUIRED_MODELS", "value": TINY.local_path}],
                "ports": [{"name": "agent", "containerPort": AGENT_PORT, "protocol": "TCP"}],
                "volumeMounts": mount,
                "startupProbe": {
                    "httpGet": {"path": "/startup", "port": "agent"},
                    "periodSeconds": 1,
                    "failureThreshold": 600,
                },
                "restartPolicy": "Always",
            }
        ]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"llmop.dev/backend": name}},
            "strategy": {"type": "Recreate"},
            "template": {"metadata": {"labels": labels}, "spec": spec},
        },
    }


def bound_claim(kube: Kube, namespace: str, claim: str) -> str:
    """A PersistentVolumeClaim bound to a PersistentVolume made for it; the PV's name."""
    pv = f"{namespace}-{claim}"
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": pv},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "",
                "hostPath": {"path": f"/var/lib/llmop-test/{pv}"},
                "claimRef": {"namespace": namespace, "name": claim},
            },
        }
    )
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": claim},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "",
                "volumeName": pv,
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
        namespace,
    )
    eventually(
        lambda: kube.get("pvc", claim, namespace)["status"].get("phase") == "Bound",
        timeout=60,
        message=f"claim {claim} Bound",
    )
    return pv


def wait_healthy(ip: str) -> None:
    def healthy() -> bool:
        try:
            with http() as client:
                return client.get(f"http://{ip}:{RUNTIME_PORT}/health").status_code == 200
        except httpx.TransportError:
            return False

    eventually(healthy, timeout=60, interval=0.2, message=f"llama-server healthy at {ip}")


def assert_serves_tiny(ip: str) -> None:
    with http() as client:
        models = client.get(f"http://{ip}:{RUNTIME_PORT}/v1/models").raise_for_status().json()
        assert [m["id"] for m in models["data"]] == [TINY.name]
        answer = (
            client.post(
                f"http://{ip}:{RUNTIME_PORT}/v1/chat/completions",
                json={
                    "model": TINY.name,
                    "messages": [{"role": "user", "content": "hello"}],
                    "max_tokens": 4,
                },
            )
            .raise_for_status()
            .json()
        )
        assert answer["choices"][0]["message"]["role"] == "assistant"
        assert answer["usage"]["completion_tokens"] >= 1


def wait_stopped(runner: PodRunner, namespace: str, pod: str, pids: list[int], ip: str, port: int) -> None:
    eventually(lambda: runner.pod(namespace, pod) is None, timeout=60, message=f"{pod} gone from the runner")
    eventually(lambda: not any(pid_alive(pid) for pid in pids), timeout=30, message="processes ended")
    assert not port_open(ip, port)


# --- the pod runner against the local cluster ---------------------------------------------------


def test_llama_server_runs_at_the_pod_ip_restarts_when_killed_and_stops_with_the_pod(
    kube: Kube, namespace: str, runner: PodRunner, source: ModelSource
) -> None:
    pv = bound_claim(kube, namespace, "tiny-models")
    try:
        # The claim's folder outlives pods: put the model there, as an earlier pull would have.
        volume = runner.workdir / "volumes" / namespace / "tiny-models"
        model = volume / TINY.local_path
        model.parent.mkdir(parents=True)
        shutil.copyfile(source.root / "files" / "tiny.gguf", model)
        kube.apply(
            llamacpp_deployment("tiny", {"persistentVolumeClaim": {"claimName": "tiny-models"}}, False),
            namespace,
        )

        pod = runner.wait_running(namespace, "runtime", timeout=120)
        ip, name = pod["podIP"], pod["name"]
        assert ipaddress.ip_address(ip) in ipaddress.ip_network("127.0.0.0/8")
        assert pod["volumes"]["models"] == str(volume)
        runtime = pod["containers"]["runtime"]
        assert runtime["argv"][0] == runtime_program("llamacpp")
        assert runtime["argv"][1:5] == ["--host", ip, "--port", str(RUNTIME_PORT)]
        assert str(model) in runtime["argv"]
        wait_healthy(ip)
        assert_serves_tiny(ip)
        eventually(
            lambda: (runner.container(namespace, name) or {}).get("ready"),
            timeout=30,
            message="readiness probe passing",
        )

        # Killed, it comes back (here after 1 s instead of the kubelet's 10 s back-off).
        first_pid = runtime["pid"]
        assert runner.kill(namespace, name, "runtime", restart_after=1)["killed"] is True
        eventually(lambda: not pid_alive(first_pid), timeout=10, message="killed runtime gone")
        restarted = eventually(
            lambda: (
                (c := runner.container(namespace, name))
                and c["state"] == "running"
                and c["pid"] != first_pid
                and c
            ),
            timeout=30,
            message="runtime restarted",
        )
        assert restarted["restarts"] == 1
        assert restarted["last_exit_code"] == -9
        wait_healthy(ip)
        assert_serves_tiny(ip)
        assert "start #1" in runner.log_of(namespace, name, "runtime")

        # A slow cold start: the port stays closed for the delay, then the runtime comes up.
        runner.set_delay(4, namespace=namespace, backend="tiny")
        second_pid = restarted["pid"]
        runner.kill(namespace, name, "runtime", restart_after=0)
        eventually(
            lambda: (runner.container(namespace, name) or {}).get("state") == "delayed",
            timeout=10,
            interval=0.1,
            message="runtime start delayed",
        )
        closed_since = time.monotonic()
        assert not port_open(ip, RUNTIME_PORT)
        wait_healthy(ip)
        assert time.monotonic() - closed_since >= 3
        runner.clear_delays()
        third = runner.container(namespace, name) or {}
        assert third["pid"] not in (first_pid, second_pid)
        assert third["restarts"] == 2

        # Deleting the pod (its Deployment) stops the processes; the claim's folder stays.
        kube.run("delete", "deployment", "tiny", "-n", namespace, "--wait=false")
        wait_stopped(runner, namespace, name, [third["pid"]], ip, RUNTIME_PORT)
        assert sha256(model) == sha256(source.root / "files" / "tiny.gguf")
    finally:
        kube.run("delete", "pv", pv, "--wait=false", check=False)


def test_agent_sidecar_pulls_the_model_before_llama_server_starts(
    kube: Kube, namespace: str, runner: PodRunner, source: ModelSource
) -> None:
    source.reset_stats()
    source.throttle(200_000)  # ~3 s for the 600 KB model: long enough to see the runtime wait
    try:
        kube.apply(llamacpp_deployment("pulled", {"emptyDir": {}}, True), namespace)
        pod = runner.wait_running(namespace, "agent", timeout=120)
        ip, name = pod["podIP"], pod["name"]
        assert pod["containers"]["agent"]["argv"][-2:] == ["--host", ip]
        agent_url = f"http://{ip}:{AGENT_PORT}"

        def startup_status() -> int | None:
            try:
                with http() as client:
                    return client.get(f"{agent_url}/startup").status_code
            except httpx.TransportError:
                return None

        assert eventually(startup_status, timeout=30, message="agent answering") == 503
        time.sleep(2)  # a few startup probe periods: the runtime must still be held back
        waiting = runner.container(namespace, name, "runtime") or {}
        assert waiting.get("state") == "waiting" and waiting.get("pid") is None, waiting
        assert not port_open(ip, RUNTIME_PORT)
        # What the API says meanwhile, as a kubelet would: Pending, the agent running but not started.
        status = kube.get("pod", name, namespace)["status"]
        assert status["phase"] == "Pending", status
        (agent,) = status["initContainerStatuses"]
        assert agent["name"] == "agent" and "running" in agent["state"] and agent["started"] is False
        # When it started, to the second (what llmop's cold-start timeline reads).
        assert datetime.strptime(agent["state"]["running"]["startedAt"], "%Y-%m-%dT%H:%M:%SZ"), agent
        (main,) = status["containerStatuses"]
        assert main["state"] == {"waiting": {"reason": "PodInitializing"}} and main["ready"] is False

        with (
            http() as client,
            client.stream(
                "POST", f"{agent_url}/api/pull", json={"model": TINY.name, "stream": True}, timeout=120
            ) as response,
        ):
            assert response.status_code == 200
            lines = [json.loads(line) for line in response.iter_lines() if line.strip()]
        assert lines[-1].get("status") == "success", lines[-3:]
        pulled_at = time.monotonic()

        pod = runner.wait_running(namespace, "runtime", timeout=60)
        wait_healthy(ip)
        assert_serves_tiny(ip)

        def reported_ready() -> dict[str, Any] | None:
            status = kube.get("pod", name, namespace)["status"]
            ready = {c["type"]: c["status"] for c in status.get("conditions", [])}.get("Ready")
            return status if status["phase"] == "Running" and ready == "True" else None

        status = eventually(reported_ready, timeout=30, message="the pod Running and Ready in the API")
        assert [c["started"] for c in status["initContainerStatuses"] + status["containerStatuses"]] == [
            True,
            True,
        ]
        assert time.monotonic() - pulled_at < 30
        model = Path(pod["volumes"]["models"]) / TINY.local_path
        assert model.is_relative_to(runner.workdir / "pods" / namespace / name)
        assert sha256(model) == sha256(
            source.root / "hf" / "ggml-org" / "models" / "tinyllamas" / "stories260K.gguf"
        )
        # The agent fetches from the commit `main` points at, not from the branch name.
        pinned = TINY_URL_PATH.replace("/main/", f"/{source.commit_of('ggml-org/models')}/")
        assert source.stats(pinned)["bytes_sent"] >= model.stat().st_size

        pids = [c["pid"] for c in pod["containers"].values()]
        kube.run("delete", "deployment", "pulled", "-n", namespace, "--wait=false")
        wait_stopped(runner, namespace, name, pids, ip, RUNTIME_PORT)
        assert not port_open(ip, AGENT_PORT)
        assert not model.exists()  # an emptyDir goes with its pod
    finally:
        source.throttle(0)


# --- translating a container into a local process (no cluster) --------------------------------


def test_container_args_bind_the_pod_ip_and_map_mount_paths() -> None:
    mounts = {"/models": Path("/w/volumes/ns/claim"), "/cache": Path("/w/pods/ns/p/cache")}
    args = [
        "--host",
        "0.0.0.0",
        "--port",
        "8080",
        "--model",
        "/models/hf/a/b/main/f.gguf",
        "--cache=/cache/x",
        "--other",
        "/modelsx",
        "--listen",
        "0.0.0.0:9000",
        "--cidr",
        "10.0.0.0/8",
    ]
    assert map_args(args, mounts, "127.1.0.7") == [
        "--host",
        "127.1.0.7",
        "--port",
        "8080",
        "--model",
        "/w/volumes/ns/claim/hf/a/b/main/f.gguf",
        "--cache=/w/pods/ns/p/cache/x",
        "--other",
        "/modelsx",
        "--listen",
        "127.1.0.7:9000",
        "--cidr",
        "10.0.0.0/8",
    ]
    assert map_args(["--host=::"], mounts, "127.1.0.7") == ["--host=127.1.0.7"]
    assert (
        map_value("/models/a,/models/b", mounts, "1.2.3.4") == "/w/volumes/ns/claim/a,/w/volumes/ns/claim/b"
    )
    assert set_flag(["agent", "--port", "8090"], "--host", "127.1.0.2") == [
        "agent",
        "--port",
        "8090",
        "--host",
        "127.1.0.2",
    ]
    assert set_flag(["agent", "--host", "0.0.0.0"], "--host", "127.1.0.2") == ["agent", "--host", "127.1.0.2"]


def test_ollama_host_and_env_expansion() -> None:
    assert ollama_host("0.0.0.0:11434", "127.1.0.3", 1) == "127.1.0.3:11434"
    assert ollama_host("http://127.0.0.1:9999", "127.1.0.3", 1) == "127.1.0.3:9999"
    assert ollama_host(None, "127.1.0.3", 11434) == "127.1.0.3:11434"
    assert expand_vars("$(A)-$(B)-$$(A)", {"A": "x"}) == "x-$(B)-$(A)"


def test_probes_follow_the_pod_spec_with_kubelet_defaults() -> None:
    probe = Probe.from_spec(
        {"httpGet": {"path": "/startup", "port": "agent"}, "periodSeconds": 5, "failureThreshold": 120},
        {"agent": 8090},
    )
    assert probe is not None
    assert (probe.kind, probe.port, probe.path, probe.period, probe.failure_threshold, probe.timeout) == (
        "http",
        8090,
        "/startup",
        5.0,
        120,
        1.0,
    )
    tcp = Probe.from_spec({"tcpSocket": {"port": 8080}}, {})
    assert tcp is not None and (tcp.kind, tcp.period, tcp.failure_threshold) == ("tcp", 10.0, 3)
    assert Probe.from_spec(None, {}) is None


# --- the model source (no cluster) --------------------------------------------------------------


def test_files_are_served_with_range_etag_and_head(source: ModelSource) -> None:
    data = (source.root / "files" / "tiny.gguf").read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    with httpx.Client(base_url=source.url, trust_env=False) as client:
        whole = client.get("/files/tiny.gguf")
        assert whole.status_code == 200 and whole.content == data
        assert whole.headers["ETag"] == f'"{digest}"'
        assert whole.headers["Accept-Ranges"] == "bytes"
        head = client.head("/files/tiny.gguf")
        assert head.status_code == 200 and head.content == b""
        assert int(head.headers["Content-Length"]) == len(data)
        part = client.get("/files/tiny.gguf", headers={"Range": "bytes=1000-1999"})
        assert part.status_code == 206 and part.content == data[1000:2000]
        assert part.headers["Content-Range"] == f"bytes 1000-1999/{len(data)}"
        tail = client.get("/files/tiny.gguf", headers={"Range": "bytes=-10"})
        assert tail.status_code == 206 and tail.content == data[-10:]
        stale = client.get("/files/tiny.gguf", headers={"Range": "bytes=10-", "If-Range": '"other"'})
        assert stale.status_code == 200 and stale.content == data
        beyond = client.get("/files/tiny.gguf", headers={"Range": f"bytes={len(data)}-"})
        assert beyond.status_code == 416 and beyond.headers["Content-Range"] == f"bytes */{len(data)}"
        assert client.get("/files/missing.gguf").status_code == 404
        assert client.get("/files/../hf/ggml-org/models/.gitattributes").status_code == 404


def test_hugging_face_api_shapes(source: ModelSource) -> None:
    gguf = source.root / "hf" / "ggml-org" / "models" / "tinyllamas" / "stories260K.gguf"
    with httpx.Client(base_url=source.url, trust_env=False) as client:
        info = client.get("/api/models/ggml-org/models/revision/main", params={"blobs": "true"}).json()
        assert info["id"] == "ggml-org/models"
        assert len(info["sha"]) == 40 and int(info["sha"], 16) >= 0
        siblings = {s["rfilename"]: s for s in info["siblings"]}
        sibling = siblings["tinyllamas/stories260K.gguf"]
        assert sibling["size"] == gguf.stat().st_size
        assert sibling["lfs"]["sha256"] == sha256(gguf) and sibling["lfs"]["size"] == gguf.stat().st_size
        assert "lfs" not in siblings[".gitattributes"]
        plain = client.get("/api/models/ggml-org/models").json()
        assert plain["sha"] == info["sha"] and plain["siblings"][0] == {"rfilename": ".gitattributes"}
        assert client.get(f"/api/models/ggml-org/models/revision/{info['sha']}").status_code == 200

        head = client.head("/ggml-org/models/resolve/main/tinyllamas/stories260K.gguf")
        assert head.status_code == 200
        assert head.headers["X-Repo-Commit"] == info["sha"]
        assert head.headers["X-Linked-Size"] == str(gguf.stat().st_size)
        assert head.headers["X-Linked-Etag"] == head.headers["ETag"] == f'"{sha256(gguf)}"'
        body = client.get(
            "/ggml-org/models/resolve/main/tinyllamas/stories260K.gguf", headers={"Range": "bytes=4-"}
        )
        assert body.status_code == 206 and body.content == gguf.read_bytes()[4:]

        qwen = client.get("/api/models/Qwen/Qwen3-0.6B", params={"blobs": "true"}).json()
        names = {s["rfilename"] for s in qwen["siblings"]}
        assert {"config.json", "tokenizer.json", "model.safetensors"} <= names
        config = client.get("/Qwen/Qwen3-0.6B/resolve/main/config.json").json()
        assert config["architectures"] == ["Qwen3ForCausalLM"]
        weights = client.get("/Qwen/Qwen3-0.6B/resolve/main/model.safetensors").content
        header_size = int.from_bytes(weights[:8], "little")
        header = json.loads(weights[8 : 8 + header_size])
        assert header["model.embed_tokens.weight"]["dtype"] == "BF16"
        end = max(v["data_offsets"][1] for k, v in header.items() if k != "__metadata__")
        assert 8 + header_size + end == len(weights)

        missing_repo = client.get("/api/models/nobody/nothing")
        assert missing_repo.status_code == 404
        assert missing_repo.json() == {"error": "Repository not found"}
        assert missing_repo.headers["X-Error-Code"] == "RepoNotFound"
        missing_file = client.get("/ggml-org/models/resolve/main/nothing.gguf")
        assert missing_file.status_code == 404
        assert missing_file.json() == {"error": "Entry not found"}
        assert missing_file.headers["X-Error-Code"] == "EntryNotFound"
        missing_rev = client.get("/ggml-org/models/resolve/v9/tinyllamas/stories260K.gguf")
        assert missing_rev.status_code == 404 and missing_rev.headers["X-Error-Code"] == "RevisionNotFound"
        repo_in_resolve = client.head("/nobody/nothing/resolve/main/x.gguf")
        assert repo_in_resolve.headers["X-Error-Code"] == "RepoNotFound"


def test_throttle_faults_and_stats_show_a_resumed_download(source: ModelSource) -> None:
    path = "/files/tiny.gguf"
    data = (source.root / "files" / "tiny.gguf").read_bytes()
    source.reset_stats()
    source.fault(path, abort_after_bytes=100_000)
    with httpx.Client(base_url=source.url, trust_env=False) as client:
        received = b""
        with pytest.raises(httpx.TransportError), client.stream("GET", path) as cut:
            for chunk in cut.iter_bytes():
                received += chunk
        assert 0 < len(received) <= 100_000
        began = time.monotonic()
        rest = client.get(path, params={"throttle": 200_000}, headers={"Range": f"bytes={len(received)}-"})
        took = time.monotonic() - began
    assert rest.status_code == 206 and received + rest.content == data
    assert took >= (len(data) - len(received)) / 200_000 * 0.8
    stats = source.stats(path)
    assert stats["requests"] == 2 and stats["range_requests"] == 1
    assert stats["range_starts"] == [len(received)] and stats["aborted"] == 1 and stats["completed"] == 1

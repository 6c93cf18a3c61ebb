"""Hardened runtime pods and an agent only the operator drives, end to end.

What a platform team sees: a llama.cpp backend reaches Ready in a namespace where Pod Security
enforces "baseline", and in one that enforces "restricted" once the runtime runs as a non-root
user (the real API server's admission decides); a caller on the pod network without the agent's
token gets 401 and moves no byte, while the operator's own pulls work as before.
"""

from __future__ import annotations

import base64
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from test_model_pull import backend_pod

from support.kube import REPO, Kube, wait_backend_ready
from support.operator import OperatorProcess
from support.runtimes import ModelSource, PodRunner

pytestmark = pytest.mark.e2e

AGENT_PORT = 8090
HARDENED = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def publish(source: ModelSource, stem: str) -> tuple[str, str, str]:
    """A copy of the tiny GGUF on the model source: (model URL, URL path, file name)."""
    name = f"{stem}-{uuid.uuid4().hex[:6]}.gguf"
    target = source.root / "files" / "e2e" / name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source.root / "files" / "tiny.gguf", target)
    return f"{source.url}/files/e2e/{name}", f"/files/e2e/{name}", name


def llamacpp_backend(name: str, model: str, **spec: Any) -> dict[str, Any]:
    manifest = dict(yaml.safe_load((REPO / "examples" / "llamacpp.yaml").read_text()))
    manifest["metadata"]["name"] = name
    manifest["spec"].update(
        {
            "gpu": {"count": 0},
            "models": [{"name": model}],
            "startup": {"timeout": "10m", "probeInterval": "1s"},
            **spec,
        }
    )
    return manifest


@pytest.fixture
def source(modelsource: ModelSource) -> Iterator[ModelSource]:
    modelsource.throttle(0)
    modelsource.clear_faults()
    yield modelsource


def enforcing_namespace(kube: Kube, level: str) -> Iterator[str]:
    """A namespace where Pod Security admission enforces `level` on every pod."""
    with kube.namespace(level) as name:
        kube.run("label", "namespace", name, f"pod-security.kubernetes.io/enforce={level}")
        yield name


@pytest.fixture
def baseline_ns(kube: Kube, operator: OperatorProcess, podrunner: PodRunner) -> Iterator[str]:
    yield from enforcing_namespace(kube, "baseline")


@pytest.fixture
def restricted_ns(kube: Kube, operator: OperatorProcess, podrunner: PodRunner) -> Iterator[str]:
    yield from enforcing_namespace(kube, "restricted")


@pytest.fixture
def guarded_ns(kube: Kube, operator: OperatorProcess, podrunner: PodRunner) -> Iterator[str]:
    with kube.namespace("guarded") as name:
        yield name


def assert_hardened(pod: dict[str, Any]) -> None:
    spec = pod["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert not any(
        mount["mountPath"].startswith("/var/run/secrets/kubernetes.io")
        for container in spec["containers"] + spec["initContainers"]
        for mount in container.get("volumeMounts", [])
    )
    runtime = spec["containers"][0]["securityContext"]
    assert {key: runtime[key] for key in HARDENED} == HARDENED
    agent = spec["initContainers"][0]["securityContext"]
    assert agent["runAsNonRoot"] is True and agent["readOnlyRootFilesystem"] is True
    assert {key: agent[key] for key in HARDENED} == HARDENED


def test_a_backend_reaches_ready_where_pod_security_enforces_baseline(
    kube: Kube, baseline_ns: str, source: ModelSource
) -> None:
    model, _, _ = publish(source, "baseline")
    kube.apply(llamacpp_backend("tiny", model), baseline_ns)

    wait_backend_ready(kube, "tiny", baseline_ns)
    assert_hardened(backend_pod(kube, "tiny", baseline_ns))


def test_a_backend_reaches_ready_where_pod_security_enforces_restricted_with_a_non_root_runtime(
    kube: Kube, restricted_ns: str, source: ModelSource
) -> None:
    model, _, _ = publish(source, "restricted")
    non_root = {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000}
    kube.apply(llamacpp_backend("tiny", model, podSecurityContext=non_root), restricted_ns)

    wait_backend_ready(kube, "tiny", restricted_ns)
    pod = backend_pod(kube, "tiny", restricted_ns)
    assert_hardened(pod)
    assert pod["spec"]["securityContext"]["runAsUser"] == 1000
    # Admission saw the pod at the "restricted" level, and let it in.
    assert (
        kube.get("namespace", restricted_ns)["metadata"]["labels"]["pod-security.kubernetes.io/enforce"]
        == "restricted"
    )


def agent_token(kube: Kube, backend: str, namespace: str) -> str:
    secret = kube.get("secret", f"{backend}-agent-token", namespace)
    return base64.b64decode(secret["data"]["token"]).decode()


def files_named(volume: Path, name: str) -> list[Path]:
    return [path for path in volume.rglob(f"{name}*")] if volume.exists() else []


def test_a_caller_without_the_agents_token_gets_401_and_moves_no_byte(
    kube: Kube, guarded_ns: str, source: ModelSource, podrunner: PodRunner
) -> None:
    served, served_path, served_name = publish(source, "served")
    kube.apply(llamacpp_backend("guarded", served), guarded_ns)
    wait_backend_ready(kube, "guarded", guarded_ns)  # the operator's pull worked, with the token
    assert source.stats(served_path)["completed"] == 1
    url = f"http://{backend_pod(kube, 'guarded', guarded_ns)['status']['podIP']}:{AGENT_PORT}"
    volume = podrunner.workdir / "volumes" / guarded_ns / "guarded-models"
    other, other_path, other_name = publish(source, "intruder")

    with httpx.Client(timeout=10) as client:
        for headers in ({}, {"Authorization": "Bearer not-the-token"}):
            pulled = client.post(f"{url}/api/pull", json={"model": other}, headers=headers)
            redeclared = client.post(f"{url}/api/pull", json={"model": served}, headers=headers)
            deleted = client.request("DELETE", f"{url}/api/delete", json={"model": served}, headers=headers)
            listed = client.get(f"{url}/api/tags", headers=headers)
            for answer in (pulled, redeclared, deleted, listed):
                assert answer.status_code == 401, answer.text
                assert "operator only" in answer.json()["error"]
        # The kubelet's probe needs no token, and tells nothing but which models are complete.
        assert client.get(f"{url}/startup").status_code == 200

        assert source.stats(other_path)["requests"] == 0, "a transfer started without the token"
        assert files_named(volume, other_name) == []  # no file, no partial
        assert [path.name for path in files_named(volume, served_name)] == [served_name]  # not deleted

        # With the operator's token the agent answers, and still pulls only what the backend declares.
        bearer = {"Authorization": f"Bearer {agent_token(kube, 'guarded', guarded_ns)}"}
        tags = client.get(f"{url}/api/tags", headers=bearer).json()["models"]
        assert [tag["name"] for tag in tags] == [served]
        refused = client.post(f"{url}/api/pull", json={"model": other, "stream": False}, headers=bearer)
        assert refused.status_code == 403 and "spec.models" in refused.json()["error"], refused.text
    assert source.stats(other_path)["requests"] == 0
    assert files_named(volume, other_name) == []

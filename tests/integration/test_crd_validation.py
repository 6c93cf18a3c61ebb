"""The CRDs on a real API server: examples apply, and each CEL rule rejects bad input with its message."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.kube import REPO, Kube

pytestmark = pytest.mark.integration

EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_is_accepted_by_the_api_server(kube: Kube, namespace: str, path: Path) -> None:
    result = kube.run("apply", "--dry-run=server", "-n", namespace, "-f", str(path))
    assert "created (server dry run)" in result.stdout


def test_kubectl_shows_short_names_and_category(kube: Kube, namespace: str) -> None:
    kube.run("apply", "-n", namespace, "-f", str(REPO / "examples" / "external.yaml"))
    listed = kube.run("get", "llmop", "-n", namespace).stdout
    assert "llmbackend.llmop.dev/external-openai" in listed
    header = kube.run("get", "llmb", "-n", namespace).stdout.splitlines()[0].split()
    assert header == ["NAME", "RUNTIME", "PHASE", "READY", "MODELS", "ENDPOINT", "AGE"]
    explained = kube.run("explain", "llmbackend.spec.startup.timeout").stdout
    assert "Cold-start budget" in explained


def _backend(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "llmop.dev/v1alpha1",
        "kind": "LLMBackend",
        "metadata": {"name": "bad"},
        "spec": spec,
    }


def _pull(spec: dict[str, Any]) -> dict[str, Any]:
    base = {"backendRef": {"name": "chat"}, "model": "qwen3:0.6b"}
    return {
        "apiVersion": "llmop.dev/v1alpha1",
        "kind": "ModelPull",
        "metadata": {"name": "bad"},
        "spec": {**base, **spec},
    }


BAD_MANIFESTS = {
    "runtime-and-external": (
        _backend({"runtime": "ollama", "external": {"url": "http://10.0.0.5:8000"}}),
        "set exactly one of spec.runtime",
    ),
    "neither-runtime-nor-external": (_backend({"replicas": 1}), "set exactly one of spec.runtime"),
    "negative-replicas": (_backend({"runtime": "vllm", "replicas": -1}), "spec.replicas: Invalid value"),
    "negative-gpus": (_backend({"runtime": "vllm", "gpu": {"count": -2}}), "must be 0 or more"),
    "bad-duration": (
        _backend({"runtime": "vllm", "startup": {"timeout": "ten minutes"}}),
        "must be a duration such as 30s, 5m or 1h30m",
    ),
    "bad-probe-interval": (
        _backend({"runtime": "vllm", "startup": {"probeInterval": "2"}}),
        "spec.startup.probeInterval",
    ),
    "not-a-url": (
        _backend({"external": {"url": "10.0.0.5:8000"}}),
        "url must be an absolute http:// or https:// URL",
    ),
    "ftp-url": (_backend({"external": {"url": "ftp://10.0.0.5/models"}}), "url must be an absolute http://"),
    "empty-model-name": (
        _backend({"runtime": "ollama", "models": [{"name": ""}]}),
        "model name must not be empty",
    ),
    "bad-port": (_backend({"runtime": "ollama", "port": 70000}), "port must be between 0 and 65535"),
    "empty-backend-ref": (_pull({"backendRef": {"name": ""}}), "name must not be empty"),
    "empty-model": (_pull({"model": ""}), "model must not be empty"),
    "zero-attempts": (_pull({"retry": {"maxAttempts": 0}}), "maxAttempts must be 1 or more"),
    "bad-backoff": (_pull({"retry": {"backoff": "soon"}}), "must be a duration such as 30s"),
}


@pytest.mark.parametrize("case", list(BAD_MANIFESTS), ids=str)
def test_bad_manifest_is_rejected_with_a_message_that_says_what_to_fix(
    kube: Kube, namespace: str, case: str
) -> None:
    manifest, message = BAD_MANIFESTS[case]
    result = kube.apply(copy.deepcopy(manifest), namespace, check=False)
    assert result.returncode != 0, f"{case} was accepted"
    assert message in result.stderr, result.stderr


def test_rejected_manifest_leaves_nothing_behind(kube: Kube, namespace: str) -> None:
    manifest, _ = BAD_MANIFESTS["negative-replicas"]
    kube.apply(manifest, namespace, check=False)
    assert kube.get_or_none("llmb", "bad", namespace) is None


def test_valid_manifest_is_stored_exactly_as_written(kube: Kube, namespace: str) -> None:
    """No schema defaults: what the user applied is what GitOps tools read back."""
    manifest = yaml.safe_load((REPO / "examples" / "vllm.yaml").read_text())
    kube.apply(manifest, namespace)
    stored = kube.get("llmb", manifest["metadata"]["name"], namespace)
    assert stored["spec"] == manifest["spec"]

"""The ModelCache CRD, and spec.modelCache of a backend, on a real API server: each CEL rule
rejects bad input with its message, and kubectl shows the cache."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from support.kube import Kube

pytestmark = pytest.mark.integration

MODEL = "hf://org/repo/f.gguf"


def _cache(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "llmop.dev/v1alpha1",
        "kind": "ModelCache",
        "metadata": {"name": "bad"},
        "spec": spec,
    }


def _backend(spec: dict[str, Any]) -> dict[str, Any]:
    base = {"runtime": "llamacpp", "models": [{"name": MODEL}], "modelCache": {"name": "shared"}}
    return {
        "apiVersion": "llmop.dev/v1alpha1",
        "kind": "LLMBackend",
        "metadata": {"name": "bad"},
        "spec": {**base, **spec},
    }


BAD = {
    "no-storage": (_cache({"models": [{"name": MODEL}]}), "spec.storage: Required value"),
    "size-and-existing-claim": (
        _cache({"storage": {"size": "1Gi", "existingClaim": "nfs"}}),
        "set exactly one of storage.size (llmop creates a ReadWriteMany claim) or storage.existingClaim",
    ),
    "neither-size-nor-claim": (_cache({"storage": {}}), "set exactly one of storage.size"),
    "class-for-existing-claim": (
        _cache({"storage": {"existingClaim": "nfs", "storageClassName": "fast"}}),
        "storage.storageClassName applies to the claim llmop creates",
    ),
    "bad-size": (_cache({"storage": {"size": "lots"}}), "spec.storage.size: Invalid value"),
    "blank-model": (
        _cache({"storage": {"size": "1Gi"}, "models": [{"name": "  "}]}),
        "name must not be empty",
    ),
    "model-twice": (
        _cache({"storage": {"size": "1Gi"}, "models": [{"name": MODEL}, {"name": MODEL}]}),
        "model names must be unique",
    ),
    "ollama-on-a-cache": (
        _backend({"runtime": "ollama", "models": [{"name": "qwen3:0.6b"}]}),
        "spec.modelCache applies to runtime vllm or llamacpp (Ollama pulls its own models)",
    ),
    "cache-and-storage": (
        _backend({"storage": {"size": "1Gi"}}),
        "set spec.modelCache or spec.storage, not both",
    ),
    "cache-without-name": (_backend({"modelCache": {}}), "spec.modelCache.name: Required value"),
}


@pytest.mark.parametrize("case", list(BAD), ids=str)
def test_bad_cache_or_cache_reference_is_rejected_with_what_to_fix(
    kube: Kube, namespace: str, case: str
) -> None:
    manifest, message = BAD[case]
    result = kube.apply(copy.deepcopy(manifest), namespace, check=False)
    assert result.returncode != 0, f"{case} was accepted"
    assert message in result.stderr, result.stderr


def test_kubectl_lists_and_explains_the_cache(kube: Kube, namespace: str) -> None:
    kube.apply(
        _cache({"storage": {"size": "1Gi"}, "models": [{"name": MODEL}]}) | {"metadata": {"name": "shared"}},
        namespace,
    )
    assert "modelcache.llmop.dev/shared" in kube.run("get", "llmop", "-n", namespace).stdout
    header = kube.run("get", "mcache", "-n", namespace).stdout.splitlines()[0].split()
    assert header == ["NAME", "PHASE", "MODELS", "CLAIM", "AGE"]
    explained = " ".join(kube.run("explain", "llmbackend.spec.modelCache").stdout.split())
    assert "mount its claim read-only and download nothing" in explained
    explained = " ".join(kube.run("explain", "modelcache.spec.storage.storageClassName").stdout.split())
    assert "ReadWriteMany" in explained

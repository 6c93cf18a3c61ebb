"""The Service, model claim and ModelPulls a backend owns, and the URLs it publishes."""

from __future__ import annotations

import re
from typing import Any

import pytest

from llmop.config import OperatorConfig
from llmop.manifests import (
    backend_labels,
    backend_selector,
    build_deployment,
    build_model_claim,
    build_model_pull,
    build_service,
    endpoint_url,
    model_pull_name,
    openai_base_url,
    owner_reference,
    selector_text,
)
from llmop.models.backend import LLMBackendSpec, ModelSpec
from llmop.sources import model_slug

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
OWNER = {
    "apiVersion": "llmop.dev/v1alpha1",
    "kind": "LLMBackend",
    "name": "chat",
    "uid": "uid-1",
    "controller": True,
    "blockOwnerDeletion": True,
}


def spec(**fields: Any) -> LLMBackendSpec:
    fields.setdefault("runtime", "ollama")
    return LLMBackendSpec.model_validate(fields)


def test_labels_name_the_backend_and_its_runtime() -> None:
    assert backend_labels("chat", "vllm") == {
        "app.kubernetes.io/name": "llmop-backend",
        "app.kubernetes.io/instance": "chat",
        "app.kubernetes.io/managed-by": "llmop",
        "llmop.dev/backend": "chat",
        "llmop.dev/runtime": "vllm",
    }
    assert backend_selector("chat") == {"llmop.dev/backend": "chat", "app.kubernetes.io/instance": "chat"}


def test_the_selector_text_selects_exactly_the_deployments_pods() -> None:
    """The scale subresource's selector: an HPA counts the pods it matches."""
    deployment = build_deployment("chat", "ns", "uid", LLMBackendSpec(runtime="ollama"), OperatorConfig())
    text = selector_text("chat")
    assert text == "app.kubernetes.io/instance=chat,llmop.dev/backend=chat"
    pairs = dict(pair.split("=") for pair in text.split(","))
    assert pairs == deployment["spec"]["selector"]["matchLabels"]
    assert pairs.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


def test_owner_reference_makes_the_backend_the_controller() -> None:
    assert owner_reference("LLMBackend", "chat", "uid-1") == OWNER
    assert owner_reference("Thing", "t", "u", api_version="example.com/v1")["apiVersion"] == "example.com/v1"


# --- Service -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "port"),
    [
        ({"runtime": "ollama"}, 11434),
        ({"runtime": "vllm"}, 8000),
        ({"runtime": "llamacpp", "port": 9000}, 9000),
    ],
)
def test_the_service_exposes_the_runtime_port_as_http(fields: dict[str, Any], port: int) -> None:
    service = build_service("chat", "ai", "uid-1", spec(**fields))
    assert service["apiVersion"] == "v1" and service["kind"] == "Service"
    assert service["metadata"]["name"] == "chat" and service["metadata"]["namespace"] == "ai"
    assert service["metadata"]["labels"] == backend_labels("chat", fields["runtime"])
    assert service["metadata"]["ownerReferences"] == [OWNER]
    assert service["spec"] == {
        "type": "ClusterIP",
        "selector": backend_selector("chat"),
        "ports": [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}],
    }


def test_an_external_backend_has_no_service() -> None:
    with pytest.raises(ValueError, match="external"):
        build_service("chat", "ai", "uid-1", spec(runtime=None, external={"url": "http://10.0.0.5:8000"}))


# --- model claim -------------------------------------------------------------------------------


def test_storage_makes_a_read_write_once_claim_owned_by_the_backend() -> None:
    claim = build_model_claim("chat", "ai", "uid-1", spec(storage={"size": "100Gi"}))
    assert claim == {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": "chat-models",
            "namespace": "ai",
            "labels": backend_labels("chat", "ollama"),
            "ownerReferences": [OWNER],
        },
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "100Gi"}}},
    }


def test_the_storage_class_is_set_only_when_given() -> None:
    claim = build_model_claim("chat", "ai", "uid-1", spec(storage={"storageClassName": "fast-nvme"}))
    assert claim is not None
    assert claim["spec"]["storageClassName"] == "fast-nvme"
    assert claim["spec"]["resources"]["requests"]["storage"] == "50Gi"
    empty = build_model_claim("chat", "ai", "uid-1", spec(storage={"storageClassName": ""}))
    assert empty is not None and "storageClassName" not in empty["spec"]


@pytest.mark.parametrize("fields", [{}, {"storage": {"existingClaim": "shared-models"}}])
def test_no_claim_without_storage_or_with_an_existing_claim(fields: dict[str, Any]) -> None:
    assert build_model_claim("chat", "ai", "uid-1", spec(**fields)) is None


# --- ModelPull ---------------------------------------------------------------------------------


def test_each_model_gets_an_owned_model_pull_named_after_backend_and_model() -> None:
    pull = build_model_pull("chat", "ai", "uid-1", ModelSpec(name="qwen3:0.6b"), runtime="ollama")
    assert pull == {
        "apiVersion": "llmop.dev/v1alpha1",
        "kind": "ModelPull",
        "metadata": {
            "name": f"chat-{model_slug('qwen3:0.6b')}",
            "namespace": "ai",
            "labels": backend_labels("chat", "ollama"),
            "ownerReferences": [OWNER],
        },
        "spec": {"backendRef": {"name": "chat"}, "model": "qwen3:0.6b"},
    }


def test_a_model_pull_is_labelled_with_its_backend_even_without_the_runtime() -> None:
    pull = build_model_pull("chat", "ai", "uid-1", ModelSpec(name="qwen3:0.6b"))
    assert pull["metadata"]["labels"]["llmop.dev/backend"] == "chat"
    assert "llmop.dev/runtime" not in pull["metadata"]["labels"]


def test_the_model_digest_is_passed_on_only_when_set() -> None:
    digest = "a" * 64
    pull = build_model_pull("chat", "ai", "uid-1", ModelSpec(name="https://h/m.gguf", sha256=digest))
    assert pull["spec"]["sha256"] == digest
    assert "sha256" not in build_model_pull("chat", "ai", "uid-1", ModelSpec(name="https://h/m.gguf"))["spec"]


def test_long_names_are_shortened_to_a_valid_unique_name() -> None:
    model = "hf://some-organisation/a-very-long-model-repository-name-Instruct-GGUF/model-Q4_K_M.gguf"
    first = model_pull_name("a" * 40 + "-backend-one", model)
    second = model_pull_name("a" * 40 + "-backend-two", model)
    for name in (first, second):
        assert len(name) <= 63
        assert DNS_LABEL.match(name), name
        assert name.endswith(model_slug(model))
    assert first != second


def test_a_cut_at_a_dash_leaves_no_double_dash() -> None:
    model = "hf://org/repo-with-a-rather-long-name-indeed/weights.gguf"
    slug = model_slug(model)
    keep = 63 - len(slug) - 8
    name = model_pull_name("x" * (keep - 1) + "-" + "y" * 40, model)
    assert len(name) <= 63 and "--" not in name and DNS_LABEL.match(name)


def test_short_names_are_left_alone() -> None:
    assert model_pull_name("chat", "qwen3:0.6b") == f"chat-{model_slug('qwen3:0.6b')}"


# --- endpoints ---------------------------------------------------------------------------------


def test_a_managed_backend_is_reached_through_its_service() -> None:
    assert endpoint_url("chat", "ai", spec(), "cluster.local") == "http://chat.ai.svc.cluster.local:11434"
    assert endpoint_url("chat", "ai", spec(runtime="vllm", port=9000), "corp.internal") == (
        "http://chat.ai.svc.corp.internal:9000"
    )


@pytest.mark.parametrize(
    "url",
    ["http://10.0.0.5:8000", "http://10.0.0.5:8000/", "http://10.0.0.5:8000/v1", "http://10.0.0.5:8000/v1/"],
)
def test_an_external_backend_is_reached_at_its_url_without_v1(url: str) -> None:
    backend = spec(runtime=None, external={"url": url, "kind": "vllm"})
    assert endpoint_url("chat", "ai", backend, "cluster.local") == "http://10.0.0.5:8000"


def test_an_external_url_keeps_its_own_path() -> None:
    backend = spec(runtime=None, external={"url": "https://gw.example.com/llm/v1"})
    assert endpoint_url("chat", "ai", backend, "cluster.local") == "https://gw.example.com/llm"


@pytest.mark.parametrize("kind", ["ollama", "vllm", "llamacpp", "openai"])
def test_the_openai_base_url_is_the_endpoint_and_v1(kind: str) -> None:
    assert openai_base_url("http://chat.ai.svc.cluster.local:11434", kind) == (
        "http://chat.ai.svc.cluster.local:11434/v1"
    )

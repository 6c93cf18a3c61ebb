"""connect() and the registry: every known kind resolves, unknown kinds say what is known."""

from __future__ import annotations

import pytest

from llmop.runtimes import KNOWN_KINDS, RuntimeAdapter, RuntimeAPIError, UnknownRuntimeKind, connect


def test_known_kinds_are_the_documented_ones() -> None:
    assert set(KNOWN_KINDS) == {
        "ollama",
        "vllm",
        "llamacpp",
        "openai",
        "tgi",
        "sglang",
        "localai",
        "lmstudio",
    }


@pytest.mark.parametrize("kind", KNOWN_KINDS)
def test_each_kind_gets_an_adapter_of_that_kind(kind: str) -> None:
    runtime = connect(kind, "http://10.0.0.5:8000")
    assert isinstance(runtime, RuntimeAdapter)
    assert runtime.kind == kind
    assert runtime.base_url == "http://10.0.0.5:8000"


def test_kind_is_case_insensitive() -> None:
    assert connect(" vLLM ", "http://10.0.0.5:8000").kind == "vllm"


def test_unknown_kind_lists_the_known_ones() -> None:
    with pytest.raises(UnknownRuntimeKind) as caught:
        connect("llama.cpp", "http://10.0.0.5:8080")
    message = str(caught.value)
    assert "'llama.cpp'" in message
    for kind in KNOWN_KINDS:
        assert kind in message
    # Callers catching either the base error or ValueError see it.
    assert isinstance(caught.value, RuntimeAPIError)
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize("url", ["10.0.0.5:8000", "ftp://10.0.0.5", "http://", ""])
def test_urls_that_are_not_http_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="not an http"):
        connect("vllm", url)


@pytest.mark.parametrize(
    ("url", "base"),
    [
        ("http://chat.ai.svc:11434", "http://chat.ai.svc:11434"),
        ("http://chat.ai.svc:11434/", "http://chat.ai.svc:11434"),
        ("http://10.0.0.5:8000/v1", "http://10.0.0.5:8000"),
        ("https://gateway.example.com/team-a/v1/", "https://gateway.example.com/team-a"),
    ],
)
def test_base_url_forms(url: str, base: str) -> None:
    assert connect("openai", url).base_url == base


def test_the_crd_enums_are_the_registrys_kinds() -> None:
    """spec.runtime accepts exactly the runtimes llmop can deploy, spec.external.kind every kind."""
    from typing import get_args

    from llmop.models.backend import ExternalKind, ManagedRuntime
    from llmop.runtimes.registry import MANAGED_KINDS

    assert set(get_args(ManagedRuntime)) == set(MANAGED_KINDS) == {"ollama", "vllm", "llamacpp"}
    assert set(get_args(ExternalKind)) == set(KNOWN_KINDS)


def test_each_managed_runtime_says_how_to_run_it_in_one_place() -> None:
    """Its pod probes the path its adapter probes; the port field's description names its port."""
    from llmop.models.backend import LLMBackendSpec
    from llmop.runtimes.registry import MANAGED_KINDS, RUNTIMES

    port_description = LLMBackendSpec.model_fields["port"].description or ""
    for kind in MANAGED_KINDS:
        descriptor = RUNTIMES[kind]
        assert descriptor.pod is not None and descriptor.default_port and descriptor.default_image
        assert descriptor.pod.health_path == connect(kind, "http://10.0.0.5:1").health_path  # type: ignore[attr-defined]
        assert f"{kind} {descriptor.default_port}" in port_description

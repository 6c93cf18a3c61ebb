"""Every external kind reaches Ready against a server that speaks it, and a user can copy a model
name from status into a request of the `openai` client that works.

Real servers where they run here (llama-server, vLLM, Ollama); LM Studio, LocalAI, TGI and
SGLang cannot, so their stand-ins (hack/standins/openai_servers.py) answer for them.
"""

from __future__ import annotations

import subprocess
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from support.kube import Kube, eventually, wait_backend_ready
from support.operator import OperatorProcess
from support.runtimes import (
    HACK,
    PYTHON,
    ModelSource,
    run_openai_standin,
    run_real_ollama,
    run_real_runtime,
)

pytestmark = pytest.mark.e2e

STANDIN_MODEL = "org/tiny-chat"


@pytest.fixture(scope="module")
def servers_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("external-servers")


@pytest.fixture(scope="module")
def llama_server(servers_dir: Path, modelsource: ModelSource) -> Iterator[str]:
    gguf = str(modelsource.root / "files" / "tiny.gguf")
    with run_real_runtime(servers_dir, "llamacpp", gguf, "tiny.gguf") as url:
        yield url


@pytest.fixture(scope="module")
def vllm_server(servers_dir: Path) -> Iterator[str]:
    repo = servers_dir / "tiny-qwen3"
    subprocess.run([PYTHON, str(HACK / "modelsource.py"), "--write-tiny-repo", str(repo)], check=True)
    with run_real_runtime(
        servers_dir, "vllm", str(repo), "Qwen/Qwen3-0.6B", "--max-model-len", "1024"
    ) as url:
        yield url


@pytest.fixture(scope="module")
def ollama_server(servers_dir: Path, ollama_registry: str) -> Iterator[str]:
    with run_real_ollama(servers_dir, [f"{ollama_registry}/library/tiny:latest"]) as url:
        yield url


@pytest.fixture
def backend_ns(kube: Kube, operator: OperatorProcess) -> Iterator[str]:
    with kube.namespace("ext") as name:
        yield name


def server_for(kind: str, request: pytest.FixtureRequest, servers_dir: Path) -> Generator[str, None, None]:
    if kind in ("openai-llamacpp", "llamacpp"):
        yield request.getfixturevalue("llama_server")
    elif kind in ("openai-vllm", "vllm"):
        yield request.getfixturevalue("vllm_server")
    elif kind == "ollama":
        yield request.getfixturevalue("ollama_server")
    else:
        with run_openai_standin(servers_dir, kind, [STANDIN_MODEL]) as url:
            yield url


def listed_names(kind: str, url: str) -> list[str]:
    if kind == "ollama":
        return [m["name"] for m in httpx.get(f"{url}/api/tags", timeout=10).json()["models"]]
    return [m["id"] for m in httpx.get(f"{url}/v1/models", timeout=10).json()["data"]]


@pytest.mark.parametrize(
    "kind",
    ["openai-llamacpp", "openai-vllm", "vllm", "llamacpp", "ollama", "lmstudio", "localai", "tgi", "sglang"],
)
def test_each_external_kind_is_ready_and_its_status_names_work_in_the_openai_client(
    kind: str, kube: Kube, backend_ns: str, request: pytest.FixtureRequest, servers_dir: Path
) -> None:
    servers = server_for(kind, request, servers_dir)
    url = next(servers)
    try:
        name = f"ext-{kind}"
        spec_kind = kind.split("-")[0]
        kube.apply(
            {
                "apiVersion": "llmop.dev/v1alpha1",
                "kind": "LLMBackend",
                "metadata": {"name": name},
                "spec": {"external": {"url": url, "kind": spec_kind}, "startup": {"timeout": "1m"}},
            },
            backend_ns,
        )
        status = wait_backend_ready(kube, name, backend_ns, "90s")

        names = [model["name"] for model in status["models"]]
        assert sorted(names) == sorted(listed_names(kind, url)), status
        assert status["openaiBaseURL"] == f"{url}/v1"
        if spec_kind == "openai":
            # An OpenAI-compatible server does not say which models are in memory: left out.
            assert all("loaded" not in model for model in status["models"]), status["models"]

        client = openai.OpenAI(base_url=status["openaiBaseURL"], api_key="none", timeout=60)
        answer = client.chat.completions.create(
            model=names[0], messages=[{"role": "user", "content": "Hello"}], max_tokens=3
        )
        assert answer.choices[0].message.content is not None, answer
        kube.run("delete", "llmb", name, "-n", backend_ns)
    finally:
        servers.close()


def test_a_key_the_server_refuses_fails_the_backend_with_the_servers_words(
    kube: Kube, backend_ns: str, servers_dir: Path, modelsource: ModelSource
) -> None:
    """llama-server answers /health without a key; the refusal shows when llmop lists the models."""
    gguf = str(modelsource.root / "files" / "tiny.gguf")
    with run_real_runtime(servers_dir, "llamacpp", gguf, "tiny.gguf", "--api-key", "right") as url:
        kube.run("create", "secret", "generic", "wrong-key", "--from-literal=key=wrong", "-n", backend_ns)
        # llmop uses only Secrets that opt in.
        kube.run("label", "secret", "wrong-key", "llmop.dev/use=true", "-n", backend_ns)
        kube.apply(
            {
                "apiVersion": "llmop.dev/v1alpha1",
                "kind": "LLMBackend",
                "metadata": {"name": "refused"},
                "spec": {
                    "external": {"url": url, "kind": "llamacpp"},
                    "apiKeySecretRef": {"name": "wrong-key", "key": "key"},
                    "startup": {"timeout": "5m"},
                },
            },
            backend_ns,
        )

        def refused() -> dict[str, Any] | None:
            status: dict[str, Any] = kube.get("llmb", "refused", backend_ns).get("status", {})
            return status if status.get("phase") == "Failed" else None

        status = eventually(refused, timeout=30, message="phase Failed")
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    stalled = next(c for c in status["conditions"] if c["type"] == "Stalled")
    assert (ready["reason"], stalled["status"], stalled["reason"]) == ("Unauthorized", "True", "Unauthorized")
    assert "401" in ready["message"] and "Invalid API Key" in ready["message"], ready
    assert "wrong" not in status["lastError"]  # the key itself never reaches status

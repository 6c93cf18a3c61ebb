"""The whole path: the local cluster, the model source, real runtime processes at the pods'
addresses (hack/podrunner.py), and `llmop run` as a separate process."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.kube import REPO, Kube, eventually
from support.operator import OperatorProcess
from support.runtimes import ModelSource, PodRunner, run_modelsource, run_podrunner

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="session")
def e2e_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="session")
def modelsource(e2e_dir: Path) -> Iterator[ModelSource]:
    with run_modelsource(e2e_dir / "models") as source:
        yield source


@pytest.fixture(scope="session")
def ollama_registry(e2e_dir: Path, modelsource: ModelSource) -> Iterator[str]:
    """A local registry real Ollama pulls from; it serves the tiny model under the examples' tags."""
    tiny = modelsource.root / "files" / "tiny.gguf"
    port = _free_port()
    log = open(e2e_dir / "ollama-registry.log", "ab")  # the child owns it
    process = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "hack" / "standins" / "ollama_registry.py"),
            "--port",
            str(port),
            "--model",
            f"library/qwen3:0.6b={tiny}",
            "--model",
            f"library/smollm2:135m={tiny}",
            "--model",
            f"library/tiny:latest={tiny}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    import httpx

    address = f"127.0.0.1:{port}"
    eventually(lambda: _answers(httpx, f"http://{address}/v2/"), timeout=30, message="the Ollama registry")
    try:
        yield address
    finally:
        process.terminate()
        process.wait(10)


def _answers(httpx: Any, url: str) -> bool:
    try:
        return bool(httpx.get(url, timeout=2).status_code < 500)
    except httpx.HTTPError:
        return False


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def podrunner(kube: Kube, e2e_dir: Path) -> Iterator[PodRunner]:
    with run_podrunner(kube.kubeconfig, e2e_dir / "pods", backoff_initial=1.0) as runner:
        yield runner


@pytest.fixture(scope="session")
def operator_process(
    kube: Kube, e2e_dir: Path, modelsource: ModelSource, podrunner: PodRunner
) -> Iterator[OperatorProcess]:
    process = OperatorProcess(
        kubeconfig=kube.kubeconfig,
        log_path=e2e_dir / "operator.log",
        env={"LLMOP_HF_ENDPOINT": modelsource.url, "LLMOP_PULL_PROGRESS_INTERVAL": "1s"},
    )
    process.start()
    process.wait_started()
    try:
        yield process
    finally:
        process.stop()
        if os.environ.get("LLMOP_SHOW_OPERATOR_LOG"):
            print(process.log()[-20000:])


@pytest.fixture
def operator(operator_process: OperatorProcess) -> OperatorProcess:
    """The running operator; restarted first if an earlier test killed it."""
    if not operator_process.alive():
        operator_process.start()
        operator_process.wait_started()
    return operator_process

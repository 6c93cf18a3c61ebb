"""The whole path: the local cluster, the model source, real runtime processes at the pods'
addresses (hack/podrunner.py), and `llmop run` as a separate process."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.kube import Kube
from support.operator import OperatorProcess
from support.runtimes import (
    ModelSource,
    PodRunner,
    run_modelsource,
    run_ollama_registry,
    run_podrunner,
    tiny_gguf,
)

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
    models = {name: tiny for name in ("library/qwen3:0.6b", "library/smollm2:135m", "library/tiny:latest")}
    with run_ollama_registry(models, e2e_dir / "ollama-registry.log") as address:
        yield address


#: Bytes per second of each blob download from `slow_ollama_registry`: the tiny model
#: (about 600 KB) takes about ten seconds.
SLOW_REGISTRY_RATE = 60_000


@pytest.fixture(scope="session")
def slow_ollama_registry(e2e_dir: Path) -> Iterator[str]:
    """A throttled registry whose models are tiny GGUFs of their own (other seeds, other digests),
    so no pull shares a blob with another: `library/slow-<n>:latest` for n in 1..4."""
    models = {
        f"library/slow-{seed}:latest": tiny_gguf(e2e_dir / "slow-models" / f"slow-{seed}.gguf", seed)
        for seed in range(1, 5)
    }
    with run_ollama_registry(
        models, e2e_dir / "slow-ollama-registry.log", throttle=SLOW_REGISTRY_RATE
    ) as address:
        yield address


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


@pytest.fixture(scope="module")
def no_session_operator(operator_process: OperatorProcess) -> Iterator[None]:
    """The e2e session's own operator (cluster-admin, cluster-wide) would act on the backends of a
    module that runs an operator of its own; it rests while that module runs, and is back after."""
    operator_process.stop()
    try:
        yield
    finally:
        operator_process.start()
        operator_process.wait_started()

"""An operator whose heap a burst of deleted backends left bloated runs itself anew in the same
process (llmop.loops.heap): the backend that stayed keeps its status, the operator goes on working,
and the process never exits (no container restart, no CrashLoopBackOff).

The threshold is set low here (5%), so that a burst of 40 backends crosses it; the churn benchmark
(bench/churn.py) shows the memory the restart gives back at 300.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.kube import Kube, eventually, wait_backend_ready
from support.operator import OperatorProcess
from support.runtimes import ModelSource, run_real_runtime

pytestmark = pytest.mark.e2e

RESTARTING = "llmop restarts to give back the memory deleted backends left"
BURST = 40


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory, modelsource: ModelSource) -> Iterator[str]:
    gguf = str(modelsource.root / "files" / "tiny.gguf")
    with run_real_runtime(tmp_path_factory.mktemp("heap-restart"), "llamacpp", gguf, "tiny.gguf") as url:
        yield url


def external(name: str, url: str) -> dict[str, Any]:
    return {
        "apiVersion": "llmop.dev/v1alpha1",
        "kind": "LLMBackend",
        "metadata": {"name": name, "labels": {"burst": str(name != "stays").lower()}},
        "spec": {"external": {"url": url, "kind": "llamacpp"}, "startup": {"timeout": "1m"}},
    }


def test_a_bloated_operator_restarts_in_place_and_the_backend_that_stayed_keeps_its_status(
    kube: Kube, no_session_operator: None, llama_server: str, tmp_path: Path
) -> None:
    with kube.namespace("heap") as namespace:
        kube.apply(external("stays", llama_server), namespace)
        operator = OperatorProcess(
            kubeconfig=kube.kubeconfig,
            log_path=tmp_path / "operator.log",
            # The baseline is sampled 5 s after start, a restart may come at 15 s.
            env={"LLMOP_HEAP_RESTART_PERCENT": "5", "LLMOP_HEAP_RESTART_AFTER": "15s"},
        )
        started = time.monotonic()
        operator.start()
        try:
            operator.wait_started()
            before = wait_backend_ready(kube, "stays", namespace)
            assert RESTARTING not in operator.log()  # backends that come and stay never restart it

            time.sleep(max(0.0, started + 7 - time.monotonic()))  # after the baseline, at 5 s
            burst = [external(f"goes-{index}", llama_server) for index in range(BURST)]
            kube.apply(yaml.safe_dump_all(burst), namespace)
            for backend in burst:
                wait_backend_ready(kube, backend["metadata"]["name"], namespace)
            time.sleep(max(0.0, started + 15 - time.monotonic()))  # never within 15 s of a start
            kube.run("delete", "llmb", "-l", "burst=true", "-n", namespace, "--wait=true", "--timeout=120s")
            eventually(lambda: operator.log().count("llmop started") == 2, timeout=90, message="a restart")
            assert RESTARTING in operator.log()
            assert operator.alive()  # the same process, run anew: nothing for Kubernetes to restart

            kube.apply(external("after", llama_server), namespace)
            wait_backend_ready(kube, "after", namespace)
            stays = kube.get("llmb", "stays", namespace)["status"]
            assert stays["phase"] == "Ready"
            assert stays["models"] == before["models"]
            ready = next(c for c in stays["conditions"] if c["type"] == "Ready")
            first = next(c for c in before["conditions"] if c["type"] == "Ready")
            assert ready["lastTransitionTime"] == first["lastTransitionTime"]  # never left Ready
        finally:
            operator.stop()

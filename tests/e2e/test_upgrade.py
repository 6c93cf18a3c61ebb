"""`helm upgrade` of the operator restarts no backend: the pods it had keep running (same UIDs), the
status says llmop's defaults are newer, and the next change of spec rolls onto them.

As in test_install.py, the chart's operator pods never run here (kwok runs no containers): the
test runs `llmop run` with the environment the chart gives the pod, before and after the
upgrade, as the pod would be restarted with the new chart's environment.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_install import CHART, example, helm

from support.kube import Kube, eventually, wait_backend_ready
from support.operator import OperatorProcess
from support.runtimes import ModelSource, PodRunner

pytestmark = pytest.mark.e2e

#: What a new release of llmop brings: a new operator tag and a newer llama.cpp by default.
NEW_TAG = "0.2.0"
NEW_LLAMACPP = "ghcr.io/ggml-org/llama.cpp:server-b99999"
BACKEND = "llamacpp-tiny"
ADOPTING = "llamacpp-adopting"


def operator_env(kube: Kube, release: str, namespace: str) -> dict[str, str]:
    """The environment the chart's Deployment gives the operator, as the release renders it now."""
    manifest = yaml.safe_load_all(helm(kube, "get", "manifest", release, "-n", namespace).stdout)
    deployment = next(doc for doc in manifest if doc and doc["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    return {**env, "operator-image": container["image"]}


def start_operator(kube: Kube, env: dict[str, str], log: Path, modelsource: ModelSource) -> OperatorProcess:
    process = OperatorProcess(
        kubeconfig=kube.kubeconfig,
        log_path=log,
        env={
            **{name: value for name, value in env.items() if name.startswith("LLMOP_")},
            # This machine is not a pod: no metrics port (llama-server's 8080), the tests' model source.
            "LLMOP_METRICS_PORT": "0",
            "LLMOP_HF_ENDPOINT": modelsource.url,
            "LLMOP_PULL_PROGRESS_INTERVAL": "1s",
            "LLMOP_LOG_FORMAT": "plain",
        },
    )
    process.start()
    process.wait_started()
    return process


def backend_pods(kube: Kube, namespace: str, backend: str) -> dict[str, dict[str, Any]]:
    """The backend's pods that are not being deleted, by UID."""
    pods = kube.list("pods", namespace, f"llmop.dev/backend={backend}")
    return {p["metadata"]["uid"]: p for p in pods if not p["metadata"].get("deletionTimestamp")}


def container_images(pod: dict[str, Any]) -> dict[str, str]:
    spec = pod["spec"]
    return {c["name"]: c["image"] for c in [*spec.get("initContainers", []), *spec["containers"]]}


def defaults_condition(kube: Kube, namespace: str, backend: str) -> dict[str, Any] | None:
    status = kube.get("llmb", backend, namespace).get("status", {})
    return next((c for c in status.get("conditions", []) if c["type"] == "DefaultsCurrent"), None)


def rolled_onto(kube: Kube, namespace: str, backend: str, old: set[str], image: str) -> dict[str, Any]:
    """Wait until the backend's pods are new ones running `image`, and its status says so."""
    rolled = eventually(
        lambda: (
            (now := backend_pods(kube, namespace, backend))
            and not set(now) & old
            and all(container_images(p)["runtime"] == image for p in now.values())
            and now
        ),
        timeout=120,
        message=f"{backend}'s pods replaced by pods of {image}",
    )
    eventually(
        lambda: (c := defaults_condition(kube, namespace, backend)) and c["status"] == "True",
        timeout=60,
        message=f"{backend}: DefaultsCurrent=True",
    )
    return dict(rolled)


def kept_after_upgrade(
    kube: Kube, namespace: str, backend: str, operator: OperatorProcess, pods: set[str], generation: int
) -> None:
    """Once the new operator has reconciled the backend, its pods are those it had, and its status
    says that newer defaults exist and how to take them."""
    eventually(
        lambda: f"ensured the objects of backend {namespace}/{backend}" in operator.log(),
        timeout=60,
        message=f"the new operator reconciled {backend}",
    )
    assert kube.get("deployment", backend, namespace)["metadata"]["generation"] == generation
    assert set(backend_pods(kube, namespace, backend)) == pods, f"the upgrade replaced {backend}'s pods"
    newer = eventually(
        lambda: (c := defaults_condition(kube, namespace, backend)) and c["status"] == "False" and c,
        timeout=60,
        message=f"{backend}: DefaultsCurrent=False",
    )
    assert newer["reason"] == "NewerDefaults" and NEW_LLAMACPP in newer["message"], newer
    assert kube.get("llmb", backend, namespace)["status"]["phase"] == "Ready"


def test_helm_upgrade_restarts_no_backend_and_a_spec_change_rolls_onto_the_new_defaults(
    kube: Kube, no_session_operator: None, modelsource: ModelSource, podrunner: PodRunner, tmp_path: Path
) -> None:
    with kube.namespace("upgrade") as system, kube.namespace("team") as team:
        release = f"llmop-{system.rsplit('-', 1)[1]}"
        # One namespace to watch: leftovers of other tests are none of this operator's business.
        settings = ["--set", "crds.install=false", "--set", "leaderElection.enabled=false"]
        watch = ["--set-json", f'watchNamespaces=["{team}"]']
        helm(kube, "install", release, str(CHART), "-n", system, *settings, *watch)
        before = operator_env(kube, release, system)
        operator = start_operator(kube, before, tmp_path / "operator-before.log", modelsource)
        try:
            # Two backends: one takes a change of spec after the upgrade, the other the annotation.
            adopting = example("llamacpp")
            adopting["metadata"]["name"] = ADOPTING
            for manifest in (example("llamacpp"), adopting):
                kube.apply(manifest, team)
            pods, generations = {}, {}
            for backend in (BACKEND, ADOPTING):
                wait_backend_ready(kube, backend, team)
                pods[backend] = backend_pods(kube, team, backend)
                (deployed,) = pods[backend].values()
                assert container_images(deployed) == {
                    "agent": before["LLMOP_AGENT_IMAGE"],
                    "runtime": before["LLMOP_IMAGE_LLAMACPP"],
                }
                generations[backend] = kube.get("deployment", backend, team)["metadata"]["generation"]

            upgrade = ["--reuse-values", "--set", f"image.tag={NEW_TAG}"]
            helm(
                kube,
                "upgrade",
                release,
                str(CHART),
                "-n",
                system,
                *upgrade,
                "--set",
                f"runtimeImages.llamacpp={NEW_LLAMACPP}",
            )
            after = operator_env(kube, release, system)
            assert after["operator-image"].endswith(f":{NEW_TAG}")
            # The agent is versioned on its own: the operator's new tag is not the agent's.
            assert after["LLMOP_AGENT_IMAGE"] == before["LLMOP_AGENT_IMAGE"]
            operator.stop()  # the old operator pod goes, the new one starts with the new environment
            operator = start_operator(kube, after, tmp_path / "operator-after.log", modelsource)

            for backend in (BACKEND, ADOPTING):
                kept_after_upgrade(kube, team, backend, operator, set(pods[backend]), generations[backend])
                status = kube.get("llmb", backend, team)["status"]
                assert status["images"] == {
                    "runtime": before["LLMOP_IMAGE_LLAMACPP"],
                    "agent": before["LLMOP_AGENT_IMAGE"],
                }

            # A change of spec rolls the pods onto the new defaults; so does the annotation.
            patch = {"spec": {"env": [{"name": "LLAMA_ARG_THREADS", "value": "1"}]}}
            kube.run("patch", "llmb", BACKEND, "-n", team, "--type=merge", "-p", json.dumps(patch))
            kube.run("annotate", "llmb", ADOPTING, "-n", team, "upgrade.llmop.dev/adopt-defaults=2026-12")
            for backend in (BACKEND, ADOPTING):
                assert len(rolled_onto(kube, team, backend, set(pods[backend]), NEW_LLAMACPP)) == 1
                wait_backend_ready(kube, backend, team)
        finally:
            operator.stop()
            if os.environ.get("LLMOP_SHOW_OPERATOR_LOG"):
                print(operator.log()[-20000:])
            helm(kube, "uninstall", release, "-n", system, "--wait", check=False)

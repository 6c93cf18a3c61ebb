"""Scaling through the scale subresource with the operator running: the Deployment follows
`kubectl scale`, and the scale's selector finds the backend's pods (docs/scaling.md)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from support.kube import Kube, eventually
from support.operator import OperatorProcess
from support.runtimes import PodRunner

pytestmark = pytest.mark.e2e


@pytest.fixture
def scaling_ns(kube: Kube, operator: OperatorProcess, podrunner: PodRunner) -> Any:
    with kube.namespace("e2e-scale") as name:
        yield name


def test_kubectl_scale_moves_the_deployment_and_the_scale_selector_finds_the_pods(
    kube: Kube, scaling_ns: str
) -> None:
    # Pods that no node takes: the test is about the objects llmop writes, not the runtime.
    spec = {"runtime": "ollama", "replicas": 1, "nodeSelector": {"example.com/pool": "none"}}
    kube.apply(
        {
            "apiVersion": "llmop.dev/v1alpha1",
            "kind": "LLMBackend",
            "metadata": {"name": "chat"},
            "spec": spec,
        },
        scaling_ns,
    )
    selector = eventually(
        lambda: kube.get("llmb", "chat", scaling_ns).get("status", {}).get("selector"),
        timeout=60,
        message="status.selector written by llmop",
    )

    kube.run("scale", "llmb/chat", "-n", scaling_ns, "--replicas=3")

    eventually(
        lambda: kube.get("deployment", "chat", scaling_ns)["spec"]["replicas"] == 3,
        timeout=60,
        message="the Deployment following spec.replicas",
    )
    backend = eventually(
        lambda: (
            (body := kube.get("llmb", "chat", scaling_ns))["status"].get("observedGeneration")
            == body["metadata"]["generation"]
            and body
        ),
        timeout=60,
        message="status observing the scaled generation",
    )
    assert backend["status"]["replicas"]["desired"] == 3
    # The whole ensure path ran, as for an edit: more than one replica gets a disruption budget.
    eventually(
        lambda: kube.get_or_none("pdb", "chat", scaling_ns),
        timeout=60,
        message="a PodDisruptionBudget after scaling to 3",
    )
    assert backend["spec"] == spec | {"replicas": 3}, "llmop wrote nothing else into the spec"
    scale = json.loads(
        kube.run("get", "llmb", "chat", "-n", scaling_ns, "--subresource=scale", "-o", "json").stdout
    )
    assert scale["spec"]["replicas"] == 3 and scale["status"]["selector"] == selector
    # The selector an HPA lists pods with finds exactly this backend's pods.
    pods = eventually(
        lambda: len(found := kube.list("pods", scaling_ns, selector=selector)) == 3 and found,
        timeout=60,
        message="three pods matching the scale's selector",
    )
    assert {pod["metadata"]["labels"]["llmop.dev/backend"] for pod in pods} == {"chat"}

"""The local cluster behaves like a real one with GPU nodes: the scheduler places by nvidia.com/gpu."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from support.kube import Kube, eventually

pytestmark = pytest.mark.integration


def gpu_deployment(name: str, gpus: int) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "runtime",
                            "image": "example.invalid/runtime:1",
                            "resources": {"limits": {"nvidia.com/gpu": str(gpus)}},
                        }
                    ],
                    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                },
            },
        },
    }


def test_gpu_pod_is_scheduled_on_a_gpu_node_with_a_loopback_ip(kube: Kube, namespace: str) -> None:
    kube.apply(gpu_deployment("one-gpu", 1), namespace)

    def ready_pod() -> dict[str, Any] | None:
        for pod in kube.list("pods", namespace, "app=one-gpu"):
            conditions = {c["type"]: c["status"] for c in pod["status"].get("conditions", [])}
            if conditions.get("Ready") == "True" and pod["status"].get("podIP"):
                return pod
        return None

    pod = eventually(ready_pod, timeout=60, message="a Ready pod")
    node = kube.get("node", pod["spec"]["nodeName"])
    assert node["metadata"]["labels"]["nvidia.com/gpu.product"]
    assert int(node["status"]["allocatable"]["nvidia.com/gpu"]) >= 1
    assert ipaddress.ip_address(pod["status"]["podIP"]) in ipaddress.ip_network("127.0.0.0/8")


def test_pod_without_toleration_avoids_gpu_nodes(kube: Kube, namespace: str) -> None:
    deployment = gpu_deployment("cpu-only", 0)
    pod_spec = deployment["spec"]["template"]["spec"]
    pod_spec["containers"][0].pop("resources")
    pod_spec.pop("tolerations")
    kube.apply(deployment, namespace)
    pods = eventually(
        lambda: [p for p in kube.list("pods", namespace, "app=cpu-only") if p["spec"].get("nodeName")],
        timeout=60,
        message="a scheduled pod",
    )
    assert pods[0]["spec"]["nodeName"] == "cpu-node-0"


def test_too_many_gpus_stays_pending_with_the_schedulers_reason(kube: Kube, namespace: str) -> None:
    kube.apply(gpu_deployment("greedy", 64), namespace)

    def failed_scheduling() -> list[str]:
        return [
            event["message"]
            for event in kube.list("events", namespace)
            if event["reason"] == "FailedScheduling"
        ]

    messages = eventually(failed_scheduling, timeout=60, message="a FailedScheduling event")
    assert "nvidia.com/gpu" in messages[0]
    pods = kube.list("pods", namespace, "app=greedy")
    assert pods and all(
        pod["status"]["phase"] == "Pending" and not pod["spec"].get("nodeName") for pod in pods
    )


def test_rbac_is_enforced(kube: Kube, namespace: str) -> None:
    denied = kube.run(
        "auth",
        "can-i",
        "list",
        "secrets",
        "-n",
        namespace,
        f"--as=system:serviceaccount:{namespace}:default",
        check=False,
    )
    assert denied.stdout.strip() == "no"

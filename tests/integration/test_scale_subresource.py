"""The scale subresource on the real API server: kubectl scale, and a real HorizontalPodAutoscaler
driving it from kube-controller-manager, as they do a Deployment (docs/scaling.md)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from support.kube import Kube, eventually

pytestmark = pytest.mark.integration


def _backend(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "llmop.dev/v1alpha1",
        "kind": "LLMBackend",
        "metadata": {"name": name},
        "spec": spec,
    }


def _scale(kube: Kube, name: str, namespace: str) -> dict[str, Any]:
    out = kube.run("get", "llmb", name, "-n", namespace, "--subresource=scale", "-o", "json").stdout
    return dict(json.loads(out))


def test_kubectl_scale_writes_spec_replicas_as_a_spec_change(kube: Kube, namespace: str) -> None:
    kube.apply(_backend("chat", {"runtime": "ollama", "replicas": 1}), namespace)
    before = kube.get("llmb", "chat", namespace)["metadata"]["generation"]

    result = kube.run("scale", "llmb/chat", "-n", namespace, "--replicas=3")

    assert "llmbackend.llmop.dev/chat scaled" in result.stdout
    stored = kube.get("llmb", "chat", namespace)
    assert stored["spec"]["replicas"] == 3
    # A new generation: the operator's spec handlers see it as they see an edit.
    assert stored["metadata"]["generation"] == before + 1
    scale = _scale(kube, "chat", namespace)
    assert scale["kind"] == "Scale" and scale["spec"]["replicas"] == 3
    # --current-replicas guards a scale the way it does a Deployment's.
    refused = kube.run(
        "scale", "llmb/chat", "-n", namespace, "--current-replicas=1", "--replicas=5", check=False
    )
    assert refused.returncode != 0 and kube.get("llmb", "chat", namespace)["spec"]["replicas"] == 3


def test_scale_shows_the_status_selector_and_serving_count(kube: Kube, namespace: str) -> None:
    selector = "app.kubernetes.io/instance=chat,llmop.dev/backend=chat"
    kube.apply(_backend("chat", {"runtime": "ollama", "replicas": 2}), namespace)
    # What llmop's observer writes (tests/e2e/test_scaling.py shows the operator writing it).
    status = {"status": {"selector": selector, "replicas": {"desired": 2, "ready": 1, "summary": "1/2"}}}
    kube.run(
        "patch",
        "llmb",
        "chat",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(status),
    )

    scale = _scale(kube, "chat", namespace)

    assert scale["status"] == {"replicas": 1, "selector": selector}
    assert scale["spec"] == {"replicas": 2}


def test_kubectl_scale_works_on_a_backend_that_leaves_replicas_unset(kube: Kube, namespace: str) -> None:
    kube.apply(_backend("chat", {"runtime": "ollama"}), namespace)

    kube.run("scale", "llmb/chat", "-n", namespace, "--replicas=2")

    assert kube.get("llmb", "chat", namespace)["spec"]["replicas"] == 2


@pytest.mark.parametrize("spec", [{}, {"replicas": 1}], ids=["replicas-unset", "replicas-1"])
def test_an_external_backend_cannot_be_scaled_and_says_why(
    kube: Kube, namespace: str, spec: dict[str, Any]
) -> None:
    kube.apply(_backend("remote", {"external": {"url": "http://10.0.0.5:8000"}, **spec}), namespace)

    result = kube.run("scale", "llmb/remote", "-n", namespace, "--replicas=2", check=False)

    assert result.returncode != 0
    assert "llmop runs no pods for spec.external" in result.stderr, result.stderr
    assert kube.get("llmb", "remote", namespace)["spec"].get("replicas") == spec.get("replicas")


def test_an_external_backend_stored_with_replicas_stays_writable(kube: Kube, namespace: str) -> None:
    """Replicas meant nothing on an external backend before: one stored with them still takes
    other changes (kopf's finalizer, a new URL), and only a change of replicas is refused."""
    manifest = _backend("remote", {"external": {"url": "http://10.0.0.5:8000"}, "replicas": 3})
    kube.apply(manifest, namespace)
    kube.run("annotate", "llmb", "remote", "-n", namespace, "example.com/owner=team-a")
    manifest["spec"]["external"]["url"] = "http://10.0.0.6:8000"
    kube.apply(manifest, namespace)

    result = kube.run("scale", "llmb/remote", "-n", namespace, "--replicas=2", check=False)

    assert "llmop runs no pods for spec.external" in result.stderr, result.stderr
    assert kube.get("llmb", "remote", namespace)["spec"]["replicas"] == 3


def test_an_external_backends_scale_has_no_selector(kube: Kube, namespace: str) -> None:
    """An HPA aimed at it then reports "selector is required": no pods are guessed."""
    kube.apply(_backend("remote", {"external": {"url": "http://10.0.0.5:8000"}, "replicas": 1}), namespace)
    scale = _scale(kube, "remote", namespace)
    assert scale["spec"]["replicas"] == 1 and scale["status"].get("selector", "") == ""


def test_the_hpa_controllers_own_role_may_drive_the_scale_subresource(kube: Kube) -> None:
    """kube-controller-manager's HPA controller runs as this ServiceAccount where controllers use
    their own credentials (kubeadm, managed clusters): its bootstrap role covers */scale, so llmop
    needs to grant it nothing."""
    hpa = "system:serviceaccount:kube-system:horizontal-pod-autoscaler"
    for verb in ("get", "update"):
        result = kube.run(
            "auth",
            "can-i",
            verb,
            "llmbackends.llmop.dev",
            "--subresource=scale",
            "--as",
            hpa,
            "-A",
            check=False,
        )
        assert result.stdout.strip() == "yes", (verb, result.stdout, result.stderr)


def test_a_horizontal_pod_autoscaler_scales_a_backend(kube: Kube, namespace: str) -> None:
    """The HPA controller in the local kube-controller-manager GETs and PUTs /scale. With no
    metrics API in this cluster it still enforces minReplicas, which is the same write a metric's
    recommendation makes."""
    kube.apply(_backend("chat", {"runtime": "vllm", "replicas": 1}), namespace)
    kube.apply(_hpa("chat"), namespace)
    # Beside it, one on a backend that leaves spec.replicas unset (docs/scaling.md: set it).
    kube.apply(_backend("unset", {"runtime": "vllm"}), namespace)
    kube.apply(_hpa("unset"), namespace)
    # And one on an external backend, which has no pods and so no selector.
    kube.apply(_backend("remote", {"external": {"url": "http://10.0.0.5:8000"}, "replicas": 1}), namespace)
    kube.apply(_hpa("remote"), namespace)

    eventually(
        lambda: kube.get("llmb", "chat", namespace)["spec"]["replicas"] == 2,
        timeout=90,
        message="the HPA raising spec.replicas to its minReplicas",
    )
    eventually(
        lambda: kube.get("hpa", "chat", namespace).get("status", {}).get("desiredReplicas") == 2,
        timeout=60,
        message="the HPA's status",
    )
    rescaled = [
        e["message"]
        for e in kube.list("events", namespace)
        if e["involvedObject"]["name"] == "chat" and e["reason"] == "SuccessfulRescale"
    ]
    assert any("New size: 2" in message for message in rescaled), rescaled
    # The HPA says what is missing where `kubectl describe hpa` shows it, and writes nothing.
    able = eventually(
        lambda: _condition(kube.get("hpa", "unset", namespace), "AbleToScale"),
        timeout=60,
        message="the second HPA's AbleToScale condition",
    )
    assert able["status"] == "False" and ".spec.replicas" in able["message"], able
    assert "replicas" not in kube.get("llmb", "unset", namespace)["spec"]
    # Its minReplicas (2) asks for a write the CRD refuses, with the reason in the HPA's condition.
    refused = eventually(
        lambda: _condition(kube.get("hpa", "remote", namespace), "AbleToScale"),
        timeout=60,
        message="the external backend's HPA's AbleToScale condition",
    )
    assert refused["status"] == "False" and refused["reason"] == "FailedUpdateScale", refused
    assert "llmop runs no pods for spec.external" in refused["message"], refused
    assert kube.get("llmb", "remote", namespace)["spec"]["replicas"] == 1


def _condition(body: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next((c for c in body.get("status", {}).get("conditions", []) if c["type"] == type_), None)


def _hpa(target: str) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": target},
        "spec": {
            "scaleTargetRef": {"apiVersion": "llmop.dev/v1alpha1", "kind": "LLMBackend", "name": target},
            "minReplicas": 2,
            "maxReplicas": 4,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}},
                }
            ],
        },
    }


def test_kubectl_explain_tells_what_the_selector_and_replicas_are_for(kube: Kube) -> None:
    selector = " ".join(kube.run("explain", "llmbackend.status.selector").stdout.split())
    assert "scale subresource gives a HorizontalPodAutoscaler or KEDA" in selector
    replicas = " ".join(kube.run("explain", "llmbackend.spec.replicas").stdout.split())
    assert "kubectl scale" in replicas and "Not with spec.external" in replicas

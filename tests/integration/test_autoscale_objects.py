"""spec.autoscaling's writes on a real API server: the Deployment keeps the replicas llmop decided
across a spec change, the gateways' status.demand survives llmop's own status writes, and only
the entries of gone gateways are removed, never one a gateway just wrote."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from llmop.k8s.client import LLMBACKENDS
from llmop.loops.backend_autoscaler import DELETION_COST_ANNOTATION, LEAVING_COST, BackendAutoscaler
from llmop.loops.backend_ensure import apply_backend_objects
from llmop.loops.backend_observer import own_status
from llmop.loops.context import OperatorContext
from llmop.loops.pace import status_patch
from llmop.models.backend import LLMBackendSpec
from support.kube import Kube

pytestmark = pytest.mark.integration

SPEC: dict[str, Any] = {
    "runtime": "ollama",
    "models": [{"name": "qwen3:0.6b"}],
    "autoscaling": {"minReplicas": 0, "maxReplicas": 4},
}


def create_backend(kube: Kube, namespace: str, spec: dict[str, Any]) -> dict[str, Any]:
    manifest = {"apiVersion": "llmop.dev/v1alpha1", "kind": "LLMBackend", "metadata": {"name": "chat"}}
    kube.apply({**manifest, "spec": spec}, namespace)
    return kube.get("llmb", "chat", namespace)


def gateway_writes(kube: Kube, namespace: str, demand: dict[str, Any]) -> None:
    patch = json.dumps({"status": {"demand": demand}})
    kube.run("patch", "llmb", "chat", "-n", namespace, "--subresource=status", "--type=merge", "-p", patch)


async def test_the_deployment_keeps_the_decided_replicas_across_a_spec_change(
    kube: Kube, namespace: str, context: OperatorContext
) -> None:
    uid = create_backend(kube, namespace, SPEC)["metadata"]["uid"]
    spec = LLMBackendSpec.model_validate(SPEC)
    await apply_backend_objects(context, "chat", namespace, uid, spec)
    assert kube.get("deployment", "chat", namespace)["spec"]["replicas"] == 1

    autoscaler = BackendAutoscaler("chat", namespace, context)
    await autoscaler.scale(3)
    assert kube.get("deployment", "chat", namespace)["spec"]["replicas"] == 3 and not autoscaler.failed

    # An edit of the spec: the ensure path applies the Deployment (server-side apply, the same
    # field manager) with the decision, not a replica count of its own.
    edited = LLMBackendSpec.model_validate({**SPEC, "args": ["--verbose"]})
    await apply_backend_objects(
        context, "chat", namespace, uid, edited, status={"autoscaling": {"replicas": 3}}
    )
    assert kube.get("deployment", "chat", namespace)["spec"]["replicas"] == 3
    assert "chat" not in str(context.scaled), "dropped: the observer sets its decision again"


async def test_the_gateways_demand_survives_llmops_status_writes_and_only_gone_ones_are_removed(
    kube: Kube, namespace: str, context: OperatorContext
) -> None:
    create_backend(kube, namespace, SPEC)
    now = datetime.now(UTC).replace(microsecond=0)
    live = {
        "inFlight": 2,
        "waiting": 0,
        "pods": {"chat-x": 2},
        "time": now.isoformat().replace("+00:00", "Z"),
    }
    gone = {
        "inFlight": 0,
        "waiting": 0,
        "time": (now - timedelta(hours=2)).isoformat().replace("+00:00", "Z"),
    }
    gateway_writes(kube, namespace, {"gw-live": live, "gw-gone": gone})

    # llmop's own write, as the observer makes it: the whole status, less what it no longer says.
    stored = kube.get("llmb", "chat", namespace)["status"]
    new = {**own_status(stored), "phase": "Idle"}
    await context.kube.patch_status(LLMBACKENDS, "chat", namespace, status_patch(stored, new))
    after = kube.get("llmb", "chat", namespace)
    assert after["status"]["phase"] == "Idle" and set(after["status"]["demand"]) == {"gw-live", "gw-gone"}

    # A gateway writes between llmop's read and its removal: the removal is refused, nothing is lost.
    read = after["metadata"]["resourceVersion"]
    gateway_writes(kube, namespace, {"gw-new": live})
    autoscaler = BackendAutoscaler("chat", namespace, context)
    await autoscaler.prune(after["status"], now, read)
    assert set(kube.get("llmb", "chat", namespace)["status"]["demand"]) == {"gw-live", "gw-gone", "gw-new"}

    current = kube.get("llmb", "chat", namespace)
    autoscaler.pruned_at = float("-inf")
    await autoscaler.prune(current["status"], now, current["metadata"]["resourceVersion"])
    assert kube.get("llmb", "chat", namespace)["status"]["demand"] == {"gw-live": live, "gw-new": live}


async def test_a_drained_pod_gets_the_lowest_deletion_cost_and_loses_it_when_it_stays(
    kube: Kube, namespace: str, context: OperatorContext
) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "chat-x", "labels": {"llmop.dev/backend": "chat"}},
        "spec": {"containers": [{"name": "c", "image": "registry.invalid/none"}]},
    }
    kube.apply(pod, namespace)
    autoscaler = BackendAutoscaler("chat", namespace, context)
    assert await autoscaler.annotate("chat-x", LEAVING_COST)
    annotations = kube.get("pod", "chat-x", namespace)["metadata"]["annotations"]
    assert annotations[DELETION_COST_ANNOTATION] == "-1000"
    assert await autoscaler.annotate("chat-x", None)
    assert DELETION_COST_ANNOTATION not in (
        kube.get("pod", "chat-x", namespace)["metadata"].get("annotations") or {}
    )
    assert await autoscaler.annotate("gone", LEAVING_COST), "a pod already gone is no failure"


def test_kubectl_explains_the_fields_and_shows_the_decision_wide(kube: Kube, namespace: str) -> None:
    explained = " ".join(kube.run("explain", "llmbackend.spec.autoscaling.minReplicas").stdout.split())
    assert "0 lets the backend scale to zero" in explained
    create_backend(kube, namespace, SPEC)
    status = {"phase": "Idle", "autoscaling": {"replicas": 0, "message": "no request for 5m: scaled to zero"}}
    patch = json.dumps({"status": status})
    kube.run("patch", "llmb", "chat", "-n", namespace, "--subresource=status", "--type=merge", "-p", patch)
    header, row = kube.run("get", "llmb", "chat", "-n", namespace, "-o", "wide").stdout.splitlines()
    assert header.split()[-2:] == ["SCALING", "AGE"] and "no request for 5m: scaled to zero" in row
    assert " Idle " in row

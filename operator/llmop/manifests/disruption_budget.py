"""The PodDisruptionBudget of a backend with more than one replica."""

from __future__ import annotations

from typing import Any

from llmop.manifests.labels import (
    backend_selector,
    owned_metadata,
)
from llmop.manifests.runtime_pods import managed_runtime
from llmop.models.backend import LLMBackendSpec

#: A node drain takes one replica at a time unless the user says otherwise.
DEFAULT_MAX_UNAVAILABLE = 1


def wants_disruption_budget(spec: LLMBackendSpec) -> bool:
    """One replica gets none: a budget would block every drain of its node (maxUnavailable 0) or
    protect nothing (1). An autoscaled backend gets one when it may run more than one: llmop's own
    scale-down lowers the Deployment, which no budget holds back."""
    enabled = spec.disruption_budget.enabled if spec.disruption_budget else True
    most = spec.autoscaling.max_replicas if spec.autoscaling else spec.replicas
    return spec.runtime is not None and most > 1 and enabled


def build_disruption_budget(
    name: str, namespace: str, uid: str, spec: LLMBackendSpec
) -> dict[str, Any] | None:
    """The PodDisruptionBudget `name` over the backend's pods, or None when it should not exist."""
    if not wants_disruption_budget(spec):
        return None
    budget = spec.disruption_budget
    limit: dict[str, int]
    if budget is not None and budget.min_available is not None:
        limit = {"minAvailable": budget.min_available}
    elif budget is not None and budget.max_unavailable is not None:
        limit = {"maxUnavailable": budget.max_unavailable}
    else:
        limit = {"maxUnavailable": DEFAULT_MAX_UNAVAILABLE}
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": owned_metadata(name, name, namespace, uid, managed_runtime(spec)),
        "spec": {
            **limit,
            "selector": {"matchLabels": backend_selector(name)},
            # A pod that is not Ready (still loading, or failing) serves nothing: a drain may evict
            # it, so a backend stuck in a cold start never holds a node.
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }

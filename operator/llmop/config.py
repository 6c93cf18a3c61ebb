"""Operator configuration: command-line flags with environment fallbacks (what the Helm chart sets)."""

from __future__ import annotations

import os

from pydantic import BaseModel, Field

from llmop.models.duration import parse_duration
from llmop.runtimes.address_guard import DEFAULT_DENIED_CIDRS, configured_cidrs
from llmop.runtimes.registry import RUNTIMES

#: Each runtime module's default image: an exact release, the one the tests run
#: (tests/unit/test_runtime_images.py holds code, chart and docs to it).
DEFAULT_IMAGES = {
    kind: descriptor.default_image
    for kind, descriptor in RUNTIMES.items()
    if descriptor.default_image is not None
}
#: The agent sidecar's image. Versioned on its own, not with the operator: a new operator release
#: keeps it unless the agent changed, so an upgrade alone gives no pod a new agent image
#: (docs/upgrades.md). The chart's agent.image holds the same (tests/unit/test_chart.py).
DEFAULT_AGENT_IMAGE = "ghcr.io/llmop/llmop:0.1.0"


class OperatorConfig(BaseModel):
    """Everything the operator needs that is not in a custom resource."""

    namespaces: list[str] = Field(default_factory=list, description="Watched namespaces; empty = all.")
    log_format: str = "plain"
    images: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_IMAGES))
    pull_progress_interval: float = 2.0
    agent_image: str = Field(
        default=DEFAULT_AGENT_IMAGE,
        description="Image of the agent sidecar, versioned apart from the operator's (LLMOP_AGENT_IMAGE).",
    )
    cluster_domain: str = "cluster.local"
    hf_endpoint: str | None = Field(default=None, description="Hugging Face mirror the agents download from.")
    metrics_host: str = Field(default="0.0.0.0", description="Address of /metrics and /healthz.")
    metrics_port: int = Field(default=8080, description="Port of /metrics and /healthz; 0 = no server.")
    leader_election: bool = Field(
        default=False, description="Act only while holding the Lease, so that replicas never act at once."
    )
    lease_name: str = "llmop"
    lease_namespace: str | None = Field(
        default=None, description="Namespace of the Lease; the pod's own namespace when unset."
    )
    lease_duration: float = Field(
        default=15.0,
        description="Seconds a standby waits after the holder's last renewal before taking over.",
    )
    external_deny_cidrs: list[str] = Field(
        default_factory=lambda: list(DEFAULT_DENIED_CIDRS),
        description="Addresses llmop never connects to for spec.external (the API server is always "
        "refused too); llmop's own pods are not checked.",
    )
    operator_namespace: str | None = Field(
        default=None,
        description="Namespace of the operator's pods, which alone may reach the agents' port (NetworkPolicy).",
    )
    heap_restart_percent: float = Field(
        default=25.0,
        ge=0,
        description="Restart in place when deleted backends leave the RSS this much above its size "
        "soon after start (llmop.loops.heap); 0 = never.",
    )
    heap_restart_after: float = Field(
        default=30.0, gt=0, description="Uptime before such a restart, in seconds."
    )
    operator_pod_labels: dict[str, str] = Field(
        default_factory=dict, description="Labels of the operator's pods, for the agents' NetworkPolicy."
    )

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> OperatorConfig:
        env = os.environ if environ is None else environ
        images = dict(DEFAULT_IMAGES)
        for runtime in DEFAULT_IMAGES:
            images[runtime] = env.get(f"LLMOP_IMAGE_{runtime.upper()}", images[runtime])
        namespaces = [ns.strip() for ns in env.get("LLMOP_NAMESPACES", "").split(",") if ns.strip()]
        return cls(
            namespaces=namespaces,
            log_format=env.get("LLMOP_LOG_FORMAT", "plain"),
            images=images,
            pull_progress_interval=parse_duration(env.get("LLMOP_PULL_PROGRESS_INTERVAL", "2s")),
            agent_image=env.get("LLMOP_AGENT_IMAGE") or DEFAULT_AGENT_IMAGE,
            cluster_domain=env.get("LLMOP_CLUSTER_DOMAIN", "cluster.local"),
            hf_endpoint=env.get("LLMOP_HF_ENDPOINT") or None,
            metrics_host=env.get("LLMOP_METRICS_HOST", "0.0.0.0"),
            metrics_port=int(env.get("LLMOP_METRICS_PORT", "8080")),
            leader_election=env.get("LLMOP_LEADER_ELECTION", "").lower() in ("1", "true", "yes"),
            lease_name=env.get("LLMOP_LEASE_NAME", "llmop"),
            lease_namespace=env.get("LLMOP_LEASE_NAMESPACE") or None,
            lease_duration=parse_duration(env.get("LLMOP_LEASE_DURATION", "15s")),
            external_deny_cidrs=configured_cidrs(env.get("LLMOP_EXTERNAL_DENY_CIDRS")),
            operator_namespace=env.get("LLMOP_OPERATOR_NAMESPACE") or None,
            operator_pod_labels=parse_labels(env.get("LLMOP_OPERATOR_POD_LABELS", "")),
            heap_restart_percent=float(env.get("LLMOP_HEAP_RESTART_PERCENT", "25")),
            heap_restart_after=parse_duration(env.get("LLMOP_HEAP_RESTART_AFTER", "30s")),
        )


def parse_labels(text: str) -> dict[str, str]:
    """`a=b,c=d` -> {"a": "b", "c": "d"}; a part without `=` is a ValueError naming it."""
    labels = {}
    for part in (part.strip() for part in text.split(",")):
        if not part:
            continue
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"LLMOP_OPERATOR_POD_LABELS: {part!r} is not key=value")
        labels[key.strip()] = value.strip()
    return labels

"""Who may reach a backend's agent: the Secret with its token, and the NetworkPolicy that lets
only the operator's pods reach its port.

The agent downloads whatever it is asked to, with the pod's Hugging Face token, into the pod's
volume: only the operator may ask. The token is the control every cluster enforces; the
NetworkPolicy is a second fence where the network plugin enforces policies.
"""

from __future__ import annotations

import base64
from typing import Any

from llmop.config import OperatorConfig
from llmop.manifests.labels import (
    BACKEND_KIND,
    backend_labels,
    backend_selector,
    object_metadata,
    owned_metadata,
    owner_reference,
)
from llmop.manifests.ownership import controlled_by
from llmop.models.backend import LLMBackendSpec
from llmop.runtimes.registry import serving_port

#: Marks the Secrets llmop made to hold an agent's token; llmop reads no other Secret of its own.
AGENT_TOKEN_LABEL = "llmop.dev/agent-token"
AGENT_TOKEN_KEY = "token"
AGENT_TOKEN_VOLUME = "agent-token"
AGENT_TOKEN_DIR = "/var/run/llmop/agent-token"
#: The namespace label every namespace carries (Kubernetes sets it; it cannot be forged).
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


def agent_token_secret_name(name: str) -> str:
    return f"{name}-agent-token"


def agent_network_policy_name(name: str) -> str:
    return f"{name}-agent"


def build_agent_token_secret(name: str, namespace: str, uid: str, runtime: str, token: str) -> dict[str, Any]:
    """The Secret `<name>-agent-token`, owned by the backend (deleted with it)."""
    labels = {**backend_labels(name, runtime), AGENT_TOKEN_LABEL: name}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": object_metadata(
            agent_token_secret_name(name), namespace, labels, owner_reference(BACKEND_KIND, name, uid)
        ),
        "type": "Opaque",
        "data": {AGENT_TOKEN_KEY: base64.b64encode(token.encode()).decode()},
    }


def agent_token_of(secret: dict[str, Any], name: str, uid: str, label: str = AGENT_TOKEN_LABEL) -> str | None:
    """The token in `secret` if it is the one llmop made for backend `name` (its label, and a
    controller reference to this very backend); None for any other Secret. A model cache's
    filler token carries `label` llmop.dev/cache-token instead."""
    metadata = secret.get("metadata") or {}
    if (metadata.get("labels") or {}).get(label) != name:
        return None
    if not controlled_by(secret, uid):
        return None
    encoded = (secret.get("data") or {}).get(AGENT_TOKEN_KEY)
    try:
        token = base64.b64decode(encoded or "", validate=True).decode("ascii").strip()
    except (ValueError, UnicodeDecodeError):
        return None
    return token or None


def build_agent_network_policy(
    name: str, namespace: str, uid: str, spec: LLMBackendSpec, config: OperatorConfig, agent_port: int
) -> dict[str, Any] | None:
    """Ingress to the backend's pods: the agent port from the operator's pods only, the runtime
    port from anywhere (as without a policy). None when the operator does not know where its own
    pods run (it runs outside the cluster): there is no pod address to allow.

    The kubelet's probes come from the node itself, which network plugins let through; the
    namespace is matched by the label Kubernetes sets on every namespace, which no tenant can set.
    """
    if not config.operator_namespace or not config.operator_pod_labels:
        return None
    operator_pods = {
        "namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: config.operator_namespace}},
        "podSelector": {"matchLabels": dict(config.operator_pod_labels)},
    }
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": owned_metadata(agent_network_policy_name(name), name, namespace, uid, spec.runtime or ""),
        "spec": {
            "podSelector": {"matchLabels": backend_selector(name)},
            "policyTypes": ["Ingress"],
            "ingress": [
                {"from": [operator_pods], "ports": [{"protocol": "TCP", "port": agent_port}]},
                {"ports": [{"protocol": "TCP", "port": serving_port(spec)}]},
            ],
        },
    }

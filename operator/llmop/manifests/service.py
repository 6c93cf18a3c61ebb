"""The ClusterIP Service in front of a backend's runtime pods."""

from __future__ import annotations

from typing import Any

from llmop.manifests.deployment import RUNTIME_PORT_NAME
from llmop.manifests.labels import (
    backend_selector,
    owned_metadata,
)
from llmop.manifests.runtime_pods import managed_runtime
from llmop.models.backend import LLMBackendSpec
from llmop.runtimes.registry import serving_port


def build_service(name: str, namespace: str, uid: str, spec: LLMBackendSpec) -> dict[str, Any]:
    """The Service `name`: port `http` is the runtime port. ValueError for an external backend."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": owned_metadata(name, name, namespace, uid, managed_runtime(spec)),
        "spec": {
            "type": "ClusterIP",
            "selector": backend_selector(name),
            "ports": [
                {
                    "name": RUNTIME_PORT_NAME,
                    "port": serving_port(spec),
                    "targetPort": RUNTIME_PORT_NAME,
                    "protocol": "TCP",
                }
            ],
        },
    }

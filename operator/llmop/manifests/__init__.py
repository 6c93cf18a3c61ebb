"""Pure builders: a backend spec in, Kubernetes objects (plain dicts for server-side apply) out.

No I/O here; the same input always gives an equal dict, so callers can compare before writing.
"""

from llmop.manifests.deployment import (
    AGENT_CONTAINER,
    AGENT_PORT,
    AGENT_PORT_NAME,
    RUNTIME_CONTAINER,
    RUNTIME_PORT_NAME,
    build_deployment,
)
from llmop.manifests.endpoints import endpoint_url, openai_base_url
from llmop.manifests.labels import (
    BACKEND_KIND,
    BACKEND_LABEL,
    GROUP_VERSION,
    MODEL_PULL_KIND,
    RUNTIME_LABEL,
    backend_labels,
    backend_selector,
    owner_reference,
    selector_text,
)
from llmop.manifests.model_pull import build_model_pull, model_pull_name
from llmop.manifests.service import build_service
from llmop.manifests.storage import build_model_claim, model_claim_name
from llmop.sources import MODELS_DIR

__all__ = [
    "AGENT_CONTAINER",
    "AGENT_PORT",
    "AGENT_PORT_NAME",
    "BACKEND_KIND",
    "BACKEND_LABEL",
    "GROUP_VERSION",
    "MODELS_DIR",
    "MODEL_PULL_KIND",
    "RUNTIME_CONTAINER",
    "RUNTIME_LABEL",
    "RUNTIME_PORT_NAME",
    "backend_labels",
    "backend_selector",
    "build_deployment",
    "build_model_claim",
    "build_model_pull",
    "build_service",
    "endpoint_url",
    "model_claim_name",
    "model_pull_name",
    "openai_base_url",
    "owner_reference",
    "selector_text",
]

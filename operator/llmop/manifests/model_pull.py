"""The ModelPull objects a backend owns, one per entry of `spec.models`."""

from __future__ import annotations

import hashlib
from typing import Any

from llmop.manifests.labels import (
    APP_NAME,
    BACKEND_KIND,
    BACKEND_LABEL,
    GROUP_VERSION,
    INSTANCE_LABEL,
    MANAGED_BY_LABEL,
    MANAGER,
    MODEL_PULL_KIND,
    NAME_LABEL,
    backend_labels,
    object_metadata,
    owner_reference,
)
from llmop.models.backend import ModelSpec
from llmop.sources import model_slug

MAX_NAME = 63


def model_pull_name(backend_name: str, model_name: str) -> str:
    """`<backend>-<model slug>`, at most 63 characters.

    When too long, the backend part is shortened and a digest of the whole backend name keeps two
    long names with a common prefix apart; the model slug, itself unique, is kept whole.
    """
    slug = model_slug(model_name)
    name = f"{backend_name}-{slug}"
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(backend_name.encode()).hexdigest()[:6]
    keep = MAX_NAME - len(slug) - len(digest) - 2
    head = backend_name[:keep].rstrip("-.")
    return f"{head}-{digest}-{slug}"


def build_model_pull(
    backend_name: str, namespace: str, uid: str, model: ModelSpec, runtime: str | None = None
) -> dict[str, Any]:
    """The ModelPull that gets `model` into every replica of the backend.

    `runtime` adds the `llmop.dev/runtime` label the other owned objects carry; the
    `llmop.dev/backend` label, which finds a backend's pulls, is always set.
    """
    if runtime is not None:
        labels = backend_labels(backend_name, runtime)
    else:
        labels = {
            NAME_LABEL: APP_NAME,
            INSTANCE_LABEL: backend_name,
            MANAGED_BY_LABEL: MANAGER,
            BACKEND_LABEL: backend_name,
        }
    spec: dict[str, Any] = {"backendRef": {"name": backend_name}, "model": model.name}
    if model.sha256:
        spec["sha256"] = model.sha256
    if model.insecure:
        spec["insecure"] = True
    return {
        "apiVersion": GROUP_VERSION,
        "kind": MODEL_PULL_KIND,
        "metadata": object_metadata(
            model_pull_name(backend_name, model.name),
            namespace,
            labels,
            owner_reference(BACKEND_KIND, backend_name, uid),
        ),
        "spec": spec,
    }

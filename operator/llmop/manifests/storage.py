"""The model volume: a claim llmop creates, a claim the user names, or an emptyDir."""

from __future__ import annotations

from typing import Any

from llmop.manifests.labels import (
    owned_metadata,
)
from llmop.models.backend import LLMBackendSpec, StorageSpec

MODELS_VOLUME = "models"
#: An emptyDir lives on the node's disk: capped at the size a claim would get by default, so that a
#: pod cannot fill the node (the kubelet evicts a pod that writes more).
EMPTY_DIR_LIMIT = StorageSpec.model_fields["size"].default


def model_claim_name(name: str) -> str:
    return f"{name}-models"


def models_claim(name: str, spec: LLMBackendSpec) -> str | None:
    """The claim the pods mount, or None for an emptyDir."""
    if spec.storage is None:
        return None
    return spec.storage.existing_claim or model_claim_name(name)


def models_volume(name: str, spec: LLMBackendSpec, cache_claim: str | None = None) -> dict[str, Any]:
    """The claim, an emptyDir, or, for a backend on a ModelCache, the cache's claim read-only: the
    pods read the files the cache's filler verified and cannot change them."""
    if spec.model_cache is not None and cache_claim:
        return {"name": MODELS_VOLUME, "persistentVolumeClaim": {"claimName": cache_claim, "readOnly": True}}
    claim = models_claim(name, spec)
    if claim is None:
        return {"name": MODELS_VOLUME, "emptyDir": {"sizeLimit": EMPTY_DIR_LIMIT}}
    return {"name": MODELS_VOLUME, "persistentVolumeClaim": {"claimName": claim}}


def build_model_claim(name: str, namespace: str, uid: str, spec: LLMBackendSpec) -> dict[str, Any] | None:
    """The PersistentVolumeClaim `<name>-models`, or None when llmop creates no claim.

    ReadWriteOnce is what every storage class offers; replicas that share it must then land on
    one node, which a user who needs otherwise avoids with `existingClaim` (e.g. ReadWriteMany).
    """
    storage = spec.storage
    if storage is None or storage.existing_claim:
        return None
    claim_spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": storage.size}},
    }
    if storage.storage_class_name:
        claim_spec["storageClassName"] = storage.storage_class_name
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": owned_metadata(model_claim_name(name), name, namespace, uid, spec.runtime or ""),
        "spec": claim_spec,
    }

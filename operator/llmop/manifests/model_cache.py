"""A ModelCache's objects: its ReadWriteMany claim, the filler (one agent pod that downloads into
the claim) and the filler's token; and the read-only volume a backend on the cache mounts."""

from __future__ import annotations

import base64
from copy import deepcopy
from typing import Any

from llmop.config import OperatorConfig
from llmop.manifests.agent_access import AGENT_TOKEN_DIR, AGENT_TOKEN_KEY, AGENT_TOKEN_VOLUME
from llmop.manifests.deployment import (
    AGENT_CONTAINER,
    AGENT_PORT_NAME,
    AGENT_SECURITY,
    AGENT_TMP_LIMIT,
    AGENT_TMP_VOLUME,
    AGENT_USER,
    TERMINATION_GRACE_SECONDS,
)
from llmop.manifests.labels import (
    INSTANCE_LABEL,
    MANAGED_BY_LABEL,
    MANAGER,
    NAME_LABEL,
    object_metadata,
    owner_reference,
)
from llmop.manifests.storage import MODELS_VOLUME
from llmop.models.backend import AGENT_PORT
from llmop.models.cache import ModelCacheSpec
from llmop.sources import MODELS_DIR

MODEL_CACHE_KIND = "ModelCache"
CACHE_APP_NAME = "llmop-model-cache"
#: On the filler's pods: which cache they fill (the operator's pod index and the test cluster's
#: pod runner find them by it).
MODEL_CACHE_LABEL = "llmop.dev/model-cache"
#: Marks the Secret holding a filler's token, as llmop.dev/agent-token marks a backend's.
CACHE_TOKEN_LABEL = "llmop.dev/cache-token"


def cache_claim_name(cache: str) -> str:
    return f"{cache}-model-cache"


def filler_name(cache: str) -> str:
    return f"{cache}-filler"


def filler_token_secret_name(cache: str) -> str:
    return f"{cache}-filler-token"


def cache_claim(cache: str, spec: ModelCacheSpec) -> str:
    """The claim the cache's models live on: the user's, or the one llmop creates."""
    return spec.storage.existing_claim or cache_claim_name(cache)


def cache_labels(cache: str) -> dict[str, str]:
    return {
        NAME_LABEL: CACHE_APP_NAME,
        INSTANCE_LABEL: cache,
        MANAGED_BY_LABEL: MANAGER,
        MODEL_CACHE_LABEL: cache,
    }


def _metadata(name: str, cache: str, namespace: str, uid: str) -> dict[str, Any]:
    return object_metadata(
        name, namespace, cache_labels(cache), owner_reference(MODEL_CACHE_KIND, cache, uid)
    )


def build_cache_claim(cache: str, namespace: str, uid: str, spec: ModelCacheSpec) -> dict[str, Any] | None:
    """The ReadWriteMany claim `<cache>-model-cache`, or None for an existing claim.

    ReadWriteMany, so that the filler writes while pods of any node read: the whole point of the
    cache. Owned by the cache: deleting the cache deletes its models.
    """
    if spec.storage.existing_claim or not spec.storage.size:
        return None
    claim_spec: dict[str, Any] = {
        "accessModes": ["ReadWriteMany"],
        "resources": {"requests": {"storage": spec.storage.size}},
    }
    if spec.storage.storage_class_name:
        claim_spec["storageClassName"] = spec.storage.storage_class_name
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": _metadata(cache_claim_name(cache), cache, namespace, uid),
        "spec": claim_spec,
    }


def build_filler_token_secret(cache: str, namespace: str, uid: str, token: str) -> dict[str, Any]:
    """The Secret `<cache>-filler-token`, owned by the cache; created once, never rewritten."""
    metadata = _metadata(filler_token_secret_name(cache), cache, namespace, uid)
    metadata["labels"][CACHE_TOKEN_LABEL] = cache
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata,
        "type": "Opaque",
        "data": {AGENT_TOKEN_KEY: base64.b64encode(token.encode()).decode()},
    }


def filler_container(spec: ModelCacheSpec, config: OperatorConfig) -> dict[str, Any]:
    """The llmop agent as the pod's one container: it downloads what the operator asks (only the
    operator holds its token) and serves nothing else.

    Nothing of spec.models is in the pod: adding a model to the cache must not restart the filler,
    which would hash every cached model again. The size of a claim llmop creates is the cache's
    limit: a share (NFS) often reports far more free room than the claim asked for."""
    token_file = f"{AGENT_TOKEN_DIR}/{AGENT_TOKEN_KEY}"
    env: list[dict[str, Any]] = (
        [{"name": "HF_ENDPOINT", "value": config.hf_endpoint}] if config.hf_endpoint else []
    )
    if spec.storage.size and not spec.storage.existing_claim:
        env.append({"name": "LLMOP_MODELS_VOLUME_LIMIT", "value": spec.storage.size})
    if ref := spec.hf_token_secret_ref:
        # A reference: the token is in neither the Deployment nor the operator's memory.
        env.append({"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}})
    return {
        "name": AGENT_CONTAINER,
        "image": config.agent_image,
        "args": ["agent", "--models-dir", MODELS_DIR, "--port", str(AGENT_PORT), "--token-file", token_file],
        **({"env": env} if env else {}),
        "ports": [{"name": AGENT_PORT_NAME, "containerPort": AGENT_PORT, "protocol": "TCP"}],
        "volumeMounts": [
            {"name": MODELS_VOLUME, "mountPath": MODELS_DIR},
            {"name": AGENT_TOKEN_VOLUME, "mountPath": AGENT_TOKEN_DIR, "readOnly": True},
            {"name": AGENT_TMP_VOLUME, "mountPath": "/tmp"},
        ],
        "securityContext": deepcopy(AGENT_SECURITY),
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": AGENT_PORT_NAME}, "periodSeconds": 5},
    }


def build_filler_deployment(
    cache: str, namespace: str, uid: str, spec: ModelCacheSpec, config: OperatorConfig
) -> dict[str, Any]:
    """The Deployment `<cache>-filler`: one agent pod with the claim mounted read-write.

    One replica with Recreate: two fillers would download the same bytes twice. It runs while the
    cache exists (a few MiB of memory), so a model added to the cache downloads at once and a
    restarted filler can check the files before backends use them. `config` carries the agent
    image and Hugging Face endpoint; the caller keeps those a running filler has, so an operator
    upgrade does not restart it (docs/upgrades.md).
    """
    labels = cache_labels(cache)
    pod: dict[str, Any] = {
        # The agent is not root: the claim's group becomes its group (as in a backend's pod).
        "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}, "fsGroup": AGENT_USER},
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
        "containers": [filler_container(spec, config)],
        "volumes": [
            {"name": MODELS_VOLUME, "persistentVolumeClaim": {"claimName": cache_claim(cache, spec)}},
            {
                "name": AGENT_TOKEN_VOLUME,
                "secret": {"secretName": filler_token_secret_name(cache), "defaultMode": 0o440},
            },
            {"name": AGENT_TMP_VOLUME, "emptyDir": {"sizeLimit": AGENT_TMP_LIMIT}},
        ],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(filler_name(cache), cache, namespace, uid),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {MODEL_CACHE_LABEL: cache, INSTANCE_LABEL: cache}},
            "strategy": {"type": "Recreate"},
            "template": {"metadata": {"labels": labels}, "spec": pod},
        },
    }

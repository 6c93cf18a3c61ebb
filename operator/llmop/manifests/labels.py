"""Names, labels and owner references shared by every object a backend owns."""

from __future__ import annotations

from typing import Any

API_GROUP = "llmop.dev"
GROUP_VERSION = "llmop.dev/v1alpha1"
BACKEND_KIND = "LLMBackend"
MODEL_PULL_KIND = "ModelPull"

BACKEND_LABEL = "llmop.dev/backend"
RUNTIME_LABEL = "llmop.dev/runtime"
NAME_LABEL = "app.kubernetes.io/name"
INSTANCE_LABEL = "app.kubernetes.io/instance"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
#: A Secret that LLMBackends may use (apiKeySecretRef, env secretKeyRef) carries this label with
#: this value: setting it takes the right to change the Secret, which a tenant who may not read
#: Secrets lacks.
SECRET_OPT_IN_LABEL = "llmop.dev/use"
SECRET_OPT_IN_VALUE = "true"

APP_NAME = "llmop-backend"
MANAGER = "llmop"


def backend_labels(name: str, runtime: str) -> dict[str, str]:
    """Labels on every object a backend owns and on its pods."""
    return {
        NAME_LABEL: APP_NAME,
        INSTANCE_LABEL: name,
        MANAGED_BY_LABEL: MANAGER,
        BACKEND_LABEL: name,
        RUNTIME_LABEL: runtime,
    }


def backend_selector(name: str) -> dict[str, str]:
    """The pod selector of a backend.

    It leaves the runtime out on purpose: a Deployment's selector is immutable, and a user may
    switch a backend from one runtime to another.
    """
    return {BACKEND_LABEL: name, INSTANCE_LABEL: name}


def selector_text(name: str) -> str:
    """The pod selector of a backend as a string (what `kubectl get -l` takes), keys sorted as
    Kubernetes prints a selector: the scale subresource hands it to an autoscaler."""
    return ",".join(f"{key}={value}" for key, value in sorted(backend_selector(name).items()))


def owner_reference(kind: str, name: str, uid: str, api_version: str = GROUP_VERSION) -> dict[str, Any]:
    """A controller reference, so deleting the owner deletes the object (foreground-safe)."""
    return {
        "apiVersion": api_version,
        "kind": kind,
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def object_metadata(
    name: str, namespace: str, labels: dict[str, str], owner: dict[str, Any]
) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "labels": labels, "ownerReferences": [owner]}


def owned_metadata(object_name: str, backend: str, namespace: str, uid: str, runtime: str) -> dict[str, Any]:
    """Metadata of an object backend `backend` owns: the backend's labels, and the backend as its
    controller, so the garbage collector deletes it with the backend."""
    labels = backend_labels(backend, runtime)
    return object_metadata(object_name, namespace, labels, owner_reference(BACKEND_KIND, backend, uid))

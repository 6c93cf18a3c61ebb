"""Secrets (and ConfigMaps and claims) a backend names: used only when they opt in.

llmop may read Secrets its tenants may not. Without this rule, anyone allowed to create an
LLMBackend could have llmop send any Secret of the namespace to a URL of their choosing
(`apiKeySecretRef`), or mount it into a pod running an image of their choosing (`env`). A
Secret's owner opts in with a label; llmop neither reads the value of any other Secret nor puts
it into a pod, and says which label is missing.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmop.api_keys import SecretNotUsable, not_opted_in, opted_in, read_api_key
from llmop.k8s.client import CONFIGMAPS, PVCS, SECRETS, SERVICEACCOUNTS, KubeClient, Resource
from llmop.manifests.labels import SECRET_OPT_IN_LABEL, SECRET_OPT_IN_VALUE
from llmop.models.backend import LLMBackendSpec, UserVolume

__all__ = ["SecretNotUsable", "check_pod_references", "not_opted_in", "opted_in", "read_api_key"]


@dataclass(frozen=True)
class PodReference:
    """An object of the namespace a backend's pods would get: a Secret or ConfigMap key in their
    environment, a Secret they pull images with, the claim they mount, the ServiceAccount they
    run as."""

    kind: str
    resource: Resource
    name: str
    use: str


def pod_references(spec: LLMBackendSpec) -> list[PodReference]:
    """Each Secret, ConfigMap, claim and ServiceAccount the backend's pods would get, with the
    field naming it."""
    found: dict[tuple[str, str], PodReference] = {}
    if spec.api_key_secret_ref is not None:
        found[("Secret", spec.api_key_secret_ref.name)] = PodReference(
            "Secret", SECRETS, spec.api_key_secret_ref.name, "spec.apiKeySecretRef"
        )
    for index, entry in enumerate(spec.env or []):
        value_from = entry.get("valueFrom") if isinstance(entry, dict) else None
        for field, kind, resource in _ENV_REFERENCES:
            ref = value_from.get(field) if isinstance(value_from, dict) else None
            if isinstance(ref, dict) and isinstance(ref.get("name"), str):
                found.setdefault(
                    (kind, ref["name"]), PodReference(kind, resource, ref["name"], f"spec.env[{index}]")
                )
    for index, pull_secret in enumerate(spec.image_pull_secrets or []):
        found.setdefault(
            ("Secret", pull_secret.name),
            PodReference("Secret", SECRETS, pull_secret.name, f"spec.imagePullSecrets[{index}]"),
        )
    if spec.service_account_name:
        # The pods act as it: with workload identity, on the cloud account it is bound to.
        found[("ServiceAccount", spec.service_account_name)] = PodReference(
            "ServiceAccount", SERVICEACCOUNTS, spec.service_account_name, "spec.serviceAccountName"
        )
    for index, volume in enumerate(spec.volumes or []):
        for kind, resource, name in _volume_references(volume):
            found.setdefault((kind, name), PodReference(kind, resource, name, f"spec.volumes[{index}]"))
    claim = spec.storage.existing_claim if spec.storage else None
    if claim:
        found[("PersistentVolumeClaim", claim)] = PodReference(
            "PersistentVolumeClaim", PVCS, claim, "spec.storage.existingClaim"
        )
    return list(found.values())


def _volume_references(volume: UserVolume) -> list[tuple[str, Resource, str]]:
    found = []
    if volume.config_map is not None:
        found.append(("ConfigMap", CONFIGMAPS, volume.config_map.name))
    if volume.secret is not None:
        found.append(("Secret", SECRETS, volume.secret.secret_name))
    if volume.persistent_volume_claim is not None:
        found.append(("PersistentVolumeClaim", PVCS, volume.persistent_volume_claim.claim_name))
    return found


_ENV_REFERENCES = (("secretKeyRef", "Secret", SECRETS), ("configMapKeyRef", "ConfigMap", CONFIGMAPS))


async def check_pod_references(kube: KubeClient, namespace: str, spec: LLMBackendSpec) -> None:
    """Raise SecretNotUsable for the first object the pods would get that has not opted in, or
    does not exist yet (it might be created later without the label, and the pod would get it).
    A tenant who may not read a Secret, a ConfigMap or a claim cannot have a pod read it."""
    for ref in pod_references(spec):
        found = await kube.get(ref.resource, ref.name, namespace)
        if found is None:
            raise SecretNotUsable(
                f"{ref.kind}NotFound",
                f"{ref.kind} {ref.name!r} ({ref.use}) does not exist in {namespace}; create it with the "
                f"label {SECRET_OPT_IN_LABEL}={SECRET_OPT_IN_VALUE}",
            )
        if not opted_in(found):
            raise not_opted_in(ref.name, namespace, ref.use, ref.kind)

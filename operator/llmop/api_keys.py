"""A backend's runtime API key (spec.apiKeySecretRef): read only from a Secret that opts in.

llmop may read Secrets its tenants may not. Without the opt-in label, anyone allowed to create an
LLMBackend could have llmop send any Secret of the namespace to a URL of their choosing. The
operator (which sends the key to an external server) and the gateway (which adds it to the
requests it forwards) both read it here, by the same rule.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from llmop.k8s.client import SECRETS, KubeClient
from llmop.manifests.labels import SECRET_OPT_IN_LABEL, SECRET_OPT_IN_VALUE
from llmop.models.backend import LLMBackendSpec


class SecretNotUsable(Exception):
    """A Secret the spec names that llmop will not use; `reason` is a condition reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def opted_in(secret: dict[str, Any]) -> bool:
    labels = (secret.get("metadata") or {}).get("labels") or {}
    return bool(labels.get(SECRET_OPT_IN_LABEL) == SECRET_OPT_IN_VALUE)


def not_opted_in(name: str, namespace: str, use: str, kind: str = "Secret") -> SecretNotUsable:
    return SecretNotUsable(
        f"{kind}NotOptedIn",
        f"{kind} {name!r} ({use}) is not labeled for use by llmop: llmop uses only {kind}s that "
        f"opt in; if it is meant for this backend, run `kubectl label {kind.lower()} {name} -n "
        f"{namespace} {SECRET_OPT_IN_LABEL}={SECRET_OPT_IN_VALUE}`",
    )


async def read_api_key(kube: KubeClient, namespace: str, spec: LLMBackendSpec) -> str | None:
    """The API key `spec.apiKeySecretRef` names, as text; SecretNotUsable says why not."""
    ref = spec.api_key_secret_ref
    if ref is None:
        return None
    use = "spec.apiKeySecretRef"
    secret = await kube.get(SECRETS, ref.name, namespace)
    if secret is None:
        raise SecretNotUsable("SecretNotFound", f"Secret {ref.name!r} ({use}) does not exist in {namespace}")
    if not opted_in(secret):
        raise not_opted_in(ref.name, namespace, use)
    value = (secret.get("data") or {}).get(ref.key)
    if value is None:
        raise SecretNotUsable("SecretNotFound", f"Secret {ref.name!r} ({use}) has no key {ref.key!r}")
    try:
        key = base64.b64decode(value, validate=True).decode("utf-8").strip()
    except (binascii.Error, UnicodeDecodeError):
        key = None
    if key is None or not _HEADER_SAFE.fullmatch(key or "x"):
        raise SecretNotUsable(
            "SecretNotText",
            f"key {ref.key!r} of Secret {ref.name!r} ({use}) is not one line of printable text; an API "
            "key is sent as an HTTP header (Authorization: Bearer <key>) and must be one",
        )
    return key or None


#: What a bearer token may hold: printable ASCII without spaces (RFC 6750's b64token and more).
#: A line break or a control character would be refused by the HTTP client, whose error quotes
#: the header, key included.
_HEADER_SAFE = re.compile(r"[\x21-\x7e]+")

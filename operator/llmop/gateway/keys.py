"""The gateway's own keys: Secrets that opt in, each saying which namespaces or backends its key
may reach.

A key may reach backends of the namespace its Secret lives in, and no further, unless its Secret
lives in the gateway's own namespace (the admin's): whoever may create a Secret in a tenant's
namespace may use that namespace's backends already, so a tenant's key never crosses into another
namespace. Pure: built from the Secret objects, tested without a cluster.

Keys are kept only as SHA-256 digests and compared in constant time; neither a key nor its digest
is ever shown.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

#: A Secret is a gateway key when it carries both labels: llmop reads only Secrets labelled
#: `llmop.dev/use`, and this one says what for.
KEY_LABEL = "llmop.dev/gateway-key"
USE_LABEL = "llmop.dev/use"
KEY_SELECTOR = f"{USE_LABEL}=true,{KEY_LABEL}=true"
#: Shorter keys could be guessed; a Secret holding one is not used.
MIN_KEY_LENGTH = 16
MAX_KEY_LENGTH = 4096
ALL_NAMESPACES = "*"
_KEY_CHARACTERS = re.compile(r"[\x21-\x7e]+")
_SEPARATORS = re.compile(r"[\s,]+")


@dataclass(frozen=True)
class GatewayKey:
    """One Secret's key and what it may reach."""

    #: The Secret, "namespace/name": what messages name (never the key).
    source: str
    digest: bytes = field(repr=False)
    namespaces: frozenset[str] = frozenset()
    #: (namespace, name) of single backends.
    backends: frozenset[tuple[str, str]] = frozenset()
    #: Every namespace the gateway serves (`namespaces: "*"`, in the gateway's own namespace only).
    everything: bool = False
    #: Entries the Secret named but may not grant (outside its namespace).
    dropped: tuple[str, ...] = ()

    def may_reach(self, namespace: str, backend: str) -> bool:
        return self.everything or namespace in self.namespaces or (namespace, backend) in self.backends

    def describe_reach(self) -> str:
        if self.everything:
            return "every namespace this gateway serves"
        parts = []
        if self.namespaces:
            parts.append("namespaces " + ", ".join(sorted(self.namespaces)))
        if self.backends:
            parts.append("backends " + ", ".join(f"{ns}/{name}" for ns, name in sorted(self.backends)))
        return "; ".join(parts) or "nothing"


@dataclass(frozen=True)
class Keyring:
    keys: tuple[GatewayKey, ...] = ()
    #: Secrets that are not usable, with why (logged; never the value).
    problems: tuple[str, ...] = ()

    def find(self, presented: str) -> GatewayKey | None:
        """The key presented, compared with every key in constant time (no early exit), so that
        the time taken tells nothing of how much of a key matched."""
        digest = hashlib.sha256(presented.encode()).digest()
        found = None
        for key in self.keys:
            if hmac.compare_digest(digest, key.digest) and found is None:
                found = key
        return found


class KeySecretUnusable(ValueError):
    pass


def build_keyring(secrets: Iterable[Mapping[str, Any]], own_namespace: str | None) -> Keyring:
    keys, problems = [], []
    for secret in secrets:
        try:
            keys.append(read_key_secret(secret, own_namespace))
        except KeySecretUnusable as problem:
            problems.append(str(problem))
    return Keyring(tuple(keys), tuple(problems))


def read_key_secret(secret: Mapping[str, Any], own_namespace: str | None) -> GatewayKey:
    """One Secret's key; KeySecretUnusable says why a Secret gives none (never quoting a value)."""
    metadata = secret.get("metadata") or {}
    namespace, name = str(metadata.get("namespace", "")), str(metadata.get("name", ""))
    source = f"{namespace}/{name}"
    data = secret.get("data") or {}
    key = _text(data, "key", source)
    if key is None:
        raise KeySecretUnusable(f"Secret {source} has no data `key`")
    if not (MIN_KEY_LENGTH <= len(key) <= MAX_KEY_LENGTH and _KEY_CHARACTERS.fullmatch(key)):
        raise KeySecretUnusable(
            f"Secret {source}: `key` must be {MIN_KEY_LENGTH} to {MAX_KEY_LENGTH} printable "
            "characters without spaces"
        )
    admin = own_namespace is not None and namespace == own_namespace
    namespaces = _entries(_text(data, "namespaces", source))
    backends = [_backend(entry, namespace) for entry in _entries(_text(data, "backends", source))]
    if not namespaces and not backends:
        namespaces = [namespace]
    allowed = {n for n in namespaces if admin or n == namespace}
    granted = {b for b in backends if admin or b[0] == namespace}
    dropped = [n for n in namespaces if n not in allowed] + [
        f"{ns}/{b}" for ns, b in backends if (ns, b) not in granted
    ]
    return GatewayKey(
        source=source,
        digest=hashlib.sha256(key.encode()).digest(),
        namespaces=frozenset(allowed - {ALL_NAMESPACES}),
        backends=frozenset(granted),
        everything=ALL_NAMESPACES in allowed,
        dropped=tuple(dropped),
    )


def _text(data: Mapping[str, Any], item: str, source: str) -> str | None:
    encoded = data.get(item)
    if encoded is None:
        return None
    try:
        return base64.b64decode(str(encoded), validate=True).decode().strip()
    except (binascii.Error, UnicodeDecodeError):
        raise KeySecretUnusable(f"Secret {source}: `{item}` is not UTF-8 text") from None


def _entries(text: str | None) -> list[str]:
    return [entry for entry in _SEPARATORS.split(text or "") if entry]


def _backend(entry: str, namespace: str) -> tuple[str, str]:
    """`namespace/name`, or `name` in the Secret's own namespace."""
    owner, _, name = entry.rpartition("/")
    return (owner or namespace, name)

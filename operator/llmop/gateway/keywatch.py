"""Keep the gateway's keys current: list and watch the key Secrets (labelled
`llmop.dev/use=true` and `llmop.dev/gateway-key=true`) of the namespaces it serves and its own."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from llmop.gateway.follow import NamespaceFollower
from llmop.gateway.keys import KEY_SELECTOR, Keyring, build_keyring
from llmop.k8s.client import SECRETS, KubeClient

logger = logging.getLogger(__name__)


class KeyWatch(NamespaceFollower):
    resource = SECRETS
    selector = KEY_SELECTOR
    what = "key Secrets"

    def __init__(
        self,
        kube: KubeClient,
        namespaces: list[str],
        own_namespace: str | None,
        publish: Callable[[Keyring], Awaitable[None]],
    ) -> None:
        super().__init__(kube, sorted(set(namespaces) | ({own_namespace} if own_namespace else set())))
        self.own_namespace = own_namespace
        self.publish = publish
        self.secrets: dict[tuple[str, str], dict[str, Any]] = {}
        self.reported: set[str] = set()

    async def replace(self, namespace: str, items: list[dict[str, Any]]) -> None:
        for key in [key for key in self.secrets if key[0] == namespace]:
            del self.secrets[key]
        for body in items:
            self.secrets[_name(body, namespace)] = body

    async def changed(self, namespace: str, body: dict[str, Any]) -> None:
        self.secrets[_name(body, namespace)] = body

    def removed(self, namespace: str, body: dict[str, Any]) -> None:
        self.secrets.pop(_name(body, namespace), None)

    async def republish(self) -> None:
        if not self.synced:
            return
        keyring = build_keyring(self.secrets.values(), self.own_namespace)
        self.report(keyring)
        await self.publish(keyring)

    def report(self, keyring: Keyring) -> None:
        """Say once what is wrong with a key Secret: by its name, never its value."""
        said = set(keyring.problems)
        for key in keyring.keys:
            if key.dropped:
                said.add(
                    f"Secret {key.source} names {', '.join(key.dropped)}, outside its namespace: only "
                    f"keys in the gateway's namespace ({self.own_namespace}) may reach other namespaces"
                )
        for problem in sorted(said - self.reported):
            logger.warning("gateway: key not used as written: %s", problem)
        self.reported = said


def _name(body: dict[str, Any], namespace: str) -> tuple[str, str]:
    metadata = body.get("metadata") or {}
    return str(metadata.get("namespace") or namespace), str(metadata.get("name", ""))

"""The one place llmop talks to the Kubernetes API: async, on httpx.

Credentials come from the `kubernetes` package's loaders (kubeconfig or in-cluster service
account, with token refresh); every request goes through one pooled httpx client.
"""

from __future__ import annotations

import builtins
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import yaml

logger = logging.getLogger(__name__)

FIELD_MANAGER = "llmop"


class KubeAPIError(Exception):
    """A request the API server refused, with its own message."""

    def __init__(self, status_code: int, message: str, reason: str = "") -> None:
        super().__init__(f"{status_code} {reason}: {message}" if reason else f"{status_code}: {message}")
        self.status_code = status_code
        self.reason = reason
        self.message = message


class KubeUnavailable(KubeAPIError):
    """The API server could not be reached, or could not reach etcd (a 5xx, 429): waiting helps,
    the request itself was not refused."""

    def __init__(self, message: str, status_code: int = 503) -> None:
        super().__init__(status_code, message, "ServiceUnavailable")


#: Statuses that say "not now" rather than "no": retrying the same request later can succeed.
_TRANSIENT = {429, 500, 502, 503, 504}


@dataclass(frozen=True)
class Resource:
    """Where a kind lives in the API: `Resource("apps/v1", "deployments")`."""

    api_version: str
    plural: str
    namespaced: bool = True

    def path(
        self, namespace: str | None = None, name: str | None = None, subresource: str | None = None
    ) -> str:
        root = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        parts = [root]
        if self.namespaced and namespace:
            parts.append(f"namespaces/{namespace}")
        parts.append(self.plural)
        if name:
            parts.append(name)
        if subresource:
            parts.append(subresource)
        return "/".join(parts)


DEPLOYMENTS = Resource("apps/v1", "deployments")
SERVICES = Resource("v1", "services")
PVCS = Resource("v1", "persistentvolumeclaims")
PODS = Resource("v1", "pods")
SECRETS = Resource("v1", "secrets")
CONFIGMAPS = Resource("v1", "configmaps")
EVENTS = Resource("v1", "events")
LLMBACKENDS = Resource("llmop.dev/v1alpha1", "llmbackends")
MODELPULLS = Resource("llmop.dev/v1alpha1", "modelpulls")
LEASES = Resource("coordination.k8s.io/v1", "leases")
NETWORKPOLICIES = Resource("networking.k8s.io/v1", "networkpolicies")
PODDISRUPTIONBUDGETS = Resource("policy/v1", "poddisruptionbudgets")
SERVICEACCOUNTS = Resource("v1", "serviceaccounts")
NODES = Resource("v1", "nodes", namespaced=False)


class _RefreshingAuth(httpx.Auth):
    """Asks the kubernetes Configuration for the token on each request (it re-reads rotated tokens)."""

    def __init__(self, configuration: Any) -> None:
        self._configuration = configuration

    def auth_flow(self, request: httpx.Request) -> Any:
        # The kubernetes package's loaders (kubeconfig tokens and the in-cluster service account
        # alike) keep the token under "BearerToken", with its "Bearer " prefix; older ones used
        # "authorization".
        token = self._configuration.get_api_key_with_prefix(
            "BearerToken"
        ) or self._configuration.get_api_key_with_prefix("authorization")
        if token:
            request.headers["Authorization"] = token
        yield request


@dataclass
class KubeClient:
    http: httpx.AsyncClient
    requests_made: int = field(default=0)

    @classmethod
    def from_environment(cls, kubeconfig: str | None = None) -> KubeClient:
        """In-cluster service account when running in a pod, else the kubeconfig (or $KUBECONFIG)."""
        from kubernetes import client as kube_client
        from kubernetes import config as kube_config

        configuration = kube_client.Configuration()
        try:
            kube_config.load_incluster_config(client_configuration=configuration)
        except kube_config.ConfigException:
            kube_config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
        verify: Any = configuration.ssl_ca_cert or True
        if not configuration.verify_ssl:
            verify = False
        cert = (configuration.cert_file, configuration.key_file) if configuration.cert_file else None
        if cert and cert[1] is None:
            raise ValueError("the kubeconfig names a client certificate without its key")
        http = httpx.AsyncClient(
            base_url=configuration.host,
            verify=_ssl_context(verify, cert),
            auth=_RefreshingAuth(configuration),
            timeout=httpx.Timeout(30.0, connect=10.0),
            limits=httpx.Limits(max_connections=50, max_keepalive_connections=20),
        )
        return cls(http=http)

    async def close(self) -> None:
        await self.http.aclose()

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        self.requests_made += 1
        try:
            response = await self.http.request(method, path, **kwargs)
        except httpx.TransportError as error:
            raise KubeUnavailable(f"the API server did not answer {method} {path}: {error!r}") from error
        if response.status_code in _TRANSIENT:
            raise KubeUnavailable(response.text[:300], response.status_code)
        if response.status_code >= 400:
            try:
                body = response.json()
                raise KubeAPIError(
                    response.status_code, body.get("message", response.text), body.get("reason", "")
                )
            except (json.JSONDecodeError, AttributeError):
                raise KubeAPIError(response.status_code, response.text) from None
        return response

    async def get(self, resource: Resource, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        try:
            response = await self._request("GET", resource.path(namespace, name))
        except KubeAPIError as error:
            if error.status_code == 404:
                return None
            raise
        return dict(response.json())

    async def list(
        self, resource: Resource, namespace: str | None = None, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        params = {"labelSelector": label_selector} if label_selector else {}
        response = await self._request("GET", resource.path(namespace), params=params)
        return list(response.json().get("items", []))

    async def list_versioned(
        self, resource: Resource, namespace: str | None = None, label_selector: str | None = None
    ) -> tuple[builtins.list[dict[str, Any]], str]:
        """The objects and the list's resourceVersion, from which a watch continues."""
        params = {"labelSelector": label_selector} if label_selector else {}
        response = await self._request("GET", resource.path(namespace), params=params)
        body = response.json()
        return list(body.get("items", [])), str((body.get("metadata") or {}).get("resourceVersion", ""))

    async def watch(
        self,
        resource: Resource,
        namespace: str | None,
        resource_version: str,
        timeout_seconds: int = 300,
        label_selector: str | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """The watch events after `resource_version` ({"type", "object"}), until the server ends
        the watch (after about `timeout_seconds`). An ERROR event (410 Gone: the version is too old)
        comes as an event: the caller lists again."""
        params = {
            "watch": "true",
            "resourceVersion": resource_version,
            "timeoutSeconds": str(timeout_seconds),
            "allowWatchBookmarks": "true",
        }
        if label_selector:
            params["labelSelector"] = label_selector
        # No read timeout: a quiet watch sends nothing for minutes; the server ends it itself.
        timeout = httpx.Timeout(None, connect=10.0)
        self.requests_made += 1
        try:
            async with self.http.stream(
                "GET", resource.path(namespace), params=params, timeout=timeout
            ) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise KubeAPIError(response.status_code, response.text[:300])
                async for line in response.aiter_lines():
                    if line.strip():
                        yield json.loads(line)
        except httpx.TransportError as error:
            raise KubeUnavailable(f"the watch of {resource.plural} ended: {error!r}") from error

    async def apply(self, resource: Resource, body: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply: llmop owns the fields it sets, and nothing else."""
        metadata = body["metadata"]
        response = await self._request(
            "PATCH",
            resource.path(metadata.get("namespace"), metadata["name"]),
            params={"fieldManager": FIELD_MANAGER, "force": "true"},
            content=yaml.safe_dump(body),
            headers={"Content-Type": "application/apply-patch+yaml"},
        )
        return dict(response.json())

    async def patch_status(
        self, resource: Resource, name: str, namespace: str, status: dict[str, Any]
    ) -> dict[str, Any]:
        """Replace the status as a whole (a JSON merge patch with every field, nulls for removed ones)."""
        response = await self._request(
            "PATCH",
            resource.path(namespace, name, "status"),
            content=json.dumps({"status": status}),
            headers={"Content-Type": "application/merge-patch+json"},
        )
        return dict(response.json())

    async def patch(
        self,
        resource: Resource,
        name: str,
        namespace: str | None,
        patch: dict[str, Any],
        subresource: str | None = None,
    ) -> dict[str, Any] | None:
        """A JSON merge patch of the fields in `patch` alone (a null removes one; a
        metadata.resourceVersion in it makes a concurrent change a 409); None when the object is
        not there."""
        try:
            response = await self._request(
                "PATCH",
                resource.path(namespace, name, subresource),
                params={"fieldManager": FIELD_MANAGER},
                content=json.dumps(patch),
                headers={"Content-Type": "application/merge-patch+json"},
            )
        except KubeAPIError as error:
            if error.status_code == 404:
                return None
            raise
        return dict(response.json())

    async def create(self, resource: Resource, body: dict[str, Any]) -> dict[str, Any]:
        namespace = body["metadata"].get("namespace")
        response = await self._request("POST", resource.path(namespace), json=body)
        return dict(response.json())

    async def replace(self, resource: Resource, body: dict[str, Any]) -> dict[str, Any]:
        """PUT the whole object; its resourceVersion makes a concurrent writer's change a 409."""
        metadata = body["metadata"]
        response = await self._request(
            "PUT", resource.path(metadata.get("namespace"), metadata["name"]), json=body
        )
        return dict(response.json())

    async def delete(self, resource: Resource, name: str, namespace: str | None = None) -> bool:
        try:
            await self._request(
                "DELETE", resource.path(namespace, name), params={"propagationPolicy": "Background"}
            )
        except KubeAPIError as error:
            if error.status_code == 404:
                return False
            raise
        return True


def _ssl_context(verify: Any, cert: tuple[str, Any] | None) -> Any:
    import ssl

    if verify is False:
        return False
    context = ssl.create_default_context(cafile=verify if isinstance(verify, str) else None)
    if cert:
        context.load_cert_chain(*cert)
    return context

"""Secrets a backend names are used only when they opt in: the observer sends no key and the
ensure path creates no pod for a Secret without the label, and status says which label to add."""

from __future__ import annotations

import base64
import re
from typing import Any

import httpx
import kopf
import pytest

from llmop import metrics
from llmop.config import OperatorConfig
from llmop.k8s.client import CONFIGMAPS, DEPLOYMENTS, PVCS, SECRETS, SERVICEACCOUNTS, Resource
from llmop.loops import backend_observer
from llmop.loops.backend_ensure import ensure_backend_objects
from llmop.loops.backend_observer import BackendObserver
from llmop.loops.context import OperatorContext
from llmop.manifests.labels import SECRET_OPT_IN_LABEL
from support.observers import observer_of

KEY = "sk-tenant-key-1234"
MODELS = {"GET /v1/models": {"object": "list", "data": [{"id": "tiny", "object": "model"}]}}
LABEL_COMMAND = f"kubectl label secret keys -n ns {SECRET_OPT_IN_LABEL}=true"


def secret(value: bytes, *, opted_in: bool) -> dict[str, Any]:
    labels = {SECRET_OPT_IN_LABEL: "true"} if opted_in else {"team": "a"}
    return {
        "metadata": {"name": "keys", "namespace": "ns", "labels": labels},
        "data": {"key": base64.b64encode(value).decode()},
    }


class FakeKube:
    """The API server as the observer and the ensure path use it: Secrets to read, status and
    objects written."""

    def __init__(self, secrets: dict[str, dict[str, Any]]) -> None:
        self.secrets = secrets
        self.others: dict[tuple[Resource, str], dict[str, Any]] = {}
        self.patches: list[dict[str, Any]] = []
        self.applied: list[tuple[Resource, dict[str, Any]]] = []

    async def get(self, resource: Resource, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        return self.secrets.get(name) if resource == SECRETS else self.others.get((resource, name))

    async def list(
        self, resource: Resource, namespace: str | None = None, label_selector: str = ""
    ) -> list[Any]:
        return []

    async def patch_status(
        self, resource: Any, name: str, namespace: str, patch: dict[str, Any]
    ) -> dict[str, Any]:
        self.patches.append(patch)
        return {"metadata": {"resourceVersion": str(len(self.patches))}, "status": patch}

    async def apply(self, resource: Resource, body: dict[str, Any]) -> dict[str, Any]:
        self.applied.append((resource, body))
        return body


@pytest.fixture
async def observer_for(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(backend_observer, "post_phase_event", lambda body, before, after: None)
    clients: list[httpx.AsyncClient] = []

    def make(kube: FakeKube, spec: dict[str, Any]) -> BackendObserver:
        context = OperatorContext(config=OperatorConfig())
        context.kube = kube  # type: ignore[assignment]
        clients.append(httpx.AsyncClient())
        context.runtime_http = context.external_http = clients[-1]
        watched = observer_of(context, spec)

        async def wait(seconds: float) -> bool:
            return False

        watched.wait = wait  # type: ignore[method-assign]
        return watched

    yield make
    for client in clients:
        await client.aclose()
    metrics.forget_backend("ns", "b")


def external(url: str) -> dict[str, Any]:
    return {"external": {"url": url, "kind": "openai"}, "apiKeySecretRef": {"name": "keys", "key": "key"}}


def ready(patch: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in patch["conditions"] if c["type"] == "Ready")


async def test_a_secret_without_the_label_is_never_sent_and_status_names_the_label(
    fake_runtime, observer_for
) -> None:
    server = await fake_runtime(MODELS)
    kube = FakeKube({"keys": secret(KEY.encode(), opted_in=False)})
    watched = observer_for(kube, external(server.url))
    await watched.round()
    assert server.requests == [], "nothing is sent to the URL"
    (patch,) = kube.patches
    assert patch["phase"] == "Failed"
    condition = ready(patch)
    assert condition["reason"] == "SecretNotOptedIn"
    assert "Secret 'keys' (spec.apiKeySecretRef)" in condition["message"]
    assert LABEL_COMMAND in condition["message"]
    assert KEY not in str(patch)


async def test_a_secret_with_the_label_is_sent_and_a_label_added_later_takes_effect(
    fake_runtime, observer_for, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backend_observer, "SECRET_RECHECK_SECONDS", 0.0)
    server = await fake_runtime(MODELS)
    kube = FakeKube({"keys": secret(KEY.encode(), opted_in=False)})
    watched = observer_for(kube, external(server.url))
    await watched.round()
    assert server.requests == []
    kube.secrets["keys"] = secret(KEY.encode(), opted_in=True)  # the owner opts in
    await watched.round()
    assert server.requests and server.requests[0].headers["Authorization"] == f"Bearer {KEY}"
    assert kube.patches[-1]["phase"] == "Ready"


@pytest.mark.parametrize(
    "value", [b"\xff\xfe\x00key", b"sec\nret-VALUE", b"sec ret-VALUE", b"sec\x7fret-VALUE"]
)
async def test_a_key_that_is_not_one_line_of_text_gives_a_condition_round_after_round(
    fake_runtime, observer_for, value: bytes
) -> None:
    """A line break would make the HTTP client refuse the header, quoting it, key and all."""
    server = await fake_runtime(MODELS)
    kube = FakeKube({"keys": secret(value, opted_in=True)})
    watched = observer_for(kube, external(server.url))
    for _ in range(3):
        await watched.round()  # never raises
    condition = ready(kube.patches[-1])
    assert condition["reason"] == "SecretNotText"
    assert (
        "key 'key' of Secret 'keys' (spec.apiKeySecretRef) is not one line of printable text"
        in (condition["message"])
    )
    assert "VALUE" not in str(kube.patches)
    assert server.requests == []


@pytest.mark.parametrize(
    ("spec", "use"),
    [
        ({"apiKeySecretRef": {"name": "keys", "key": "key"}}, "spec.apiKeySecretRef"),
        (
            {"env": [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "keys", "key": "key"}}}]},
            "spec.env[0]",
        ),
        ({"imagePullSecrets": [{"name": "keys"}]}, "spec.imagePullSecrets[0]"),
        ({"volumes": [{"name": "v", "secret": {"secretName": "keys"}}]}, "spec.volumes[0]"),
    ],
)
async def test_no_pod_gets_a_secret_without_the_label(spec: dict[str, Any], use: str) -> None:
    kube = FakeKube({"keys": secret(KEY.encode(), opted_in=False)})
    context = OperatorContext(config=OperatorConfig())
    context.kube = kube  # type: ignore[assignment]
    manifest = {"runtime": "ollama", "models": [{"name": "qwen3:0.6b"}], **spec}
    body = kopf.Body({"metadata": {"name": "b", "namespace": "ns"}, "spec": manifest})
    logger = kopf.LocalObjectLogger(body=body, settings=kopf.OperatorSettings())
    with pytest.raises(kopf.TemporaryError, match=re.escape(f"Secret 'keys' ({use}) is not labeled")):
        await ensure_backend_objects("b", "ns", "uid-1", kopf.Spec(body), body, context, logger)
    assert kube.applied == [], "no Deployment (nor anything else) was applied"
    kube.secrets["keys"] = secret(KEY.encode(), opted_in=True)
    await ensure_backend_objects("b", "ns", "uid-1", kopf.Spec(body), body, context, logger)
    assert DEPLOYMENTS in [resource for resource, _ in kube.applied]


@pytest.mark.parametrize(
    ("spec", "resource", "words"),
    [
        (
            {
                "env": [
                    {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "team-config", "key": "k"}}}
                ]
            },
            CONFIGMAPS,
            "ConfigMap 'team-config' (spec.env[0]) is not labeled",
        ),
        (
            {"storage": {"existingClaim": "team-config"}},
            PVCS,
            "PersistentVolumeClaim 'team-config' (spec.storage.existingClaim) is not labeled",
        ),
        (
            {"volumes": [{"name": "v", "configMap": {"name": "team-config"}}]},
            CONFIGMAPS,
            "ConfigMap 'team-config' (spec.volumes[0]) is not labeled",
        ),
        (
            {"volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": "team-config"}}]},
            PVCS,
            "PersistentVolumeClaim 'team-config' (spec.volumes[0]) is not labeled",
        ),
        (
            # With workload identity the pods would act on the cloud account bound to it.
            {"serviceAccountName": "team-config"},
            SERVICEACCOUNTS,
            "ServiceAccount 'team-config' (spec.serviceAccountName) is not labeled",
        ),
    ],
)
async def test_no_pod_gets_a_configmap_a_claim_or_a_service_account_without_the_label(
    spec: dict[str, Any], resource: Resource, words: str
) -> None:
    """A tenant who may not read a ConfigMap, or mount a claim, cannot have a pod do it for them."""
    kube = FakeKube({})
    kube.others[(resource, "team-config")] = {"metadata": {"name": "team-config", "labels": {"team": "a"}}}
    context = OperatorContext(config=OperatorConfig())
    context.kube = kube  # type: ignore[assignment]
    manifest = {"runtime": "ollama", "models": [{"name": "qwen3:0.6b"}], **spec}
    body = kopf.Body({"metadata": {"name": "b", "namespace": "ns"}, "spec": manifest})
    logger = kopf.LocalObjectLogger(body=body, settings=kopf.OperatorSettings())
    with pytest.raises(kopf.TemporaryError, match=re.escape(words)):
        await ensure_backend_objects("b", "ns", "uid-1", kopf.Spec(body), body, context, logger)
    assert kube.applied == []
    kube.others[(resource, "team-config")]["metadata"]["labels"] = {SECRET_OPT_IN_LABEL: "true"}
    await ensure_backend_objects("b", "ns", "uid-1", kopf.Spec(body), body, context, logger)
    assert DEPLOYMENTS in [applied for applied, _ in kube.applied]

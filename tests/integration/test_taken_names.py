"""A backend named like an object it does not own, on a real API server: llmop writes nothing of
that object (a forced server-side apply would have pointed a Service at the backend's pods and
made the backend its owner, so that deleting the backend deleted it), deploys nothing of the
backend, and its status says which object is in the way."""

from __future__ import annotations

from typing import Any

import kopf
import pytest

from llmop import metrics
from llmop.loops.backend_ensure import ensure_backend_objects
from llmop.loops.backend_observer import BackendObserver
from llmop.loops.context import OperatorContext
from support.kube import Kube

pytestmark = pytest.mark.integration

#: The operator runs in the cluster (its namespace and pod labels known): it makes the NetworkPolicy.
OLLAMA = {"runtime": "ollama", "models": [{"name": "qwen3:0.6b"}], "gpu": {"count": 0}}
LLAMACPP = {"runtime": "llamacpp", "models": [{"name": "hf://org/repo/m.gguf"}], "gpu": {"count": 0}}

Events = list[tuple[str, str, str]]


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> Events:
    """The Events llmop posts (kopf sends them only inside a running operator)."""
    posted: Events = []

    def event(body: Any, *, type: str, reason: str, message: str) -> None:
        posted.append((type, reason, message))

    monkeypatch.setattr(kopf, "event", event)
    return posted


def create_backend(kube: Kube, namespace: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    """A real LLMBackend (no operator runs here), as stored."""
    manifest = {"apiVersion": "llmop.dev/v1alpha1", "kind": "LLMBackend", "metadata": {"name": name}}
    kube.apply({**manifest, "spec": spec}, namespace)
    return kube.get("llmb", name, namespace)


async def ensure_then_observe(context: OperatorContext, backend: dict[str, Any]) -> None:
    """What the operator does for a new backend: its ensure handler (which kopf would retry,
    TemporaryError) and one round of its observer, which writes status."""
    name, namespace, uid = (backend["metadata"][key] for key in ("name", "namespace", "uid"))
    body = kopf.Body(backend)
    logger = kopf.LocalObjectLogger(body=body, settings=kopf.OperatorSettings())
    with pytest.raises(kopf.TemporaryError):
        await ensure_backend_objects(name, namespace, uid, kopf.Spec(body), body, context, logger)
    observer = BackendObserver(
        name, namespace, body, context, kopf.DaemonStopped({}), pods=list, pulls=list, logger=logger
    )

    async def wait(seconds: float) -> bool:
        return False

    observer.wait = wait  # type: ignore[method-assign]
    try:
        await observer.round()
    finally:
        metrics.forget_backend(namespace, name)


def name_conflict_shown(kube: Kube, namespace: str, name: str) -> str:
    """The backend's Ready message, once status says NameConflict (phase Failed, Stalled)."""
    status = kube.get("llmb", name, namespace)["status"]
    conditions = {c["type"]: c for c in status["conditions"]}
    assert status["phase"] == "Failed", status
    assert conditions["Ready"]["reason"] == "NameConflict", conditions["Ready"]
    assert conditions["Stalled"]["status"] == "True"
    return str(conditions["Ready"]["message"])


def untouched(before: dict[str, Any], after: dict[str, Any]) -> None:
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"], "it was written"
    assert after["spec"] == before["spec"]
    assert "ownerReferences" not in after["metadata"], "deleting the backend would delete it"
    assert "llmop" not in {entry["manager"] for entry in after["metadata"].get("managedFields", [])}


async def test_a_backend_named_like_a_service_leaves_the_service_alone(
    kube: Kube, namespace: str, context: OperatorContext, events: Events
) -> None:
    victim = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "victim", "labels": {"app": "postgresql"}},
        "spec": {"selector": {"app": "postgresql"}, "ports": [{"name": "sql", "port": 5432}]},
    }
    kube.apply(victim, namespace)
    before = kube.get("service", "victim", namespace)

    backend = create_backend(kube, namespace, "victim", OLLAMA)
    await ensure_then_observe(context, backend)

    after = kube.get("service", "victim", namespace)
    untouched(before, after)
    assert after["spec"]["selector"] == {"app": "postgresql"}, "its traffic still goes to its own pods"
    assert kube.get_or_none("deployment", "victim", namespace) is None, "nothing of the backend runs"
    message = name_conflict_shown(kube, namespace, "victim")
    assert message.startswith("Service 'victim' already exists and does not belong to this backend")
    assert "rename the backend, or delete the Service" in message
    assert events[0] == ("Warning", "NameConflict", message)

    # Once its owner removes it, the next try (kopf's retry) deploys the backend.
    kube.run("delete", "service", "victim", "-n", namespace)
    body = kopf.Body(backend)
    logger = kopf.LocalObjectLogger(body=body, settings=kopf.OperatorSettings())
    uid = backend["metadata"]["uid"]
    await ensure_backend_objects("victim", namespace, uid, kopf.Spec(body), body, context, logger)
    ours = kube.get("service", "victim", namespace)
    assert ours["spec"]["selector"] == {"llmop.dev/backend": "victim", "app.kubernetes.io/instance": "victim"}
    assert ours["metadata"]["ownerReferences"][0]["uid"] == uid
    assert (namespace, "victim") not in context.apply_errors


async def test_a_backend_named_after_a_network_policy_leaves_the_policy_alone(
    kube: Kube, namespace: str, context: OperatorContext, events: Events
) -> None:
    policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        # A team's own policy: nothing reaches its web pods.
        "metadata": {"name": "victim-agent"},
        "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"]},
    }
    kube.apply(policy, namespace)
    before = kube.get("networkpolicy", "victim-agent", namespace)

    backend = create_backend(kube, namespace, "victim", LLAMACPP)
    await ensure_then_observe(context, backend)

    untouched(before, kube.get("networkpolicy", "victim-agent", namespace))
    for kind, name in [("deployment", "victim"), ("service", "victim"), ("secret", "victim-agent-token")]:
        assert kube.get_or_none(kind, name, namespace) is None, f"{kind} {name} was made"
    message = name_conflict_shown(kube, namespace, "victim")
    assert message.startswith(
        "NetworkPolicy 'victim-agent' already exists and does not belong to this backend"
    )
    assert events[0] == ("Warning", "NameConflict", message)

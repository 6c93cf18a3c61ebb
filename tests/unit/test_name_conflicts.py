"""The ensure path writes over no object a backend does not own: a taken name applies nothing,
and says so once, in status (NameConflict) and in a Warning Event, until the name is free."""

from __future__ import annotations

from typing import Any

import kopf
import pytest

from llmop.config import OperatorConfig, parse_labels
from llmop.k8s.client import DEPLOYMENTS, NETWORKPOLICIES, PVCS, SECRETS, SERVICES, Resource
from llmop.loops import backend_ensure
from llmop.loops.backend_ensure import ensure_backend_objects
from llmop.loops.context import OperatorContext
from llmop.manifests import owner_reference
from support.fake_kube import FakeKube

CONFIG = OperatorConfig(
    operator_namespace="llmop-system", operator_pod_labels=parse_labels("app.kubernetes.io/name=llmop")
)
OLLAMA = {"runtime": "ollama", "models": [{"name": "qwen3:0.6b"}]}
LLAMACPP = {"runtime": "llamacpp", "models": [{"name": "hf://org/repo/m.gguf"}], "gpu": {"count": 0}}


def foreign(kind: str, name: str, **spec: Any) -> dict[str, Any]:
    return {"kind": kind, "metadata": {"name": name, "namespace": "ns"}, "spec": spec}


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, str]]:
    posted: list[tuple[str, str, str]] = []

    def event(body: Any, *, type: str, reason: str, message: str) -> None:
        posted.append((type, reason, message))

    monkeypatch.setattr(backend_ensure.kopf, "event", event)
    return posted


def context_of(kube: FakeKube) -> OperatorContext:
    context = OperatorContext(config=CONFIG)
    context.kube = kube  # type: ignore[assignment]
    return context


async def ensure(kube: FakeKube, name: str, spec: dict[str, Any], uid: str = "uid-1") -> OperatorContext:
    context = context_of(kube)
    await ensure_again(context, name, spec, uid)
    return context


async def ensure_again(context: OperatorContext, name: str, spec: dict[str, Any], uid: str = "uid-1") -> None:
    body = kopf.Body({"metadata": {"name": name, "namespace": "ns", "uid": uid}, "spec": spec})
    logger = kopf.LocalObjectLogger(body=body, settings=kopf.OperatorSettings())
    await ensure_backend_objects(name, "ns", uid, kopf.Spec(body), body, context, logger)


async def test_a_backend_named_like_someone_elses_service_applies_nothing_and_says_why(
    events: list[tuple[str, str, str]],
) -> None:
    kube = FakeKube((SERVICES, foreign("Service", "victim", selector={"app": "postgresql"})))
    context = context_of(kube)
    with pytest.raises(kopf.TemporaryError) as raised:
        await ensure_again(context, "victim", OLLAMA)
    assert kube.applied == [], "not the Service, nor the Deployment or anything else"
    assert raised.value.delay == backend_ensure.CONFLICT_RETRY_SECONDS  # kopf tries again
    reason, message = context.apply_errors[("ns", "victim")]  # what the observer shows in status
    assert reason == "NameConflict"
    assert message.startswith("Service 'victim' already exists and does not belong to this backend")
    assert "rename the backend, or delete the Service" in message
    assert events == [("Warning", "NameConflict", message)]


async def test_a_retry_posts_nothing_new_and_a_freed_name_deploys(events: list[tuple[str, str, str]]) -> None:
    kube = FakeKube((SERVICES, foreign("Service", "victim", selector={"app": "postgresql"})))
    context = context_of(kube)
    for _ in range(3):
        with pytest.raises(kopf.TemporaryError):
            await ensure_again(context, "victim", OLLAMA)
    reason, message = context.apply_errors[("ns", "victim")]
    assert reason == "NameConflict" and message.startswith("Service 'victim' already exists")
    assert len(events) == 1, "one Warning Event, not one per retry"

    del kube.objects[("services", "victim")]  # its owner removed it
    await ensure_again(context, "victim", OLLAMA)
    assert ("services", "victim") in kube.applied and ("deployments", "victim") in kube.applied
    assert ("ns", "victim") not in context.apply_errors


@pytest.mark.parametrize(
    ("resource", "existing", "kind"),
    [
        (PVCS, foreign("PersistentVolumeClaim", "chat-models"), "PersistentVolumeClaim 'chat-models'"),
        (
            NETWORKPOLICIES,
            foreign("NetworkPolicy", "chat-agent", podSelector={}),
            "NetworkPolicy 'chat-agent'",
        ),
        (DEPLOYMENTS, foreign("Deployment", "chat"), "Deployment 'chat'"),
        (SECRETS, foreign("Secret", "chat-agent-token"), "Secret 'chat-agent-token'"),
    ],
)
async def test_every_object_of_the_backend_follows_the_rule(
    resource: Resource, existing: dict[str, Any], kind: str, events: list[tuple[str, str, str]]
) -> None:
    kube = FakeKube((resource, existing))
    spec = {**LLAMACPP, "storage": {"size": "1Gi"}}
    with pytest.raises(kopf.TemporaryError, match=f"^{kind} already exists"):
        await ensure(kube, "chat", spec)
    assert kube.applied == [], "nothing at all is written while a name is taken"
    assert [reason for _, reason, _ in events] == ["NameConflict"]


async def test_the_users_own_existing_claim_is_not_a_conflict(events: list[tuple[str, str, str]]) -> None:
    claim = foreign("PersistentVolumeClaim", "shared-models")
    claim["metadata"]["labels"] = {"llmop.dev/use": "true"}  # its owner lets llmop's pods mount it
    kube = FakeKube((PVCS, claim))
    spec = {**OLLAMA, "storage": {"existingClaim": "shared-models"}}
    await ensure(kube, "chat", spec)
    assert ("persistentvolumeclaims", "shared-models") not in kube.applied
    assert ("deployments", "chat") in kube.applied and events == []


async def test_an_earlier_backends_leftover_is_waited_for_briefly(events: list[tuple[str, str, str]]) -> None:
    leftover = foreign("Service", "chat")
    leftover["metadata"]["ownerReferences"] = [owner_reference("LLMBackend", "chat", "uid-deleted")]
    kube = FakeKube((SERVICES, leftover))
    with pytest.raises(kopf.TemporaryError, match="earlier LLMBackend 'chat' that was deleted") as raised:
        await ensure(kube, "chat", OLLAMA, uid="uid-new")
    assert raised.value.delay == backend_ensure.LEFTOVER_RETRY_SECONDS
    assert kube.applied == []


async def test_the_backends_own_objects_are_applied_again(events: list[tuple[str, str, str]]) -> None:
    ours = foreign("Service", "chat")
    ours["metadata"]["ownerReferences"] = [owner_reference("LLMBackend", "chat", "uid-1")]
    kube = FakeKube((SERVICES, ours))
    await ensure(kube, "chat", OLLAMA)
    assert ("services", "chat") in kube.applied and events == []

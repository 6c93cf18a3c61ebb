"""A backend with more than one replica gets a PodDisruptionBudget of its own; it goes when the
backend drops to one replica, and llmop never writes or deletes one that is not the backend's."""

from __future__ import annotations

from typing import Any

import kopf
import pytest

from llmop.config import OperatorConfig
from llmop.k8s.client import PODDISRUPTIONBUDGETS
from llmop.loops import backend_ensure
from llmop.loops.backend_ensure import ensure_backend_objects
from llmop.loops.context import OperatorContext
from llmop.manifests import owner_reference
from support.fake_kube import FakeKube

OLLAMA = {"runtime": "ollama", "models": [{"name": "qwen3:0.6b"}]}


@pytest.fixture(autouse=True)
def no_events(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backend_ensure.kopf, "event", lambda *args, **kwargs: None)


async def ensure(kube: FakeKube, spec: dict[str, Any]) -> None:
    context = OperatorContext(config=OperatorConfig())
    context.kube = kube  # type: ignore[assignment]
    body = kopf.Body({"metadata": {"name": "chat", "namespace": "ns", "uid": "uid-1"}, "spec": spec})
    logger = kopf.LocalObjectLogger(body=body, settings=kopf.OperatorSettings())
    await ensure_backend_objects("chat", "ns", "uid-1", kopf.Spec(body), body, context, logger)


def budget(kube: FakeKube) -> dict[str, Any] | None:
    return kube.objects.get((PODDISRUPTIONBUDGETS.plural, "chat"))


async def test_the_budget_comes_with_a_second_replica_and_goes_with_it() -> None:
    kube = FakeKube()
    await ensure(kube, {**OLLAMA, "replicas": 2})
    applied = budget(kube)
    assert applied is not None and applied["spec"]["maxUnavailable"] == 1
    await ensure(kube, {**OLLAMA, "replicas": 1})
    assert budget(kube) is None and kube.deleted == [("poddisruptionbudgets", "chat")]


async def test_disabling_the_budget_removes_it() -> None:
    kube = FakeKube()
    await ensure(kube, {**OLLAMA, "replicas": 2})
    await ensure(kube, {**OLLAMA, "replicas": 2, "disruptionBudget": {"enabled": False}})
    assert budget(kube) is None


async def test_a_budget_that_is_not_the_backends_is_never_deleted() -> None:
    kube = FakeKube()
    theirs = {"kind": "PodDisruptionBudget", "metadata": {"name": "chat", "namespace": "ns"}}
    kube.objects[(PODDISRUPTIONBUDGETS.plural, "chat")] = theirs
    await ensure(kube, {**OLLAMA, "replicas": 1})
    assert budget(kube) is theirs and kube.deleted == []


async def test_a_budget_of_another_backend_blocks_a_second_replica_with_a_name_conflict() -> None:
    kube = FakeKube()
    other = owner_reference("LLMBackend", "other", "uid-2")
    theirs = {"kind": "PodDisruptionBudget", "metadata": {"name": "chat", "ownerReferences": [other]}}
    kube.objects[(PODDISRUPTIONBUDGETS.plural, "chat")] = theirs
    with pytest.raises(kopf.TemporaryError, match="PodDisruptionBudget 'chat' already exists"):
        await ensure(kube, {**OLLAMA, "replicas": 2})
    assert budget(kube) is theirs

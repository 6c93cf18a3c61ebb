"""The ensure path of an autoscaled backend: it keeps the replicas llmop decided, restarts no pod
when a backend switches between spec.replicas and spec.autoscaling, and guards a node drain."""

from __future__ import annotations

import json
from typing import Any

import kopf
import pytest

from llmop.config import OperatorConfig
from llmop.k8s.client import DEPLOYMENTS, PODDISRUPTIONBUDGETS
from llmop.loops import backend_ensure
from llmop.loops.backend_ensure import ensure_backend_objects
from llmop.loops.context import OperatorContext
from support.fake_kube import FakeKube

OLD = OperatorConfig(images={"ollama": "ollama:1", "vllm": "vllm:1", "llamacpp": "llamacpp:1"})
NEW = OperatorConfig(images={"ollama": "ollama:2", "vllm": "vllm:2", "llamacpp": "llamacpp:2"})
OLLAMA = {"runtime": "ollama", "models": [{"name": "qwen3:0.6b"}]}
AUTOSCALED = {**OLLAMA, "autoscaling": {"minReplicas": 0, "maxReplicas": 4}}


@pytest.fixture(autouse=True)
def no_events(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backend_ensure.kopf, "event", lambda *args, **kwargs: None)


async def ensure(
    kube: FakeKube,
    spec: dict[str, Any],
    status: dict[str, Any] | None = None,
    config: OperatorConfig = OLD,
    context: OperatorContext | None = None,
) -> OperatorContext:
    context = context or OperatorContext(config=config)
    context.kube = kube  # type: ignore[assignment]
    metadata = {"name": "chat", "namespace": "ns", "uid": "uid-1"}
    body = kopf.Body({"metadata": metadata, "spec": spec, "status": status or {}})
    logger = kopf.LocalObjectLogger(body=body, settings=kopf.OperatorSettings())
    await ensure_backend_objects("chat", "ns", "uid-1", kopf.Spec(body), body, context, logger)
    return context


def deployment(kube: FakeKube) -> dict[str, Any]:
    return kube.objects[(DEPLOYMENTS.plural, "chat")]


async def test_a_new_autoscaled_backend_starts_with_one_replica() -> None:
    kube = FakeKube()
    await ensure(kube, AUTOSCALED)
    assert deployment(kube)["spec"]["replicas"] == 1


async def test_a_spec_change_keeps_the_replicas_llmop_decided() -> None:
    """An edit of the spec (or an operator restart) must not undo the decision: at zero, the
    backend stays at zero; at three, three, even when the new maxReplicas is lower (the observer
    drains the pods first)."""
    kube = FakeKube()
    await ensure(kube, AUTOSCALED, {"autoscaling": {"replicas": 0}})
    assert deployment(kube)["spec"]["replicas"] == 0
    lower = {**OLLAMA, "autoscaling": {"maxReplicas": 2}}
    await ensure(kube, lower, {"autoscaling": {"replicas": 3}})
    assert deployment(kube)["spec"]["replicas"] == 3
    # What the observer set last wins over a status kopf has not caught up with; then it is dropped,
    # so that the observer sets its decision again after this apply.
    context = OperatorContext(config=OLD)
    context.scaled[("ns", "chat")] = 2
    await ensure(kube, AUTOSCALED, {"autoscaling": {"replicas": 1}}, context=context)
    assert deployment(kube)["spec"]["replicas"] == 2 and ("ns", "chat") not in context.scaled


async def test_switching_between_replicas_and_autoscaling_restarts_no_pod() -> None:
    kube = FakeKube()
    await ensure(kube, {**OLLAMA, "replicas": 3})
    template = json.dumps(deployment(kube)["spec"]["template"], sort_keys=True)
    # A newer operator would build other pods: a switch must still keep these.
    await ensure(kube, AUTOSCALED, {"replicas": {"desired": 3}}, config=NEW)
    assert json.dumps(deployment(kube)["spec"]["template"], sort_keys=True) == template
    assert deployment(kube)["spec"]["replicas"] == 3, "kept until the observer decides"
    await ensure(kube, {**OLLAMA, "replicas": 2}, {"autoscaling": {"replicas": 3}}, config=NEW)
    assert json.dumps(deployment(kube)["spec"]["template"], sort_keys=True) == template
    assert deployment(kube)["spec"]["replicas"] == 2, "spec.replicas rules again"


async def test_an_autoscaled_backend_that_may_run_several_pods_has_a_disruption_budget() -> None:
    kube = FakeKube()
    await ensure(kube, AUTOSCALED, {"autoscaling": {"replicas": 1}})
    assert (PODDISRUPTIONBUDGETS.plural, "chat") in kube.objects
    single = FakeKube()
    await ensure(single, {**OLLAMA, "autoscaling": {"minReplicas": 0, "maxReplicas": 1}})
    assert (PODDISRUPTIONBUDGETS.plural, "chat") not in single.objects

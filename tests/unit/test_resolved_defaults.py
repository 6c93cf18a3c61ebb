"""An operator upgrade restarts no backend: the defaults a backend was deployed with (runtime and
agent images, Hugging Face endpoint) are kept until its spec changes or the user asks for the new
ones, and its status says when llmop's defaults are newer."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import kopf
import pytest

from llmop.config import OperatorConfig
from llmop.k8s.client import DEPLOYMENTS
from llmop.loops import backend_ensure
from llmop.loops.backend_ensure import ensure_backend_objects
from llmop.loops.context import OperatorContext
from llmop.manifests import build_deployment, owner_reference
from llmop.manifests.resolved_defaults import (
    ADOPT_DEFAULTS_ANNOTATION,
    RESOLVED_DEFAULTS_ANNOTATION,
    resolved_for,
)
from llmop.models.backend import LLMBackendSpec, LLMBackendStatus
from llmop.reconcile.conditions import find
from llmop.reconcile.defaults_status import defaults_status
from support.fake_kube import FakeKube

LLAMACPP = {"runtime": "llamacpp", "models": [{"name": "hf://org/repo/m-Q4_K_M.gguf"}]}
OLD = OperatorConfig(
    images={"ollama": "ollama:1", "vllm": "vllm:1", "llamacpp": "llamacpp:1"},
    agent_image="agent:1",
    hf_endpoint="https://mirror-1.internal",
)
NEW = OperatorConfig(
    images={"ollama": "ollama:2", "vllm": "vllm:2", "llamacpp": "llamacpp:2"},
    agent_image="agent:2",
    hf_endpoint="https://mirror-2.internal",
)


@pytest.fixture(autouse=True)
def no_events(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backend_ensure.kopf, "event", lambda *args, **kwargs: None)


async def ensure(
    kube: FakeKube, config: OperatorConfig, spec: dict[str, Any], adopt: str | None = None
) -> OperatorContext:
    """One reconcile by an operator with `config`: what a (re)started operator does on resume."""
    context = OperatorContext(config=config)
    context.kube = kube  # type: ignore[assignment]
    annotations = {ADOPT_DEFAULTS_ANNOTATION: adopt} if adopt is not None else {}
    metadata = {"name": "chat", "namespace": "ns", "uid": "uid-1", "annotations": annotations}
    body = kopf.Body({"metadata": metadata, "spec": spec})
    logger = kopf.LocalObjectLogger(body=body, settings=kopf.OperatorSettings())
    await ensure_backend_objects("chat", "ns", "uid-1", kopf.Spec(body), body, context, logger)
    return context


def deployment(kube: FakeKube) -> dict[str, Any]:
    return kube.objects[(DEPLOYMENTS.plural, "chat")]


def images(kube: FakeKube) -> tuple[str, str, str | None]:
    """The runtime image, the agent image and the agent's HF_ENDPOINT of the pod template."""
    pod = deployment(kube)["spec"]["template"]["spec"]
    agent = pod["initContainers"][0]
    endpoint = next((v["value"] for v in agent["env"] if v["name"] == "HF_ENDPOINT"), None)
    return pod["containers"][0]["image"], agent["image"], endpoint


async def test_an_operator_upgrade_leaves_the_pod_template_as_it_was() -> None:
    kube = FakeKube()
    await ensure(kube, OLD, LLAMACPP)
    deployed = json.dumps(deployment(kube)["spec"]["template"], sort_keys=True)
    context = await ensure(kube, NEW, LLAMACPP)
    assert json.dumps(deployment(kube)["spec"]["template"], sort_keys=True) == deployed
    assert images(kube) == ("llamacpp:1", "agent:1", "https://mirror-1.internal")
    # What the status shows: the pods' defaults, and llmop's newer ones.
    running, current = context.resolved_defaults[("ns", "chat")]
    assert running == {"runtime": "llamacpp:1", "agent": "agent:1", "hfEndpoint": "https://mirror-1.internal"}
    assert current == {"runtime": "llamacpp:2", "agent": "agent:2", "hfEndpoint": "https://mirror-2.internal"}


async def test_a_newer_llmop_that_builds_pods_differently_restarts_nothing_until_the_spec_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kube = FakeKube()
    await ensure(kube, OLD, LLAMACPP)
    deployed = json.dumps(deployment(kube)["spec"]["template"], sort_keys=True)

    def newer_build(*args: Any, **kwargs: Any) -> dict[str, Any]:  # a release that adds a variable
        built = build_deployment(*args, **kwargs)
        built["spec"]["template"]["spec"]["containers"][0].setdefault("env", []).append(
            {"name": "NEW_IN_THIS_RELEASE", "value": "1"}
        )
        return built

    monkeypatch.setattr("llmop.manifests.resolved_defaults.build_deployment", newer_build)
    await ensure(kube, NEW, {**LLAMACPP, "replicas": 2})
    assert json.dumps(deployment(kube)["spec"]["template"], sort_keys=True) == deployed
    assert deployment(kube)["spec"]["replicas"] == 2  # scaling still reaches the Deployment
    await ensure(kube, NEW, {**LLAMACPP, "args": ["--ctx-size", "4096"]})
    runtime = deployment(kube)["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "NEW_IN_THIS_RELEASE", "value": "1"} in runtime["env"]  # the spec changed: rebuilt


async def test_scaling_keeps_the_recorded_defaults() -> None:
    kube = FakeKube()
    await ensure(kube, OLD, LLAMACPP)
    await ensure(kube, NEW, {**LLAMACPP, "replicas": 3})
    assert deployment(kube)["spec"]["replicas"] == 3
    assert images(kube) == ("llamacpp:1", "agent:1", "https://mirror-1.internal")


async def test_a_change_of_spec_takes_the_current_defaults_and_records_them() -> None:
    kube = FakeKube()
    await ensure(kube, OLD, LLAMACPP)
    await ensure(kube, NEW, {**LLAMACPP, "args": ["--ctx-size", "4096"]})
    assert images(kube) == ("llamacpp:2", "agent:2", "https://mirror-2.internal")
    # Recorded: the operator after the next upgrade keeps these.
    await ensure(kube, OLD, {**LLAMACPP, "args": ["--ctx-size", "4096"]})
    assert images(kube) == ("llamacpp:2", "agent:2", "https://mirror-2.internal")


async def test_a_new_value_of_the_adopt_defaults_annotation_takes_the_current_defaults() -> None:
    kube = FakeKube()
    await ensure(kube, OLD, LLAMACPP)
    context = await ensure(kube, NEW, LLAMACPP, adopt="2026-12-01")
    assert images(kube) == ("llamacpp:2", "agent:2", "https://mirror-2.internal")
    running, current = context.resolved_defaults[("ns", "chat")]
    assert running == current
    # The same value again is no new request.
    await ensure(kube, OLD, LLAMACPP, adopt="2026-12-01")
    assert images(kube) == ("llamacpp:2", "agent:2", "https://mirror-2.internal")


async def test_an_image_the_spec_names_is_the_specs_and_the_agent_is_still_kept() -> None:
    kube = FakeKube()
    await ensure(kube, OLD, {**LLAMACPP, "image": "registry.internal/llama:7"})
    await ensure(kube, NEW, {**LLAMACPP, "image": "registry.internal/llama:7"})
    assert images(kube) == ("registry.internal/llama:7", "agent:1", "https://mirror-1.internal")
    record = json.loads(deployment(kube)["metadata"]["annotations"][RESOLVED_DEFAULTS_ANNOTATION])
    assert "runtime" not in record and record["agent"] == "agent:1"


@pytest.mark.parametrize("annotation", [None, "not json", '{"for": 1}', '{"for": "x", "agent": 5}'])
async def test_a_deployment_without_a_readable_record_keeps_what_its_containers_run(
    annotation: str | None,
) -> None:
    """Applied by an llmop that kept no record, or the annotation was damaged: a guess would
    restart serving pods, so what runs stays."""
    spec = LLMBackendSpec.model_validate(LLAMACPP)
    earlier = build_deployment("chat", "ns", "uid-1", spec, OLD)
    if annotation is not None:
        earlier["metadata"]["annotations"] = {RESOLVED_DEFAULTS_ANNOTATION: annotation}
    kube = FakeKube((DEPLOYMENTS, earlier))
    await ensure(kube, NEW, LLAMACPP)
    assert images(kube) == ("llamacpp:1", "agent:1", "https://mirror-1.internal")
    record = json.loads(deployment(kube)["metadata"]["annotations"][RESOLVED_DEFAULTS_ANNOTATION])
    assert record["runtime"] == "llamacpp:1" and record["for"] == resolved_for(spec, None)


async def test_a_record_on_a_deployment_that_is_not_the_backends_is_not_read() -> None:
    spec = LLMBackendSpec.model_validate(LLAMACPP)
    theirs = build_deployment("chat", "ns", "uid-other", spec, OLD)
    theirs["metadata"]["ownerReferences"] = [owner_reference("LLMBackend", "chat", "uid-other")]
    kube = FakeKube((DEPLOYMENTS, theirs))
    with pytest.raises(kopf.TemporaryError, match="chat"):
        await ensure(kube, NEW, LLAMACPP)
    assert deployment(kube) is theirs


def test_the_digest_of_a_spec_never_changes_between_llmop_versions() -> None:
    """A new digest for the same spec would roll every backend at the upgrade that brought it: it
    is a digest of what the user wrote, never of what llmop fills in."""
    written = {**LLAMACPP, "gpu": {"count": 1}}
    spec = LLMBackendSpec.model_validate(written)
    assert resolved_for(spec, None) == (
        "sha256:f09d0aec2b7b9df671915f99e2a20b8c2cd6af1365cbe4f3903fa01e0cae32c0"
    )
    text = json.dumps({"spec": written, "adoptDefaults": ""}, sort_keys=True, separators=(",", ":"))
    assert resolved_for(spec, None) == "sha256:" + hashlib.sha256(text.encode()).hexdigest()
    assert resolved_for(spec, "1") != resolved_for(spec, None)
    scaled = LLMBackendSpec.model_validate(
        {**written, "replicas": 4, "disruptionBudget": {"maxUnavailable": 2}}
    )
    assert resolved_for(scaled, None) == resolved_for(spec, None)


def test_status_says_which_defaults_are_newer_and_how_to_take_them() -> None:
    running = {"runtime": "llamacpp:1", "agent": "agent:1"}
    current = {"runtime": "llamacpp:2", "agent": "agent:1", "hfEndpoint": "https://mirror.internal"}
    images, conditions = defaults_status((running, current), LLMBackendStatus(), 4)
    assert images is not None and (images.runtime, images.agent) == ("llamacpp:1", "agent:1")
    (newer,) = conditions
    assert (newer.type, newer.status, newer.reason) == ("DefaultsCurrent", "False", "NewerDefaults")
    assert "runtime image llamacpp:1, now llamacpp:2" in newer.message
    assert "Hugging Face endpoint https://huggingface.co, now https://mirror.internal" in newer.message
    assert "agent image" not in newer.message and "upgrade.llmop.dev/adopt-defaults" in newer.message
    _, (current_ones,) = defaults_status((current, current), LLMBackendStatus(), 4)
    assert (current_ones.status, current_ones.reason) == ("True", "CurrentDefaults")


def test_until_the_defaults_are_resolved_the_status_keeps_what_it_said() -> None:
    """Just after the operator starts: no flap of status.images and the condition."""
    before_images, before = defaults_status(({"runtime": "a"}, {"runtime": "b"}), LLMBackendStatus(), 1)
    previous = LLMBackendStatus(images=before_images, conditions=before)
    images, conditions = defaults_status(None, previous, 2)
    assert images == before_images and find(conditions, "DefaultsCurrent") == before[0]

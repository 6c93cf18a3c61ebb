"""A pull's decisions, without a cluster: wait for what is missing, pull where the model is not,
and never repeat a finished pull except for pods that came after it."""

from __future__ import annotations

from llmop.loops.pull_plan import (
    BACKEND_MISSING_SECONDS,
    NEW_POD_CHECK_SECONDS,
    NO_PODS_SECONDS,
    SETTLED_SECONDS,
    nothing_to_do,
    plan_round,
)
from llmop.models.backend import LLMBackendSpec
from llmop.models.pull import ModelPullSpec, ModelPullStatus, ReplicaPull
from llmop.reconcile.backend_status import PodFacts

SPEC = ModelPullSpec.model_validate({"backendRef": {"name": "b"}, "model": "https://h/f.gguf"})
LLAMACPP = LLMBackendSpec.model_validate({"runtime": "llamacpp", "models": [{"name": "https://h/f.gguf"}]})
EXTERNAL = LLMBackendSpec.model_validate({"external": {"url": "http://10.0.0.5:8000"}})


def pod(name: str, ip: str = "10.1.0.5", phase: str = "Running") -> PodFacts:
    return PodFacts(name=name, ip=ip, phase=phase)


def succeeded_on(*pods: str) -> ModelPullStatus:
    return ModelPullStatus(
        observed_generation=1,
        phase="Succeeded",
        attempts=1,
        replicas=[ReplicaPull(pod=p, phase="Succeeded") for p in pods],
    )


def test_a_pull_waits_for_its_backend_then_for_a_pod_then_pulls_into_every_running_one() -> None:
    missing = plan_round(SPEC, "ns", None, [], ModelPullStatus(), 1)
    assert missing.wait == BACKEND_MISSING_SECONDS and missing.status is not None
    assert (
        missing.status.phase == "Pending"
        and "does not exist in ns" in (missing.status.conditions or [])[0].message
    )
    no_pods = plan_round(SPEC, "ns", LLAMACPP, [pod("p1", ip="", phase="Pending")], ModelPullStatus(), 1)
    assert no_pods.wait == NO_PODS_SECONDS
    pulling = plan_round(SPEC, "ns", LLAMACPP, [pod("p1"), pod("p2", "10.1.0.6")], ModelPullStatus(), 1)
    assert pulling.wait is None
    assert pulling.targets == {"p1": "http://10.1.0.5:8090", "p2": "http://10.1.0.6:8090"}  # the agents


def test_a_pull_into_an_external_backend_fails_at_once_and_stays_failed() -> None:
    plan = plan_round(SPEC, "ns", EXTERNAL, [], ModelPullStatus(), 1)
    assert plan.status is not None and plan.status.phase == "Failed" and plan.wait == 0
    assert nothing_to_do(plan.status, EXTERNAL, [])


def test_a_finished_pull_is_only_repeated_for_pods_that_came_after_it() -> None:
    done = succeeded_on("p1")
    assert nothing_to_do(done, LLAMACPP, [pod("p1")])
    assert not nothing_to_do(done, LLAMACPP, [pod("p1"), pod("p2", "10.1.0.6")])
    plan = plan_round(SPEC, "ns", LLAMACPP, [pod("p1"), pod("p2", "10.1.0.6")], done, 1)
    assert plan.targets == {"p2": "http://10.1.0.6:8090"}
    assert [r.pod for r in plan.kept] == ["p1"] and plan.start.attempts == 0  # counted from 1 again
    assert plan_round(SPEC, "ns", LLAMACPP, [pod("p1")], done, 1).wait == NEW_POD_CHECK_SECONDS
    assert plan_round(SPEC, "ns", None, [], done, 1).wait == SETTLED_SECONDS


def test_a_spec_change_starts_over() -> None:
    plan = plan_round(SPEC, "ns", LLAMACPP, [pod("p1")], succeeded_on("p1"), 2)
    assert plan.start == ModelPullStatus() and plan.targets == {"p1": "http://10.1.0.5:8090"}


def test_a_pull_of_a_model_the_backend_does_not_declare_waits_and_says_where_to_declare_it() -> None:
    other = ModelPullSpec.model_validate({"backendRef": {"name": "b"}, "model": "https://h/other.gguf"})
    plan = plan_round(other, "ns", LLAMACPP, [pod("p1")], ModelPullStatus(), 1)
    assert plan.targets == {} and plan.wait == BACKEND_MISSING_SECONDS and plan.status is not None
    ready = (plan.status.conditions or [])[0]
    assert plan.status.phase == "Pending" and ready.reason == "ModelNotDeclared"
    assert "does not declare https://h/other.gguf" in ready.message and "spec.models" in ready.message
    # Declared once the backend lists it; a file of a declared repo is declared too.
    declaring = LLMBackendSpec.model_validate(
        {"runtime": "llamacpp", "models": [{"name": "https://h/f.gguf"}, {"name": "https://h/other.gguf"}]}
    )
    assert plan_round(other, "ns", declaring, [pod("p1")], ModelPullStatus(), 1).targets == {
        "p1": "http://10.1.0.5:8090"
    }
    repo = LLMBackendSpec.model_validate({"runtime": "vllm", "models": [{"name": "hf://org/repo"}]})
    in_repo = ModelPullSpec.model_validate(
        {"backendRef": {"name": "b"}, "model": "hf://org/repo/config.json"}
    )
    assert plan_round(in_repo, "ns", repo, [pod("p1")], ModelPullStatus(), 1).targets
    # Ollama pulls whatever it is asked: no agent, no list.
    ollama = LLMBackendSpec.model_validate({"runtime": "ollama", "models": [{"name": "qwen3:0.6b"}]})
    tag = ModelPullSpec.model_validate({"backendRef": {"name": "b"}, "model": "llama3:8b"})
    assert plan_round(tag, "ns", ollama, [pod("p1")], ModelPullStatus(), 1).targets

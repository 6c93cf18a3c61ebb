"""Which pods a ModelPull pulls into, judged from pod status as the kubelet writes it."""

from __future__ import annotations

from typing import Any

from llmop.loops.pull_plan import pull_targets
from llmop.models.backend import LLMBackendSpec
from llmop.reconcile.backend_status import pod_facts

LLAMACPP = LLMBackendSpec.model_validate(
    {"runtime": "llamacpp", "models": [{"name": "hf://org/repo/m.gguf"}]}
)
OLLAMA = LLMBackendSpec.model_validate({"runtime": "ollama", "models": [{"name": "qwen3:0.6b"}]})


def waiting_for_its_model(ip: str | None = "10.0.0.7") -> dict[str, Any]:
    """A fresh vLLM or llama.cpp pod: the agent sidecar runs, its startup probe has not passed
    (no model yet), the runtime waits for it; the kubelet reports the pod Pending."""
    status: dict[str, Any] = {
        "phase": "Pending",
        "conditions": [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Initialized", "status": "False", "reason": "ContainersNotInitialized"},
        ],
        "initContainerStatuses": [
            {
                "name": "agent",
                "started": False,
                "ready": False,
                "state": {"running": {"startedAt": "2026-11-21T10:00:00Z"}},
            }
        ],
        "containerStatuses": [
            {
                "name": "runtime",
                "started": False,
                "ready": False,
                "state": {"waiting": {"reason": "PodInitializing"}},
            }
        ],
    }
    if ip:
        status["podIP"] = ip
    return status


def test_a_pending_pod_whose_agent_runs_is_pulled_into() -> None:
    pods = [pod_facts("chat-abc", {}, waiting_for_its_model())]

    assert pull_targets(LLAMACPP, pods) == {"chat-abc": "http://10.0.0.7:8090"}


def test_a_pod_without_an_ip_or_being_deleted_is_not() -> None:
    no_ip = pod_facts("chat-new", {}, waiting_for_its_model(ip=None))
    deleting = pod_facts("chat-old", {"deletionTimestamp": "2026-11-21T10:00:00Z"}, waiting_for_its_model())

    assert pull_targets(LLAMACPP, [no_ip, deleting]) == {}


def test_a_pending_pod_whose_agent_has_not_started_is_not() -> None:
    status = waiting_for_its_model()
    status["initContainerStatuses"][0]["state"] = {"waiting": {"reason": "ContainerCreating"}}

    assert pull_targets(LLAMACPP, [pod_facts("chat-abc", {}, status)]) == {}


def test_ollama_pulls_through_its_runtime_container_once_it_runs() -> None:
    running = {
        "phase": "Running",
        "podIP": "10.0.0.9",
        "containerStatuses": [{"name": "runtime", "started": True, "state": {"running": {}}}],
    }
    creating = {
        "phase": "Pending",
        "podIP": "10.0.0.8",
        "containerStatuses": [{"name": "runtime", "state": {"waiting": {"reason": "ContainerCreating"}}}],
    }

    targets = pull_targets(OLLAMA, [pod_facts("a", {}, creating), pod_facts("b", {}, running)])

    assert targets == {"b": "http://10.0.0.9:11434"}

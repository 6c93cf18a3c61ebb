"""The Argo CD health checks (docs/argocd/*.lua), run in Lua against statuses llmop's own status
code computes, and the page that tells users how to install them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from llmop.models.backend import AutoscalingSpec, AutoscalingStatus, LLMBackendSpec, LLMBackendStatus
from llmop.models.pull import ModelPullStatus, PullProgress
from llmop.reconcile.autoscale import AutoscaleFacts, decide
from llmop.reconcile.backend_status import (
    BackendSnapshot,
    PodFacts,
    PullFacts,
    RuntimeObservation,
    compute_backend_status,
)
from llmop.reconcile.pull_status import pull_conditions
from llmop.runtimes import ModelInfo, ProbeResult, ProbeState, RuntimeCapabilities
from support.argocd import CHECKS, argocd_health

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 11, 21, 12, 0, 0, tzinfo=UTC)
URL = "http://127.1.0.5:8080"


health = argocd_health


def obj(status: LLMBackendStatus | ModelPullStatus | None, generation: int = 1) -> dict[str, Any]:
    body: dict[str, Any] = {"metadata": {"name": "x", "namespace": "ns", "generation": generation}}
    if status is not None:
        body["status"] = status.to_api()
    return body


def observation(
    state: ProbeState, reason: str = "", models: tuple[ModelInfo, ...] = ()
) -> RuntimeObservation:
    return RuntimeObservation(
        probe=ProbeResult(state=state, reason=reason or str(state), url=URL, latency_seconds=0.01),
        models=models,
        capabilities=RuntimeCapabilities(chat=True) if state is ProbeState.SERVING else None,
    )


SERVING = observation(ProbeState.SERVING, models=(ModelInfo(name="tiny"),))
REFUSED = observation(ProbeState.STARTING, "connection refused at 127.1.0.5:8080")


def backend_status(
    *,
    spec: dict[str, Any] | None = None,
    pods: list[PodFacts] | None = None,
    runtimes: dict[str, RuntimeObservation] | None = None,
    previous: LLMBackendStatus | None = None,
    now: datetime = T0,
    **extra: Any,
) -> LLMBackendStatus:
    return compute_backend_status(
        BackendSnapshot(
            generation=1,
            spec=LLMBackendSpec.model_validate(
                spec or {"runtime": "llamacpp", "models": [{"name": "tiny"}], "startup": {"timeout": "5m"}}
            ),
            endpoint="http://x.ns.svc.cluster.local:8080",
            openai_base_url="http://x.ns.svc.cluster.local:8080/v1",
            now=now,
            observing_since=T0,
            previous=previous or LLMBackendStatus(),
            pods=pods if pods is not None else [PodFacts(name="x-1", ip="127.1.0.5", phase="Running")],
            runtimes=runtimes if runtimes is not None else {"x-1": SERVING},
            **extra,
        )
    )


def test_a_serving_backend_is_healthy() -> None:
    status = backend_status()
    assert status.phase == "Ready"
    assert health("LLMBackend", obj(status)) == {
        "status": "Healthy",
        "message": "1/1 replicas serving 1 model",
    }


def test_a_backend_without_status_or_behind_its_spec_is_progressing() -> None:
    assert health("LLMBackend", obj(None))["status"] == "Progressing"
    behind = health("LLMBackend", obj(backend_status(), generation=2))
    assert behind == {"status": "Progressing", "message": "Waiting for llmop to observe generation 2"}


def test_a_cold_start_is_progressing_with_llmops_words() -> None:
    status = backend_status(runtimes={"x-1": REFUSED})
    assert status.phase == "Loading"
    result = health("LLMBackend", obj(status))
    assert result["status"] == "Progressing" and "connection refused" in result["message"]
    deploying = backend_status(pods=[PodFacts(name="x-1", phase="Pending")], runtimes={})
    assert health("LLMBackend", obj(deploying))["status"] == "Progressing"


def test_a_cold_start_past_its_timeout_is_degraded() -> None:
    status = backend_status(runtimes={"x-1": REFUSED}, now=T0 + timedelta(minutes=6))
    result = health("LLMBackend", obj(status))
    assert result["status"] == "Degraded" and result["message"].startswith("StartupTimeout: ")


def test_a_runtime_that_died_after_serving_is_degraded() -> None:
    before = backend_status()
    status = backend_status(runtimes={"x-1": REFUSED}, previous=before, now=T0 + timedelta(seconds=5))
    assert status.phase == "Degraded"
    assert health("LLMBackend", obj(status))["status"] == "Degraded"


def test_unschedulable_and_invalid_backends() -> None:
    message = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
    pending = backend_status(pods=[PodFacts(name="x-1", unschedulable=message)], runtimes={})
    assert health("LLMBackend", obj(pending)) == {"status": "Progressing", "message": f"Pending: {message}"}
    invalid = backend_status(apply_problem=("InvalidSpec", "spec.models is empty"))
    assert health("LLMBackend", obj(invalid)) == {
        "status": "Degraded",
        "message": "InvalidSpec: spec.models is empty",
    }


def test_a_failed_pull_degrades_the_backend() -> None:
    status = backend_status(
        runtimes={"x-1": observation(ProbeState.SERVING)},
        pulls={"tiny": PullFacts(phase="Failed", error="404 Not Found")},
    )
    result = health("LLMBackend", obj(status))
    assert result["status"] == "Degraded" and "404 Not Found" in result["message"]


def test_a_backend_scaled_to_zero_is_suspended() -> None:
    status = backend_status(spec={"runtime": "ollama", "replicas": 0}, pods=[], runtimes={})
    assert health("LLMBackend", obj(status)) == {
        "status": "Suspended",
        "message": "replicas is 0: nothing serves",
    }


def test_a_backend_autoscaled_to_zero_is_healthy_and_says_why() -> None:
    """Idle is a backend at rest on purpose: the next request through the gateway wakes it, so
    Argo CD shows it Healthy (not Suspended, not Degraded) with llmop's words."""
    rules = AutoscalingSpec.model_validate({"minReplicas": 0, "maxReplicas": 2})
    before = AutoscalingStatus(replicas=1, drain_started=T0 - timedelta(seconds=5), scale_down_since=T0)
    decision = decide(AutoscaleFacts(rules, T0 + timedelta(minutes=5), {}, before))
    spec = {"runtime": "ollama", "autoscaling": {"minReplicas": 0, "maxReplicas": 2}}
    status = backend_status(spec=spec, pods=[], runtimes={}, autoscale=decision)
    assert status.phase == "Idle"
    assert health("LLMBackend", obj(status)) == {
        "status": "Healthy",
        "message": "no request for 5m: scaled to zero",
    }


def pull(phase: str, reason: str, message: str, *, stalled: bool = False, **fields: Any) -> ModelPullStatus:
    return ModelPullStatus(
        observed_generation=1,
        phase=phase,  # type: ignore[arg-type]
        conditions=pull_conditions(phase, reason, message, 1, None, T0, stalled),  # type: ignore[arg-type]
        **fields,
    )


def test_model_pull_health() -> None:
    assert health("ModelPull", obj(None))["status"] == "Progressing"
    pulling = pull(
        "Pulling",
        "Pulling",
        "pulling tiny (attempt 1)",
        progress=PullProgress(completed_bytes=300, total_bytes=600, percent=50.0, summary="50% 300B/600B"),
    )
    assert health("ModelPull", obj(pulling)) == {"status": "Progressing", "message": "Pulling 50% 300B/600B"}
    done = pull("Succeeded", "Pulled", "pulled tiny (586.0KiB) into 1 pod(s)")
    assert health("ModelPull", obj(done)) == {
        "status": "Healthy",
        "message": "pulled tiny (586.0KiB) into 1 pod(s)",
    }
    retrying = pull(
        "Pulling", "PullFailed", "attempt 1 of 5 failed, retrying in 10s: reset", last_error="reset"
    )
    assert health("ModelPull", obj(retrying))["status"] == "Progressing"
    failed = pull(
        "Failed",
        "PullFailed",
        "gave up after 5 attempt(s): 404",
        stalled=True,
        last_error="x-1: 404 Not Found",
    )
    assert health("ModelPull", obj(failed)) == {"status": "Degraded", "message": "x-1: 404 Not Found"}
    assert health("ModelPull", obj(done, generation=2))["status"] == "Progressing"


@pytest.mark.parametrize("kind", ["LLMBackend", "ModelPull"])
def test_the_page_carries_each_check_as_it_is(kind: str) -> None:
    page = (REPO / "docs" / "argocd-health.md").read_text()
    script = (CHECKS / f"llmop.dev_{kind}.lua").read_text()
    indented = "".join(f"    {line}".rstrip() + "\n" for line in script.splitlines())
    assert f"  resource.customizations.health.llmop.dev_{kind}: |\n{indented}" in page, (
        f"docs/argocd-health.md does not carry docs/argocd/llmop.dev_{kind}.lua as it is"
    )

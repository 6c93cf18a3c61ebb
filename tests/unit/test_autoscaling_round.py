"""spec.autoscaling through the backend's observer, against a fake API server: what reaches the
Deployment, the pods and status when a gateway reports its counts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import kopf
import pytest

from llmop import metrics
from llmop.config import OperatorConfig
from llmop.k8s.client import KubeAPIError, KubeUnavailable, Resource
from llmop.loops import backend_observer
from llmop.loops.backend_autoscaler import DELETION_COST_ANNOTATION
from llmop.loops.backend_observer import BackendObserver
from llmop.loops.context import OperatorContext
from llmop.reconcile.backend_status import PodFacts

#: The Events llmop posted for a change of replicas: (from, to, why).
RESCALED: list[tuple[Any, ...]] = []
SPEC = {
    "runtime": "llamacpp",
    "models": [{"name": "https://h/f.gguf"}],
    "autoscaling": {"minReplicas": 0, "maxReplicas": 3},
}


class FakeKube:
    """Records every write: (kind, name, patch)."""

    def __init__(
        self, deployment: bool = True, away: bool = False, refuse: bool = False, refuse_pods: bool = False
    ) -> None:
        self.writes: list[tuple[str, str, dict[str, Any]]] = []
        self.deployment, self.away, self.refuse = deployment, away, refuse
        self.attempts, self.refuse_pods = 0, refuse_pods

    async def patch_status(
        self, resource: Resource, name: str, namespace: str, patch: dict[str, Any]
    ) -> dict[str, Any]:
        self.writes.append(("status", name, patch))
        return {"metadata": {"resourceVersion": "100"}, "status": patch}

    async def patch(
        self,
        resource: Resource,
        name: str,
        namespace: str | None,
        patch: dict[str, Any],
        subresource: str | None = None,
    ) -> dict[str, Any] | None:
        if self.away:
            raise KubeUnavailable("connection refused")
        self.attempts += 1
        if self.refuse or (self.refuse_pods and resource.plural == "pods"):
            raise KubeAPIError(403, f'{resource.plural}.apps "{name}" is forbidden', "Forbidden")
        self.writes.append(
            (f"{resource.plural}/{subresource}" if subresource else resource.plural, name, patch)
        )
        return None if resource.plural == "deployments" and not self.deployment else patch

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [patch for plural, _, patch in self.writes if plural == kind]


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def observer(
    kube: FakeKube,
    status: dict[str, Any],
    pods: list[PodFacts] | None = None,
    spec: dict[str, Any] | None = None,
) -> BackendObserver:
    context = OperatorContext(config=OperatorConfig())
    context.kube = kube  # type: ignore[assignment]
    context.runtime_http = None  # type: ignore[assignment]  # no pod answers probes here
    body = kopf.Body(
        {
            "metadata": {"name": "b", "namespace": "ns", "generation": 1, "resourceVersion": "41"},
            "spec": spec or SPEC,
            "status": status,
        }
    )
    watched = BackendObserver(
        "b",
        "ns",
        body,
        context,
        kopf.DaemonStopped({}),
        pods=lambda: list(pods or []),
        pulls=list,
        logger=kopf.LocalObjectLogger(body=body, settings=kopf.OperatorSettings()),
    )

    async def wait(seconds: float) -> bool:
        watched.slept = seconds  # type: ignore[attr-defined]
        return False

    watched.wait = wait  # type: ignore[method-assign]
    return watched


def idle(demand: dict[str, Any] | None = None) -> dict[str, Any]:
    at = (now() - timedelta(minutes=10)).isoformat()
    status: dict[str, Any] = {
        "observedGeneration": 1,
        "phase": "Idle",
        "replicas": {"desired": 0, "ready": 0, "summary": "0/0"},
        "autoscaling": {"replicas": 0, "message": "no request for 5m: scaled to zero", "lastRequestTime": at},
    }
    if demand is not None:
        status["demand"] = demand
    return status


@pytest.fixture(autouse=True)
def _no_events_and_no_gauges_left(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(backend_observer, "post_phase_event", lambda *_: None)
    monkeypatch.setattr(backend_observer, "post_fits_event", lambda *_: None)
    monkeypatch.setattr(backend_observer, "post_rescale_event", lambda *args: RESCALED.append(args[1:]))
    RESCALED.clear()
    yield
    metrics.forget_backend("ns", "b")


async def test_a_request_held_at_zero_wakes_the_deployment_and_status_never_touches_demand() -> None:
    demand = {"gw-1": {"inFlight": 0, "waiting": 1, "time": now().isoformat()}}
    kube = FakeKube()
    watched = observer(kube, idle(demand))
    await watched.round()
    assert kube.of("deployments") == [{"spec": {"replicas": 1}}]
    (status,) = kube.of("status")
    assert "demand" not in status
    assert status["replicas"]["desired"] == 1 and status["phase"] == "Deploying"
    assert status["autoscaling"]["message"] == "0 requests in flight and 1 waiting, 4 per replica: 1 replica"
    assert RESCALED == [(0, 1, "0 requests in flight and 1 waiting, 4 per replica: 1 replica")]
    # The next round sets nothing again: the Deployment already runs the decision.
    await watched.round()
    assert len(kube.of("deployments")) == 1


async def test_an_idle_backend_is_ready_and_looked_at_at_the_steady_pace() -> None:
    kube = FakeKube()
    stale = {"gw-dead": {"inFlight": 5, "time": (now() - timedelta(minutes=3)).isoformat()}}
    watched = observer(kube, idle(stale))
    await watched.round()
    assert kube.of("deployments") == [{"spec": {"replicas": 0}}]
    (status,) = kube.of("status")
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (status["phase"], ready["status"], ready["reason"]) == ("Idle", "True", "ScaledToZero")
    assert ready["message"] == "no request for 5m: scaled to zero"
    watched.body._replace_with({**watched.body, "status": {**status, "demand": stale}})  # as stored
    await watched.round()
    assert len(kube.of("status")) == 1, "an unchanged Idle backend writes nothing"
    assert watched.slept >= 7  # type: ignore[attr-defined]


async def test_a_leaving_pod_is_marked_before_the_replicas_go_down() -> None:
    """A pod not in the gateway's rotation any more is the one the ReplicaSet removes."""
    long_ago = (now() - timedelta(minutes=10)).isoformat()
    status = {
        "observedGeneration": 1,
        "phase": "Ready",
        "replicas": {"desired": 2, "ready": 2, "summary": "2/2"},
        "autoscaling": {"replicas": 2, "scaleDownSince": long_ago, "scaleDownTo": 1},
        "pods": [{"name": "b-1", "ready": True}, {"name": "b-2", "ready": True}],
    }
    pods = [
        PodFacts("b-1", ip="10.0.0.1", phase="Running", ready=True),
        PodFacts("b-2", ip="10.0.0.2", phase="Running", ready=True),
    ]
    kube = FakeKube()
    watched = observer(kube, status, pods)
    await watched.round()
    assert kube.writes[0] == (
        "pods",
        "b-1",
        {"metadata": {"annotations": {DELETION_COST_ANNOTATION: "-1000"}}},
    )
    assert kube.of("deployments") == [{"spec": {"replicas": 2}}], (
        "not lowered before the gateways read the mark"
    )
    (written,) = kube.of("status")
    assert [p.get("draining") for p in written["pods"]] == [True, None]
    assert written["autoscaling"]["message"] == "draining b-1 (0 in flight): 2 replicas to 1"

    # The next round, with the mark stored and no gateway relaying anything: lowered.
    watched.body._replace_with({**watched.body, "status": written})
    await watched.round()
    assert kube.of("deployments")[-1] == {"spec": {"replicas": 1}}
    assert len(kube.of("pods")) == 1, "marked once"
    assert RESCALED == [(2, 1, "0 requests in flight, 4 per replica: 1 replica")]


async def test_a_backend_switched_back_to_replicas_loses_the_marks_and_the_decision() -> None:
    kube = FakeKube()
    pods = [PodFacts("b-1", ip="10.0.0.1", phase="Running", ready=True)]
    watched = observer(kube, {"observedGeneration": 1}, pods, spec={**SPEC, "autoscaling": None})
    watched.autoscaler.marked.add("b-1")
    watched.context.scaled[("ns", "b")] = 3
    await watched.round()
    assert kube.of("pods") == [{"metadata": {"annotations": {DELETION_COST_ANNOTATION: None}}}]
    assert kube.of("deployments") == [] and ("ns", "b") not in watched.context.scaled
    (status,) = kube.of("status")
    assert "autoscaling" not in status and status["replicas"]["desired"] == 1


async def test_a_deployment_not_there_yet_is_not_asked_again_every_round() -> None:
    """The ensure handler creates it with the decision (and then drops the record)."""
    demand = {"gw-1": {"waiting": 1, "time": now().isoformat()}}
    missing = FakeKube(deployment=False)
    watched = observer(missing, idle(demand))
    await watched.round()
    await watched.round()
    assert len(missing.of("deployments")) == 1 and watched.context.scaled[("ns", "b")] == 1


async def test_an_api_server_away_is_tried_again_soon_and_a_refusal_is_said_in_status() -> None:
    demand = {"gw-1": {"waiting": 1, "time": now().isoformat()}}
    away = FakeKube(away=True)
    watched = observer(away, idle(demand))
    await watched.round()
    assert watched.slept == 1.0  # type: ignore[attr-defined]
    refused = FakeKube(refuse=True)
    watched = observer(refused, idle(demand))
    await watched.round()
    await watched.round()
    assert refused.attempts == 1, "a refusal is not asked again every round"
    (status,) = refused.of("status")
    assert status["autoscaling"]["message"] == (
        "0 requests in flight and 1 waiting, 4 per replica: 1 replica (llmop cannot apply it: set the "
        'Deployment\'s replicas to 1: deployments.apps "b" is forbidden)'
    )


def test_only_a_change_of_the_gateways_counts_wakes_the_observer() -> None:
    context = OperatorContext(config=OperatorConfig())
    key = ("ns", "b")
    waker = context.observers[key] = __import__("asyncio").Event()
    demand = {"gw-1": {"inFlight": 1, "time": "2026-12-01T12:00:00Z"}}
    context.wake_on_demand(key, demand)
    assert waker.is_set()
    waker.clear()
    context.wake_on_demand(key, {"gw-1": {"inFlight": 1, "time": "2026-12-01T12:00:00Z"}})
    assert not waker.is_set(), "llmop's own status write (same demand) wakes nothing"
    context.wake_on_demand(key, None)
    assert waker.is_set()
    waker.clear()
    context.wake_on_demand(key, None)
    assert not waker.is_set()


async def test_entries_of_gone_gateways_are_removed_and_never_a_live_ones() -> None:
    """Each gateway pod writes under its own name: without this, every rollout of the gateway
    would leave entries behind until the object is full and no gateway can write."""
    demand = {
        "gw-live": {"inFlight": 2, "time": now().isoformat()},
        "gw-idle": {"inFlight": 0, "time": (now() - timedelta(minutes=30)).isoformat()},
        "gw-gone": {"inFlight": 0, "time": (now() - timedelta(hours=2)).isoformat()},
        "garbage": {"inFlight": "lots"},
    }
    kube = FakeKube()
    watched = observer(kube, idle(demand))
    await watched.round()
    (prune,) = kube.of("llmbackends/status")
    assert prune == {
        "metadata": {"resourceVersion": "41"},
        "status": {"demand": {"gw-gone": None, "garbage": None}},
    }
    await watched.round()
    assert len(kube.of("llmbackends/status")) == 1, "looked for again only minutes later"


async def test_a_refused_pod_mark_is_said_and_never_holds_back_a_scale_up() -> None:
    """An operator whose role lacks patch on pods still scales up at once when requests come."""
    long_ago = (now() - timedelta(minutes=10)).isoformat()
    status = {
        "observedGeneration": 1,
        "phase": "Ready",
        "replicas": {"desired": 2, "ready": 2, "summary": "2/2"},
        "autoscaling": {"replicas": 2, "scaleDownSince": long_ago, "scaleDownTo": 1},
        "pods": [{"name": "b-1", "ready": True}, {"name": "b-2", "ready": True}],
    }
    pods = [
        PodFacts("b-1", ip="10.0.0.1", phase="Running", ready=True),
        PodFacts("b-2", ip="10.0.0.2", phase="Running", ready=True),
    ]
    kube = FakeKube(refuse_pods=True)
    watched = observer(kube, status, pods)
    await watched.round()
    (written,) = kube.of("status")
    assert written["autoscaling"]["message"].endswith(
        '(llmop cannot apply it: annotate pod b-1: pods.apps "b-1" is forbidden)'
    )
    busy = {"gw-1": {"inFlight": 11, "time": now().isoformat()}}
    watched.body._replace_with({**watched.body, "status": {**written, "demand": busy}})
    await watched.round()
    assert kube.of("deployments")[-1] == {"spec": {"replicas": 3}}
    assert (
        kube.of("status")[-1]["autoscaling"]["message"] == "11 requests in flight, 4 per replica: 3 replicas"
    )

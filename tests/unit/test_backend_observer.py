"""The backend observer's decisions, without a cluster: pace, doubt before Degraded, the hold on
a status llmop wrote until kopf's view carries it, and a round against fakes of its I/O."""

from __future__ import annotations

import time
from typing import Any

import pytest

from llmop import metrics
from llmop.config import OperatorConfig
from llmop.k8s.client import KubeUnavailable
from llmop.loops import backend_observer
from llmop.loops.backend_observer import BackendObserver
from llmop.loops.context import OperatorContext
from llmop.loops.pace import FULL_ROUND_EVERY, STEADY_INTERVAL, ObserverPace, caught_up, status_patch
from support.observers import observer_of


def test_a_backend_that_is_not_ready_is_looked_at_every_probe_interval() -> None:
    pace = ObserverPace(quiet_rounds=3)
    assert pace.next_interval("Loading", changed=False, fast=1.0, observed=1, jitter=1.0) == 1.0
    assert pace.quiet_rounds == 0


def test_a_ready_unchanged_backend_slows_to_the_steady_pace_and_lists_every_fifth_round() -> None:
    pace = ObserverPace()
    assert pace.next_interval("Ready", changed=True, fast=1.0, observed=1, jitter=1.0) == 1.0
    listings = []
    for _ in range(2 * FULL_ROUND_EVERY):
        assert pace.next_interval("Ready", changed=False, fast=1.0, observed=1, jitter=1.0) == STEADY_INTERVAL
        listings.append(pace.full_listing("Ready"))
    assert listings.count(True) == 2  # every FULL_ROUND_EVERY-th steady round lists models
    pace.woken = True
    assert pace.full_listing("Ready"), "a wake-up asks for every listing"


def test_one_missed_probe_of_a_ready_backend_is_doubted_once_before_it_is_reported() -> None:
    pace = ObserverPace(quiet_rounds=4)
    assert pace.doubts("Ready", changed=True, stopped_answering=True)
    assert pace.quiet_rounds == 0
    # Still failing when asked again: now it is reported.
    assert not pace.doubts("Ready", changed=True, stopped_answering=True)
    assert not pace.doubts("Loading", changed=True, stopped_answering=True), "only a Ready backend is doubted"


def test_a_written_status_stands_until_kopf_sees_that_version_or_a_later_one() -> None:
    ours = {"phase": "Ready"}
    assert not caught_up("41", "42", {"phase": "Loading"}, ours)
    assert caught_up("43", "42", {"phase": "Loading"}, ours)
    assert caught_up("41", "42", ours, ours), "kopf shows our status already"


def test_a_status_patch_removes_what_the_new_status_drops() -> None:
    assert status_patch({"phase": "Loading", "lastError": "x"}, {"phase": "Ready"}) == {
        "phase": "Ready",
        "lastError": None,
    }


def test_a_status_patch_removes_what_a_nested_object_drops() -> None:
    """`kubectl get` must stop showing a cold start's stage once the new status has none."""
    stored = {"startup": {"stage": "Warming", "summary": "Warming", "rollout": "a"}}
    new = {"startup": {"stage": "Ready", "rollout": "a"}}
    assert status_patch(stored, new) == {"startup": {"stage": "Ready", "summary": None, "rollout": "a"}}


def test_a_status_patch_never_removes_the_gateways_demand() -> None:
    """status.demand is the gateways' to write: llmop's whole-status patch leaves it out, at the
    top only (a field of that name deeper down is llmop's own)."""
    stored = {"phase": "Idle", "demand": {"gw-1": {"waiting": 1}}, "startup": {"demand": "x"}}
    assert status_patch(stored, {"phase": "Deploying", "startup": {}}) == {
        "phase": "Deploying",
        "startup": {"demand": None},
    }


class FakeKube:
    def __init__(self, away: bool) -> None:
        self.away, self.patches = away, []

    async def patch_status(
        self, resource: Any, name: str, namespace: str, patch: dict[str, Any]
    ) -> dict[str, Any]:
        if self.away:
            raise KubeUnavailable("connection refused")
        self.patches.append(patch)
        return {"metadata": {"resourceVersion": "7"}, "status": patch}


def observer(kube: FakeKube, spec: dict[str, Any]) -> BackendObserver:
    context = OperatorContext(config=OperatorConfig())
    context.kube = kube  # type: ignore[assignment]
    return observer_of(context, spec)


@pytest.mark.parametrize("away", [False, True])
async def test_a_round_writes_a_changed_status_or_looks_again_soon_while_the_api_is_away(
    away: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No pods yet: the round computes Deploying, writes it and announces it; an API server that
    is away costs a retry a second later, not the observer, and nothing is announced."""
    announced: list[tuple[str | None, str | None]] = []
    monkeypatch.setattr(
        backend_observer,
        "post_phase_event",
        lambda body, before, after: announced.append((before.phase, after.phase)),
    )
    kube = FakeKube(away)
    watched = observer(kube, {"runtime": "llamacpp", "models": [{"name": "https://h/f.gguf"}]})
    watched.context.runtime_http = None  # type: ignore[assignment]  # no target is probed
    slept: list[float] = []

    async def wait(seconds: float) -> bool:
        slept.append(seconds)
        return False

    watched.wait = wait  # type: ignore[method-assign]
    await watched.round()
    if away:
        assert kube.patches == [] and slept == [1.0] and watched.written is None and announced == []
    else:
        (patch,) = kube.patches
        assert patch["phase"] == "Deploying" and watched.written is not None
        assert announced == [(None, "Deploying")]
    assert watched.generation == 1
    metrics.forget_backend("ns", "b")  # as the observer does when it stops: the gauges are global


async def test_wakes_never_bring_rounds_closer_than_the_shortest_probe_interval() -> None:
    """A pod or a ModelPull changing wakes the observer; a tenant patching a ModelPull in a loop
    must not set the rate at which llmop probes the backend's target."""
    watched = observer(FakeKube(False), {"runtime": "llamacpp", "models": [{"name": "https://h/f.gguf"}]})
    waited: list[float] = []

    class Stopped:
        async def wait(self, seconds: float) -> None:
            waited.append(seconds)

    watched.stopped = Stopped()  # type: ignore[assignment]
    watched.round_began = time.monotonic()
    await watched.keep_round_gap()
    assert len(waited) == 1 and 0.05 < waited[0] <= 0.1

    waited.clear()
    watched.round_began = time.monotonic() - 1.0
    await watched.keep_round_gap()
    assert waited == [], "a round a second after the last one starts at once"

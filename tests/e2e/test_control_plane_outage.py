"""The control plane going away: kube-apiserver, then etcd, stopped for 20 s while a backend
loads and its model is being pulled, then started again.

What a user must see afterwards: the operator reconnected by itself, the statuses caught up
within 10 s of the API's return, the pull finished without fetching again the bytes it had, and
nothing was written or announced twice.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from test_model_pull import (
    RESUME_SLACK,
    backend_pull,
    completed_bytes,
    llamacpp_backend,
    publish_url,
    pull_status,
    wait_progress,
)

from support.kube import Kube, eventually, wait_backend_ready
from support.operator import OperatorProcess
from support.runtimes import ModelSource, PodRunner

pytestmark = pytest.mark.e2e

OUTAGE_SECONDS = 20
CATCH_UP_SECONDS = 10


def api_answers(kube: Kube) -> bool:
    return kube.run("get", "--raw", "/readyz", "--request-timeout=2s", check=False).returncode == 0


def events_of(kube: Kube, namespace: str, name: str) -> list[tuple[str, str]]:
    return sorted(
        (event["reason"], event["message"])
        for event in kube.list("events", namespace)
        if event["involvedObject"]["name"] == name
    )


# The cluster's own controllers (Deployments, ReplicaSets, volume binding, scheduling) back off
# for up to a minute after an outage; the tests that follow must not wait that out.
SETTLED_COMPONENTS = ("kube-controller-manager", "kube-scheduler", "kwok")
# A Deployment no node takes: its pod appearing shows the Deployment and ReplicaSet controllers live.
CANARY = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "canary"},
    "spec": {
        "selector": {"matchLabels": {"app": "canary"}},
        "template": {
            "metadata": {"labels": {"app": "canary"}},
            "spec": {
                "nodeSelector": {"llmop.dev/none": "none"},
                "containers": [{"name": "canary", "image": "registry.invalid/canary"}],
            },
        },
    },
}


def control_plane_settled(kube: Kube, local_cluster: Any) -> None:
    for component in SETTLED_COMPONENTS:
        local_cluster.restart_component(component)
    with kube.namespace("settle") as namespace:
        kube.apply(CANARY, namespace)
        eventually(lambda: kube.list("pods", namespace), timeout=120, message="a canary pod created")


@pytest.fixture
def outage_ns(kube: Kube, local_cluster: Any, operator: OperatorProcess, podrunner: PodRunner) -> Any:
    with kube.namespace("outage") as name:
        yield name
    if local_cluster is not None:
        control_plane_settled(kube, local_cluster)


@pytest.mark.timeout(420)
@pytest.mark.parametrize("component", ["kube-apiserver", "etcd"])
def test_a_control_plane_outage_loses_no_pull_and_writes_nothing_twice(
    component: str,
    kube: Kube,
    local_cluster: Any,
    outage_ns: str,
    modelsource: ModelSource,
    operator: OperatorProcess,
) -> None:
    assert local_cluster is not None, "stopping a component needs the local control plane"
    model = publish_url(modelsource, f"outage-{component}")
    modelsource.throttle(model.size // 45)  # about 45 s for the whole file
    try:
        backend = llamacpp_backend("outage", model.model)
        kube.apply(backend, outage_ns)
        pull = backend_pull(kube, "outage", outage_ns)
        before = completed_bytes(wait_progress(kube, pull, outage_ns, model.size // 8))

        local_cluster.stop_component(component)
        time.sleep(OUTAGE_SECONDS)
        local_cluster.start_component(component)
        eventually(lambda: api_answers(kube), timeout=60, interval=0.5, message=f"{component} back")
        back = time.monotonic()

        # The agent went on downloading meanwhile; status shows it within CATCH_UP_SECONDS.
        caught_up = eventually(
            lambda: (
                completed_bytes(status := pull_status(kube, pull, outage_ns)) > before
                or status.get("phase") == "Succeeded"
            ),
            timeout=60,
            interval=0.2,
            message="the pull's status moving again",
        )
        assert caught_up and time.monotonic() - back <= CATCH_UP_SECONDS, (
            f"status caught up {time.monotonic() - back:.1f}s after the API returned"
        )
        modelsource.throttle(0)  # the rest of the file need not take the throttled pace
        wait_backend_ready(kube, "outage", outage_ns, timeout="120s")
    finally:
        modelsource.throttle(0)

    status = pull_status(kube, pull, outage_ns)
    assert status["phase"] == "Succeeded" and status["attempts"] == 1, status
    sent = modelsource.stats(model.stats_path)
    assert sent["bytes_sent"] <= model.size + RESUME_SLACK, f"bytes fetched again: {sent}"
    assert operator.alive(), "the operator died with its API server"
    for name in (pull, "outage"):
        events = events_of(kube, outage_ns, name)
        assert len(events) == len(set(events)), f"an Event of {name} was posted twice: {events}"

"""The cold-start timeline in status: a replica's stages, round by round, as `kubectl get llmb -o yaml`
shows them, from pods as the kubelet reports them."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from llmop.models.backend import LLMBackendSpec, LLMBackendStatus
from llmop.models.startup import MAX_STARTUP_REPLICAS, StartupStatus
from llmop.reconcile.backend_status import (
    BackendSnapshot,
    PullFacts,
    RuntimeObservation,
    compute_backend_status,
    pod_facts,
)
from llmop.reconcile.startup import ended_stages
from llmop.runtimes import ModelInfo, ProbeResult, ProbeState

T0 = datetime(2026, 11, 21, 12, 0, 0, tzinfo=UTC)
MODEL = "hf://org/tiny/tiny.gguf"
SERVED = "org/tiny/tiny.gguf"


def at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


def stamp(seconds: int) -> str:
    return at(seconds).strftime("%Y-%m-%dT%H:%M:%SZ")


def observation(state: ProbeState, *models: str) -> RuntimeObservation:
    probe = ProbeResult(state=state, reason=str(state), url="http://127.1.0.5:8080", latency_seconds=0.01)
    return RuntimeObservation(probe=probe, models=tuple(ModelInfo(name=m) for m in models))


SERVING = observation(ProbeState.SERVING, SERVED)
LOADING = observation(ProbeState.LOADING)


def pod(
    name: str = "b-1",
    *,
    created: int = 1,
    template: str = "aaa",
    scheduled: int | None = None,
    agent: int | None = None,
    agent_started: bool = False,
    runtime: int | None = None,
) -> Any:
    """A pod of an agent runtime as the kubelet reports it (times in seconds after T0)."""
    meta = {"creationTimestamp": stamp(created), "labels": {"pod-template-hash": template}}
    status: dict[str, Any] = {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False"}]}
    if scheduled is not None:
        status["conditions"] = [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": stamp(scheduled)}
        ]
    if agent is not None:
        status["podIP"] = "127.1.0.5"
        running = {"running": {"startedAt": stamp(agent)}}
        status["initContainerStatuses"] = [{"name": "agent", "started": agent_started, "state": running}]
        status["containerStatuses"] = [
            {"name": "runtime", "state": {"waiting": {"reason": "PodInitializing"}}}
        ]
    if runtime is not None:
        status["phase"] = "Running"
        status["containerStatuses"] = [
            {"name": "runtime", "state": {"running": {"startedAt": stamp(runtime)}}}
        ]
    return pod_facts(name, meta, status)


def snapshot(
    now: int,
    pods: list[Any],
    previous: LLMBackendStatus | None = None,
    *,
    runtimes: dict[str, RuntimeObservation] | None = None,
    spec: dict[str, Any] | None = None,
    **extra: Any,
) -> BackendSnapshot:
    return BackendSnapshot(
        generation=extra.pop("generation", 1),
        spec=LLMBackendSpec.model_validate(spec or {"runtime": "llamacpp", "models": [{"name": MODEL}]}),
        endpoint="http://b.ns.svc.cluster.local:8080",
        openai_base_url="http://b.ns.svc.cluster.local:8080/v1",
        now=at(now),
        observing_since=extra.pop("observing_since", T0),
        previous=previous or LLMBackendStatus(),
        pods=pods,
        runtimes=runtimes or {},
        normalize=lambda name: name.removeprefix("hf://"),
        created=T0,
        **extra,
    )


def rounds(*snapshots: BackendSnapshot) -> list[LLMBackendStatus]:
    """Each round's status, each round starting from the status the one before wrote (read back
    from its API form, as after a write)."""
    statuses: list[LLMBackendStatus] = []
    for each in snapshots:
        if statuses:
            each.previous = LLMBackendStatus.model_validate(statuses[-1].to_api())
        statuses.append(compute_backend_status(each))
    return statuses


def stages(startup: StartupStatus | None) -> list[tuple[str, int | None]]:
    assert startup is not None
    return [(stage.name, stage.seconds) for stage in startup.replicas[0].stages]


def test_a_cold_start_is_timed_stage_by_stage_and_adds_up_to_apply_to_ready() -> None:
    pulling = {MODEL: PullFacts(phase="Pulling", completed_bytes=420, total_bytes=1000)}
    statuses = rounds(
        snapshot(2, [pod()]),
        snapshot(12, [pod(scheduled=3, agent=10)], pulls=pulling),
        snapshot(30, [pod(scheduled=3, agent=10, agent_started=True)]),
        snapshot(40, [pod(scheduled=3, agent=10, agent_started=True, runtime=35)], runtimes={"b-1": LOADING}),
        snapshot(50, [pod(scheduled=3, agent=10, agent_started=True, runtime=35)], runtimes={"b-1": SERVING}),
        snapshot(
            53,
            [pod(scheduled=3, agent=10, agent_started=True, runtime=35)],
            runtimes={"b-1": SERVING},
            warmed={"b-1": at(52)},
        ),
    )
    summaries = [s.startup.summary if s.startup else None for s in statuses]
    assert summaries == ["Scheduling", "Downloading 42%", "Starting", "Loading", "Warming", None]
    downloading = statuses[1].startup.replicas[0] if statuses[1].startup else None
    assert downloading and downloading.progress
    assert (downloading.progress.completed_bytes, downloading.progress.total_bytes) == (420, 1000)

    done = statuses[-1].startup
    assert stages(done) == [
        ("Scheduling", 3),  # from the backend's creation, T0
        ("PullingImage", 7),  # until the agent container ran
        ("Downloading", 20),  # until llmop saw the agent's startup probe pass
        ("Starting", 5),  # until the runtime container ran
        ("Loading", 15),  # until its API answered
        ("Warming", 2),  # until the warmup returned
    ]
    assert done and done.stage == "Ready" and done.applied_at == T0 and done.ready_at == at(52)
    assert done.seconds == 52 == sum(seconds or 0 for _, seconds in stages(done))
    assert statuses[-2].phase == "Ready"  # the backend serves while it warms up


def test_each_stage_is_counted_once_for_the_histogram() -> None:
    statuses = rounds(
        snapshot(2, [pod()]),
        snapshot(12, [pod(scheduled=3, agent=10)]),
        snapshot(13, [pod(scheduled=3, agent=10)]),
        snapshot(50, [pod(scheduled=3, agent=10, agent_started=True, runtime=35)], runtimes={"b-1": SERVING}),
        snapshot(
            53,
            [pod(scheduled=3, agent=10, agent_started=True, runtime=35)],
            runtimes={"b-1": SERVING},
            warmed={"b-1": at(52)},
        ),
        snapshot(
            60,
            [pod(scheduled=3, agent=10, agent_started=True, runtime=35)],
            runtimes={"b-1": SERVING},
            warmed={"b-1": at(52)},
        ),
    )
    counted = [ended_stages(None, statuses[0].startup)] + [
        ended_stages(before.startup, after.startup) for before, after in itertools.pairwise(statuses)
    ]
    names = [name for each in counted for name, _ in each]
    assert sorted(names) == sorted(
        ["Scheduling", "PullingImage", "Downloading", "Starting", "Loading", "Warming"]
    )
    # All at once, when the replica became ready: each with its final duration.
    assert counted[4] == [
        ("Scheduling", 3),
        ("PullingImage", 7),
        ("Downloading", 25),
        ("Starting", 0),
        ("Loading", 15),
        ("Warming", 2),
    ]
    assert all(each == [] for index, each in enumerate(counted) if index != 4)


def test_a_status_the_kubelet_takes_back_opens_the_stage_again() -> None:
    """kwok marks every container running before the kubelet (here hack/podrunner.py) reports the
    truth; a runtime that restarts is not running either: the stage is not over."""
    everything_running = pod(scheduled=1, agent=1, agent_started=True, runtime=1)
    statuses = rounds(
        snapshot(2, [everything_running]),
        snapshot(3, [pod(scheduled=1, agent=2)]),
        snapshot(40, [pod(scheduled=1, agent=2, agent_started=True, runtime=35)], runtimes={"b-1": SERVING}),
    )
    assert [s.startup.summary if s.startup else None for s in statuses] == [
        "Loading",
        "Downloading",
        "Warming",
    ]
    assert stages(statuses[-1].startup)[:5] == [
        ("Scheduling", 1),
        ("PullingImage", 0),  # the agent ran by then: kwok's time stands
        ("Downloading", 34),
        ("Starting", 0),
        ("Loading", 5),
    ]


def test_marks_llmop_saw_survive_a_restart_and_later_rounds() -> None:
    """The Downloading mark is the round that saw it: a later round (or a restarted operator,
    which reads status back) must not move it."""
    first = rounds(
        snapshot(12, [pod(scheduled=3, agent=10)]),
        snapshot(30, [pod(scheduled=3, agent=10, agent_started=True)]),
    )
    later = rounds(
        snapshot(
            45,
            [pod(scheduled=3, agent=10, agent_started=True, runtime=44)],
            LLMBackendStatus.model_validate(first[-1].to_api()),
        )
    )
    assert stages(later[-1].startup)[:4] == [
        ("Scheduling", 3),
        ("PullingImage", 7),
        ("Downloading", 20),
        ("Starting", 14),
    ]


def test_ollama_starts_before_it_downloads_and_warming_loads_the_model() -> None:
    spec = {"runtime": "ollama", "models": [{"name": "tiny:latest"}]}
    meta = {"creationTimestamp": stamp(1), "labels": {"pod-template-hash": "o"}}
    running = {
        "phase": "Running",
        "podIP": "127.1.0.6",
        "conditions": [{"type": "PodScheduled", "status": "True", "lastTransitionTime": stamp(2)}],
        "containerStatuses": [
            {"name": "runtime", "started": True, "state": {"running": {"startedAt": stamp(9)}}}
        ],
    }
    ollama = pod_facts("o-1", meta, running)
    empty, listed = observation(ProbeState.SERVING), observation(ProbeState.SERVING, "tiny:latest")
    statuses = rounds(
        snapshot(10, [ollama], spec=spec, runtimes={"o-1": empty}, pulls_itself=True),
        snapshot(30, [ollama], spec=spec, runtimes={"o-1": listed}, pulls_itself=True),
        snapshot(
            34, [ollama], spec=spec, runtimes={"o-1": listed}, pulls_itself=True, warmed={"o-1": at(33)}
        ),
    )
    assert [s.startup.summary if s.startup else None for s in statuses] == ["Downloading", "Warming", None]
    assert stages(statuses[-1].startup) == [
        ("Scheduling", 2),
        ("PullingImage", 7),
        ("Starting", 1),
        ("Downloading", 20),
        ("Warming", 3),
    ]


def watched_until_ready() -> LLMBackendStatus:
    """A one-replica backend whose cold start llmop watched, ready (warmed) at T0+52."""
    whole = [pod(scheduled=3, agent=10, agent_started=True, runtime=35)]
    statuses = rounds(
        snapshot(12, [pod(scheduled=3, agent=10)]),
        snapshot(50, whole, runtimes={"b-1": SERVING}),
        snapshot(53, whole, runtimes={"b-1": SERVING}, warmed={"b-1": at(52)}),
    )
    return LLMBackendStatus.model_validate(statuses[-1].to_api())


def test_a_new_pod_template_starts_a_new_timeline_when_llmop_saw_the_spec_change() -> None:
    ready = watched_until_ready()
    # The spec changed at T0+100 (llmop saw generation 2 then); the new template's pod came at 101.
    rolled = rounds(
        snapshot(
            105,
            [pod("b-2", created=101, template="bbb", scheduled=102)],
            ready,
            generation=2,
            observing_since=at(100),
        ),
    )
    startup = rolled[-1].startup
    assert startup and startup.rollout == "bbb" and startup.applied_at == at(100)
    assert startup.replicas[0].pod == "b-2" and stages(startup)[0] == ("Scheduling", 2)
    assert startup.stage == "PullingImage"


def test_a_pod_made_after_the_rollout_was_ready_starts_at_its_creation() -> None:
    ready = watched_until_ready()
    replaced = rounds(
        snapshot(210, [pod("b-9", created=200, scheduled=205)], ready),
    )
    startup = replaced[-1].startup
    assert startup and startup.ready_at == at(52)  # the rollout's cold start stays as it was
    assert startup.replicas[0].pod == "b-9" and stages(startup)[0] == ("Scheduling", 5)


def test_a_rollout_that_served_before_llmop_looked_has_no_made_up_timeline() -> None:
    status = compute_backend_status(
        snapshot(500, [pod(scheduled=3, agent=10, agent_started=True, runtime=35)], runtimes={"b-1": SERVING})
    )
    assert status.phase == "Ready" and status.startup is None


def test_the_timeline_lists_a_bounded_number_of_replicas() -> None:
    many = [pod(f"b-{i:03}") for i in range(MAX_STARTUP_REPLICAS + 4)]
    spec = {"runtime": "llamacpp", "models": [{"name": MODEL}], "replicas": len(many)}
    startup = compute_backend_status(snapshot(2, many, spec=spec)).startup
    assert startup and len(startup.replicas) == MAX_STARTUP_REPLICAS and startup.replicas_omitted == 4


def test_an_external_backend_has_no_timeline() -> None:
    spec = {"external": {"url": "http://10.0.0.1:8080", "kind": "llamacpp"}}
    status = compute_backend_status(snapshot(2, [], spec=spec, runtimes={"external": SERVING}))
    assert status.startup is None


def test_times_a_kubelet_writes_oddly_never_break_the_status() -> None:
    """A time without a zone is read as UTC; one that is not a time is as if it were not written."""
    meta = {"creationTimestamp": "2026-11-21T12:00:01", "labels": {"pod-template-hash": "aaa"}}
    status = {
        "phase": "Pending",
        "conditions": [{"type": "PodScheduled", "status": "True", "lastTransitionTime": "yesterday"}],
        "initContainerStatuses": [{"name": "agent", "state": {"running": {"startedAt": 7}}}],
    }
    startup = compute_backend_status(snapshot(5, [pod_facts("b-1", meta, status)])).startup
    assert stages(startup) == [("Scheduling", 5), ("PullingImage", 0), ("Downloading", None)]

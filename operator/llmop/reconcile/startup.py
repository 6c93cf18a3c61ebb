"""The cold-start timeline: where the time between an apply and Ready went, per replica (pure).

Each replica goes through stages in a fixed order; a stage ends at a mark, the next begins there,
so the durations add up to the time from the apply to Ready. A mark comes from the pod where the
kubelet times it (PodScheduled, a container's startedAt), otherwise from the round in which llmop
first saw it (the agent's startup probe passed, the runtime answered, the warmup returned).
Marks are kept in status while what they mark holds, so an operator restart does not move them;
a replica's timeline is final once it is ready.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from llmop.models.startup import (
    MAX_STARTUP_REPLICAS,
    STAGE_NAMES,
    ReplicaStartup,
    Stage,
    StageName,
    StartupProgress,
    StartupStage,
    StartupStatus,
)

#: The Deployment controller's label naming the pod template a pod was made from.
TEMPLATE_LABEL = "pod-template-hash"


@dataclass(frozen=True)
class PodTimes:
    """The times the kubelet and the scheduler write on a pod."""

    created: datetime | None = None
    template: str | None = None
    scheduled_at: datetime | None = None  # PodScheduled's lastTransitionTime, once True
    first_started_at: datetime | None = None  # the earliest startedAt of any running container
    main_started_at: datetime | None = None  # the earliest startedAt of a running main container
    main_running: bool = False
    #: Every native sidecar passed its startup probe (llmop's agent: every model is on disk).
    sidecars_started: bool = False
    any_running: bool = False


def parse_timestamp(value: Any) -> datetime | None:
    """A Kubernetes timestamp, to the second; None for anything else."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00")).replace(microsecond=0)
    except ValueError:
        return None
    # Kubernetes writes UTC; a time without a zone must still compare with the others.
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def pod_times(meta: Any, status: Any) -> PodTimes:
    """PodTimes from a pod's metadata and status; what a kubelet leaves out stays None."""
    scheduled: dict[str, Any] = next(
        (c for c in status.get("conditions", []) if c.get("type") == "PodScheduled"), {}
    )
    sidecars = list(status.get("initContainerStatuses", []))
    mains = list(status.get("containerStatuses", []))

    def started(containers: list[Any]) -> list[datetime]:
        found = [parse_timestamp(c.get("state", {}).get("running", {}).get("startedAt")) for c in containers]
        return [time for time in found if time is not None]

    def running(containers: list[Any]) -> bool:
        return any("running" in c.get("state", {}) for c in containers)

    return PodTimes(
        created=parse_timestamp(meta.get("creationTimestamp")),
        template=(meta.get("labels") or {}).get(TEMPLATE_LABEL),
        scheduled_at=parse_timestamp(scheduled.get("lastTransitionTime"))
        if scheduled.get("status") == "True"
        else None,
        first_started_at=min(started(sidecars + mains), default=None),
        main_started_at=min(started(mains), default=None),
        main_running=running(mains),
        sidecars_started=bool(sidecars) and all(c.get("started") is True for c in sidecars),
        any_running=running(sidecars + mains),
    )


@dataclass(frozen=True)
class ReplicaFacts:
    """One pod as this round saw it."""

    name: str
    times: PodTimes
    scheduled: bool
    serving: bool  # its runtime's API answers
    models_present: bool  # its runtime lists every model of the spec
    warmed_at: datetime | None = None  # when llmop's warmup of it returned


@dataclass(frozen=True)
class StartupFacts:
    now: datetime
    #: When the backend was created and when llmop first saw its current generation.
    created: datetime | None
    generation_seen: datetime
    generation: int
    desired: int
    #: The runtime pulls its own models (Ollama): it starts before it downloads, and no agent waits.
    pulls_itself: bool
    warmup: bool
    previous: StartupStatus | None
    replicas: list[ReplicaFacts] = field(default_factory=list)
    download: StartupProgress | None = None


Mark = Callable[[StartupFacts, ReplicaFacts], datetime | None]


def _scheduled(facts: StartupFacts, pod: ReplicaFacts) -> datetime | None:
    return pod.times.scheduled_at or (facts.now if pod.scheduled else None)


def _image_pulled(facts: StartupFacts, pod: ReplicaFacts) -> datetime | None:
    return pod.times.first_started_at or (facts.now if pod.times.any_running else None)


def _downloaded_by_agent(facts: StartupFacts, pod: ReplicaFacts) -> datetime | None:
    # The kubelet starts the runtime only once the agent's startup probe passed: its start is the
    # latest the download can have ended.
    if pod.times.sidecars_started or pod.times.main_running:
        return min(facts.now, pod.times.main_started_at or facts.now)
    return None


def _runtime_started(facts: StartupFacts, pod: ReplicaFacts) -> datetime | None:
    return pod.times.main_started_at or (facts.now if pod.times.main_running else None)


def _serving(facts: StartupFacts, pod: ReplicaFacts) -> datetime | None:
    return facts.now if pod.serving else None


def _models_present(facts: StartupFacts, pod: ReplicaFacts) -> datetime | None:
    return facts.now if pod.serving and pod.models_present else None


def _warmed(facts: StartupFacts, pod: ReplicaFacts) -> datetime | None:
    return pod.warmed_at


def _order(facts: StartupFacts) -> list[tuple[StageName, Mark]]:
    """Each stage, with the mark that ends it, in the order this backend's replicas go through them."""
    if facts.pulls_itself:
        stages: list[tuple[StageName, Mark]] = [
            ("Scheduling", _scheduled),
            ("PullingImage", _image_pulled),
            ("Starting", _serving),
            ("Downloading", _models_present),
        ]
    else:
        stages = [
            ("Scheduling", _scheduled),
            ("PullingImage", _image_pulled),
            ("Downloading", _downloaded_by_agent),
            ("Starting", _runtime_started),
            ("Loading", _serving),
        ]
    return [*stages, ("Warming", _warmed)] if facts.warmup else stages


def _seconds(start: datetime, end: datetime) -> int:
    return int((end - start).total_seconds())


def _replica(
    facts: StartupFacts, pod: ReplicaFacts, start: datetime, old: ReplicaStartup | None
) -> ReplicaStartup:
    """The replica's stages from `start`: those that ended, then the open one. A replica that was
    ready keeps its timeline: a later restart is not part of its cold start."""
    if old is not None and old.stage == "Ready":
        return old
    ended = {stage.name: stage.end for stage in (old.stages if old else []) if stage.end}
    stages: list[StartupStage] = []
    begin = start
    for name, mark in _order(facts):
        seen = mark(facts, pod)
        # A mark stands while what it marks still holds: a container that restarted, or a status
        # the kubelet corrects (kwok's, written before the real one), opens the stage again.
        end = (ended.get(name) or seen) if seen is not None else None
        if end is None:
            stages.append(StartupStage(name=name, start=begin))
            progress = facts.download if name == "Downloading" else None
            return ReplicaStartup(pod=pod.name, stage=name, progress=progress, stages=stages)
        end = max(end, begin)  # clocks differ by a little: a stage never ends before it began
        stages.append(StartupStage(name=name, start=begin, end=end, seconds=_seconds(begin, end)))
        begin = end
    return ReplicaStartup(
        pod=pod.name, stage="Ready", stages=stages, ready_at=begin, seconds=_seconds(start, begin)
    )


def _current_rollout(replicas: Sequence[ReplicaFacts]) -> tuple[str | None, list[ReplicaFacts]]:
    """The newest pod template's hash (that of the pod made last) and its pods."""
    templated = [pod for pod in replicas if pod.times.template]
    if not templated:
        return None, []
    newest = max(templated, key=lambda pod: (pod.times.created or datetime.min.replace(tzinfo=UTC), pod.name))
    rollout = newest.times.template
    return rollout, [pod for pod in templated if pod.times.template == rollout]


def _applied_at(facts: StartupFacts, pods: list[ReplicaFacts]) -> datetime:
    """The first pods of a backend were asked for when it was created; a later template, when
    llmop saw the spec change that made it (never after its first pod was made)."""
    asked = facts.created if facts.generation <= 1 and facts.created else facts.generation_seen
    made = [pod.times.created for pod in pods if pod.times.created]
    return min([asked, *made]).replace(microsecond=0)


def _stage_rank(stage: str) -> int:
    ranks: dict[str, int] = {name: rank for rank, name in enumerate(STAGE_NAMES)}
    return ranks.get(stage, len(STAGE_NAMES))


def compute_startup(facts: StartupFacts) -> StartupStatus | None:
    """The timeline of the current rollout; the previous one while no pod of a template exists yet,
    None for a rollout whose replicas all served before llmop watched them start."""
    rollout, pods = _current_rollout(facts.replicas)
    previous = facts.previous
    if rollout is None:
        return previous
    same = previous is not None and previous.rollout == rollout
    applied_at = previous.applied_at if same and previous else _applied_at(facts, pods)
    before = {replica.pod: replica for replica in previous.replicas} if same and previous else {}
    rollout_ready = previous.ready_at if same and previous else None
    listed, unwatched = [], 0
    for pod in sorted(pods, key=lambda p: p.name):
        old = before.get(pod.name)
        # A pod made after the rollout was ready (a replacement, a scale-up) starts at its creation.
        later = (
            rollout_ready is not None and pod.times.created is not None and pod.times.created > rollout_ready
        )
        start = max(pod.times.created or applied_at, applied_at) if later else applied_at
        replica = _replica(facts, pod, start, old)
        if old is None and replica.stage in ("Warming", "Ready"):
            unwatched += 1  # it served before llmop looked: when its stages ended is not known
            continue
        listed.append(replica)
    if not listed:
        return previous if same else None
    return _rollout_status(facts, rollout, applied_at, rollout_ready, listed, unwatched)


def _rollout_status(
    facts: StartupFacts,
    rollout: str,
    applied_at: datetime,
    rollout_ready: datetime | None,
    listed: list[ReplicaStartup],
    unwatched: int,
) -> StartupStatus:
    ready = [replica.ready_at for replica in listed if replica.ready_at]
    if rollout_ready is None and facts.desired > 0 and len(ready) + unwatched >= facts.desired:
        rollout_ready = max(ready, default=facts.now)
    shown = listed[:MAX_STARTUP_REPLICAS]
    if rollout_ready is not None:
        stage: Stage = "Ready"
    elif len(listed) + unwatched < facts.desired:
        stage = "Scheduling"  # a replica asked for has no pod yet
    else:
        stage = min((replica.stage for replica in listed), key=_stage_rank)
    return StartupStatus(
        rollout=rollout,
        applied_at=applied_at,
        stage=stage,
        summary=None if rollout_ready else _summary(stage, listed),
        ready_at=rollout_ready,
        seconds=_seconds(applied_at, rollout_ready) if rollout_ready else None,
        replicas=shown,
        replicas_omitted=(len(listed) - len(shown)) or None,
    )


def _summary(stage: str, listed: list[ReplicaStartup]) -> str:
    percents = [
        r.progress.percent
        for r in listed
        if r.stage == stage and r.progress and r.progress.percent is not None
    ]
    return f"{stage} {min(percents)}%" if percents else stage


def ended_stages(before: StartupStatus | None, after: StartupStatus | None) -> list[tuple[str, int]]:
    """(stage, seconds) of every stage of each replica that became ready between two timelines:
    each stage is observed once, with its final duration."""
    if after is None:
        return []
    same = before is not None and before.rollout == after.rollout
    was_ready = {r.pod for r in (before.replicas if same and before else []) if r.stage == "Ready"}
    return [
        (stage.name, stage.seconds)
        for replica in after.replicas
        if replica.stage == "Ready" and replica.pod not in was_ready
        for stage in replica.stages
        if stage.seconds is not None
    ]


def download_progress(completed: int, totals: Sequence[int | None]) -> StartupProgress | None:
    """The bytes of every model's pull together; the total only once each pull knows its own."""
    if not totals:
        return None
    known = None if any(total is None for total in totals) else sum(t or 0 for t in totals)
    percent = min(100, completed * 100 // known) if known else None
    return StartupProgress(completed_bytes=completed, total_bytes=known, percent=percent)

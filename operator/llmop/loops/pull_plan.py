"""A pull's decisions, pure: where to pull, what to wait for, and the status each step writes.

Tested without a cluster; `model_puller` carries them out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from llmop.manifests import AGENT_CONTAINER, AGENT_PORT, RUNTIME_CONTAINER
from llmop.models.backend import LLMBackendSpec
from llmop.models.pull import ModelPullSpec, ModelPullStatus, PullPhase, ReplicaPull
from llmop.reconcile.backend_status import PodFacts
from llmop.reconcile.conditions import status_text, stored_now
from llmop.reconcile.pull_status import IN_FLIGHT_REASON, PullTracker, pull_conditions, waiting_phase
from llmop.runtimes.registry import managed_descriptor, serving_port
from llmop.sources import InvalidModelSource, parse_model_source

#: How often a finished pull looks for backend pods that came after it (in memory, no requests).
NEW_POD_CHECK_SECONDS = 5.0
#: How long a settled pull (failed, or with nothing to pull into) waits between looks.
SETTLED_SECONDS = 30.0
BACKEND_MISSING_SECONDS = 5.0
NO_PODS_SECONDS = 2.0


def pulls_itself(spec: LLMBackendSpec) -> bool:
    return managed_descriptor(spec).pulls_itself


def declared_by(backend: LLMBackendSpec, model: str) -> bool:
    """Whether the backend's spec.models names `model`, or the repo it is a file of: the agent
    beside vLLM and llama.cpp pulls nothing else (Ollama pulls whatever it is asked)."""
    if pulls_itself(backend):
        return True
    try:
        wanted = parse_model_source(model)
    except InvalidModelSource:
        return True  # the agent answers what is wrong with the name
    for declared in backend.models:
        try:
            if wanted.belongs_to(parse_model_source(declared.name)):
                return True
        except InvalidModelSource:
            continue
    return False


def pull_targets(spec: LLMBackendSpec, pods: list[PodFacts]) -> dict[str, str]:
    """Pod name -> base URL of the API that pulls into that pod: every pod whose pull API runs.

    Not only Running pods: the agent is a native sidecar whose startup probe passes once the
    model is on disk, and until then the kubelet reports the pod Pending (its getPhase counts a
    running sidecar that has not started as pending), so waiting for Running would wait forever.
    """
    pull_container = RUNTIME_CONTAINER if pulls_itself(spec) else AGENT_CONTAINER
    running = sorted(
        (
            p
            for p in pods
            if p.ip and not p.deleting and (p.phase == "Running" or pull_container in p.running)
        ),
        key=lambda p: p.name,
    )
    port = serving_port(spec) if pulls_itself(spec) else AGENT_PORT
    targets = {pod.name: f"http://{pod.ip}:{port}" for pod in running}
    if not pulls_itself(spec) and spec.storage is not None and targets:
        # Replicas share one claim: one download serves them all.
        first = next(iter(targets))
        return {first: targets[first]}
    return targets


def targets_without_the_model(
    spec: LLMBackendSpec, pods: list[PodFacts], status: ModelPullStatus
) -> dict[str, str]:
    """The pull targets that are not among the pods it succeeded on."""
    done = {replica.pod for replica in status.replicas or [] if replica.phase == "Succeeded"}
    return {pod: url for pod, url in pull_targets(spec, pods).items() if pod not in done}


def is_settled(status: ModelPullStatus, generation: int) -> bool:
    return status.observed_generation == generation and status.phase in ("Succeeded", "Failed")


def nothing_to_do(
    status: ModelPullStatus, known_backend: LLMBackendSpec | None, pods: list[PodFacts]
) -> bool:
    """A settled pull stays as it is: a failed one until its spec changes, a finished one until a
    pod that came after it (a rollout, a rescheduled pod, a scale-up) needs the model too."""
    if status.phase == "Failed":
        return True
    return known_backend is not None and not targets_without_the_model(known_backend, pods, status)


@dataclass(frozen=True)
class Plan:
    """What this round does: pull into `targets` (keeping the `kept` replicas), or write
    `status` if any and wait `wait` seconds."""

    start: ModelPullStatus
    targets: dict[str, str] = field(default_factory=dict)
    kept: list[ReplicaPull] = field(default_factory=list)
    status: ModelPullStatus | None = None
    wait: float | None = None


def plan_round(
    spec: ModelPullSpec,
    namespace: str,
    backend: LLMBackendSpec | None,
    pods: list[PodFacts],
    current: ModelPullStatus,
    generation: int,
) -> Plan:
    settled = is_settled(current, generation)
    start = (
        current if current.observed_generation == generation else ModelPullStatus()
    )  # a spec change starts over
    name = spec.backend_ref.name
    if settled and (backend is None or backend.external is not None):
        return Plan(start, wait=SETTLED_SECONDS)  # nothing to pull into; what was pulled stays
    if backend is None:
        message = f"LLMBackend {name!r} does not exist in {namespace}; the pull starts when it appears"
        return Plan(
            start,
            status=waiting_status(start, "BackendNotFound", message, generation),
            wait=BACKEND_MISSING_SECONDS,
        )
    if backend.external is not None:
        message = f"LLMBackend {name!r} is external: llmop cannot pull into a server it does not run"
        return Plan(
            start,
            status=settled_status(start, "Failed", "ExternalBackend", message, generation, stalled=True),
            wait=0,
        )
    if not declared_by(backend, spec.model):
        if settled:
            return Plan(start, wait=SETTLED_SECONDS)  # what was pulled stays; new pods get nothing
        message = (
            f"LLMBackend {name!r} does not declare {spec.model}: its agent pulls only the models in "
            "spec.models; add it there and the pull starts"
        )
        return Plan(
            start,
            status=waiting_status(start, "ModelNotDeclared", message, generation),
            wait=BACKEND_MISSING_SECONDS,
        )
    if settled:  # Succeeded: only the pods that came since
        targets = targets_without_the_model(backend, pods, start)
        if not targets:
            return Plan(start, wait=NEW_POD_CHECK_SECONDS)
        alive = {pod.name for pod in pods if not pod.deleting}
        kept = [r for r in start.replicas or [] if r.phase == "Succeeded" and r.pod in alive]
        return Plan(start.model_copy(update={"attempts": 0}), targets, kept)  # a new round, counted from 1
    targets = pull_targets(backend, pods)
    if not targets:
        message = f"waiting for a running pod of LLMBackend {name!r}"
        return Plan(
            start, status=waiting_status(start, "WaitingForPods", message, generation), wait=NO_PODS_SECONDS
        )
    return Plan(start, targets)


def waiting_status(current: ModelPullStatus, reason: str, message: str, generation: int) -> ModelPullStatus:
    phase = waiting_phase(current.phase)
    return current.model_copy(
        update={
            "observed_generation": generation,
            "phase": phase,
            "conditions": pull_conditions(
                phase, reason, message, generation, current.conditions, stored_now()
            ),
        }
    )


def settled_status(
    current: ModelPullStatus, phase: PullPhase, reason: str, message: str, generation: int, *, stalled: bool
) -> ModelPullStatus:
    return current.model_copy(
        update={
            "observed_generation": generation,
            "phase": phase,
            "last_error": status_text(message),
            "conditions": pull_conditions(
                phase, reason, message, generation, current.conditions, stored_now(), stalled
            ),
        }
    )


def pulling_status(
    current: ModelPullStatus, model: str, attempts: int, generation: int, started: datetime
) -> ModelPullStatus:
    message = f"pulling {model} (attempt {attempts})"
    return current.model_copy(
        update={
            "observed_generation": generation,
            "phase": "Pulling",
            "attempts": attempts,
            "started_at": started,
            "conditions": pull_conditions(
                "Pulling", IN_FLIGHT_REASON, message, generation, current.conditions, stored_now()
            ),
        }
    )


def succeeded_status(
    pulling: ModelPullStatus,
    tracker: PullTracker,
    kept: list[ReplicaPull],
    pulled: tuple[str | None, int | None],
    message: str,
) -> ModelPullStatus:
    digest, size = pulled
    generation = pulling.observed_generation or 0
    return pulling.model_copy(
        update={
            "phase": "Succeeded",
            "progress": tracker.progress(),
            "replicas": sorted([*kept, *tracker.replica_states()], key=lambda r: r.pod),
            "digest": digest and status_text(digest, 128),
            "size_bytes": size,
            "completed_at": stored_now(),
            "last_error": None,
            "conditions": pull_conditions(
                "Succeeded", "Pulled", message, generation, pulling.conditions, stored_now()
            ),
        }
    )


def failed_status(
    pulling: ModelPullStatus, tracker: PullTracker, phase: PullPhase, failure: str, message: str
) -> ModelPullStatus:
    """An attempt failed: Pulling again after a back-off, or Failed once the retries are used."""
    generation = pulling.observed_generation or 0
    conditions = pull_conditions(
        phase, "PullFailed", message, generation, pulling.conditions, stored_now(), stalled=phase == "Failed"
    )
    return pulling.model_copy(
        update={
            "phase": phase,
            "last_error": status_text(failure),
            "progress": tracker.progress(),
            "replicas": tracker.replica_states(),
            "conditions": conditions,
        }
    )

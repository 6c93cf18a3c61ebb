"""LLMBackend status from an observed snapshot: pure, so it is tested without a cluster.

The snapshot holds what llmop saw (pods from the index, what each runtime answered, the state
of the backend's ModelPulls); the result is the whole status. The caller writes it only when it
differs from the stored one, so an unchanged world produces no writes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from llmop.models.backend import (
    BackendCapabilities,
    BackendPhase,
    LLMBackendSpec,
    LLMBackendStatus,
    ObservedModel,
    PodState,
    ReplicaCounts,
)
from llmop.models.base import Condition
from llmop.models.duration import format_duration, parse_duration
from llmop.reconcile.conditions import carry_transition_times, condition, find
from llmop.runtimes.results import ModelInfo, ProbeResult, ProbeState, RunningModel, RuntimeCapabilities

PodPhase = Literal["Pending", "Starting", "Loading", "Serving", "Failing", "Refused"]
EXTERNAL = "external"
_SUMMARY_LIMIT = 60


@dataclass(frozen=True)
class PodFacts:
    """What the pod object says (from the operator's in-memory pod index)."""

    name: str
    ip: str | None = None
    phase: str = "Pending"
    deleting: bool = False
    unschedulable: str | None = None  # the scheduler's message while PodScheduled=False
    scheduled: bool = True  # PodScheduled=True: placed on a node (a pod just made is not yet)
    waiting: str | None = None  # a container's waiting reason and message, e.g. ImagePullBackOff
    #: Containers (native sidecars included) in state running. The kubelet keeps a pod Pending
    #: until its sidecars' startup probes pass, and the agent's passes only once the model is on
    #: disk: its pull API answers in a pod that is still Pending.
    running: tuple[str, ...] = ()


def pod_facts(name: str, meta: Any, status: Any) -> PodFacts:
    """PodFacts from a pod's metadata and status, as the kubelet reports them."""
    conditions = {c.get("type"): c for c in status.get("conditions", [])}
    scheduled = conditions.get("PodScheduled", {})
    unschedulable = scheduled.get("message") if scheduled.get("status") == "False" else None
    waiting = None
    containers = [*status.get("initContainerStatuses", []), *status.get("containerStatuses", [])]
    for container in containers:
        state = container.get("state", {}).get("waiting")
        if state:
            waiting = f"{container.get('name')}: {state.get('reason', 'Waiting')} {state.get('message', '')}".strip()
            break
    return PodFacts(
        name=name,
        ip=status.get("podIP"),
        phase=status.get("phase", "Pending"),
        deleting=meta.get("deletionTimestamp") is not None,
        unschedulable=unschedulable,
        scheduled=scheduled.get("status") == "True",
        waiting=waiting,
        running=tuple(c.get("name", "") for c in containers if "running" in c.get("state", {})),
    )


@dataclass(frozen=True)
class RuntimeObservation:
    """What one runtime answered during this round of probes."""

    probe: ProbeResult
    models: tuple[ModelInfo, ...] = ()
    #: None: the runtime's API cannot tell which models are loaded (then status leaves it out).
    running: tuple[RunningModel, ...] | None = None
    capabilities: RuntimeCapabilities | None = None


@dataclass(frozen=True)
class PullFacts:
    phase: str | None = None
    summary: str | None = None
    error: str | None = None


@dataclass
class BackendSnapshot:
    generation: int
    spec: LLMBackendSpec
    endpoint: str
    openai_base_url: str
    now: datetime
    observing_since: datetime
    previous: LLMBackendStatus
    pods: list[PodFacts] = field(default_factory=list)
    runtimes: dict[str, RuntimeObservation] = field(default_factory=dict)
    pulls: dict[str, PullFacts] = field(default_factory=dict)
    normalize: Callable[[str], str] = str
    invalid_spec: str | None = None

    @property
    def external(self) -> bool:
        return self.spec.external is not None


def _pod_state(
    pod: PodFacts, seen: RuntimeObservation | None, before: PodState | None
) -> tuple[PodPhase, str]:
    if pod.unschedulable:
        return "Pending", pod.unschedulable
    if pod.phase != "Running" or not pod.ip:
        return "Starting", pod.waiting or f"pod is {pod.phase}"
    if seen is None:
        return "Starting", "waiting for the first probe"
    if seen.probe.serving:
        return "Serving", ""
    if seen.probe.state is ProbeState.UNAUTHORIZED:
        return "Refused", seen.probe.reason
    # A pod that served before and stopped answering has failed, not started slowly.
    if before is not None and before.phase in ("Serving", "Failing"):
        return "Failing", seen.probe.reason
    if seen.probe.state is ProbeState.LOADING:
        return "Loading", seen.probe.reason
    return "Starting", seen.probe.reason


def _observed_models(snapshot: BackendSnapshot, serving: list[str]) -> list[ObservedModel]:
    models: dict[str, ObservedModel] = {}
    for key in serving:
        seen = snapshot.runtimes[key]
        running = {snapshot.normalize(m.name): m for m in seen.running or ()}
        for info in seen.models:
            models.setdefault(info.name, _observed_model(snapshot, info, running, seen.running is not None))
    return sorted(models.values(), key=lambda m: m.name)


def _observed_model(
    snapshot: BackendSnapshot, info: ModelInfo, running: dict[str, RunningModel], knows_running: bool
) -> ObservedModel:
    in_memory = running.get(snapshot.normalize(info.name))
    loaded = info.loaded if info.loaded is not None else (in_memory is not None if knows_running else None)
    # A loaded model runs with the context it was loaded with (Ollama's /api/ps), whatever its
    # Modelfile or training says.
    context = (in_memory.context_length if in_memory else None) or info.context_length
    return ObservedModel(
        name=info.name,
        digest=info.digest,
        size_bytes=info.size_bytes,
        modified_at=info.modified_at,
        context_length=context,
        trained_context_length=info.trained_context_length,
        capabilities=sorted(str(c) for c in info.capabilities),
        loaded=loaded,
        family=info.family,
        parameter_size=info.parameter_size,
        quantization=info.quantization,
    )


def _capabilities(
    snapshot: BackendSnapshot, serving: list[str], models: list[ObservedModel]
) -> BackendCapabilities:
    found = [caps for key in serving if (caps := snapshot.runtimes[key].capabilities) is not None]
    runtime = found[0] if found else RuntimeCapabilities()
    model_caps = {cap for model in models for cap in model.capabilities}
    return BackendCapabilities(
        chat=runtime.chat or "chat" in model_caps,
        completions=runtime.completions or "completion" in model_caps,
        embeddings=runtime.embeddings or "embeddings" in model_caps,
        streaming=runtime.streaming,
        tools=runtime.tools or "tools" in model_caps,
    )


def _summary(names: list[str]) -> str:
    text = ",".join(names)
    if len(text) <= _SUMMARY_LIMIT:
        return text
    shown: list[str] = []
    for name in names:
        if len(",".join([*shown, name])) > _SUMMARY_LIMIT - 4:
            break
        shown.append(name)
    return f"{','.join(shown)} +{len(names) - len(shown)}"


def compute_backend_status(snapshot: BackendSnapshot) -> LLMBackendStatus:
    spec, previous, gen = snapshot.spec, snapshot.previous, snapshot.generation
    before = {pod.name: pod for pod in previous.pods or []}
    if snapshot.external and previous.phase in ("Ready", "Degraded"):
        # An external server has no pod in status; its last phase tells whether it served before.
        before[EXTERNAL] = PodState(name=EXTERNAL, phase="Serving")

    pod_states: list[PodState] = []
    phases: dict[str, tuple[PodPhase, str]] = {}
    units = (
        [PodFacts(name=EXTERNAL, ip=snapshot.endpoint, phase="Running")]
        if snapshot.external
        else [pod for pod in snapshot.pods if not pod.deleting]
    )
    for pod in sorted(units, key=lambda p: p.name):
        seen = snapshot.runtimes.get(pod.name)
        pod_phase, pod_message = _pod_state(pod, seen, before.get(pod.name))
        phases[pod.name] = (pod_phase, pod_message)
        if snapshot.external:
            continue
        old = before.get(pod.name)
        changed = old is None or old.phase != pod_phase
        pod_states.append(
            PodState(
                name=pod.name,
                ready=pod_phase == "Serving",
                ip=pod.ip,
                phase=pod_phase,
                models=sorted(m.name for m in seen.models) if seen and pod_phase == "Serving" else [],
                message=pod_message or None,
                last_probe=snapshot.now if changed or old is None else old.last_probe,
            )
        )

    serving = [name for name, (pod_phase, _) in phases.items() if pod_phase == "Serving"]
    desired = 1 if snapshot.external else spec.replicas
    models = _observed_models(snapshot, serving)
    present = {snapshot.normalize(m.name) for m in models}
    missing = [m.name for m in spec.models if snapshot.normalize(m.name) not in present]
    unschedulable = [text for pod_phase, text in phases.values() if pod_phase == "Pending"]
    failing = [text for pod_phase, text in phases.values() if pod_phase == "Failing"]
    refused = [text for pod_phase, text in phases.values() if pod_phase == "Refused"]
    waiting = [text for pod_phase, text in phases.values() if pod_phase in ("Starting", "Loading") and text]
    failed_pulls = {name: pull for name, pull in snapshot.pulls.items() if pull.phase == "Failed"}

    phase: BackendPhase
    reason: str
    message: str
    if snapshot.invalid_spec:
        phase, reason, message = "Failed", "InvalidSpec", snapshot.invalid_spec
    elif desired == 0:
        phase, reason, message = "Pending", "ScaledToZero", "replicas is 0: nothing serves"
    elif len(serving) >= desired and not missing:
        phase, reason = "Ready", "RuntimeServing"
        message = f"{len(serving)}/{desired} replicas serving " + (
            f"{len(models)} model{'s' if len(models) != 1 else ''}" if models else "(no models listed)"
        )
    elif refused:
        # A key the runtime refuses stays refused however long llmop waits: say so at once.
        phase, reason, message = "Failed", "Unauthorized", refused[0]
    elif failing:
        phase, reason, message = "Degraded", "RuntimeUnavailable", failing[0]
    elif unschedulable:
        phase, reason, message = "Pending", "Unschedulable", unschedulable[0]
    elif failed_pulls:
        name, pull = next(iter(failed_pulls.items()))
        phase, reason, message = (
            "Degraded",
            "PullFailed",
            f"pulling {name} failed: {pull.error or pull.summary}",
        )
    elif serving and missing:
        phase, reason = "Loading", "ModelsMissing"
        progress = [
            f"{name} {snapshot.pulls[name].summary}"
            for name in missing
            if name in snapshot.pulls and snapshot.pulls[name].summary
        ]
        message = f"waiting for model{'s' if len(missing) > 1 else ''} {', '.join(missing)}" + (
            f" ({'; '.join(progress)})" if progress else ""
        )
    elif not snapshot.external and not any(
        pod.ip and (pod.phase == "Running" or pod.running) for pod in units
    ):
        # A pod whose agent runs is Pending to the kubelet until the model is in place: it has
        # started, and the pull below is what it waits for.
        phase, reason = "Deploying", "PodsStarting"
        message = waiting[0] if waiting else f"waiting for {desired} pod{'s' if desired > 1 else ''} to start"
    elif pulling := [
        name for name in missing if snapshot.pulls.get(name, PullFacts()).phase in ("Pending", "Pulling")
    ]:
        # vLLM and llama.cpp start only once their model is complete: the pull is the cold start.
        phase, reason = "Loading", "PullingModels"
        message = "pulling " + "; ".join(
            f"{name} {snapshot.pulls[name].summary or ''}".strip() for name in pulling
        )
    else:
        loading = any(pod_phase == "Loading" for pod_phase, _ in phases.values())
        phase = "Loading"
        reason = "RuntimeLoading" if loading else "RuntimeStarting"
        message = waiting[0] if waiting else "waiting for the runtime to answer"
        if serving:
            message = f"{len(serving)}/{desired} replicas serving; {message}"

    ready = phase == "Ready"
    stalled_reason, stalled_message = "", ""
    if phase == "Failed":
        stalled_reason, stalled_message = reason, message
    elif failed_pulls and not ready:
        stalled_reason, stalled_message = "PullFailed", message
    elif not ready and desired > 0:
        timeout = parse_duration(spec.startup.timeout)
        old_ready = find(previous.conditions, "Ready")
        since = snapshot.observing_since
        if old_ready and old_ready.status == "False" and old_ready.last_transition_time:
            # Stored to the second, cut down: the flip came up to a second later than it says,
            # and the budget must not end early.
            since = max(since, old_ready.last_transition_time + timedelta(seconds=1))
        if (snapshot.now - since).total_seconds() >= timeout:
            stalled_reason = "StartupTimeout"
            stalled_message = f"not serving after {format_duration(timeout)} (startup.timeout): {message}"
    stalled = bool(stalled_reason)

    conditions: list[Condition] = [
        condition("Ready", ready, reason, message, gen),
        condition(
            "Reconciling",
            not ready and not stalled and desired > 0,
            reason if not ready else "Reconciled",
            message if not ready and not stalled else "",
            gen,
        ),
        condition("Stalled", stalled, stalled_reason or "NotStalled", stalled_message, gen),
    ]
    if not snapshot.external:
        if unschedulable:
            gpu = spec.gpu.resource_name
            scheduled_reason = "InsufficientGPU" if gpu in unschedulable[0] else "Unschedulable"
            conditions.append(condition("Scheduled", False, scheduled_reason, unschedulable[0], gen))
        elif units and all(pod.scheduled for pod in units):
            # Only once the scheduler has placed every pod: a pod it has not decided on yet may
            # still turn out unschedulable.
            conditions.append(
                condition("Scheduled", True, "PodsScheduled", "all pods are placed on nodes", gen)
            )

    last_error = None
    if not ready:
        last_error = stalled_message or (message if phase in ("Degraded", "Failed", "Pending") else None)
        if (
            last_error is None
            and waiting
            and any(
                seen.probe.state in (ProbeState.ERROR, ProbeState.UNAUTHORIZED, ProbeState.TIMEOUT)
                for seen in snapshot.runtimes.values()
            )
        ):
            last_error = waiting[0]

    return LLMBackendStatus(
        observed_generation=gen,
        phase=phase,
        runtime=spec.runtime_kind,
        endpoint=snapshot.endpoint,
        openai_base_url=snapshot.openai_base_url,
        replicas=ReplicaCounts(desired=desired, ready=len(serving), summary=f"{len(serving)}/{desired}"),
        models=models,
        models_summary=_summary([m.name for m in models]) or None,
        capabilities=_capabilities(snapshot, serving, models) if serving else None,
        pods=pod_states or None,
        last_error=last_error,
        conditions=carry_transition_times(conditions, previous.conditions, snapshot.now),
    )

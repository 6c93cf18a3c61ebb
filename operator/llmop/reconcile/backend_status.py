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
    GPU_MEMORY_LABEL,
    GPU_PRODUCT_LABEL,
    MAX_POD_MODELS,
    MAX_STATUS_MODELS,
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
from llmop.models.startup import StartupStatus
from llmop.reconcile.autoscale import AutoscaleDecision
from llmop.reconcile.conditions import carry_transition_times, condition, find, status_text
from llmop.reconcile.defaults_status import Defaults, defaults_status
from llmop.reconcile.fits import FitsFacts, NodeGpus, fits_condition, loaded_models, plausible_bytes
from llmop.reconcile.startup import (
    PodTimes,
    ReplicaFacts,
    StartupFacts,
    compute_startup,
    download_progress,
    pod_times,
)
from llmop.runtimes.results import ModelInfo, ProbeResult, ProbeState, RunningModel, RuntimeCapabilities

PodPhase = Literal["Pending", "Starting", "Loading", "Serving", "Failing", "Refused"]
EXTERNAL = "external"
_SUMMARY_LIMIT = 60
#: A runtime names its models as it likes: what status shows of a name or a figure is cut here.
_NAME_CHARS = 256
_FIGURE_CHARS = 128


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
    node: str | None = None  # spec.nodeName: where the pod's GPUs are
    times: PodTimes = field(default_factory=PodTimes)  # for the cold-start timeline
    #: The pod's Ready condition: what a ReplicaSet goes by when it picks pods to remove (a pod
    #: not Ready goes first, whatever its deletion cost).
    ready: bool = False


def pod_facts(name: str, meta: Any, status: Any, node: str | None = None) -> PodFacts:
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
        node=node if isinstance(node, str) and node else None,
        times=pod_times(meta, status),
        ready=conditions.get("Ready", {}).get("status") == "True",
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
    #: The model's bytes on one pod, as the source announced them or the runtime listed them.
    size_bytes: int | None = None
    completed_bytes: int = 0
    total_bytes: int | None = None


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
    #: Why the ensure handler applied nothing (InvalidSpec, NameConflict): (condition reason, message).
    apply_problem: tuple[str, str] | None = None
    #: A Secret the spec names that llmop will not use: (condition reason, message).
    secret_problem: tuple[str, str] | None = None
    #: The nodes the pods are placed on, with their GPUs' memory (only for a backend with GPUs).
    nodes: dict[str, NodeGpus] = field(default_factory=dict)
    #: The defaults the pods were built with and llmop's current ones; None until ensured.
    defaults: Defaults | None = None
    #: For the cold-start timeline: when the backend was made, whether its runtime pulls its own
    #: models (no agent), and when llmop's warmup of each pod returned.
    created: datetime | None = None
    pulls_itself: bool = False
    warmed: dict[str, datetime] = field(default_factory=dict)
    #: The pods' label selector as a string (status.selector, read by the scale subresource).
    pod_selector: str | None = None
    #: What spec.autoscaling decided this round (None without it): the replicas and leaving pods.
    autoscale: AutoscaleDecision | None = None
    #: Why a backend on a ModelCache deploys nothing yet: (condition reason, message).
    cache_wait: tuple[str, str] | None = None
    #: The sizes of the backend's models as its ModelCache knows them.
    cached_sizes: dict[str, int] = field(default_factory=dict)

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
            if info.name not in models:  # each replica lists the same models: build each once
                models[info.name] = _observed_model(snapshot, info, running, seen.running is not None)
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


def unobservable_status(
    previous: LLMBackendStatus, generation: int, message: str, now: datetime
) -> LLMBackendStatus:
    """The stored status, with why llmop could not observe the backend: Failed and Stalled
    (reason ObserveFailed) until a round succeeds again; the rest as last observed."""
    failed = [
        condition("Ready", False, "ObserveFailed", message, generation),
        condition("Reconciling", False, "ObserveFailed", "", generation),
        condition("Stalled", True, "ObserveFailed", message, generation),
    ]
    others = [c for c in previous.conditions or [] if c.type not in ("Ready", "Reconciling", "Stalled")]
    return previous.model_copy(
        update={
            "observed_generation": generation,
            "phase": "Failed",
            "last_error": status_text(message),
            "conditions": carry_transition_times([*failed, *others], previous.conditions, now),
        }
    )


def _shown_models(snapshot: BackendSnapshot, models: list[ObservedModel]) -> tuple[list[ObservedModel], int]:
    """At most MAX_STATUS_MODELS models, those of the spec first, names and figures cut short;
    and how many were left out."""
    wanted = {snapshot.normalize(m.name) for m in snapshot.spec.models}
    ordered = sorted(models, key=lambda m: snapshot.normalize(m.name) not in wanted)
    shown = [_cut_model(model) for model in ordered[:MAX_STATUS_MODELS]]
    return sorted(shown, key=lambda m: m.name), max(0, len(models) - MAX_STATUS_MODELS)


def _cut_model(model: ObservedModel) -> ObservedModel:
    def cut(text: str | None, limit: int = _FIGURE_CHARS) -> str | None:
        return None if text is None else status_text(text, limit)

    return model.model_copy(
        update={
            "name": cut(model.name, _NAME_CHARS),
            "digest": cut(model.digest),
            "family": cut(model.family),
            "parameter_size": cut(model.parameter_size),
            "quantization": cut(model.quantization),
        }
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


@dataclass(frozen=True)
class _Seen:
    """Each unit's state (a pod, or the external server) and what the whole backend adds up to."""

    pod_states: list[PodState]
    phases: dict[str, tuple[PodPhase, str]]
    units: list[PodFacts]
    models: list[ObservedModel]
    missing: list[str]

    def texts(self, *phases: PodPhase) -> list[str]:
        return [text for pod_phase, text in self.phases.values() if pod_phase in phases]

    @property
    def waiting(self) -> list[str]:
        """What the starting and loading units said, where they said something."""
        return [text for text in self.texts("Starting", "Loading") if text]

    @property
    def serving(self) -> list[str]:
        return [name for name, (pod_phase, _) in self.phases.items() if pod_phase == "Serving"]


def compute_backend_status(snapshot: BackendSnapshot) -> LLMBackendStatus:
    spec, gen = snapshot.spec, snapshot.generation
    seen = _see(snapshot)
    desired = _desired(snapshot)
    phase, reason, message = _phase(snapshot, seen, desired)
    # Idle is ready too: kubectl wait and Argo CD see a backend at rest, the next request wakes it.
    ready = phase in ("Ready", "Idle")
    stalled_reason, stalled_message = _stalled(snapshot, phase, reason, message, desired)
    stalled = bool(stalled_reason)
    images, defaults_current = defaults_status(snapshot.defaults, snapshot.previous, gen)
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
        *_scheduled(snapshot, seen),
        *_fits(snapshot, seen),
        *defaults_current,
    ]
    serving = seen.serving
    shown, omitted = _shown_models(snapshot, seen.models)
    return LLMBackendStatus(
        observed_generation=gen,
        phase=phase,
        runtime=spec.runtime_kind,
        endpoint=status_text(snapshot.endpoint),
        openai_base_url=status_text(snapshot.openai_base_url),
        replicas=ReplicaCounts(desired=desired, ready=len(serving), summary=f"{len(serving)}/{desired}"),
        autoscaling=snapshot.autoscale.status if snapshot.autoscale else None,
        # An autoscaler finds no pods of an external server: an empty selector tells it so.
        selector=None if snapshot.external else snapshot.pod_selector,
        models=shown,
        models_omitted=omitted or None,
        models_summary=status_text(_summary([m.name for m in seen.models]), _NAME_CHARS) or None,
        capabilities=_capabilities(snapshot, serving, seen.models) if serving else None,
        pods=seen.pod_states or None,
        images=images,
        startup=None if snapshot.external else _startup(snapshot, seen, desired),
        last_error=None if ready else _last_error(snapshot, seen, phase, message, stalled_message),
        conditions=carry_transition_times(conditions, snapshot.previous.conditions, snapshot.now),
    )


def _desired(snapshot: BackendSnapshot) -> int:
    if snapshot.external:
        return 1
    if snapshot.autoscale is not None:
        return snapshot.autoscale.replicas
    return snapshot.spec.replicas


def _see(snapshot: BackendSnapshot) -> _Seen:
    """Each pod's runtime state (or the external server's), the models they serve, those missing."""
    previous = snapshot.previous
    before = {pod.name: pod for pod in previous.pods or []}
    if snapshot.external and previous.phase in ("Ready", "Degraded"):
        # An external server has no pod in status; its last phase tells whether it served before.
        before[EXTERNAL] = PodState(name=EXTERNAL, phase="Serving")
    units = (
        [PodFacts(name=EXTERNAL, ip=snapshot.endpoint, phase="Running")]
        if snapshot.external
        else [pod for pod in snapshot.pods if not pod.deleting]
    )
    pod_states: list[PodState] = []
    phases: dict[str, tuple[PodPhase, str]] = {}
    for pod in sorted(units, key=lambda p: p.name):
        seen = snapshot.runtimes.get(pod.name)
        pod_phase, text = _pod_state(pod, seen, before.get(pod.name))
        phases[pod.name] = (
            pod_phase,
            _with_gpu_choice(snapshot.spec, text) if pod_phase == "Pending" else text,
        )
        if not snapshot.external:
            pod_states.append(_pod_status(snapshot, pod, seen, phases[pod.name], before.get(pod.name)))
    serving = [name for name, (pod_phase, _) in phases.items() if pod_phase == "Serving"]
    models = _observed_models(snapshot, serving)
    present = {snapshot.normalize(m.name) for m in models}
    missing = [name for name in _served_by_spec(snapshot.spec) if snapshot.normalize(name) not in present]
    return _Seen(pod_states, phases, units, models, missing)


def _served_by_spec(spec: LLMBackendSpec) -> list[str]:
    """The models the backend is Ready only when serving: all of an external server's and of
    Ollama's, the first of vLLM's and llama.cpp's (they serve that one; the others are on their
    volume for a restart with another first model, and must be listed for their agent to pull
    them)."""
    names = [model.name for model in spec.models]
    return names[:1] if spec.runtime in ("vllm", "llamacpp") else names


def _startup(snapshot: BackendSnapshot, seen: _Seen, desired: int) -> StartupStatus | None:
    """The cold-start timeline (llmop.reconcile.startup) from what this round saw of each pod."""
    wanted = {snapshot.normalize(m.name) for m in snapshot.spec.models}
    replicas = []
    for pod in seen.units:
        listed = (
            {snapshot.normalize(m.name) for m in snapshot.runtimes[pod.name].models}
            if pod.name in snapshot.runtimes
            else set()
        )
        serving = seen.phases[pod.name][0] == "Serving"
        replicas.append(
            ReplicaFacts(
                pod.name, pod.times, pod.scheduled, serving, wanted <= listed, snapshot.warmed.get(pod.name)
            )
        )
    pulls = [snapshot.pulls[m.name] for m in snapshot.spec.models if m.name in snapshot.pulls]
    facts = StartupFacts(
        now=snapshot.now,
        created=snapshot.created,
        generation_seen=snapshot.observing_since,
        generation=snapshot.generation,
        desired=desired,
        pulls_itself=snapshot.pulls_itself,
        warmup=snapshot.spec.warmup.enabled and bool(snapshot.spec.models),
        previous=snapshot.previous.startup,
        replicas=replicas,
        download=download_progress(sum(p.completed_bytes for p in pulls), [p.total_bytes for p in pulls]),
    )
    return compute_startup(facts)


def _with_gpu_choice(spec: LLMBackendSpec, unschedulable: str) -> str:
    """The scheduler's message, with the GPUs the spec chooses where it does not name them: it
    speaks of "node affinity", not of the product no node has."""
    wanted = []
    if spec.gpu.product and not any(product in unschedulable for product in spec.gpu.product):
        wanted.append(f"gpu.product {', '.join(spec.gpu.product)} ({GPU_PRODUCT_LABEL})")
    if spec.gpu.min_memory and spec.gpu.min_memory not in unschedulable:
        wanted.append(f"gpu.minMemory {spec.gpu.min_memory} ({GPU_MEMORY_LABEL})")
    if not wanted:
        return unschedulable
    # First, so that a long message cut to fit in status still names them.
    return f"the backend asks for {' and '.join(wanted)}; the scheduler says: {unschedulable}"


def _pod_status(
    snapshot: BackendSnapshot,
    pod: PodFacts,
    seen: RuntimeObservation | None,
    state: tuple[PodPhase, str],
    old: PodState | None,
) -> PodState:
    pod_phase, pod_message = state
    changed = old is None or old.phase != pod_phase
    leaving = snapshot.autoscale is not None and pod.name in snapshot.autoscale.draining
    return PodState(
        name=pod.name,
        ready=pod_phase == "Serving",
        ip=pod.ip,
        phase=pod_phase,
        models=_pod_models(seen) if seen and pod_phase == "Serving" else [],
        message=status_text(pod_message) if pod_message else None,
        last_probe=snapshot.now if changed or old is None else old.last_probe,
        draining=True if leaving else None,
    )


def _pod_models(seen: RuntimeObservation) -> list[str]:
    names = sorted(m.name for m in seen.models)[:MAX_POD_MODELS]
    return [status_text(name, _NAME_CHARS) for name in names]


def _phase(snapshot: BackendSnapshot, seen: _Seen, desired: int) -> tuple[BackendPhase, str, str]:
    """The backend's phase, with the reason and message of its Ready condition."""
    serving, missing = seen.serving, seen.missing
    failed_pulls = {name: pull for name, pull in snapshot.pulls.items() if pull.phase == "Failed"}
    if snapshot.secret_problem:
        reason, message = snapshot.secret_problem
        return "Failed", reason, message
    if snapshot.apply_problem:
        reason, message = snapshot.apply_problem
        return "Failed", reason, message
    if desired == 0 and snapshot.autoscale is not None:
        return "Idle", "ScaledToZero", snapshot.autoscale.status.message
    if snapshot.cache_wait:
        reason, message = snapshot.cache_wait
        return "Pending", reason, message
    if desired == 0:
        return "Pending", "ScaledToZero", "replicas is 0: nothing serves"
    if denied := [o.probe.reason for o in snapshot.runtimes.values() if o.probe.state is ProbeState.DENIED]:
        # The address is one llmop never connects to: no request was sent, waiting changes nothing.
        return "Failed", "TargetRefused", denied[0]
    # An autoscaled backend that serves is Ready while more replicas start: scaling up is not a fault.
    enough = min(desired, 1) if snapshot.autoscale is not None else desired
    if len(serving) >= enough and not missing:
        count = len(seen.models)
        served = f"{count} model{'s' if count != 1 else ''}" if count else "(no models listed)"
        return "Ready", "RuntimeServing", f"{len(serving)}/{desired} replicas serving {served}"
    if refused := seen.texts("Refused"):
        # A key the runtime refuses stays refused however long llmop waits: say so at once.
        return "Failed", "Unauthorized", refused[0]
    if failing := seen.texts("Failing"):
        return "Degraded", "RuntimeUnavailable", failing[0]
    if unschedulable := seen.texts("Pending"):
        return "Pending", "Unschedulable", unschedulable[0]
    if failed_pulls:
        name, pull = next(iter(failed_pulls.items()))
        return "Degraded", "PullFailed", f"pulling {name} failed: {pull.error or pull.summary}"
    return _waiting_phase(snapshot, seen, desired)


def _waiting_phase(snapshot: BackendSnapshot, seen: _Seen, desired: int) -> tuple[BackendPhase, str, str]:
    """Not Ready and nothing failed: what the backend waits for."""
    serving, missing = seen.serving, seen.missing
    waiting = seen.waiting
    if serving and missing:
        progress = [
            f"{name} {snapshot.pulls[name].summary}"
            for name in missing
            if name in snapshot.pulls and snapshot.pulls[name].summary
        ]
        message = f"waiting for model{'s' if len(missing) > 1 else ''} {', '.join(missing)}" + (
            f" ({'; '.join(progress)})" if progress else ""
        )
        return "Loading", "ModelsMissing", message
    if not snapshot.external and not any(
        pod.ip and (pod.phase == "Running" or pod.running) for pod in seen.units
    ):
        # A pod whose agent runs is Pending to the kubelet until the model is in place: it has
        # started, and the pull below is what it waits for.
        message = waiting[0] if waiting else f"waiting for {desired} pod{'s' if desired > 1 else ''} to start"
        return "Deploying", "PodsStarting", message
    pulling = [
        name for name in missing if snapshot.pulls.get(name, PullFacts()).phase in ("Pending", "Pulling")
    ]
    if pulling:
        # vLLM and llama.cpp start only once their model is complete: the pull is the cold start.
        message = "pulling " + "; ".join(
            f"{name} {snapshot.pulls[name].summary or ''}".strip() for name in pulling
        )
        return "Loading", "PullingModels", message
    loading = any(pod_phase == "Loading" for pod_phase, _ in seen.phases.values())
    message = waiting[0] if waiting else "waiting for the runtime to answer"
    if serving:
        message = f"{len(serving)}/{desired} replicas serving; {message}"
    return "Loading", "RuntimeLoading" if loading else "RuntimeStarting", message


def _stalled(
    snapshot: BackendSnapshot, phase: BackendPhase, reason: str, message: str, desired: int
) -> tuple[str, str]:
    """Why llmop gives up until something changes (Stalled=True), or ("", "")."""
    if phase == "Failed":
        return reason, message
    if phase in ("Ready", "Idle") or snapshot.cache_wait:  # a cache fills as long as its models take
        return "", ""
    if any(pull.phase == "Failed" for pull in snapshot.pulls.values()):
        return "PullFailed", message
    if desired == 0:
        return "", ""
    timeout = parse_duration(snapshot.spec.startup.timeout)
    old_ready = find(snapshot.previous.conditions, "Ready")
    since = snapshot.observing_since
    if old_ready and old_ready.status == "False" and old_ready.last_transition_time:
        # Stored to the second, cut down: the flip came up to a second later than it says,
        # and the budget must not end early.
        since = max(since, old_ready.last_transition_time + timedelta(seconds=1))
    if (snapshot.now - since).total_seconds() >= timeout:
        return "StartupTimeout", f"not serving after {format_duration(timeout)} (startup.timeout): {message}"
    return "", ""


def _scheduled(snapshot: BackendSnapshot, seen: _Seen) -> list[Condition]:
    """Scheduled=False with the scheduler's words; True only once every pod is placed (a pod the
    scheduler has not decided on may still turn out unschedulable)."""
    if snapshot.external:
        return []
    gen = snapshot.generation
    if unschedulable := seen.texts("Pending"):
        gpu = snapshot.spec.gpu.resource_name
        # The scheduler's words for too few free GPUs (a label such as nvidia.com/gpu.product
        # holds the resource's name too).
        reason = "InsufficientGPU" if f"Insufficient {gpu}" in unschedulable[0] else "Unschedulable"
        return [condition("Scheduled", False, reason, unschedulable[0], gen)]
    if seen.units and all(pod.scheduled for pod in seen.units):
        return [condition("Scheduled", True, "PodsScheduled", "all pods are placed on nodes", gen)]
    return []


def _fits(snapshot: BackendSnapshot, seen: _Seen) -> list[Condition]:
    """Fits, from the sizes the runtime lists (Ollama's), the pulls announced or the model cache
    holds, and the nodes' GPUs; computed as soon as both are known, before the runtime tries to
    load the model."""
    listed = {snapshot.normalize(m.name): m for m in seen.models}
    sizes: dict[str, int | None] = {}
    context = None
    for name in loaded_models(snapshot.spec, snapshot.pulls):
        model = listed.get(snapshot.normalize(name))
        pull = snapshot.pulls.get(name)
        found = [
            plausible_bytes(model and model.size_bytes),
            plausible_bytes(pull and pull.size_bytes),
            plausible_bytes(snapshot.cached_sizes.get(name)),
        ]
        sizes[name] = max((size for size in found if size), default=None)
        context = context or (model.context_length if model else None)
    placed = {pod.node for pod in snapshot.pods if pod.node and not pod.deleting}
    nodes = {name: snapshot.nodes.get(name, NodeGpus(problem="llmop has not read it")) for name in placed}
    fits = fits_condition(FitsFacts(snapshot.spec, snapshot.generation, sizes, nodes, context))
    return [fits] if fits else []


def _last_error(
    snapshot: BackendSnapshot, seen: _Seen, phase: BackendPhase, message: str, stalled_message: str
) -> str | None:
    last_error = stalled_message or (message if phase in ("Degraded", "Failed", "Pending") else None)
    troubled = (ProbeState.ERROR, ProbeState.UNAUTHORIZED, ProbeState.TIMEOUT)
    waiting = seen.waiting
    if last_error is None and waiting and any(o.probe.state in troubled for o in snapshot.runtimes.values()):
        last_error = waiting[0]
    return None if last_error is None else status_text(last_error)

"""Backend status computed from snapshots: what `kubectl get llmb` and `kubectl wait` will show."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from llmop.models.backend import LLMBackendSpec, LLMBackendStatus
from llmop.models.base import Condition
from llmop.reconcile.backend_status import (
    BackendSnapshot,
    PodFacts,
    PullFacts,
    RuntimeObservation,
    compute_backend_status,
)
from llmop.reconcile.conditions import find
from llmop.runtimes import (
    ModelCapability,
    ModelInfo,
    ProbeResult,
    ProbeState,
    RunningModel,
    RuntimeCapabilities,
)

T0 = datetime(2026, 11, 21, 12, 0, 0, tzinfo=UTC)
URL = "http://127.1.0.5:8080"


def probe(state: ProbeState, reason: str = "") -> ProbeResult:
    return ProbeResult(state=state, reason=reason or str(state), url=URL, latency_seconds=0.01)


SERVING = RuntimeObservation(
    probe=probe(ProbeState.SERVING),
    models=(
        ModelInfo(
            name="tiny",
            size_bytes=600_000,
            context_length=2048,
            capabilities=frozenset({ModelCapability.CHAT, ModelCapability.COMPLETION}),
        ),
    ),
    running=(RunningModel(name="tiny"),),
    capabilities=RuntimeCapabilities(chat=True, completions=True, streaming=True),
)
REFUSED = RuntimeObservation(
    probe=probe(ProbeState.STARTING, "connection refused at 127.1.0.5:8080 (still starting)")
)


def snapshot(
    spec: dict | None = None,
    *,
    now: datetime = T0,
    previous: LLMBackendStatus | None = None,
    pods: list[PodFacts] | None = None,
    runtimes: dict | None = None,
    **extra,
) -> BackendSnapshot:
    return BackendSnapshot(
        generation=1,
        spec=LLMBackendSpec.model_validate(
            spec or {"runtime": "llamacpp", "models": [{"name": "tiny"}], "startup": {"timeout": "5m"}}
        ),
        endpoint="http://b.ns.svc.cluster.local:8080",
        openai_base_url="http://b.ns.svc.cluster.local:8080/v1",
        now=now,
        observing_since=T0,
        previous=previous or LLMBackendStatus(),
        pods=pods if pods is not None else [PodFacts(name="b-1", ip="127.1.0.5", phase="Running")],
        runtimes=runtimes if runtimes is not None else {"b-1": SERVING},
        **extra,
    )


def conditions(status: LLMBackendStatus) -> dict[str, str]:
    return {c.type: c.status for c in status.conditions or []}


def test_serving_runtime_with_its_models_is_ready() -> None:
    status = compute_backend_status(snapshot())
    assert status.phase == "Ready"
    assert conditions(status) == {
        "Ready": "True",
        "Reconciling": "False",
        "Stalled": "False",
        "Scheduled": "True",
    }
    assert status.replicas and status.replicas.summary == "1/1"
    assert status.models and status.models[0].name == "tiny" and status.models[0].loaded
    assert status.models[0].context_length == 2048
    assert status.models_summary == "tiny"
    assert status.capabilities and status.capabilities.chat and not status.capabilities.embeddings
    assert status.observed_generation == 1 and status.last_error is None


def test_llama_cpp_and_vllm_are_ready_serving_their_first_model_and_ollama_needs_all() -> None:
    # The second entry is on the volume (declared, so the agent pulls it), not served.
    for runtime in ("llamacpp", "vllm"):
        spec = {"runtime": runtime, "models": [{"name": "tiny"}, {"name": "spare"}]}
        assert compute_backend_status(snapshot(spec)).phase == "Ready", runtime
    spec = {"runtime": "llamacpp", "models": [{"name": "other"}, {"name": "tiny"}]}
    status = compute_backend_status(snapshot(spec))
    ready = next(c for c in status.conditions or [] if c.type == "Ready")
    assert status.phase == "Loading" and "waiting for model other" in (ready.message or "")
    ollama = compute_backend_status(
        snapshot({"runtime": "ollama", "models": [{"name": "tiny"}, {"name": "spare"}]})
    )
    assert ollama.phase == "Loading"


def test_pod_ready_is_not_enough_while_the_runtime_refuses() -> None:
    status = compute_backend_status(snapshot(runtimes={"b-1": REFUSED}))
    assert status.phase == "Loading"
    ready = find(status.conditions, "Ready")
    assert ready and ready.status == "False" and "connection refused" in ready.message
    assert conditions(status)["Reconciling"] == "True"


def test_ready_waits_for_every_model_in_spec() -> None:
    spec = {"runtime": "ollama", "models": [{"name": "tiny"}, {"name": "other"}]}
    status = compute_backend_status(
        snapshot(spec, pulls={"other": PullFacts(phase="Pulling", summary="45%")})
    )
    assert status.phase == "Loading"
    ready = find(status.conditions, "Ready")
    assert ready and ready.reason == "ModelsMissing" and "other 45%" in ready.message


def test_cold_start_past_the_timeout_is_stalled_with_the_last_error() -> None:
    status = compute_backend_status(snapshot(runtimes={"b-1": REFUSED}, now=T0 + timedelta(minutes=6)))
    stalled = find(status.conditions, "Stalled")
    assert stalled and stalled.status == "True" and stalled.reason == "StartupTimeout"
    assert "not serving after 5m" in stalled.message and "connection refused" in stalled.message
    assert conditions(status)["Reconciling"] == "False"
    assert status.last_error == stalled.message


def test_the_startup_budget_never_ends_early_on_a_time_stored_to_the_second() -> None:
    # Ready turned False at some moment within T0+10s .. T0+11s; the API keeps T0+10s.
    flipped = Condition(
        type="Ready",
        status="False",
        reason="RuntimeStarting",
        last_transition_time=T0 + timedelta(seconds=10),
    )
    previous = LLMBackendStatus(conditions=[flipped])
    budget_end = T0 + timedelta(seconds=10, minutes=5)

    early = compute_backend_status(snapshot(runtimes={"b-1": REFUSED}, previous=previous, now=budget_end))
    late = compute_backend_status(
        snapshot(runtimes={"b-1": REFUSED}, previous=previous, now=budget_end + timedelta(seconds=1))
    )

    assert conditions(early)["Stalled"] == "False"
    assert conditions(late)["Stalled"] == "True"


def test_unschedulable_pod_explains_itself_with_the_schedulers_words() -> None:
    message = "0/3 nodes are available: 2 Insufficient nvidia.com/gpu, 1 node(s) had untolerated taint."
    status = compute_backend_status(snapshot(pods=[PodFacts(name="b-1", unschedulable=message)], runtimes={}))
    scheduled = find(status.conditions, "Scheduled")
    assert scheduled and scheduled.status == "False" and scheduled.reason == "InsufficientGPU"
    assert scheduled.message == message
    assert conditions(status)["Ready"] == "False" and status.phase == "Pending"


GPU_SPEC = {"runtime": "vllm", "models": [{"name": "hf://Qwen/Qwen3-0.6B"}], "gpu": {"count": 1}}
NO_AFFINITY = "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector."


def test_a_gpu_product_no_node_has_is_named_where_the_scheduler_does_not_name_it() -> None:
    spec = {**GPU_SPEC, "gpu": {"count": 1, "product": ["NVIDIA-A100-SXM4-80GB"], "minMemory": "80G"}}
    pods = [PodFacts(name="b-1", unschedulable=NO_AFFINITY)]
    status = compute_backend_status(snapshot(spec, pods=pods, runtimes={}))
    scheduled = find(status.conditions, "Scheduled")
    assert scheduled and scheduled.status == "False" and scheduled.reason == "Unschedulable"
    assert "gpu.product NVIDIA-A100-SXM4-80GB (nvidia.com/gpu.product)" in scheduled.message
    assert "gpu.minMemory 80G (nvidia.com/gpu.memory)" in scheduled.message
    assert NO_AFFINITY in scheduled.message
    ready = find(status.conditions, "Ready")
    assert ready and "NVIDIA-A100-SXM4-80GB" in ready.message
    assert status.pods and status.pods[0].message and "NVIDIA-A100-SXM4-80GB" in status.pods[0].message


def test_the_product_stays_in_a_scheduler_message_too_long_for_status() -> None:
    spec = {**GPU_SPEC, "gpu": {"count": 1, "product": ["NVIDIA-A100-SXM4-80GB"]}}
    long = "0/5000 nodes are available: " + "1 node(s) didn't match Pod's node affinity/selector, " * 100
    status = compute_backend_status(
        snapshot(spec, pods=[PodFacts(name="b-1", unschedulable=long)], runtimes={})
    )
    scheduled = find(status.conditions, "Scheduled")
    assert scheduled and len(scheduled.message) <= 1024 and "NVIDIA-A100-SXM4-80GB" in scheduled.message


def test_a_scheduler_message_that_names_the_product_is_left_as_it_is() -> None:
    spec = {**GPU_SPEC, "gpu": {"count": 1, "product": ["NVIDIA-A100-SXM4-80GB"]}}
    message = "0/1 nodes are available: no NVIDIA-A100-SXM4-80GB left."
    status = compute_backend_status(
        snapshot(spec, pods=[PodFacts(name="b-1", unschedulable=message)], runtimes={})
    )
    scheduled = find(status.conditions, "Scheduled")
    assert scheduled and scheduled.message == message


def test_too_few_gpus_of_a_chosen_product_is_insufficient_gpu() -> None:
    spec = {**GPU_SPEC, "gpu": {"count": 1, "product": ["NVIDIA-H100-80GB-HBM3"]}}
    message = (
        "0/3 nodes are available: 2 Insufficient nvidia.com/gpu, 1 node(s) didn't match Pod's node affinity."
    )
    status = compute_backend_status(
        snapshot(spec, pods=[PodFacts(name="b-1", unschedulable=message)], runtimes={})
    )
    scheduled = find(status.conditions, "Scheduled")
    assert (
        scheduled and scheduled.reason == "InsufficientGPU" and "NVIDIA-H100-80GB-HBM3" in scheduled.message
    )


def test_a_backend_without_a_gpu_choice_keeps_the_schedulers_words() -> None:
    # The GPU label in the added text must not make every unschedulable GPU backend InsufficientGPU.
    pods = [PodFacts(name="b-1", unschedulable=NO_AFFINITY)]
    status = compute_backend_status(snapshot(GPU_SPEC, pods=pods, runtimes={}))
    scheduled = find(status.conditions, "Scheduled")
    assert scheduled and scheduled.message == NO_AFFINITY and scheduled.reason == "Unschedulable"


def test_runtime_that_dies_after_serving_is_degraded_then_recovers() -> None:
    ready = compute_backend_status(snapshot())
    died = compute_backend_status(
        snapshot(previous=ready, runtimes={"b-1": REFUSED}, now=T0 + timedelta(seconds=30))
    )
    assert died.phase == "Degraded"
    assert conditions(died)["Ready"] == "False"
    assert died.last_error and "connection refused" in died.last_error
    back = compute_backend_status(snapshot(previous=died, now=T0 + timedelta(seconds=60)))
    assert back.phase == "Ready" and conditions(back)["Ready"] == "True"


def test_nothing_changed_means_an_identical_status() -> None:
    first = compute_backend_status(snapshot())
    second = compute_backend_status(snapshot(previous=first, now=T0 + timedelta(minutes=10)))
    assert second.to_api() == first.to_api()


def test_transition_time_moves_only_when_a_condition_flips() -> None:
    loading = compute_backend_status(snapshot(runtimes={"b-1": REFUSED}))
    ready = compute_backend_status(snapshot(previous=loading, now=T0 + timedelta(seconds=20)))
    assert find(ready.conditions, "Ready").last_transition_time == T0 + timedelta(seconds=20)  # type: ignore[union-attr]
    assert find(ready.conditions, "Stalled").last_transition_time == T0  # type: ignore[union-attr]


def test_external_backend_dead_url_stalls_after_its_timeout() -> None:
    spec = {"external": {"url": "http://10.0.0.5:8000", "kind": "vllm"}, "startup": {"timeout": "30s"}}
    dead = RuntimeObservation(probe=probe(ProbeState.STARTING, "connection refused at 10.0.0.5:8000"))
    early = compute_backend_status(snapshot(spec, pods=[], runtimes={"external": dead}))
    assert early.phase == "Loading" and conditions(early)["Stalled"] == "False"
    assert "Scheduled" not in conditions(early)
    late = compute_backend_status(
        snapshot(spec, pods=[], runtimes={"external": dead}, previous=early, now=T0 + timedelta(seconds=31))
    )
    assert conditions(late)["Stalled"] == "True"
    assert "connection refused at 10.0.0.5:8000" in (late.last_error or "")


def test_pods_still_being_created_are_deploying() -> None:
    status = compute_backend_status(
        snapshot(pods=[PodFacts(name="b-1", phase="Pending", waiting="ContainerCreating")], runtimes={})
    )
    assert status.phase == "Deploying"
    assert find(status.conditions, "Ready").message == "ContainerCreating"  # type: ignore[union-attr]


def test_invalid_spec_fails_and_stalls_at_once() -> None:
    problem = ("InvalidSpec", "'ftp://x' is not a model source")
    status = compute_backend_status(snapshot(apply_problem=problem, runtimes={}))
    assert status.phase == "Failed"
    assert conditions(status)["Stalled"] == "True"


def test_a_taken_name_fails_with_its_own_reason_and_says_what_to_do() -> None:
    message = "Service 'b' already exists and does not belong to this backend: ... rename the backend"
    status = compute_backend_status(snapshot(apply_problem=("NameConflict", message), pods=[], runtimes={}))
    assert status.phase == "Failed"
    ready = find(status.conditions, "Ready")
    assert ready is not None and (ready.reason, ready.message) == ("NameConflict", message)
    assert conditions(status)["Stalled"] == "True" and status.last_error == message


def test_failed_pull_stalls_the_backend_with_the_pull_error() -> None:
    spec = {"runtime": "ollama", "models": [{"name": "tiny"}, {"name": "missing:1b"}]}
    pulls = {"missing:1b": PullFacts(phase="Failed", error="pull model manifest: file does not exist")}
    status = compute_backend_status(snapshot(spec, pulls=pulls))
    assert status.phase == "Degraded"
    assert conditions(status)["Stalled"] == "True"
    assert "file does not exist" in (status.last_error or "")


def test_a_pull_in_flight_is_the_cold_start_and_shows_its_progress() -> None:
    pulls = {"tiny": PullFacts(phase="Pulling", summary="45% 270.0KiB/600.0KiB")}
    status = compute_backend_status(snapshot(runtimes={"b-1": REFUSED}, pulls=pulls))
    ready = find(status.conditions, "Ready")
    assert status.phase == "Loading"
    assert ready and ready.reason == "PullingModels" and "tiny 45%" in ready.message


def test_a_pull_into_a_pod_the_kubelet_still_calls_pending_shows_its_progress() -> None:
    # The kubelet keeps the pod Pending until the agent's startup probe passes (the model is on
    # disk); the runtime waits for it, and the pull is what the backend waits for.
    pod = PodFacts(
        name="b-1", ip="127.1.0.5", phase="Pending", waiting="runtime: PodInitializing", running=("agent",)
    )
    pulls = {"tiny": PullFacts(phase="Pulling", summary="45% 270.0KiB/600.0KiB")}
    status = compute_backend_status(snapshot(pods=[pod], runtimes={}, pulls=pulls))
    ready = find(status.conditions, "Ready")
    assert status.phase == "Loading"
    assert ready and ready.reason == "PullingModels" and "tiny 45%" in ready.message


def test_a_pod_the_scheduler_has_not_placed_yet_is_not_called_scheduled() -> None:
    waiting = PodFacts(name="b-1", phase="Pending", scheduled=False)
    status = compute_backend_status(snapshot(pods=[waiting], runtimes={}))
    assert "Scheduled" not in conditions(status)
    placed = PodFacts(name="b-1", phase="Pending", scheduled=True)
    assert conditions(compute_backend_status(snapshot(pods=[placed], runtimes={})))["Scheduled"] == "True"


# --- truth of the figures ------------------------------------------------------------------------


def test_an_external_server_that_cannot_list_loaded_models_is_ready_and_says_nothing_of_loading() -> None:
    spec = {"external": {"url": URL, "kind": "openai"}, "models": [{"name": "tiny"}]}
    unknown = RuntimeObservation(probe=SERVING.probe, models=SERVING.models, running=None)
    status = compute_backend_status(snapshot(spec, runtimes={"external": unknown}, pods=[]))
    assert status.phase == "Ready"
    assert [m.name for m in status.models or []] == ["tiny"]
    assert status.models is not None and status.models[0].loaded is None
    assert "loaded" not in status.model_dump(by_alias=True, exclude_none=True)["models"][0]


def test_a_loaded_ollama_model_shows_the_context_it_runs_with_not_the_trained_one() -> None:
    listed = ModelInfo(name="qwen3:0.6b", context_length=None, trained_context_length=40960)
    other = ModelInfo(name="smollm2:135m", context_length=None, trained_context_length=8192)
    seen = RuntimeObservation(
        probe=SERVING.probe,
        models=(listed, other),
        running=(RunningModel(name="qwen3:0.6b", context_length=4096),),
    )
    spec = {"runtime": "ollama", "models": [{"name": "qwen3:0.6b"}]}
    status = compute_backend_status(snapshot(spec, runtimes={"b-1": seen}, normalize=str))
    models = {m.name: m for m in status.models or []}
    assert (models["qwen3:0.6b"].context_length, models["qwen3:0.6b"].loaded) == (4096, True)
    assert models["qwen3:0.6b"].trained_context_length == 40960
    assert (models["smollm2:135m"].context_length, models["smollm2:135m"].loaded) == (None, False)


def test_a_router_listing_that_tells_per_model_wins_over_the_running_list() -> None:
    seen = RuntimeObservation(
        probe=SERVING.probe,
        models=(ModelInfo(name="tiny", loaded=True), ModelInfo(name="other", loaded=False)),
        running=(RunningModel(name="tiny"),),
    )
    status = compute_backend_status(snapshot(runtimes={"b-1": seen}))
    assert {m.name: m.loaded for m in status.models or []} == {"other": False, "tiny": True}


def test_a_refused_api_key_fails_the_backend_at_once_with_the_servers_words() -> None:
    said = "vLLM at 127.1.0.5:8000 answered GET /v1/models with 401 Unauthorized: Unauthorized"
    refused = RuntimeObservation(probe=probe(ProbeState.UNAUTHORIZED, said))
    status = compute_backend_status(snapshot(runtimes={"b-1": refused}))
    assert status.phase == "Failed"
    ready = find(status.conditions, "Ready")
    assert ready is not None and (ready.reason, ready.message) == ("Unauthorized", said)
    stalled = find(status.conditions, "Stalled")
    assert stalled is not None and (stalled.status, stalled.reason) == ("True", "Unauthorized")
    assert status.last_error == said
    assert status.pods is not None and status.pods[0].phase == "Refused"


def test_an_external_url_in_the_deny_list_fails_at_once_saying_address_and_rule() -> None:
    spec = {"external": {"url": "http://169.254.169.254", "kind": "openai"}, "startup": {"timeout": "30m"}}
    said = (
        "llmop refuses to connect to 169.254.169.254:80: the address is in 169.254.0.0/16 in the "
        "operator's deny list (LLMOP_EXTERNAL_DENY_CIDRS, Helm value externalDenyCIDRs); nothing was sent"
    )
    denied = RuntimeObservation(probe=probe(ProbeState.DENIED, said))
    status = compute_backend_status(snapshot(spec, pods=[], runtimes={"external": denied}))
    assert status.phase == "Failed"
    ready, stalled = find(status.conditions, "Ready"), find(status.conditions, "Stalled")
    assert ready is not None and (ready.status, ready.reason, ready.message) == (
        "False",
        "TargetRefused",
        said,
    )
    assert stalled is not None and (stalled.status, stalled.reason) == ("True", "TargetRefused")
    assert status.last_error == said


def test_status_gives_the_scale_subresource_the_pods_selector_and_the_serving_count() -> None:
    selector = "app.kubernetes.io/instance=b,llmop.dev/backend=b"
    status = compute_backend_status(snapshot(pod_selector=selector)).to_api()
    assert status["selector"] == selector
    assert status["replicas"]["ready"] == 1  # statusReplicasPath


def test_an_external_backend_gives_an_autoscaler_no_selector() -> None:
    spec = {"external": {"url": URL, "kind": "openai"}}
    status = compute_backend_status(
        snapshot(spec, pods=[], runtimes={"external": SERVING}, pod_selector="llmop.dev/backend=b")
    )
    assert status.selector is None and "selector" not in status.to_api()

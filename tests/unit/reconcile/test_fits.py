"""The Fits condition: a model too large for the GPUs its pods were given is named, with both
numbers, before the runtime tries to load it; what llmop cannot know is said, never guessed."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import kopf
import pytest

from llmop.k8s.client import KubeAPIError, KubeUnavailable, Resource
from llmop.loops import backend_observer
from llmop.loops.node_gpus import NodeGpuReader
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
from llmop.reconcile.fits import NodeGpus, node_gpus, plausible_bytes, pull_model_bytes, pull_progress_bytes
from llmop.runtimes import ModelInfo, ProbeResult, ProbeState

GIB = 1 << 30
T0 = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
H100 = NodeGpus(memory_mib=81559)
VLLM = {"runtime": "vllm", "gpu": {"count": 1}, "models": [{"name": "hf://big/model"}]}
#: The runtime has not started: its agent is still pulling (the pod is Pending to the kubelet).
PULLING_POD = PodFacts(name="b-1", ip="127.1.0.5", phase="Pending", running=("agent",), node="gpu-1")


def probe(state: ProbeState) -> ProbeResult:
    return ProbeResult(state=state, reason=str(state), url="http://127.1.0.5:8080", latency_seconds=0.01)


def fits(spec: dict[str, Any] = VLLM, **extra: Any) -> Condition | None:
    """The Fits condition of a backend with `spec`, as its observer computes it."""
    extra.setdefault("pods", [PULLING_POD])
    extra.setdefault("nodes", {"gpu-1": H100})
    snapshot = BackendSnapshot(
        generation=1,
        spec=LLMBackendSpec.model_validate(spec),
        endpoint="http://b.ns.svc.cluster.local:8000",
        openai_base_url="http://b.ns.svc.cluster.local:8000/v1",
        now=T0,
        observing_since=T0,
        previous=LLMBackendStatus(),
        **extra,
    )
    return find(compute_backend_status(snapshot).conditions, "Fits")


def test_a_model_larger_than_the_gpus_is_named_with_both_numbers_while_its_pull_runs() -> None:
    found = fits(pulls={"hf://big/model": PullFacts(phase="Pulling", size_bytes=150 * GIB)})
    assert found is not None and found.status == "False" and found.reason == "ModelTooLarge"
    assert found.message is not None
    assert "hf://big/model needs at least 150.0 GiB" in found.message
    assert "79.6 GiB (1 x 81559 MiB on node gpu-1)" in found.message


def test_a_backend_on_a_model_cache_is_checked_by_the_size_the_cache_holds() -> None:
    spec = {**VLLM, "modelCache": {"name": "shared"}}
    found = fits(spec, cached_sizes={"hf://big/model": 150 * GIB})
    assert found is not None and found.status == "False" and found.reason == "ModelTooLarge"
    assert found.message is not None and "hf://big/model needs at least 150.0 GiB" in found.message
    unknown = fits(spec)
    assert unknown is not None and unknown.status == "Unknown"


def test_two_gpus_hold_what_one_cannot() -> None:
    spec = {**VLLM, "gpu": {"count": 2}}
    found = fits(spec, pulls={"hf://big/model": PullFacts(phase="Pulling", size_bytes=140 * GIB)})
    assert found is not None and found.status == "True" and found.reason == "WeightsFit"
    assert found.message is not None and "159.2 GiB (2 x 81559 MiB" in found.message
    assert "KV cache" in found.message, "weights that fit are not a promise that the runtime loads"


def test_the_smallest_node_of_the_pods_decides() -> None:
    pods = [PULLING_POD, PodFacts(name="b-2", ip="127.1.0.6", phase="Pending", node="gpu-2")]
    found = fits(
        {**VLLM, "replicas": 2},
        pods=pods,
        nodes={"gpu-1": H100, "gpu-2": NodeGpus(memory_mib=40960)},
        pulls={"hf://big/model": PullFacts(size_bytes=60 * GIB)},
    )
    assert found is not None and found.status == "False"
    assert found.message is not None and "40.0 GiB (1 x 40960 MiB on node gpu-2)" in found.message


def test_what_is_not_known_is_said() -> None:
    unknown_size = fits()
    assert unknown_size is not None and unknown_size.status == "Unknown"
    assert unknown_size.reason == "ModelSizeUnknown" and "hf://big/model" in (unknown_size.message or "")

    pull = {"hf://big/model": PullFacts(size_bytes=150 * GIB)}
    unplaced = fits(pods=[PodFacts(name="b-1", unschedulable="0/3 nodes")], pulls=pull)
    assert unplaced is not None and unplaced.status == "Unknown" and unplaced.reason == "GPUMemoryUnknown"
    assert "no pod is placed" in (unplaced.message or "") and "150.0 GiB" in (unplaced.message or "")

    unread = fits(nodes={"gpu-1": NodeGpus(problem="llmop may not read node gpu-1")}, pulls=pull)
    assert (
        unread is not None
        and unread.status == "Unknown"
        and "may not read node gpu-1" in (unread.message or "")
    )


def test_only_backends_with_gpus_have_it() -> None:
    assert fits({**VLLM, "gpu": {"count": 0}}) is None
    assert fits({"external": {"url": "http://h:8000", "kind": "vllm"}}) is None


def test_ollama_checks_each_model_it_may_load_by_the_size_it_lists() -> None:
    spec = {"runtime": "ollama", "gpu": {"count": 1}, "models": [{"name": "small"}, {"name": "huge"}]}
    listing = RuntimeObservation(
        probe=probe(ProbeState.SERVING),
        models=(ModelInfo(name="small", size_bytes=GIB), ModelInfo(name="huge", size_bytes=90 * GIB)),
    )
    pod = PodFacts(name="b-1", ip="127.1.0.5", phase="Running", node="gpu-1")
    found = fits(spec, pods=[pod], runtimes={"b-1": listing})
    assert (
        found is not None
        and found.status == "False"
        and "model huge needs at least 90.0 GiB" in (found.message or "")
    )


def test_ollama_counts_the_models_pulled_into_it_and_ignores_a_pull_without_a_model() -> None:
    spec = {"runtime": "ollama", "gpu": {"count": 1}, "models": []}
    pulls = {"extra": PullFacts(size_bytes=100 * GIB), None: PullFacts(size_bytes=GIB)}
    found = fits(spec, pulls=pulls)
    assert found is not None and found.status == "False" and "model extra needs" in (found.message or "")


@pytest.mark.parametrize("size", [-5, 0, 1 << 60, "lots", True, None, 1e30, float("nan"), [1]])
def test_absurd_sizes_are_not_known(size: Any) -> None:
    assert plausible_bytes(size) is None
    listing = RuntimeObservation(
        probe=probe(ProbeState.SERVING), models=(ModelInfo(name="huge", size_bytes=-1),)
    )
    spec = {"runtime": "ollama", "gpu": {"count": 1}, "models": [{"name": "huge"}]}
    pod = PodFacts(name="b-1", ip="127.1.0.5", phase="Running", node="gpu-1")
    found = fits(spec, pods=[pod], runtimes={"b-1": listing})
    assert found is not None and found.status == "Unknown"
    assert pull_model_bytes({"sizeBytes": size, "progress": {"totalBytes": size}}) is None


def test_a_pulls_size_is_one_pods_worth() -> None:
    assert pull_model_bytes({"sizeBytes": 7, "progress": {"totalBytes": 99}}) == 7
    two_pods = {"progress": {"totalBytes": 300}, "replicas": [{"pod": "a"}, {"pod": "b"}]}
    assert pull_model_bytes(two_pods) == 150
    assert pull_model_bytes({"progress": "nonsense", "replicas": "x"}) is None


@pytest.mark.parametrize(
    ("labels", "memory"),
    [
        ({"nvidia.com/gpu.memory": "81559"}, 81559),
        ({"nvidia.com/gpu.memory": "-1"}, None),
        ({"nvidia.com/gpu.memory": "80Gi"}, None),
        ({"nvidia.com/gpu.memory": "0"}, None),
        ({"nvidia.com/gpu.memory": "999999999"}, None),
        ({}, None),
        (None, None),
    ],
)
def test_a_nodes_label_is_a_plausible_number_of_mib_or_unknown(labels: Any, memory: int | None) -> None:
    found = node_gpus(labels)
    assert found.memory_mib == memory
    assert (found.problem is None) == (memory is not None)


class Nodes:
    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers, self.asked = answers, []

    async def get(self, resource: Resource, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        self.asked.append(name)
        answer = self.answers[name]
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[no-any-return]


async def test_nodes_are_read_once_and_a_refusal_is_said() -> None:
    kube = Nodes(
        {
            "gpu-1": {"metadata": {"labels": {"nvidia.com/gpu.memory": "81559"}}},
            "gpu-2": KubeAPIError(403, 'nodes "gpu-2" is forbidden', "Forbidden"),
            "gpu-3": KubeUnavailable("connection refused"),
            "gone": None,
        }
    )
    reader = NodeGpuReader()
    found = await reader.nodes(kube, ["gpu-1", "gpu-2", "gpu-3", "gone"])  # type: ignore[arg-type]
    assert found["gpu-1"].memory_mib == 81559
    assert "needs get on nodes" in (found["gpu-2"].problem or "")
    assert "connection refused" in (found["gpu-3"].problem or "")
    assert "does not exist" in (found["gone"].problem or "")
    await reader.nodes(kube, ["gpu-1", "gpu-1"])  # type: ignore[arg-type]
    assert kube.asked.count("gpu-1") == 1, "a node's GPUs do not change: it is read once"


def test_a_warning_event_comes_once_when_the_model_turns_out_too_large(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    posted: list[dict[str, Any]] = []
    monkeypatch.setattr(kopf, "event", lambda body, **event: posted.append(event))
    too_large = Condition(type="Fits", status="False", reason="ModelTooLarge", message="needs 150 GiB")
    unknown = Condition(type="Fits", status="Unknown", reason="ModelSizeUnknown", message="?")
    before, after = LLMBackendStatus(conditions=[unknown]), LLMBackendStatus(conditions=[too_large])
    backend_observer.post_fits_event(kopf.Body({}), before, after)
    backend_observer.post_fits_event(kopf.Body({}), after, after)
    assert [(e["type"], e["reason"]) for e in posted] == [("Warning", "ModelTooLarge")]


def test_a_pulls_progress_counts_only_plausible_bytes() -> None:
    # What the cold-start timeline shows while downloading: a status written by hand cannot break
    # the operator's index of pulls, nor show a made-up percent.
    assert pull_progress_bytes({"progress": {"completedBytes": 5 * GIB, "totalBytes": 10 * GIB}}) == (
        5 * GIB,
        10 * GIB,
    )
    assert pull_progress_bytes({"progress": {"completedBytes": "lots", "totalBytes": -1}}) == (0, None)
    assert pull_progress_bytes({"progress": "half"}) == (0, None)
    assert pull_progress_bytes({}) == (0, None)

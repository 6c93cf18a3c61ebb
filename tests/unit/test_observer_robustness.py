"""A backend's observer never spins, never dies, and frees what it held once the backend is
deleted, whatever the spec stored (objects created before the CRD's rules) or the runtime says."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import httpx
import kopf
import pytest
from test_backend_observer import FakeKube, observer

from llmop import metrics
from llmop.config import OperatorConfig
from llmop.loops import backend_observer
from llmop.loops.backend_ensure import validate_backend_spec
from llmop.loops.backend_observer import BackendObserver
from llmop.loops.context import OperatorContext
from llmop.loops.model_puller import ModelPuller, StatusWriter
from llmop.loops.pace import FAILED_ROUND_SECONDS
from llmop.models.backend import MAX_SPEC_MODELS, LLMBackendSpec
from llmop.reconcile.conditions import describe_failure


class Stopped:
    """kopf's stop flag, set by the test."""

    def __init__(self) -> None:
        self.reason: kopf.DaemonStoppingReason | None = None

    def __bool__(self) -> bool:
        return self.reason is not None

    async def wait(self, seconds: float) -> bool:
        return bool(self)  # the gap between rounds is not this test's matter


@pytest.fixture(autouse=True)
def no_events(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backend_observer, "post_phase_event", lambda body, before, after: None)


def watching(
    spec: dict[str, Any], client: httpx.AsyncClient, rounds: int
) -> tuple[BackendObserver, list[float]]:
    """An observer of `spec` whose waits are recorded; it stops after `rounds` waits."""
    watched = observer(FakeKube(away=False), spec)
    watched.context.runtime_http = client
    watched.context.external_http = client
    stopped = Stopped()
    watched.stopped = stopped  # type: ignore[assignment]
    slept: list[float] = []

    async def wait(seconds: float) -> bool:
        slept.append(seconds)
        if len(slept) >= rounds:
            stopped.reason = kopf.DaemonStoppingReason.OPERATOR_EXITING
        return False

    watched.wait = wait  # type: ignore[method-assign]
    return watched, slept


async def test_a_zero_probe_interval_stored_before_the_rule_is_held_to_100ms(closed_port_url: str) -> None:
    spec = {"external": {"url": closed_port_url}, "startup": {"probeInterval": "0s"}}
    async with httpx.AsyncClient() as client:
        watched, slept = watching(spec, client, rounds=3)
        await watched.run()
    assert slept == [0.1, 0.1, 0.1]


async def test_a_round_that_raises_is_reported_in_status_and_the_observer_goes_on() -> None:
    """Port 65536 passed the CRD before it had a rule: the connection attempt raises."""
    async with httpx.AsyncClient() as client:
        watched, slept = watching({"external": {"url": "http://127.0.0.1:65536"}}, client, rounds=3)
        await watched.run()
    assert slept == [FAILED_ROUND_SECONDS] * 3, "a failing round is neither a spin nor the end"
    patches = watched.context.kube.patches  # type: ignore[attr-defined]
    assert len(patches) == 1, "the same failure is written once"
    (status,) = patches
    assert status["phase"] == "Failed"
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "ObserveFailed" and "port" in ready["message"]
    assert ready["message"].startswith("llmop cannot observe this backend")


async def test_a_blank_model_name_stored_before_the_rule_is_reported_not_raised() -> None:
    spec = {"runtime": "ollama", "models": [{"name": " "}]}
    problem = validate_backend_spec(LLMBackendSpec.model_validate(spec))
    assert problem is not None and "spec.models[0].name is empty" in problem
    async with httpx.AsyncClient() as client:
        watched, _ = watching(spec, client, rounds=1)
        watched.context.apply_errors[watched.key] = ("InvalidSpec", problem)
        await watched.run()
    (status,) = watched.context.kube.patches  # type: ignore[attr-defined]
    assert status["phase"] == "Failed" and problem in status["lastError"]


class RecordingRuntime:
    """A runtime whose warmup records the timeout it was given."""

    def __init__(self, timeouts: list[float]) -> None:
        self.timeouts = timeouts

    def normalize_model_name(self, name: str) -> str:
        return name

    async def warmup(self, model: str, timeout: float) -> None:  # noqa: ASYNC109 - the runtimes' interface
        self.timeouts.append(timeout)


@pytest.mark.parametrize(("stored", "seconds"), [("5h", 600.0), ("0s", 1.0), ("90s", 90.0)])
async def test_a_warmup_timeout_stored_before_the_rule_is_held_to_1s_to_10m(
    stored: str, seconds: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    timeouts: list[float] = []
    connected: list[float] = []

    def connect(kind: str, target: str, *, timeout: float, **_: Any) -> RecordingRuntime:
        connected.append(timeout)
        return RecordingRuntime(timeouts)

    monkeypatch.setattr(backend_observer, "connect", connect)
    spec = {"runtime": "ollama", "models": [{"name": "qwen3:0.6b"}], "warmup": {"timeout": stored}}
    watched = observer(FakeKube(away=False), spec)
    watched.context.runtime_http = None  # type: ignore[assignment]
    serving = SimpleNamespace(probe=SimpleNamespace(serving=True))
    look = SimpleNamespace(
        snapshot=SimpleNamespace(runtimes={"pod-a": serving}, generation=1),
        targets={"pod-a": "http://10.0.0.1:11434"},
    )
    await watched.warm_up(look, LLMBackendSpec.model_validate(spec))  # type: ignore[arg-type]
    assert timeouts == connected == [seconds]


@pytest.mark.parametrize(("runtime", "port"), [("vllm", 8090), ("llamacpp", 8090)])
def test_a_runtime_port_that_takes_the_agents_is_refused_with_a_message(runtime: str, port: int) -> None:
    spec = LLMBackendSpec.model_validate(
        {"runtime": runtime, "models": [{"name": "hf://o/r/m.gguf"}], "port": port}
    )
    problem = validate_backend_spec(spec)
    assert problem is not None and "spec.port 8090 is the llmop agent's port" in problem


def test_ollama_has_no_agent_and_may_listen_on_8090() -> None:
    spec = LLMBackendSpec.model_validate({"runtime": "ollama", "port": 8090})
    assert validate_backend_spec(spec) is None


def test_an_error_that_quotes_bytes_of_a_secret_is_described_without_them() -> None:
    secret = b"\xffs3cr3t"
    try:
        secret.decode()
    except UnicodeDecodeError as error:
        described = describe_failure(error)
    assert "0xff" not in described and "s3cr3t" not in described
    assert "not UTF-8" in described


async def test_a_deleted_backend_leaves_nothing_keyed_by_it_behind() -> None:
    async with httpx.AsyncClient() as client:
        watched, _ = watching({"external": {"url": "http://127.0.0.1:9"}}, client, rounds=1)
    key, uid = watched.key, "uid-of-b"
    watched.body = kopf.Body(
        {
            "metadata": {
                "name": "b",
                "namespace": "ns",
                "uid": uid,
                "generation": 1,
                "creationTimestamp": "2026-01-01T00:00:00Z",
            }
        }
    )
    context = watched.context
    context.apply_errors[key] = ("InvalidSpec", "the API server refused the backend's objects")
    context.agent_tokens[key] = ("token", uid)
    metrics.record_backend_phase(watched.body, None, "Ready", written=True)
    assert key in metrics._backend_phases and uid in metrics._ready_recorded
    watched.stopped.reason = kopf.DaemonStoppingReason.RESOURCE_DELETED  # type: ignore[union-attr]
    await watched.run()
    held = [context.apply_errors, context.observers, context.agent_tokens, metrics._backend_phases]
    assert [store for store in held if key in store] == []
    assert uid not in metrics._ready_recorded


async def test_a_spec_llmop_cannot_read_is_reported_in_status() -> None:
    async with httpx.AsyncClient() as client:
        watched, slept = watching({"runtime": "tgi-server"}, client, rounds=2)
        await watched.run()
    assert slept == [FAILED_ROUND_SECONDS] * 2
    (status,) = watched.context.kube.patches  # type: ignore[attr-defined]
    assert status["phase"] == "Failed" and "ValidationError" in status["lastError"]


def test_a_spec_stored_before_the_schema_bounded_it_is_still_read() -> None:
    """maxItems and maxLength bound new input in the CRD; the operator reads what is stored."""
    models = [{"name": f"m{index}:" + "x" * 5000} for index in range(MAX_SPEC_MODELS + 1)]
    assert len(LLMBackendSpec.model_validate({"runtime": "ollama", "models": models}).models) == 65


class FakePullKube:
    def __init__(self) -> None:
        self.patches: list[dict[str, Any]] = []

    async def get(self, resource: Any, name: str, namespace: str) -> dict[str, Any]:
        raise RuntimeError("the backend's spec could not be read")

    async def patch_status(
        self, resource: Any, name: str, namespace: str, patch: dict[str, Any]
    ) -> dict[str, Any]:
        self.patches.append(patch)
        return {}


async def test_a_pull_round_that_raises_is_reported_and_the_pull_loop_goes_on() -> None:
    kube = FakePullKube()
    context = OperatorContext(config=OperatorConfig())
    context.kube = kube  # type: ignore[assignment]
    body = kopf.Body(
        {
            "metadata": {"name": "p", "namespace": "ns", "generation": 1},
            "spec": {"backendRef": {"name": "b"}, "model": "qwen3:0.6b"},
        }
    )
    setter: Any = Stopped()
    waits: list[float] = []

    class Waiting:
        reason = None

        def __bool__(self) -> bool:
            return bool(setter)

        async def wait(self, seconds: float) -> None:
            waits.append(seconds)
            if len(waits) >= 2:
                setter.reason = kopf.DaemonStoppingReason.OPERATOR_EXITING

    writer = StatusWriter(kube, "p", "ns", body, interval=1.0)  # type: ignore[arg-type]
    puller = ModelPuller("p", "ns", body, context, Waiting(), lambda backend: [], writer)  # type: ignore[arg-type]
    await puller.run()
    assert waits == [FAILED_ROUND_SECONDS] * 2
    (status,) = kube.patches
    assert "could not be read" in status["lastError"]
    assert next(c for c in status["conditions"] if c["type"] == "Reconciling")["reason"] == "PullError"

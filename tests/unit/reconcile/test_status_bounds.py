"""Status stays far below the API server's object limit whatever a runtime lists, and no
credential of a model URL reaches it."""

from __future__ import annotations

import json

from test_backend_status import T0, probe, snapshot

from llmop.models.backend import MAX_POD_MODELS, MAX_STATUS_MODELS, LLMBackendStatus
from llmop.models.base import Condition
from llmop.models.pull import RetrySpec
from llmop.reconcile.backend_status import (
    PodFacts,
    PullFacts,
    RuntimeObservation,
    compute_backend_status,
    unobservable_status,
)
from llmop.reconcile.conditions import find
from llmop.reconcile.pull_status import backoff_seconds, retry_limits
from llmop.runtimes import ModelInfo, ProbeState

#: The API server refuses objects over 1.5 MiB; "far below" is a tenth of it.
FAR_BELOW_THE_LIMIT = 150 * 1024


def listing(count: int, name_chars: int = 20) -> RuntimeObservation:
    tail, long_figure = "x" * name_chars, "f" * 10_000
    models = tuple(
        ModelInfo(name=f"m{index:06d}-{tail}", digest=long_figure, family=long_figure)
        for index in range(count)
    )
    return RuntimeObservation(probe=probe(ProbeState.SERVING), models=models)


def stored_size(status: LLMBackendStatus) -> int:
    return len(json.dumps(status.to_api()))


def test_a_runtime_listing_sixty_thousand_models_leaves_a_small_status_that_counts_the_rest() -> None:
    spec = {"runtime": "ollama", "models": [{"name": "m059999-" + "x" * 20}]}
    pods = [PodFacts(name=f"b-{i}", ip=f"127.1.0.{i}", phase="Running") for i in range(3)]
    huge = listing(60_000)
    status = compute_backend_status(snapshot(spec, pods=pods, runtimes={pod.name: huge for pod in pods}))
    assert stored_size(status) < FAR_BELOW_THE_LIMIT
    assert status.models is not None and len(status.models) == MAX_STATUS_MODELS
    assert status.models_omitted == 60_000 - MAX_STATUS_MODELS
    # The model the spec asks for is shown, wherever it sorts, and the backend is Ready with it.
    assert "m059999-" + "x" * 20 in {model.name for model in status.models}
    assert status.phase == "Ready"
    assert status.models_summary is not None and status.models_summary.endswith(f"+{60_000 - 1}")
    assert all(len(pod.models) <= MAX_POD_MODELS for pod in status.pods or [])


def test_names_and_messages_a_runtime_makes_up_are_cut_short() -> None:
    spec = {"runtime": "ollama", "models": []}
    # A runtime's answer is read up to 2 MiB: a hundred names of 20,000 characters fit.
    long_names = listing(MAX_STATUS_MODELS, name_chars=20_000)
    status = compute_backend_status(snapshot(spec, runtimes={"b-1": long_names}))
    assert stored_size(status) < FAR_BELOW_THE_LIMIT
    failing = RuntimeObservation(probe=probe(ProbeState.ERROR, "the runtime said: " + "e" * 2_000_000))
    status = compute_backend_status(snapshot(spec, runtimes={"b-1": failing}))
    assert stored_size(status) < FAR_BELOW_THE_LIMIT
    assert status.last_error is not None and status.last_error.startswith("the runtime said: eee")


def test_a_small_listing_is_shown_whole_without_a_count() -> None:
    status = compute_backend_status(
        snapshot({"runtime": "ollama", "models": []}, runtimes={"b-1": listing(3)})
    )
    assert status.models is not None and len(status.models) == 3 and status.models_omitted is None


SECRET_URL = (
    "https://alice:hunter2@models.example/m.gguf?X-Amz-Credential=AKIAEXAMPLE&X-Amz-Signature=0ddba11"
)


def test_credentials_of_a_model_url_never_reach_status() -> None:
    spec = {"runtime": "llamacpp", "models": [{"name": SECRET_URL}]}
    pulling = PullFacts(phase="Failed", error=f"GET {SECRET_URL}: 403 Forbidden")
    status = compute_backend_status(snapshot(spec, runtimes={}, pulls={SECRET_URL: pulling}))
    stored = json.dumps(status.to_api())
    assert "models.example/m.gguf" in stored, "the model is still named"
    for secret in ("hunter2", "alice", "AKIAEXAMPLE", "0ddba11"):
        assert secret not in stored


def test_a_round_llmop_cannot_complete_shows_why_and_keeps_what_was_seen() -> None:
    previous = LLMBackendStatus(
        phase="Ready",
        endpoint="http://b.ns.svc:8080",
        conditions=[Condition(type="Scheduled", status="True", reason="PodsScheduled")],
    )
    status = unobservable_status(previous, 3, "llmop cannot observe this backend: OverflowError: port", T0)
    assert status.phase == "Failed" and status.endpoint == "http://b.ns.svc:8080"
    ready, stalled = find(status.conditions, "Ready"), find(status.conditions, "Stalled")
    assert ready is not None and ready.status == "False" and ready.reason == "ObserveFailed"
    assert stalled is not None and stalled.status == "True" and "OverflowError" in stalled.message
    assert find(status.conditions, "Scheduled") is not None
    assert status.observed_generation == 3


def test_a_retry_stored_before_the_bounds_neither_spins_nor_overflows() -> None:
    attempts, backoff = retry_limits(RetrySpec(max_attempts=10**9, backoff="0s"))
    assert attempts == 100 and backoff == 1.0
    assert retry_limits(RetrySpec(backoff="3h"))[1] == 600.0
    assert backoff_seconds(backoff, 5000) == 600.0

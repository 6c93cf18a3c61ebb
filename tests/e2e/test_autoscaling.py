"""Demand-driven autoscaling end to end: a llama.cpp backend with `spec.autoscaling` goes to zero,
a request through `llmop gateway` (the `openai` client) wakes it, a burst of streams scales it to
its maximum, and it goes back down after its delay without cutting a stream; its spec never
changes (what Argo CD compares with Git).

The gateway runs on this machine as in test_gateway_e2e.py: the chart's environment and a token of
the chart's gateway ServiceAccount, so the API server's RBAC judges its demand writes. Real
llama-server processes serve at the pods' addresses (kwok fakes the pods, hack/podrunner.py runs
their containers).
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from test_gateway_e2e import CHAT_MODEL, HELLO, KEYS, key_secret, llamacpp_backend, running_gateway

from support.argocd import argocd_health
from support.kube import Kube, eventually, wait_backend_ready
from support.operator import OperatorProcess
from support.runtimes import PodRunner

pytestmark = pytest.mark.e2e

NAME = "auto"
AUTOSCALING = {
    "minReplicas": 0,
    "maxReplicas": 2,
    "targetInFlight": 1,
    "scaleDownDelay": "3s",
    "drainTimeout": "60s",
}
#: Every token a stream asks for is generated (the tiny model would stop at once otherwise), past
#: the model's short context (llama-server shifts it), so a stream lasts as long as it asks.
LONG = {"extra_body": {"ignore_eos": True}}
SLOT_ARGS = ["--parallel", "2", "--context-shift"]
#: The burst's streams end soon after it stops; the long stream runs through the scale-down
#: (about 1000 tokens a second per stream on two shared cores).
BURST_TOKENS = 300
LONG_TOKENS = 12000


def autoscaled_backend() -> dict[str, Any]:
    manifest = llamacpp_backend(NAME, replicas=1)
    del manifest["spec"]["replicas"]
    manifest["spec"].update(gpu={"count": 0}, autoscaling=dict(AUTOSCALING), args=list(SLOT_ARGS))
    manifest["spec"]["startup"] = {"timeout": "5m", "probeInterval": "500ms"}
    return manifest


@pytest.fixture(scope="module")
def scaled(
    kube: Kube,
    operator_process: OperatorProcess,
    podrunner: PodRunner,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Any]]:
    work = tmp_path_factory.mktemp("autoscaling")
    with kube.namespace("e2e-autosys") as system, kube.namespace("e2e-auto") as namespace:
        kube.apply(key_secret(KEYS["a"]), namespace)
        applied = autoscaled_backend()
        kube.apply(applied, namespace)
        with running_gateway(kube, system, [namespace], work) as base:
            client = openai.OpenAI(base_url=base + "/v1", api_key=KEYS["a"], timeout=300, max_retries=0)
            yield {"namespace": namespace, "spec": applied["spec"], "client": client}


def backend(kube: Kube, scaled: dict[str, Any]) -> dict[str, Any]:
    return kube.get("llmb", NAME, scaled["namespace"])


def deployment_replicas(kube: Kube, scaled: dict[str, Any]) -> int | None:
    found = kube.get_or_none("deployment", NAME, scaled["namespace"])
    return None if found is None else int(found["spec"].get("replicas", 1))


def serving_pods(body: dict[str, Any]) -> list[str]:
    pods = (body.get("status") or {}).get("pods") or []
    return [
        p["name"] for p in pods if p.get("ready") and p.get("phase") == "Serving" and not p.get("draining")
    ]


def wait_idle(kube: Kube, scaled: dict[str, Any], timeout: float) -> dict[str, Any]:
    return dict(
        eventually(
            lambda: (body := backend(kube, scaled)).get("status", {}).get("phase") == "Idle" and body,
            timeout=timeout,
            message="the backend Idle at zero replicas",
        )
    )


def stream(client: openai.OpenAI, max_tokens: int) -> dict[str, Any]:
    """One streamed chat completion, read to its end: its chunks and how it finished."""
    chunks = list(
        client.chat.completions.create(
            model=CHAT_MODEL, messages=HELLO, max_tokens=max_tokens, stream=True, **LONG
        )
    )
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    return {"chunks": len(chunks), "finish": finish}


class Burst:
    """Threads that each send streamed requests one after another until stopped."""

    def __init__(self, client: openai.OpenAI, threads: int, max_tokens: int) -> None:
        self.client, self.max_tokens = client, max_tokens
        self.stop = threading.Event()
        self.results: list[dict[str, Any]] = []
        self.errors: list[BaseException] = []
        self.threads = [threading.Thread(target=self.loop, daemon=True) for _ in range(threads)]
        for thread in self.threads:
            thread.start()

    def loop(self) -> None:
        while not self.stop.is_set():
            try:
                self.results.append(stream(self.client, self.max_tokens))
            except Exception as error:  # every failure is the test's finding
                self.errors.append(error)
                return

    def end(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=120)


def test_an_idle_backend_at_zero_is_ready_and_healthy_with_its_spec_as_applied(
    kube: Kube, scaled: dict[str, Any]
) -> None:
    body = wait_idle(kube, scaled, timeout=90)
    assert deployment_replicas(kube, scaled) == 0
    wait_backend_ready(kube, NAME, scaled["namespace"], timeout="30s")
    health = argocd_health("LLMBackend", body)
    assert health["status"] == "Healthy", health
    assert body["spec"] == scaled["spec"], "llmop wrote into the spec"


def test_a_request_through_the_gateway_wakes_the_backend_and_is_answered(
    kube: Kube, scaled: dict[str, Any]
) -> None:
    wait_idle(kube, scaled, timeout=90)
    started = time.monotonic()
    answer = scaled["client"].chat.completions.create(model=CHAT_MODEL, messages=HELLO, max_tokens=5)
    waited = time.monotonic() - started
    print(f"\nthe request at zero replicas was answered after {waited:.1f}s (download, start, load included)")
    assert answer.choices[0].message.content is not None
    status = backend(kube, scaled)["status"]
    assert status["phase"] != "Idle" and serving_pods(backend(kube, scaled))
    # The gateway's demand entry names it: written under its own name, read by the operator.
    assert status.get("demand"), status


def test_a_burst_scales_to_the_maximum_and_back_down_without_cutting_a_stream(
    kube: Kube, scaled: dict[str, Any]
) -> None:
    client = scaled["client"]
    started = time.monotonic()
    burst = Burst(client, threads=3, max_tokens=BURST_TOKENS)
    try:
        eventually(
            lambda: (
                (deployment_replicas(kube, scaled) == 2 and len(serving_pods(backend(kube, scaled))) == 2)
                or burst.errors
            ),
            timeout=90,
            message="two pods serving during the burst",
        )
        print(f"\ntwo pods serving {time.monotonic() - started:.1f}s into the burst")
        # One long stream, then the burst ends: demand falls to that stream's 1, and after the
        # delay one pod leaves. The stream is in flight all along and must end as asked.
        long: dict[str, Any] = {}
        long_thread = threading.Thread(target=lambda: long.update(stream(client, LONG_TOKENS)), daemon=True)
        long_thread.start()
        long_started = time.monotonic()
    finally:
        burst.end()
    assert not burst.errors, burst.errors
    assert all(r["finish"] == ["length"] for r in burst.results), burst.results
    eventually(
        lambda: deployment_replicas(kube, scaled) == 1 or not long_thread.is_alive(),
        timeout=90,
        interval=0.2,
        message="replicas back to 1, or the long stream's end",
    )
    assert long_thread.is_alive(), "the long stream ended before the scale-down: it tested nothing"
    message = backend(kube, scaled)["status"]["autoscaling"]["message"]
    print(f"one pod left {time.monotonic() - long_started:.1f}s into the long stream: {message}")
    long_thread.join(timeout=300)
    print(f"the long stream ended after {time.monotonic() - long_started:.1f}s")
    assert long.get("finish") == ["length"], long
    body = wait_idle(kube, scaled, timeout=90)
    assert deployment_replicas(kube, scaled) == 0
    assert body["spec"] == scaled["spec"], "llmop wrote into the spec"
    assert argocd_health("LLMBackend", body)["status"] == "Healthy"


def test_the_spec_is_never_written(kube: Kube, scaled: dict[str, Any]) -> None:
    live = backend(kube, scaled)
    assert live["spec"] == copy.deepcopy(scaled["spec"])
    assert live["metadata"]["generation"] == 1, "a change of the spec bumps the generation"

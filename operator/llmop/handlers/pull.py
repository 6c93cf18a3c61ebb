"""ModelPull: one daemon per pull gets the model onto every replica of its backend.

Ollama pods pull through their own `/api/pull`; vLLM and llama.cpp pods through the llmop agent
sidecar, which speaks the same API. Status is written at a bounded rate while bytes move.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import kopf
from pydantic import ValidationError

from llmop import API_GROUP, API_VERSION, metrics
from llmop.k8s.client import LLMBACKENDS, MODELPULLS, KubeAPIError, KubeClient, KubeUnavailable
from llmop.loops.context import BackendKey, OperatorContext
from llmop.loops.pace import API_RETRY_SECONDS, DAEMON_BACKOFF, status_patch
from llmop.manifests import AGENT_CONTAINER, AGENT_PORT, RUNTIME_CONTAINER
from llmop.models.backend import LLMBackendSpec
from llmop.models.duration import parse_duration
from llmop.models.pull import ModelPullSpec, ModelPullStatus, PullPhase, ReplicaPull
from llmop.reconcile.backend_status import PodFacts
from llmop.reconcile.pull_status import (
    IN_FLIGHT_REASON,
    PullTracker,
    attempt_number,
    backoff_seconds,
    human_bytes,
    pull_conditions,
    waiting_phase,
)
from llmop.runtimes import RuntimeAdapter, RuntimeAPIError, connect
from llmop.runtimes.agent import connect_agent
from llmop.runtimes.registry import managed_descriptor, serving_port

logger = logging.getLogger(__name__)
#: How often a finished pull looks for backend pods that came after it (in memory, no requests).
NEW_POD_CHECK_SECONDS = 5.0


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


class PullAttemptFailed(Exception):
    """One attempt failed on at least one replica; the message carries the runtime's own words."""


class StatusWriter:
    """Writes a ModelPull's status only when it changed, and progress at most every `interval`."""

    def __init__(self, kube: KubeClient, name: str, namespace: str, body: kopf.Body, interval: float) -> None:
        self.kube, self.name, self.namespace, self.body, self.interval = kube, name, namespace, body, interval
        self.written = ModelPullStatus.model_validate(dict(body.get("status", {})))
        self.last_write = 0.0
        self.writes = 0

    async def write(self, status: ModelPullStatus, *, progress_only: bool = False) -> None:
        if progress_only and time.monotonic() - self.last_write < self.interval:
            return
        new, old = status.to_api(), self.written.to_api()
        if new == old:
            return
        while True:
            try:
                await self.kube.patch_status(MODELPULLS, self.name, self.namespace, status_patch(old, new))
                break
            except KubeUnavailable:
                if progress_only:
                    return  # the next progress write carries it
                # A phase change is not lost to an API server that is away: it is written on its return.
                await asyncio.sleep(API_RETRY_SECONDS)
        self.written = status
        self.last_write = time.monotonic()
        self.writes += 1


def _pull_api(spec: LLMBackendSpec, url: str, client: httpx.AsyncClient, timeout: float) -> RuntimeAdapter:
    """A runtime that pulls for itself (Ollama) is asked; else the agent beside it, which speaks
    the same API."""
    if pulls_itself(spec):
        return connect(spec.runtime_kind, url, client=client, timeout=timeout)
    return connect_agent(url, client=client, timeout=timeout)


def pulls_itself(spec: LLMBackendSpec) -> bool:
    return managed_descriptor(spec).pulls_itself


def targets_without_the_model(
    spec: LLMBackendSpec, pods: list[PodFacts], status: ModelPullStatus
) -> dict[str, str]:
    """The pull targets that are not among the pods it succeeded on."""
    done = {replica.pod for replica in status.replicas or [] if replica.phase == "Succeeded"}
    return {pod: url for pod, url in pull_targets(spec, pods).items() if pod not in done}


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


async def _pull_one(
    pod: str,
    url: str,
    backend: LLMBackendSpec,
    spec: ModelPullSpec,
    tracker: PullTracker,
    client: httpx.AsyncClient,
) -> None:
    runtime = _pull_api(backend, url, client, timeout=30.0)
    replica = tracker.replica(pod)
    replica.phase, replica.error = "Pulling", None
    try:
        async for line in runtime.pull(spec.model, insecure=spec.insecure, sha256=spec.sha256):
            before = replica.completed
            replica.record(line)
            metrics.record_pull_bytes(replica.completed - before)
    except RuntimeAPIError as error:
        replica.phase, replica.error = "Failed", str(error)
        raise PullAttemptFailed(f"{pod}: {error}") from error


async def _silent_targets(
    targets: dict[str, str], backend: LLMBackendSpec, client: httpx.AsyncClient
) -> str | None:
    """The pods whose pull API does not answer, with the reason, in words; None when all do."""

    async def probe(url: str) -> str | None:
        result = await _pull_api(backend, url, client, timeout=5.0).probe(limit_seconds=5.0)
        return None if result.serving else result.reason

    reasons = await asyncio.gather(*(probe(url) for url in targets.values()))
    silent = [f"pod {pod}: {reason}" for pod, reason in zip(targets, reasons, strict=True) if reason]
    return "; ".join(silent) or None


async def _cancel_on_agents(targets: dict[str, str], model: str, client: httpx.AsyncClient) -> None:
    for url in targets.values():
        try:
            await client.request("DELETE", f"{url}/api/pull", json={"model": model}, timeout=5.0)
        except httpx.HTTPError:
            pass  # the pod is gone already: nothing to cancel


async def _pulled_model_facts(
    url: str, model: str, client: httpx.AsyncClient
) -> tuple[str | None, int | None]:
    """Digest and size of the model as the runtime (or agent) lists it after the pull."""
    runtime = connect("ollama", url, client=client, timeout=15.0)
    wanted = runtime.normalize_model_name(model)
    try:
        response = await client.get(f"{url}/api/tags", timeout=15.0)
        for entry in response.json().get("models", []):
            if wanted in (runtime.normalize_model_name(entry.get("name", "")), entry.get("model")):
                digest = entry.get("digest")
                # Ollama lists bare hex; layers, registries and the agent say sha256:<hex>.
                if digest and ":" not in digest:
                    digest = f"sha256:{digest}"
                return digest, entry.get("size")
    except (httpx.HTTPError, ValueError):
        pass
    return None, None


# kopf passes indexes as extra keyword arguments, which its handler protocol cannot express.
# cancellation_backoff: on deletion the daemon gets that long to stop by itself, so it can cancel
# the transfer on the agents; without it kopf cancels the task at once.
@kopf.daemon(  # type: ignore[arg-type]
    API_GROUP,
    API_VERSION,
    "modelpulls",
    cancellation_backoff=5.0,
    cancellation_timeout=10.0,
    backoff=DAEMON_BACKOFF,
)
async def run_model_pull(
    name: str,
    namespace: str | None,
    body: kopf.Body,
    memo: OperatorContext,
    stopped: kopf.DaemonStopped,
    pods_by_backend: kopf.Index[BackendKey, PodFacts],
    **_: Any,
) -> None:
    assert namespace is not None  # ModelPull is namespaced
    kube = memo.kube
    writer = StatusWriter(kube, name, namespace, body, memo.config.pull_progress_interval)
    resuming = True  # the first attempt of this daemon may be one a previous operator began
    known_backend: LLMBackendSpec | None = None  # as last read, to look for new pods cheaply
    while not stopped:
        generation = int(body.metadata.get("generation") or 0)
        try:
            spec = ModelPullSpec.model_validate(dict(body.get("spec", {})))
        except ValidationError as error:
            await writer.write(
                _settled(writer.written, "Failed", "InvalidSpec", str(error), generation, stalled=True)
            )
            await stopped.wait(30)
            continue
        current = writer.written
        backend_pods = list(pods_by_backend.get((namespace, spec.backend_ref.name), []))
        settled = current.observed_generation == generation and current.phase in ("Succeeded", "Failed")
        if settled and (
            current.phase == "Failed"
            or (
                known_backend is not None
                and not targets_without_the_model(known_backend, backend_pods, current)
            )
        ):
            # A finished pull is never repeated; a pod that came after it (a rollout, a rescheduled
            # pod, a scale-up) starts with an empty model volume and is pulled into on its own.
            await stopped.wait(30 if current.phase == "Failed" else NEW_POD_CHECK_SECONDS)
            continue
        if current.observed_generation != generation:
            current = ModelPullStatus()  # a spec change starts over

        backend = await kube.get(LLMBACKENDS, spec.backend_ref.name, namespace)
        backend_spec = LLMBackendSpec.model_validate(backend.get("spec", {})) if backend else None
        known_backend = backend_spec
        if settled and (backend_spec is None or backend_spec.external is not None):
            await stopped.wait(30)  # nothing to pull into; what was pulled stays Succeeded
            continue
        if backend_spec is None:
            await writer.write(
                _waiting(
                    current,
                    "BackendNotFound",
                    f"LLMBackend {spec.backend_ref.name!r} does not exist in {namespace}; "
                    "the pull starts when it appears",
                    generation,
                )
            )
            await stopped.wait(5)
            continue
        if backend_spec.external is not None:
            message = f"LLMBackend {spec.backend_ref.name!r} is external: llmop cannot pull into a server it does not run"
            await writer.write(
                _settled(current, "Failed", "ExternalBackend", message, generation, stalled=True)
            )
            continue
        kept: list[ReplicaPull] = []
        if settled:  # Succeeded: only the pods that came since
            targets = targets_without_the_model(backend_spec, backend_pods, current)
            if not targets:
                await stopped.wait(NEW_POD_CHECK_SECONDS)
                continue
            alive = {pod.name for pod in backend_pods if not pod.deleting}
            kept = [r for r in current.replicas or [] if r.phase == "Succeeded" and r.pod in alive]
            current = current.model_copy(update={"attempts": 0})  # a new round, counted from 1
        else:
            targets = pull_targets(backend_spec, backend_pods)
        if not targets:
            await writer.write(
                _waiting(
                    current,
                    "WaitingForPods",
                    f"waiting for a running pod of LLMBackend {spec.backend_ref.name!r}",
                    generation,
                )
            )
            await stopped.wait(2)
            continue
        # A pod whose pull API does not answer yet (a runtime or agent still starting, or
        # restarting) is waited for: that is no failed attempt.
        silent = await _silent_targets(targets, backend_spec, memo.runtime_http)
        if silent and settled:
            await stopped.wait(2)  # a new pod still starting; the pull stays Succeeded meanwhile
            continue
        if silent:
            await writer.write(
                _waiting(current, "WaitingForRuntime", f"waiting for the pull API of {silent}", generation)
            )
            await stopped.wait(2)
            continue

        attempts = attempt_number(current, generation, resuming=resuming)
        resuming = False
        started = current.started_at if current.phase == "Pulling" and current.started_at else _now()
        tracker = PullTracker()
        pulling = current.model_copy(
            update={
                "observed_generation": generation,
                "phase": "Pulling",
                "attempts": attempts,
                "started_at": started,
                "conditions": pull_conditions(
                    "Pulling",
                    IN_FLIGHT_REASON,
                    f"pulling {spec.model} (attempt {attempts})",
                    generation,
                    current.conditions,
                    _now(),
                ),
            }
        )
        await writer.write(pulling)
        if attempts == 1:
            kopf.event(
                body,
                type="Normal",
                reason="PullStarted",
                message=f"pulling {spec.model} into {len(targets)} pod(s)",
            )
        failure = await _attempt(spec, targets, backend_spec, tracker, pulling, writer, stopped, memo)
        if failure is None:
            first_url = next(iter(targets.values()))
            digest, size = await _pulled_model_facts(first_url, spec.model, memo.runtime_http)
            size = size or tracker.total or None
            message = f"pulled {spec.model} ({human_bytes(size or 0)}) into {len(targets)} pod(s)"
            done = pulling.model_copy(
                update={
                    "phase": "Succeeded",
                    "progress": tracker.progress(),
                    "replicas": sorted([*kept, *tracker.replica_states()], key=lambda r: r.pod),
                    "digest": digest,
                    "size_bytes": size,
                    "completed_at": _now(),
                    "last_error": None,
                    "conditions": pull_conditions(
                        "Succeeded", "Pulled", message, generation, pulling.conditions, _now()
                    ),
                }
            )
            await writer.write(done)
            kopf.event(body, type="Normal", reason="PullSucceeded", message=message)
            metrics.record_pull_done((_now() - started).total_seconds())
            continue
        if stopped:
            deleted = stopped.reason and stopped.reason & kopf.DaemonStoppingReason.RESOURCE_DELETED
            # Ollama stops a pull when its client leaves; the agent's transfer outlives its
            # clients (an operator restart must not lose it), so it is told to stop.
            if deleted and not pulls_itself(backend_spec):
                await _cancel_on_agents(targets, spec.model, memo.runtime_http)
            return
        failed_phase: PullPhase = "Failed" if attempts >= spec.retry.max_attempts else "Pulling"
        metrics.record_pull_failed()
        base = parse_duration(spec.retry.backoff)
        wait = backoff_seconds(base, attempts)
        if failed_phase == "Failed":
            message = f"gave up after {attempts} attempt(s): {failure}"
            kopf.event(body, type="Warning", reason="PullFailed", message=message)
        else:
            message = (
                f"attempt {attempts} of {spec.retry.max_attempts} failed, retrying in {wait:.0f}s: {failure}"
            )
        failed = pulling.model_copy(
            update={
                "phase": failed_phase,
                "last_error": failure,
                "progress": tracker.progress(),
                "replicas": tracker.replica_states(),
                "conditions": pull_conditions(
                    failed_phase,
                    "PullFailed",
                    message,
                    generation,
                    pulling.conditions,
                    _now(),
                    stalled=failed_phase == "Failed",
                ),
            }
        )
        await writer.write(failed)
        if failed_phase == "Pulling":
            await stopped.wait(wait)


async def _attempt(
    spec: ModelPullSpec,
    targets: dict[str, str],
    backend: LLMBackendSpec,
    tracker: PullTracker,
    pulling: ModelPullStatus,
    writer: StatusWriter,
    stopped: kopf.DaemonStopped,
    memo: OperatorContext,
) -> str | None:
    """Pull on every target at once; progress is written while it runs. Returns the error, if any."""
    tasks = [
        asyncio.create_task(_pull_one(pod, url, backend, spec, tracker, memo.runtime_http))
        for pod, url in targets.items()
    ]
    all_done = asyncio.gather(*tasks, return_exceptions=True)
    try:
        while not all_done.done():
            await asyncio.wait([all_done], timeout=min(1.0, writer.interval))
            if stopped:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                return "stopped"
            tracker.sample(time.monotonic())
            try:
                await writer.write(
                    pulling.model_copy(
                        update={"progress": tracker.progress(), "replicas": tracker.replica_states()}
                    ),
                    progress_only=True,
                )
            except KubeAPIError as error:
                logger.warning("could not write pull progress: %s", error)
    finally:
        if not all_done.done():
            for task in tasks:
                task.cancel()
    errors = [str(result) for result in all_done.result() if isinstance(result, BaseException)]
    return "; ".join(errors) if errors else None


def _waiting(current: ModelPullStatus, reason: str, message: str, generation: int) -> ModelPullStatus:
    phase = waiting_phase(current.phase)
    return current.model_copy(
        update={
            "observed_generation": generation,
            "phase": phase,
            "conditions": pull_conditions(phase, reason, message, generation, current.conditions, _now()),
        }
    )


def _settled(
    current: ModelPullStatus, phase: PullPhase, reason: str, message: str, generation: int, *, stalled: bool
) -> ModelPullStatus:
    return current.model_copy(
        update={
            "observed_generation": generation,
            "phase": phase,
            "last_error": message,
            "conditions": pull_conditions(
                phase, reason, message, generation, current.conditions, _now(), stalled
            ),
        }
    )

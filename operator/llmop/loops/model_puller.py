"""One ModelPull's loop: read its spec and backend, plan (pull_plan), pull on every target at
once through the runtime's or the agent's pull API, write status at a bounded rate, retry.

Ollama pods pull through their own `/api/pull`; vLLM and llama.cpp pods through the llmop agent
sidecar, which speaks the same API.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import httpx
import kopf
from pydantic import ValidationError

from llmop import metrics
from llmop.k8s.client import LLMBACKENDS, MODELPULLS, KubeAPIError, KubeClient, KubeUnavailable
from llmop.loops.agent_token import AgentTokenUnavailable, agent_token
from llmop.loops.context import OperatorContext
from llmop.loops.pace import API_RETRY_SECONDS, FAILED_ROUND_SECONDS, status_patch
from llmop.loops.pull_plan import (
    NEW_POD_CHECK_SECONDS,
    SETTLED_SECONDS,
    Plan,
    failed_status,
    is_settled,
    nothing_to_do,
    plan_round,
    pulling_status,
    pulls_itself,
    settled_status,
    succeeded_status,
    waiting_status,
)
from llmop.models.backend import LLMBackendSpec
from llmop.models.pull import ModelPullSpec, ModelPullStatus, PullPhase
from llmop.reconcile.backend_status import PodFacts
from llmop.reconcile.conditions import describe_failure, status_text, stored_now
from llmop.reconcile.pull_status import (
    PullTracker,
    attempt_number,
    backoff_seconds,
    human_bytes,
    retry_limits,
)
from llmop.runtimes import RuntimeAdapter, RuntimeAPIError, connect
from llmop.runtimes.agent import connect_agent

logger = logging.getLogger(__name__)
#: A pod whose pull API does not answer yet is asked again after this.
SILENT_SECONDS = 2.0


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


@dataclass
class ModelPuller:
    name: str
    namespace: str
    #: kopf's live view of the ModelPull: always its latest spec.
    body: kopf.Body
    context: OperatorContext
    stopped: kopf.DaemonStopped
    #: The pods of a backend, by its name (from the operator's in-memory index).
    pods: Callable[[str], list[PodFacts]]
    writer: StatusWriter
    #: The first attempt of this loop may be one a previous operator began.
    resuming: bool = True
    #: The backend as last read, to look for new pods without asking the API server.
    known_backend: LLMBackendSpec | None = None
    #: The UID of the backend as last read: its agent token belongs to it.
    backend_uid: str = ""
    #: The agent's token for this round (None for a runtime that pulls itself).
    token: str | None = None
    generation: int = field(default=0)

    async def run(self) -> None:
        while not self.stopped:
            try:
                await self.round()
            except Exception as error:  # whatever a spec or a runtime does, the pull loop goes on
                await self.report_failed_round(error)

    async def report_failed_round(self, error: Exception) -> None:
        """Say in status why this round failed, then wait: a cause that stays (a spec stored
        before the CRD's rules) costs one round every FAILED_ROUND_SECONDS, never a spin."""
        message = status_text(f"llmop cannot run this pull: {describe_failure(error)}")
        logger.warning("pull %s/%s: %s", self.namespace, self.name, message)
        # Not settled (Failed): a cause that passes must not stop the pull for good.
        waiting = waiting_status(self.writer.written, "PullError", message, self.generation)
        status = waiting.model_copy(update={"last_error": message})
        try:
            await self.writer.write(status)
        except Exception as failure:  # the API server refused even that: the log says so
            logger.warning("pull %s/%s: cannot write status: %s", self.namespace, self.name, failure)
        await self.stopped.wait(FAILED_ROUND_SECONDS)

    async def round(self) -> None:
        self.generation = int(self.body.metadata.get("generation") or 0)
        spec = await self.valid_spec()
        if spec is None:
            return
        current = self.writer.written
        pods = self.pods(spec.backend_ref.name)
        if is_settled(current, self.generation) and nothing_to_do(current, self.known_backend, pods):
            await self.stopped.wait(SETTLED_SECONDS if current.phase == "Failed" else NEW_POD_CHECK_SECONDS)
            return
        self.known_backend = await self.read_backend(spec)
        plan = plan_round(spec, self.namespace, self.known_backend, pods, current, self.generation)
        if plan.wait is not None:
            if plan.status is not None:
                await self.writer.write(plan.status)
            await self.stopped.wait(plan.wait)
            return
        assert self.known_backend is not None  # a plan to pull has a backend
        settled = is_settled(current, self.generation)
        if not await self.has_agent_token(spec, self.known_backend, plan, settled):
            return
        if await self.waiting_for_silent(plan, self.known_backend, settled):
            return
        await self.attempt(spec, self.known_backend, plan)

    async def valid_spec(self) -> ModelPullSpec | None:
        try:
            return ModelPullSpec.model_validate(dict(self.body.get("spec", {})))
        except ValidationError as error:
            status = settled_status(
                self.writer.written, "Failed", "InvalidSpec", str(error), self.generation, stalled=True
            )
            await self.writer.write(status)
            await self.stopped.wait(SETTLED_SECONDS)
            return None

    async def read_backend(self, spec: ModelPullSpec) -> LLMBackendSpec | None:
        backend = await self.context.kube.get(LLMBACKENDS, spec.backend_ref.name, self.namespace)
        if not backend:
            return None
        self.backend_uid = str(backend.get("metadata", {}).get("uid", ""))
        return LLMBackendSpec.model_validate(backend.get("spec", {}))

    async def has_agent_token(
        self, spec: ModelPullSpec, backend: LLMBackendSpec, plan: Plan, settled: bool
    ) -> bool:
        """The agent answers only the operator: find its token first (none needed for Ollama).
        Until its Secret is there, the pull waits, as for an agent that does not answer yet."""
        self.token = None
        if pulls_itself(backend):
            return True
        try:
            self.token = await agent_token(
                self.context, spec.backend_ref.name, self.namespace, self.backend_uid
            )
        except AgentTokenUnavailable as error:
            if not settled:
                await self.writer.write(
                    waiting_status(plan.start, "WaitingForRuntime", str(error), self.generation)
                )
            await self.stopped.wait(SILENT_SECONDS)
            return False
        return True

    async def waiting_for_silent(self, plan: Plan, backend: LLMBackendSpec, settled: bool) -> bool:
        """A pod whose pull API does not answer yet (a runtime or agent still starting, or
        restarting) is waited for: that is no failed attempt. A finished pull stays Succeeded
        meanwhile."""
        silent = await silent_targets(plan.targets, backend, self.context.runtime_http, self.token)
        if not silent:
            return False
        if not settled:
            message = f"waiting for the pull API of {silent}"
            await self.writer.write(waiting_status(plan.start, "WaitingForRuntime", message, self.generation))
        await self.stopped.wait(SILENT_SECONDS)
        return True

    async def attempt(self, spec: ModelPullSpec, backend: LLMBackendSpec, plan: Plan) -> None:
        attempts = attempt_number(plan.start, self.generation, resuming=self.resuming)
        self.resuming = False
        current = plan.start
        started = current.started_at if current.phase == "Pulling" and current.started_at else stored_now()
        pulling = pulling_status(current, spec.model, attempts, self.generation, started)
        await self.writer.write(pulling)
        if attempts == 1:
            message = f"pulling {spec.model} into {len(plan.targets)} pod(s)"
            kopf.event(self.body, type="Normal", reason="PullStarted", message=status_text(message))
        tracker = PullTracker()
        failure = await self.pull_everywhere(spec, plan.targets, backend, tracker, pulling)
        if failure is None:
            await self.succeeded(spec, backend, plan, tracker, pulling, started)
        elif self.stopped:
            await self.stop(spec, plan, backend)
        else:
            await self.failed(spec, attempts, failure, tracker, pulling)

    async def succeeded(
        self,
        spec: ModelPullSpec,
        backend: LLMBackendSpec,
        plan: Plan,
        tracker: PullTracker,
        pulling: ModelPullStatus,
        started: datetime,
    ) -> None:
        first_url = next(iter(plan.targets.values()))
        digest, size = await pulled_model_facts(
            backend, first_url, spec.model, self.context.runtime_http, self.token
        )
        size = size or tracker.total or None
        message = f"pulled {spec.model} ({human_bytes(size or 0)}) into {len(plan.targets)} pod(s)"
        await self.writer.write(succeeded_status(pulling, tracker, plan.kept, (digest, size), message))
        kopf.event(self.body, type="Normal", reason="PullSucceeded", message=status_text(message))
        metrics.record_pull_done((stored_now() - started).total_seconds())

    async def stop(self, spec: ModelPullSpec, plan: Plan, backend: LLMBackendSpec) -> None:
        deleted = self.stopped.reason and self.stopped.reason & kopf.DaemonStoppingReason.RESOURCE_DELETED
        # Ollama stops a pull when its client leaves; the agent's transfer outlives its clients
        # (an operator restart must not lose it), so it is told to stop.
        if deleted and not pulls_itself(backend):
            await cancel_on_agents(plan.targets, spec.model, self.context.runtime_http, self.token)

    async def failed(
        self, spec: ModelPullSpec, attempts: int, failure: str, tracker: PullTracker, pulling: ModelPullStatus
    ) -> None:
        max_attempts, backoff = retry_limits(spec.retry)
        phase: PullPhase = "Failed" if attempts >= max_attempts else "Pulling"
        metrics.record_pull_failed()
        wait = backoff_seconds(backoff, attempts)
        if phase == "Failed":
            message = f"gave up after {attempts} attempt(s): {failure}"
            kopf.event(self.body, type="Warning", reason="PullFailed", message=status_text(message))
        else:
            message = f"attempt {attempts} of {max_attempts} failed, retrying in {wait:.0f}s: {failure}"
        await self.writer.write(failed_status(pulling, tracker, phase, failure, message))
        if phase == "Pulling":
            await self.stopped.wait(wait)

    async def pull_everywhere(
        self,
        spec: ModelPullSpec,
        targets: dict[str, str],
        backend: LLMBackendSpec,
        tracker: PullTracker,
        pulling: ModelPullStatus,
    ) -> str | None:
        """Pull on every target at once; progress is written while it runs. Returns the error, if any."""
        client = self.context.runtime_http
        tasks = [
            asyncio.create_task(pull_one(pod, url, backend, spec, tracker, client, self.token))
            for pod, url in targets.items()
        ]
        all_done = asyncio.gather(*tasks, return_exceptions=True)
        try:
            while not all_done.done():
                await asyncio.wait([all_done], timeout=min(1.0, self.writer.interval))
                if self.stopped:
                    for task in tasks:
                        task.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
                    return "stopped"
                await self.write_progress(tracker, pulling)
        finally:
            if not all_done.done():
                for task in tasks:
                    task.cancel()
        errors = [str(result) for result in all_done.result() if isinstance(result, BaseException)]
        return "; ".join(errors) if errors else None

    async def write_progress(self, tracker: PullTracker, pulling: ModelPullStatus) -> None:
        tracker.sample(time.monotonic())
        progress = pulling.model_copy(
            update={"progress": tracker.progress(), "replicas": tracker.replica_states()}
        )
        try:
            await self.writer.write(progress, progress_only=True)
        except KubeAPIError as error:
            logger.warning("could not write pull progress: %s", error)


def pull_api(
    spec: LLMBackendSpec, url: str, client: httpx.AsyncClient, timeout: float, token: str | None
) -> RuntimeAdapter:
    """A runtime that pulls for itself (Ollama) is asked; else the agent beside it, which speaks
    the same API and answers only requests with the backend's agent token."""
    if pulls_itself(spec):
        return connect(spec.runtime_kind, url, client=client, timeout=timeout)
    return connect_agent(url, token=token, client=client, timeout=timeout)


async def pull_one(
    pod: str,
    url: str,
    backend: LLMBackendSpec,
    spec: ModelPullSpec,
    tracker: PullTracker,
    client: httpx.AsyncClient,
    token: str | None,
) -> None:
    runtime = pull_api(backend, url, client, timeout=30.0, token=token)
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


async def silent_targets(
    targets: dict[str, str], backend: LLMBackendSpec, client: httpx.AsyncClient, token: str | None
) -> str | None:
    """The pods whose pull API does not answer, with the reason, in words; None when all do."""

    async def probe(url: str) -> str | None:
        result = await pull_api(backend, url, client, timeout=5.0, token=token).probe(limit_seconds=5.0)
        return None if result.serving else result.reason

    reasons = await asyncio.gather(*(probe(url) for url in targets.values()))
    silent = [f"pod {pod}: {reason}" for pod, reason in zip(targets, reasons, strict=True) if reason]
    return "; ".join(silent) or None


async def cancel_on_agents(
    targets: dict[str, str], model: str, client: httpx.AsyncClient, token: str | None
) -> None:
    for url in targets.values():
        try:
            await connect_agent(url, token=token, client=client, timeout=5.0).cancel_pull(model)
        except RuntimeAPIError:
            pass  # the pod is gone already: nothing to cancel


async def pulled_model_facts(
    backend: LLMBackendSpec, url: str, model: str, client: httpx.AsyncClient, token: str | None
) -> tuple[str | None, int | None]:
    """Digest and size of the model as the runtime (or agent) lists it after the pull."""
    runtime = pull_api(backend, url, client, timeout=15.0, token=token)
    try:
        found = await runtime.find_model(model)
    except RuntimeAPIError:
        return None, None
    return (found.digest, found.size_bytes) if found else (None, None)

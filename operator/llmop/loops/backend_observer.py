"""One backend's observer: look at its runtimes, decide its status, write it when it changed, wait.

Its fields are what one round leaves to the next; the decisions it takes are in `pace`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import kopf
from pydantic import ValidationError

from llmop import metrics
from llmop.k8s.client import LLMBACKENDS, KubeUnavailable
from llmop.loops.backend_autoscaler import BackendAutoscaler
from llmop.loops.context import BackendKey, OperatorContext
from llmop.loops.node_gpus import NodeGpuReader
from llmop.loops.pace import (
    API_RETRY_SECONDS,
    DOUBT_SECONDS,
    FAILED_ROUND_SECONDS,
    GATEWAY_FIELDS,
    ObserverPace,
    caught_up,
    probe_interval_seconds,
    status_patch,
    warmup_timeout_seconds,
)
from llmop.loops.pull_plan import pulls_itself
from llmop.loops.secret_access import SecretNotUsable, check_pod_references, read_api_key
from llmop.manifests import endpoint_url, openai_base_url, selector_text
from llmop.models.backend import PROBE_INTERVAL_BOUNDS, LLMBackendSpec, LLMBackendStatus
from llmop.models.duration import parse_duration
from llmop.observer import observe_runtime
from llmop.reconcile.autoscale import AutoscaleDecision
from llmop.reconcile.backend_status import (
    EXTERNAL,
    BackendSnapshot,
    PodFacts,
    PullFacts,
    RuntimeObservation,
    compute_backend_status,
    unobservable_status,
)
from llmop.reconcile.conditions import describe_failure, find, status_text, stored_now
from llmop.reconcile.fits import FITS
from llmop.reconcile.startup import ended_stages, parse_timestamp
from llmop.runtimes import connect
from llmop.runtimes.registry import serving_port

logger = logging.getLogger(__name__)
#: A Secret that is not usable (no opt-in label, not text) is looked at again this often.
SECRET_RECHECK_SECONDS = 10.0
MIN_ROUND_GAP_SECONDS = parse_duration(PROBE_INTERVAL_BOUNDS[0])


@dataclass
class Look:
    """What one round saw: the snapshot, its status, and the URL asked for each target."""

    snapshot: BackendSnapshot
    targets: dict[str, str]
    status: LLMBackendStatus


@dataclass
class BackendObserver:
    name: str
    namespace: str
    #: kopf's live view of the backend: always its latest spec and status.
    body: kopf.Body
    context: OperatorContext
    stopped: kopf.DaemonStopped
    pods: Callable[[], list[PodFacts]]
    pulls: Callable[[], list[tuple[str, PullFacts]]]
    logger: kopf.Logger
    generation: int = -1
    # Not stored_now(): a start cut to the second would spend up to a second of startup.timeout early.
    observing_since: datetime = field(default_factory=lambda: datetime.now(UTC))
    api_key: str | None = None
    #: Why a Secret the spec names is not used, and when llmop last looked (monotonic seconds):
    #: looked at again every SECRET_RECHECK_SECONDS until it is fixed (a label added).
    secret_problem: SecretNotUsable | None = None
    secret_checked: float = 0.0
    warmed: set[str] = field(default_factory=set)
    #: When the warmup of each pod returned (the end of its cold start's Warming stage).
    warmed_at: dict[str, datetime] = field(default_factory=dict)
    #: The last full observation of each target.
    seen: dict[str, RuntimeObservation] = field(default_factory=dict)
    #: The resourceVersion and status llmop last wrote, until kopf's view carries them.
    written: tuple[str | None, dict[str, Any]] | None = None
    pace: ObserverPace = field(default_factory=ObserverPace)
    waker: asyncio.Event = field(default_factory=asyncio.Event)
    #: Why the last round failed, if it did: logged once, not every round.
    failure: str | None = None
    #: When the last round began (monotonic seconds).
    round_began: float = float("-inf")
    #: The GPU memory of the nodes the pods run on, for the Fits condition.
    gpu_nodes: NodeGpuReader = field(default_factory=NodeGpuReader)
    #: spec.autoscaling: decides and sets the Deployment's replicas at the start of each round.
    autoscaler: BackendAutoscaler = field(init=False)

    def __post_init__(self) -> None:
        self.autoscaler = BackendAutoscaler(self.name, self.namespace, self.context)

    @property
    def key(self) -> BackendKey:
        return (self.namespace, self.name)

    async def run(self) -> None:
        self.waker = self.context.observers.setdefault(self.key, self.waker)
        try:
            while not self.stopped:
                await self.keep_round_gap()
                self.waker.clear()
                self.round_began = time.monotonic()
                try:
                    await self.round()
                    self.failure = None
                except Exception as error:  # whatever a spec or a runtime does, observing goes on
                    await self.report_failed_round(error)
        finally:
            if self.context.observers.get(self.key) is self.waker:
                del self.context.observers[self.key]
            metrics.forget_backend(self.namespace, self.name)
            self.context.agent_tokens.pop(self.key, None)
            if self.stopped.reason and self.stopped.reason & kopf.DaemonStoppingReason.RESOURCE_DELETED:
                self.context.forget_backend(self.key)
                metrics.forget_deleted_backend(str(self.body.metadata.get("uid", "")))

    async def keep_round_gap(self) -> None:
        """Wakes (a pod or a ModelPull changed) never bring two rounds closer than the shortest
        probe interval: a tenant patching a ModelPull in a loop does not set the probe rate."""
        gap = MIN_ROUND_GAP_SECONDS - (time.monotonic() - self.round_began)
        if gap > 0:
            await self.stopped.wait(gap)

    async def report_failed_round(self, error: Exception) -> None:
        """Say in status (and an Event) why this round failed, then wait: a cause that stays (a
        spec stored before the CRD's rules, an answer llmop cannot read) costs one round every
        FAILED_ROUND_SECONDS, never a spin or a dead observer."""
        message = status_text(f"llmop cannot observe this backend: {describe_failure(error)}")
        if message != self.failure:
            logger.warning("backend %s/%s: %s", self.namespace, self.name, message)
            self.failure = message
        try:
            stored = self.stored_status()
            previous = readable_status(stored)
            generation = int(self.body.metadata.get("generation") or 0)
            status = unobservable_status(previous, generation, message, stored_now())
            if status.to_api() != previous.to_api():
                await self.write(stored, previous, status)
        except Exception as failure:  # the API server refused even that: the log says so
            logger.warning("backend %s/%s: cannot write status: %s", self.namespace, self.name, failure)
        await self.wait(FAILED_ROUND_SECONDS)

    async def round(self) -> None:
        stored = self.stored_status()
        # A spec the models cannot read fails the round: status says why (report_failed_round).
        spec = LLMBackendSpec.model_validate(dict(self.body.get("spec", {})))
        if not await self.follow_generation(spec):
            await self.wait(API_RETRY_SECONDS)
            return
        previous = LLMBackendStatus.model_validate(stored)
        # First: a request a gateway holds must reach the Deployment before any probe is made.
        live = dict(self.body.get("status") or {})
        version = self.body.metadata.get("resourceVersion")
        decision = await self.autoscaler.step(spec, previous, live, self.pods(), stored_now(), version)
        if decision is not None and self.autoscaler.rescaled:
            before, after = self.autoscaler.rescaled
            # A log line to the millisecond: what a benchmark of the wake reads llmop's share from.
            logger.info("backend %s/%s: %d -> %d replicas", self.namespace, self.name, before, after)
            post_rescale_event(self.body, before, after, decision.status.message)
        look = await self.look(spec, previous, decision)
        changed = look.status.to_api() != previous.to_api()
        if self.pace.doubts(previous.phase, changed, self.stopped_answering(look)):
            self.seen = {}
            await self.wait(min(probe_interval_seconds(spec.startup.probe_interval), DOUBT_SECONDS))
            return
        self.seen = dict(look.snapshot.runtimes)
        if changed and not await self.write(stored, previous, look.status):
            self.pace.woken = await self.wait(API_RETRY_SECONDS)
            return
        metrics.record_backend_phase(self.body, previous.phase, look.status.phase, written=changed)
        if changed:
            metrics.record_cold_start_stages(
                spec.runtime_kind, ended_stages(previous.startup, look.status.startup)
            )
        if spec.warmup.enabled and look.status.phase == "Ready":
            await self.warm_up(look, spec)
        fast = probe_interval_seconds(spec.startup.probe_interval)
        interval = self.pace.next_interval(
            look.status.phase, changed, fast, len(self.context.observers), random.uniform(0.9, 1.0)
        )
        interval = min(interval, self.autoscale_recheck(decision))
        # A wake-up asks again at once, with every listing; the pace follows what that finds.
        self.pace.woken = await self.wait(interval)

    def autoscale_recheck(self, decision: AutoscaleDecision | None) -> float:
        """Seconds until spec.autoscaling's decision may change with no event (a delay that ends),
        soon after a write the API server refused."""
        if self.autoscaler.failed:
            return API_RETRY_SECONDS
        if decision is None or decision.recheck_seconds is None:
            return float("inf")
        # Just past the moment: a round a hair early would find the delay not yet over.
        return decision.recheck_seconds + 0.5

    def stored_status(self) -> dict[str, Any]:
        """The status to compare with: the stored one, or the one llmop wrote while kopf's view
        has not caught up with it (a busy operator's view lags by seconds: comparing with the
        older status would write the same change, and announce it, again). Without the gateways'
        fields: llmop neither compares nor writes them."""
        stored = own_status(self.body.get("status", {}))
        if self.written is not None:
            version, ours = self.written
            if caught_up(self.body.metadata.get("resourceVersion"), version, stored, ours):
                self.written = None
            else:
                return ours
        return stored

    async def follow_generation(self, spec: LLMBackendSpec) -> bool:
        """A new generation starts the clock and the pace over and reads the API key again.
        False while the API server cannot be asked for the key."""
        if self.body.metadata.get("generation") == self.generation:
            recheck = time.monotonic() - self.secret_checked >= SECRET_RECHECK_SECONDS
            if self.secret_problem is not None and recheck:
                with contextlib.suppress(KubeUnavailable):
                    await self.read_secrets(spec)
            return True
        try:
            await self.read_secrets(spec)
        except KubeUnavailable:
            return False
        self.generation = self.body.metadata.get("generation", 0)
        self.observing_since = datetime.now(UTC)
        self.pace.restart()
        return True

    async def read_secrets(self, spec: LLMBackendSpec) -> None:
        """The API key, and whether every Secret the pods would get opted in; nothing of a
        Secret that did not is kept."""
        self.secret_checked = time.monotonic()
        try:
            api_key = await read_api_key(self.context.kube, self.namespace, spec)
            if spec.runtime is not None:
                await check_pod_references(self.context.kube, self.namespace, spec)
        except SecretNotUsable as problem:
            self.api_key, self.secret_problem = None, problem
            return
        self.api_key, self.secret_problem = api_key, None

    async def look(
        self, spec: LLMBackendSpec, previous: LLMBackendStatus, decision: AutoscaleDecision | None = None
    ) -> Look:
        steady = self.pace.steady(previous.phase)
        carried = self.seen if steady and not self.pace.full_listing(previous.phase) else {}
        snapshot, targets = await self.snapshot(spec, previous, carried)
        snapshot.autoscale = decision
        return Look(snapshot, targets, compute_backend_status(snapshot))

    def stopped_answering(self, look: Look) -> bool:
        return any(
            self.seen[target].probe.serving and not observation.probe.serving
            for target, observation in look.snapshot.runtimes.items()
            if target in self.seen
        )

    async def snapshot(
        self, spec: LLMBackendSpec, previous: LLMBackendStatus, carried: dict[str, RuntimeObservation]
    ) -> tuple[BackendSnapshot, dict[str, str]]:
        """The snapshot, and the base URL probed for each pod (or `external`). A target in
        `carried` that served is only health-checked; its listings are carried over."""
        endpoint = endpoint_url(self.name, self.namespace, spec, self.context.config.cluster_domain)
        kind = spec.runtime_kind
        pods = self.pods()
        # Only the pods there are: a backend whose pods come and go does not grow this.
        self.warmed_at = {pod.name: at for pod in pods if (at := self.warmed_at.get(pod.name))}
        # A Secret that is not llmop's to use: nothing is asked of the server until it is fixed.
        targets = {} if self.secret_problem else self.targets(spec, pods, endpoint)

        async def observe(key: str, url: str) -> RuntimeObservation:
            async with self.context.probe_gate:
                return await observe_runtime(
                    kind,
                    url,
                    client=self.http_for(spec),
                    api_key=self.api_key,
                    previous=carried.get(key),
                )

        observations = await asyncio.gather(*(observe(key, url) for key, url in targets.items()))
        nodes = {pod.node for pod in pods if pod.node and not pod.deleting}
        # A backend without GPUs has no Fits condition: no node is read for it.
        gpus = spec.external is None and spec.gpu.count > 0
        snapshot = BackendSnapshot(
            generation=self.generation,
            spec=spec,
            endpoint=endpoint,
            openai_base_url=openai_base_url(endpoint, kind),
            now=stored_now(),
            observing_since=self.observing_since,
            previous=previous,
            pods=pods,
            runtimes=dict(zip(targets, observations, strict=True)),
            pulls=dict(self.pulls()),
            normalize=tolerant(connect(kind, "http://normalize.invalid").normalize_model_name),
            created=parse_timestamp(self.body.metadata.get("creationTimestamp")),
            pulls_itself=spec.runtime is not None and pulls_itself(spec),
            warmed=dict(self.warmed_at),
            apply_problem=self.context.apply_errors.get(self.key),
            secret_problem=(
                (self.secret_problem.reason, self.secret_problem.message) if self.secret_problem else None
            ),
            nodes=await self.gpu_nodes.nodes(self.context.kube, nodes) if gpus else {},
            defaults=self.context.resolved_defaults.get(self.key),
            pod_selector=selector_text(self.name),
            cache_wait=self.context.cache_waits.get(self.key),
            cached_sizes=self.context.cache_model_sizes.get(self.key, {}),
        )
        return snapshot, targets

    def http_for(self, spec: LLMBackendSpec) -> httpx.AsyncClient:
        """A tenant's URL goes through the deny list; llmop's own pods need no check."""
        return self.context.external_http if spec.external is not None else self.context.runtime_http

    @staticmethod
    def targets(spec: LLMBackendSpec, pods: list[PodFacts], endpoint: str) -> dict[str, str]:
        if spec.external is not None:
            return {EXTERNAL: endpoint}
        port = serving_port(spec)
        return {
            pod.name: f"http://{pod.ip}:{port}"
            for pod in pods
            if pod.ip and pod.phase == "Running" and not pod.deleting
        }

    async def write(
        self, stored: dict[str, Any], previous: LLMBackendStatus, status: LLMBackendStatus
    ) -> bool:
        """Write the new status and announce a phase change; False while the API server is away
        (the round after its return writes what it finds then)."""
        new = status.to_api()
        try:
            response = await self.context.kube.patch_status(
                LLMBACKENDS, self.name, self.namespace, status_patch(stored, new)
            )
        except KubeUnavailable:
            return False
        self.written = (
            response.get("metadata", {}).get("resourceVersion"),
            own_status(response.get("status") or new),
        )
        post_phase_event(self.body, previous, status)
        post_fits_event(self.body, previous, status)
        return True

    async def warm_up(self, look: Look, spec: LLMBackendSpec) -> None:
        """Load each spec model into memory once per serving pod, so the first user request is fast."""
        timeout = warmup_timeout_seconds(spec.warmup.timeout)
        for key, seen in look.snapshot.runtimes.items():
            if not seen.probe.serving:
                continue
            for model in spec.models:
                marker = f"{key}/{model.name}/{look.snapshot.generation}"
                if marker in self.warmed:
                    continue
                self.warmed.add(marker)
                runtime = connect(
                    spec.runtime_kind,
                    look.targets[key],
                    client=self.http_for(spec),
                    api_key=self.api_key,
                    timeout=timeout,
                )
                try:
                    await runtime.warmup(runtime.normalize_model_name(model.name), timeout=timeout)
                except Exception as error:  # a failed warmup slows the first request; it breaks nothing
                    self.logger.warning("warmup of %s on %s failed: %s", model.name, key, error)
            if key not in self.warmed_at:
                # Its cold start ended: the next round writes that at once, not at the steady pace.
                self.warmed_at[key] = stored_now()
                self.waker.set()

    async def wait(self, seconds: float) -> bool:
        """Sleep `seconds`, less when stopped or woken; True when woken."""
        if self.waker.is_set() or self.stopped:
            return self.waker.is_set()
        woken = asyncio.ensure_future(self.waker.wait())
        stopping = asyncio.ensure_future(self.stopped.wait(seconds))
        try:
            await asyncio.wait({woken, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            woken.cancel()
            stopping.cancel()
        return self.waker.is_set()


def own_status(status: Any) -> dict[str, Any]:
    """The status less the fields the gateways write."""
    return {key: value for key, value in dict(status or {}).items() if key not in GATEWAY_FIELDS}


def readable_status(stored: dict[str, Any]) -> LLMBackendStatus:
    """The stored status; an empty one where it cannot be read (written by another version)."""
    try:
        return LLMBackendStatus.model_validate(stored)
    except ValidationError:
        return LLMBackendStatus()


def tolerant(normalize: Callable[[str], str]) -> Callable[[str], str]:
    """A runtime's name normalizer that never raises: a name it rejects (blank) stays as written,
    and the ensure handler reports it as InvalidSpec."""

    def normalized(name: str) -> str:
        try:
            return normalize(name)
        except ValueError:
            return name.strip()

    return normalized


def post_phase_event(body: kopf.Body, before: LLMBackendStatus, after: LLMBackendStatus) -> None:
    if before.phase == after.phase:
        return
    ready = find(after.conditions, "Ready")
    stalled = find(after.conditions, "Stalled")
    reason = ready.reason if ready else (after.phase or "Unknown")
    message = f"{before.phase or 'New'} -> {after.phase}: {ready.message if ready else ''}".strip()
    if (stalled and stalled.status == "True") or after.phase in ("Degraded", "Failed"):
        kopf.event(body, type="Warning", reason=reason, message=status_text(message))
    else:
        kopf.event(body, type="Normal", reason=reason, message=status_text(message))


def post_rescale_event(body: kopf.Body, before: int, after: int, why: str) -> None:
    """spec.autoscaling changed the replicas: `kubectl describe llmb` says when and why."""
    message = status_text(f"{before} -> {after} replicas: {why}")
    kopf.event(body, type="Normal", reason="Rescaled", message=message)


def post_fits_event(body: kopf.Body, before: LLMBackendStatus, after: LLMBackendStatus) -> None:
    """A Warning when the model turns out not to fit: before the runtime runs out of memory."""
    fits, was = find(after.conditions, FITS), find(before.conditions, FITS)
    if fits and fits.status == "False" and not (was and was.status == "False"):
        kopf.event(body, type="Warning", reason=fits.reason, message=status_text(fits.message or ""))

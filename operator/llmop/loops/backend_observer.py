"""One backend's observer: look at its runtimes, decide its status, write it when it changed, wait.

Its fields are what one round leaves to the next; the decisions it takes are in `pace`.
"""

from __future__ import annotations

import asyncio
import base64
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import kopf
from pydantic import ValidationError

from llmop import metrics
from llmop.k8s.client import LLMBACKENDS, SECRETS, KubeUnavailable
from llmop.loops.context import BackendKey, OperatorContext
from llmop.loops.pace import (
    API_RETRY_SECONDS,
    DOUBT_SECONDS,
    ObserverPace,
    caught_up,
    status_patch,
)
from llmop.manifests import endpoint_url, openai_base_url
from llmop.models.backend import LLMBackendSpec, LLMBackendStatus
from llmop.models.duration import parse_duration
from llmop.observer import observe_runtime
from llmop.reconcile.backend_status import (
    EXTERNAL,
    BackendSnapshot,
    PodFacts,
    PullFacts,
    RuntimeObservation,
    compute_backend_status,
)
from llmop.reconcile.conditions import find, stored_now
from llmop.runtimes import connect
from llmop.runtimes.registry import serving_port

#: A spec the models cannot read waits for its fix this long between looks.
_INVALID_SPEC_SECONDS = 10.0


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
    warmed: set[str] = field(default_factory=set)
    #: The last full observation of each target.
    seen: dict[str, RuntimeObservation] = field(default_factory=dict)
    #: The resourceVersion and status llmop last wrote, until kopf's view carries them.
    written: tuple[str | None, dict[str, Any]] | None = None
    pace: ObserverPace = field(default_factory=ObserverPace)
    waker: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def key(self) -> BackendKey:
        return (self.namespace, self.name)

    async def run(self) -> None:
        self.waker = self.context.observers.setdefault(self.key, self.waker)
        try:
            while not self.stopped:
                self.waker.clear()
                await self.round()
        finally:
            if self.context.observers.get(self.key) is self.waker:
                del self.context.observers[self.key]
            metrics.forget_backend(self.namespace, self.name)

    async def round(self) -> None:
        stored = self.stored_status()
        spec = self.valid_spec()
        if spec is None:
            await self.wait(_INVALID_SPEC_SECONDS)
            return
        if not await self.follow_generation(spec):
            await self.wait(API_RETRY_SECONDS)
            return
        previous = LLMBackendStatus.model_validate(stored)
        look = await self.look(spec, previous)
        changed = look.status.to_api() != previous.to_api()
        if self.pace.doubts(previous.phase, changed, self.stopped_answering(look)):
            self.seen = {}
            await self.wait(min(parse_duration(spec.startup.probe_interval), DOUBT_SECONDS))
            return
        self.seen = dict(look.snapshot.runtimes)
        if changed and not await self.write(stored, previous, look.status):
            self.pace.woken = await self.wait(API_RETRY_SECONDS)
            return
        metrics.record_backend_phase(self.body, previous.phase, look.status.phase, written=changed)
        if spec.warmup.enabled and look.status.phase == "Ready":
            await self.warm_up(look, spec)
        fast = parse_duration(spec.startup.probe_interval)
        interval = self.pace.next_interval(
            look.status.phase, changed, fast, len(self.context.observers), random.uniform(0.9, 1.0)
        )
        # A wake-up asks again at once, with every listing; the pace follows what that finds.
        self.pace.woken = await self.wait(interval)

    def stored_status(self) -> dict[str, Any]:
        """The status to compare with: the stored one, or the one llmop wrote while kopf's view
        has not caught up with it (a busy operator's view lags by seconds: comparing with the
        older status would write the same change, and announce it, again)."""
        stored = dict(self.body.get("status", {}))
        if self.written is not None:
            version, ours = self.written
            if caught_up(self.body.metadata.get("resourceVersion"), version, stored, ours):
                self.written = None
            else:
                return ours
        return stored

    def valid_spec(self) -> LLMBackendSpec | None:
        try:
            return LLMBackendSpec.model_validate(dict(self.body.get("spec", {})))
        except ValidationError:
            return None  # the ensure handler reports it

    async def follow_generation(self, spec: LLMBackendSpec) -> bool:
        """A new generation starts the clock and the pace over and reads the API key again.
        False while the API server cannot be asked for the key."""
        if self.body.metadata.get("generation") == self.generation:
            return True
        try:
            self.api_key = await self.read_api_key(spec)
        except KubeUnavailable:
            return False
        self.generation = self.body.metadata.get("generation", 0)
        self.observing_since = datetime.now(UTC)
        self.pace.restart()
        return True

    async def read_api_key(self, spec: LLMBackendSpec) -> str | None:
        ref = spec.api_key_secret_ref
        if ref is None:
            return None
        secret = await self.context.kube.get(SECRETS, ref.name, self.namespace)
        value = (secret or {}).get("data", {}).get(ref.key)
        return base64.b64decode(value).decode().strip() if value else None

    async def look(self, spec: LLMBackendSpec, previous: LLMBackendStatus) -> Look:
        steady = self.pace.steady(previous.phase)
        carried = self.seen if steady and not self.pace.full_listing(previous.phase) else {}
        snapshot, targets = await self.snapshot(spec, previous, carried)
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
        targets = self.targets(spec, pods, endpoint)

        async def observe(key: str, url: str) -> RuntimeObservation:
            async with self.context.probe_gate:
                return await observe_runtime(
                    kind,
                    url,
                    client=self.context.runtime_http,
                    api_key=self.api_key,
                    previous=carried.get(key),
                )

        observations = await asyncio.gather(*(observe(key, url) for key, url in targets.items()))
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
            normalize=connect(kind, "http://normalize.invalid").normalize_model_name,
            invalid_spec=self.context.apply_errors.get(self.key),
        )
        return snapshot, targets

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
            dict(response.get("status") or new),
        )
        post_phase_event(self.body, previous, status)
        return True

    async def warm_up(self, look: Look, spec: LLMBackendSpec) -> None:
        """Load each spec model into memory once per serving pod, so the first user request is fast."""
        timeout = parse_duration(spec.warmup.timeout)
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
                    client=self.context.runtime_http,
                    api_key=self.api_key,
                    timeout=timeout,
                )
                try:
                    await runtime.warmup(runtime.normalize_model_name(model.name), timeout=timeout)
                except Exception as error:  # a failed warmup slows the first request; it breaks nothing
                    self.logger.warning("warmup of %s on %s failed: %s", model.name, key, error)

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


def post_phase_event(body: kopf.Body, before: LLMBackendStatus, after: LLMBackendStatus) -> None:
    if before.phase == after.phase:
        return
    ready = find(after.conditions, "Ready")
    stalled = find(after.conditions, "Stalled")
    reason = ready.reason if ready else (after.phase or "Unknown")
    message = f"{before.phase or 'New'} -> {after.phase}: {ready.message if ready else ''}".strip()
    if (stalled and stalled.status == "True") or after.phase in ("Degraded", "Failed"):
        kopf.event(body, type="Warning", reason=reason, message=message)
    else:
        kopf.event(body, type="Normal", reason=reason, message=message)

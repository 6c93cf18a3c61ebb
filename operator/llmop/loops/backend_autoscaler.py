"""spec.autoscaling in action: decide (llmop.reconcile.autoscale), mark the leaving pods, set the
Deployment's replicas. Run by the backend's observer at the start of each round, so that a
gateway's write (which wakes the observer) reaches the Deployment at once.

llmop never writes the spec: the decision lives in status and on the Deployment.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from llmop.k8s.client import DEPLOYMENTS, LLMBACKENDS, PODS, KubeAPIError, KubeUnavailable
from llmop.loops.context import BackendKey, OperatorContext
from llmop.models.backend import GatewayDemand, LLMBackendSpec, LLMBackendStatus, readable_demand
from llmop.reconcile.autoscale import AutoscaleDecision, AutoscaleFacts, PodLoad, decide, gone_gateways
from llmop.reconcile.backend_status import PodFacts
from llmop.reconcile.conditions import status_text

logger = logging.getLogger(__name__)
#: The ReplicaSet removes the pods with the lowest cost first: those llmop drained.
DELETION_COST_ANNOTATION = "controller.kubernetes.io/pod-deletion-cost"
LEAVING_COST = "-1000"
#: A write the API server refused (RBAC, a webhook) is tried again this often, not every round.
REFUSED_RETRY_SECONDS = 30.0
#: Entries of gone gateways are looked for at most this often (monotonic seconds).
PRUNE_EVERY_SECONDS = 300.0


@dataclass
class BackendAutoscaler:
    name: str
    namespace: str
    context: OperatorContext
    #: Pods llmop gave the deletion cost (so that a cancelled drain takes it back).
    marked: set[str] = field(default_factory=set)
    #: The API server was away for a write of this round: the observer looks again soon.
    failed: bool = False
    #: Why a kind of write ("scale", "mark") was refused (RBAC, a webhook): said in
    #: status.autoscaling.message until one of that kind succeeds; and when to try it again.
    problems: dict[str, str] = field(default_factory=dict)
    retry_at: dict[str, float] = field(default_factory=dict)
    #: The replicas this round changed, from and to (an Event says so), or None.
    rescaled: tuple[int, int] | None = None
    #: status.demand as last read, and what llmop made of it: read again only once it changed.
    demand_read: tuple[object, dict[str, GatewayDemand]] = (None, {})
    pruned_at: float = float("-inf")

    @property
    def key(self) -> BackendKey:
        return (self.namespace, self.name)

    async def step(
        self,
        spec: LLMBackendSpec,
        previous: LLMBackendStatus,
        status: dict[str, Any],
        pods: list[PodFacts],
        now: datetime,
        version: str | None = None,
    ) -> AutoscaleDecision | None:
        """Decide from the gateways' counts (`status`, the live stored status, at resourceVersion
        `version`) and apply; None for a backend without spec.autoscaling."""
        self.failed, self.rescaled = False, None
        live = [pod for pod in pods if not pod.deleting]
        await self.prune(status, now, version)
        if spec.autoscaling is None or spec.runtime is None:
            self.context.scaled.pop(self.key, None)
            await self.mark((), live)  # a backend switched back to spec.replicas
            return None
        states = {pod.name: pod for pod in previous.pods or []}
        facts = AutoscaleFacts(
            spec=spec.autoscaling,
            now=now,
            demand=self.demand(status.get("demand")),
            previous=previous.autoscaling,
            start=previous.replicas.desired if previous.replicas and previous.observed_generation else None,
            pods=[
                PodLoad(
                    pod.name,
                    ready=bool(states.get(pod.name) and states[pod.name].ready),
                    draining=bool(states.get(pod.name) and states[pod.name].draining),
                    kube_ready=pod.ready,
                )
                for pod in live
            ],
        )
        decision = decide(facts)
        # Marked before the replicas go down: the ReplicaSet then removes these pods, not others.
        await self.mark(decision.draining, live)
        await self.scale(decision.replicas)
        before = previous.autoscaling.replicas if previous.autoscaling else None
        applied = self.context.scaled.get(self.key) == decision.replicas
        if before is not None and before != decision.replicas and applied:
            self.rescaled = (before, decision.replicas)
        if not self.problems:
            return decision
        problems = "; ".join(self.problems[kind] for kind in sorted(self.problems))
        message = status_text(f"{decision.status.message} (llmop cannot apply it: {problems})")
        return replace(decision, status=decision.status.model_copy(update={"message": message}))

    def due(self, attempt: str) -> bool:
        """Whether this write may be tried: not within REFUSED_RETRY_SECONDS of its refusal."""
        return time.monotonic() >= self.retry_at.get(attempt, float("-inf"))

    def refused(self, kind: str, attempt: str, what: str, error: KubeAPIError) -> None:
        """A write the API server did not take: soon again when it was away; said in status when
        it refused (it will refuse again until someone fixes the cause: no retry every second)."""
        if isinstance(error, KubeUnavailable):
            self.failed = True
            return
        problem = f"{what}: {error.message}"
        if problem != self.problems.get(kind):
            logger.warning("backend %s/%s: cannot %s", self.namespace, self.name, problem)
        self.problems[kind] = problem
        self.retry_at[attempt] = time.monotonic() + REFUSED_RETRY_SECONDS

    def demand(self, raw: object) -> dict[str, GatewayDemand]:
        """The readable entries of status.demand; kopf gives a new object for each change, so the
        same object is not read again (a round a second must not parse a large map each time)."""
        seen, parsed = self.demand_read
        if raw is not seen:
            parsed = readable_demand(raw)
            self.demand_read = (raw, parsed)
        return parsed

    async def prune(self, status: dict[str, Any], now: datetime, version: str | None) -> None:
        """Remove the entries of gateways that are gone, only where the status is still the one
        read (resourceVersion): a gateway's concurrent write is never lost."""
        if time.monotonic() - self.pruned_at < PRUNE_EVERY_SECONDS:
            return
        self.pruned_at = time.monotonic()
        gone = gone_gateways(status.get("demand"), now)
        if not gone or not version:
            return
        patch = {"metadata": {"resourceVersion": version}, "status": {"demand": dict.fromkeys(gone)}}
        try:
            await self.context.kube.patch(LLMBACKENDS, self.name, self.namespace, patch, subresource="status")
        except KubeAPIError as error:  # a conflict, or the API server away: in PRUNE_EVERY_SECONDS
            logger.info("backend %s/%s: gone gateways kept for now: %s", self.namespace, self.name, error)

    async def scale(self, replicas: int) -> None:
        """Set the Deployment's replicas when they are not what llmop set last (the ensure handler
        drops that record whenever it applies the Deployment)."""
        # A refused value is tried again only later; another value at once (a wake must not wait).
        attempt = f"scale to {replicas}"
        if self.context.scaled.get(self.key) == replicas or not self.due(attempt):
            return
        try:
            await self.context.kube.patch(
                DEPLOYMENTS, self.name, self.namespace, {"spec": {"replicas": replicas}}
            )
        except KubeAPIError as error:
            self.refused("scale", attempt, f"set the Deployment's replicas to {replicas}", error)
            return
        # Also when not deployed yet (None): the ensure handler creates it with these, then drops
        # the record, so the next round sets them again.
        self.context.scaled[self.key] = replicas
        self.problems.pop("scale", None)

    async def mark(self, draining: tuple[str, ...], live: list[PodFacts]) -> None:
        """Give the leaving pods the lowest deletion cost; take it back from pods that stay."""
        there = {pod.name for pod in live}
        self.marked &= there
        if not draining and not self.marked:
            self.problems.pop("mark", None)  # nothing to mark: nothing refused
            return
        if not self.due("mark"):
            return
        for pod in draining:
            if pod not in self.marked and await self.annotate(pod, LEAVING_COST):
                self.marked.add(pod)
        for pod in sorted(self.marked - set(draining)):
            if await self.annotate(pod, None):
                self.marked.discard(pod)

    async def annotate(self, pod: str, cost: str | None) -> bool:
        patch = {"metadata": {"annotations": {DELETION_COST_ANNOTATION: cost}}}
        try:
            await self.context.kube.patch(PODS, pod, self.namespace, patch)
        except KubeAPIError as error:
            self.refused("mark", "mark", f"annotate pod {pod}", error)
            return False
        self.problems.pop("mark", None)
        return True

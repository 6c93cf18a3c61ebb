"""spec.autoscaling in action: decide (llmop.reconcile.autoscale), mark the leaving pods, set the
Deployment's replicas. Run by the backend's observer at the start of each round, so that a
gateway's write (which wakes the observer) reaches the Deployment at once.

llmop never writes the spec: the decision lives in status and on the Deployment.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from llmop.k8s.client import DEPLOYMENTS, LLMBACKENDS, PODS, KubeAPIError
from llmop.loops.context import BackendKey, OperatorContext
from llmop.models.backend import GatewayDemand, LLMBackendSpec, LLMBackendStatus, readable_demand
from llmop.reconcile.autoscale import AutoscaleDecision, AutoscaleFacts, PodLoad, decide, gone_gateways
from llmop.reconcile.backend_status import PodFacts

logger = logging.getLogger(__name__)
#: The ReplicaSet removes the pods with the lowest cost first: those llmop drained.
DELETION_COST_ANNOTATION = "controller.kubernetes.io/pod-deletion-cost"
LEAVING_COST = "-1000"
#: Entries of gone gateways are looked for at most this often (monotonic seconds).
PRUNE_EVERY_SECONDS = 300.0


@dataclass
class BackendAutoscaler:
    name: str
    namespace: str
    context: OperatorContext
    #: Pods llmop gave the deletion cost (so that a cancelled drain takes it back).
    marked: set[str] = field(default_factory=set)
    #: The last write to the API server failed: the observer looks again soon.
    failed: bool = False
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
        self.failed = False
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
                )
                for pod in live
            ],
        )
        decision = decide(facts)
        # Marked before the replicas go down: the ReplicaSet then removes these pods, not others.
        await self.mark(decision.draining, live)
        await self.scale(decision.replicas)
        return decision

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
        if self.context.scaled.get(self.key) == replicas:
            return
        try:
            patched = await self.context.kube.patch(
                DEPLOYMENTS, self.name, self.namespace, {"spec": {"replicas": replicas}}
            )
        except KubeAPIError as error:
            logger.warning(
                "backend %s/%s: cannot scale to %d: %s", self.namespace, self.name, replicas, error
            )
            self.failed = True
            return
        if patched is not None:  # else not deployed yet: the ensure handler creates it with these
            self.context.scaled[self.key] = replicas

    async def mark(self, draining: tuple[str, ...], live: list[PodFacts]) -> None:
        """Give the leaving pods the lowest deletion cost; take it back from pods that stay."""
        there = {pod.name for pod in live}
        self.marked &= there
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
            logger.warning("backend %s/%s: cannot mark pod %s: %s", self.namespace, self.name, pod, error)
            self.failed = True
            return False
        return True

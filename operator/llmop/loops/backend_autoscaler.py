"""spec.autoscaling in action: decide (llmop.reconcile.autoscale), mark the leaving pods, set the
Deployment's replicas. Run by the backend's observer at the start of each round, so that a
gateway's write (which wakes the observer) reaches the Deployment at once.

llmop never writes the spec: the decision lives in status and on the Deployment.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from llmop.k8s.client import DEPLOYMENTS, PODS, KubeAPIError
from llmop.loops.context import BackendKey, OperatorContext
from llmop.models.backend import LLMBackendSpec, LLMBackendStatus, readable_demand
from llmop.reconcile.autoscale import AutoscaleDecision, AutoscaleFacts, PodLoad, decide
from llmop.reconcile.backend_status import PodFacts

logger = logging.getLogger(__name__)
#: The ReplicaSet removes the pods with the lowest cost first: those llmop drained.
DELETION_COST_ANNOTATION = "controller.kubernetes.io/pod-deletion-cost"
LEAVING_COST = "-1000"


@dataclass
class BackendAutoscaler:
    name: str
    namespace: str
    context: OperatorContext
    #: Pods llmop gave the deletion cost (so that a cancelled drain takes it back).
    marked: set[str] = field(default_factory=set)
    #: The last write to the API server failed: the observer looks again soon.
    failed: bool = False

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
    ) -> AutoscaleDecision | None:
        """Decide from the gateways' counts (`status`, the live stored status) and apply; None
        for a backend without spec.autoscaling."""
        self.failed = False
        live = [pod for pod in pods if not pod.deleting]
        if spec.autoscaling is None or spec.runtime is None:
            self.context.scaled.pop(self.key, None)
            await self.mark((), live)  # a backend switched back to spec.replicas
            return None
        states = {pod.name: pod for pod in previous.pods or []}
        facts = AutoscaleFacts(
            spec=spec.autoscaling,
            now=now,
            demand=readable_demand(status.get("demand")),
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

"""What every handler and loop shares, typed: kopf hands it to them as `memo`."""

from __future__ import annotations

import asyncio
import copy
import logging
from dataclasses import dataclass, field
from typing import Any, Self

import anyio
import httpx
import kopf

from llmop.config import OperatorConfig
from llmop.k8s.client import KubeClient
from llmop.loops.heap import HeapTrim
from llmop.loops.pace import PROBE_CONCURRENCY
from llmop.runtimes.address_guard import DeniedTargets, deny_list, guarded_client

BackendKey = tuple[str, str]


@dataclass
class OperatorContext:
    config: OperatorConfig
    #: Set by the startup handler, once the event loop runs.
    kube: KubeClient = field(init=False)
    #: One pooled client for every runtime probe: connection reuse across backends.
    runtime_http: httpx.AsyncClient = field(init=False)
    #: The client for spec.external servers: each connection passes the deny list.
    external_http: httpx.AsyncClient = field(init=False)
    #: Why a backend's objects could not be applied, by backend, as (condition reason, message):
    #: the ensure handler says it, the backend's observer shows it in status (InvalidSpec,
    #: NameConflict).
    apply_errors: dict[BackendKey, tuple[str, str]] = field(default_factory=dict)
    #: Each managed backend's agent token, with the backend's UID (llmop.loops.agent_token).
    agent_tokens: dict[BackendKey, tuple[str, str]] = field(default_factory=dict)
    #: Each managed backend's defaults, as (those its pods were built with, llmop's current ones),
    #: each by name (llmop.manifests.resolved_defaults): the observer shows them in status.
    resolved_defaults: dict[BackendKey, tuple[dict[str, str], dict[str, str]]] = field(default_factory=dict)
    #: The replicas each autoscaled backend's observer last set on its Deployment: the ensure
    #: handler applies the Deployment with them, then drops them, so the observer sets its
    #: decision again should the apply have crossed it.
    scaled: dict[BackendKey, int] = field(default_factory=dict)
    #: The status.demand each backend's observer was last woken for (the gateways' counts).
    demand_seen: dict[BackendKey, Any] = field(default_factory=dict)
    #: Each observed backend's wake-up: set it and the observer looks at once.
    observers: dict[BackendKey, asyncio.Event] = field(default_factory=dict)
    #: Every runtime probe passes this gate: a burst queues here, not in the HTTP pool.
    probe_gate: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(PROBE_CONCURRENCY))
    #: Returns the heap's free pages once deleted backends are gone.
    heap: HeapTrim = field(default_factory=HeapTrim)
    #: kopf's stop flag: set when the operator should stop and run itself anew (llmop.operator).
    restart: asyncio.Event = field(default_factory=asyncio.Event)
    #: Why a backend on a ModelCache deploys nothing yet (llmop.reconcile.cache_status.CacheWait),
    #: by backend, as (condition reason, message): its observer shows it.
    cache_waits: dict[BackendKey, tuple[str, str]] = field(default_factory=dict)
    #: The sizes of a backend's models as its ModelCache knows them, by backend: its Fits condition.
    cache_model_sizes: dict[BackendKey, dict[str, int]] = field(default_factory=dict)
    #: Why a ModelCache's objects were not applied, by (namespace, name), as (reason, message).
    cache_apply_errors: dict[BackendKey, tuple[str, str]] = field(default_factory=dict)
    #: Each ModelCache's wake-up, by (namespace, name): its filler pod changed.
    cache_wakers: dict[BackendKey, asyncio.Event] = field(default_factory=dict)

    def __copy__(self) -> Self:
        # kopf copies the memo for each object; one context is shared by all of them.
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Self:
        return self

    def open_clients(self) -> None:
        # httpx loads its network backend (anyio's) on its first request: loaded now, its modules
        # do not land in the middle of the heap a burst of backends grows, where they would keep
        # that heap from being returned once the burst is gone.
        anyio.get_cancelled_exc_class()
        self.kube = KubeClient.from_environment()
        # Few idle connections: the pool checks each one on every request, and a steady backend's
        # next probe comes after the keep-alive expiry anyway.
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=16)
        self.runtime_http = httpx.AsyncClient(limits=limits)
        self.external_http = guarded_client(self.denied_targets(), limits)
        config = self.config
        self.heap.arm(
            lambda _: self.restart.set(),
            lambda: len(self.observers),
            config.heap_restart_percent,
            config.heap_restart_after,
        )

    def denied_targets(self) -> DeniedTargets:
        """The configured deny list, and always the API server llmop itself talks to."""
        return deny_list(self.config.external_deny_cidrs, str(self.kube.http.base_url))

    async def close_clients(self) -> None:
        await self.kube.close()
        await self.runtime_http.aclose()
        await self.external_http.aclose()

    def forget_backend(self, key: BackendKey) -> None:
        """The backend is deleted: free everything kept for it."""
        self.apply_errors.pop(key, None)
        self.cache_waits.pop(key, None)
        self.cache_model_sizes.pop(key, None)
        self.agent_tokens.pop(key, None)
        self.resolved_defaults.pop(key, None)
        self.scaled.pop(key, None)
        self.demand_seen.pop(key, None)
        self.observers.pop(key, None)
        self.heap.soon()

    def wake_on_demand(self, key: BackendKey, demand: Any) -> None:
        """Wake the backend's observer when a gateway changed status.demand: a held request must
        reach the Deployment at once. Every other write of the backend (llmop's own status) leaves
        it asleep."""
        if demand == self.demand_seen.get(key):
            return
        if demand is None:
            self.demand_seen.pop(key, None)
        else:
            self.demand_seen[key] = copy.deepcopy(demand)
        self.wake_backend(key)

    def wake_backend(self, key: BackendKey) -> None:
        """Something the backend's status depends on changed: observe it now."""
        waker = self.observers.get(key)
        if waker is not None:
            waker.set()


def apply_kopf_settings(settings: kopf.OperatorSettings) -> None:
    # kopf keeps its bookkeeping in llmop.dev/ annotations, never in status: status is llmop's
    # observation alone, and GitOps tools ignore annotations they do not manage.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="llmop.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="llmop.dev", key="last-handled-configuration"
    )
    settings.persistence.finalizer = "llmop.dev/finalizer"
    # Log lines become Events only from warnings up; llmop posts its own Events (kopf.event) on
    # each phase change, start, success and failure.
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    # No cap on kopf's per-object workers: each holds its slot for idle_timeout (5 s) after its
    # object's last event, so a cap of a few dozen made the thousandth new backend wait minutes.
    settings.queueing.worker_limit = None
    settings.execution.max_workers = 8
    # One line per probe would drown the operator's own log.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

"""What every handler and loop shares, typed: kopf hands it to them as `memo`."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Self

import httpx

from llmop.config import OperatorConfig
from llmop.k8s.client import KubeClient
from llmop.loops.pace import PROBE_CONCURRENCY

BackendKey = tuple[str, str]


@dataclass
class OperatorContext:
    config: OperatorConfig
    #: Set by the startup handler, once the event loop runs.
    kube: KubeClient = field(init=False)
    #: One pooled client for every runtime probe: connection reuse across backends.
    runtime_http: httpx.AsyncClient = field(init=False)
    #: Why a backend's objects could not be applied, by backend: the ensure handler says it, the
    #: backend's observer shows it in status (InvalidSpec).
    apply_errors: dict[BackendKey, str] = field(default_factory=dict)
    #: Each observed backend's wake-up: set it and the observer looks at once.
    observers: dict[BackendKey, asyncio.Event] = field(default_factory=dict)
    #: Every runtime probe passes this gate: a burst queues here, not in the HTTP pool.
    probe_gate: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(PROBE_CONCURRENCY))

    def __copy__(self) -> Self:
        # kopf copies the memo for each object; one context is shared by all of them.
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Self:
        return self

    def wake_backend(self, key: BackendKey) -> None:
        """Something the backend's status depends on changed: observe it now."""
        waker = self.observers.get(key)
        if waker is not None:
            waker.set()

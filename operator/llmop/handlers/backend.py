"""LLMBackend handlers: ensure the owned objects, then observe the runtime and write status."""

from __future__ import annotations

from typing import Any

import kopf

from llmop import API_GROUP, API_VERSION, metrics
from llmop.loops.backend_ensure import ensure_backend_objects
from llmop.loops.backend_observer import BackendObserver
from llmop.loops.context import BackendKey, OperatorContext
from llmop.loops.pace import DAEMON_BACKOFF
from llmop.manifests.labels import BACKEND_LABEL as LABEL_BACKEND
from llmop.manifests.resolved_defaults import ADOPT_DEFAULTS_ANNOTATION
from llmop.reconcile.backend_status import (
    PodFacts,
    PullFacts,
    pod_facts,
)
from llmop.reconcile.fits import pull_model_bytes, pull_progress_bytes

# --- indexes: what the operator knows about pods and pulls, without listing the API ------------


@kopf.index("", "v1", "pods", labels={LABEL_BACKEND: kopf.PRESENT})
def pods_by_backend(
    namespace: str | None,
    name: str,
    labels: kopf.Labels,
    meta: kopf.Meta,
    spec: kopf.Spec,
    status: kopf.Status,
    **_: Any,
) -> dict[BackendKey, PodFacts]:
    facts = pod_facts(name, meta, status, node=spec.get("nodeName"))
    return {(namespace or "", labels[LABEL_BACKEND]): facts}


@kopf.index(API_GROUP, API_VERSION, "modelpulls")
def pulls_by_backend(
    namespace: str | None, spec: kopf.Spec, status: kopf.Status, **_: Any
) -> dict[BackendKey, Any]:
    backend = spec.get("backendRef", {}).get("name")
    if not backend:
        return {}
    progress = status.get("progress") or {}
    completed, total = pull_progress_bytes(status)
    facts = PullFacts(
        phase=status.get("phase"),
        summary=progress.get("summary"),
        error=status.get("lastError"),
        size_bytes=pull_model_bytes(status),
        completed_bytes=completed,
        total_bytes=total,
    )
    return {(namespace or "", backend): (spec.get("model"), facts)}


# --- ensure: create, resume and update share one idempotent path --------------------------------


@kopf.on.resume(API_GROUP, API_VERSION, "llmbackends")
@kopf.on.create(API_GROUP, API_VERSION, "llmbackends")
@kopf.on.update(API_GROUP, API_VERSION, "llmbackends", field="spec")
# A new value asks for llmop's current default images now (docs/upgrades.md).
@kopf.on.update(
    API_GROUP, API_VERSION, "llmbackends", field=("metadata", "annotations", ADOPT_DEFAULTS_ANNOTATION)
)
@metrics.timed_reconcile("LLMBackend")
async def ensure_backend(
    name: str,
    namespace: str | None,
    uid: str,
    spec: kopf.Spec,
    body: kopf.Body,
    memo: OperatorContext,
    logger: kopf.Logger,
    **_: Any,
) -> None:
    assert namespace is not None  # LLMBackend is namespaced
    try:
        await ensure_backend_objects(name, namespace, uid, spec, body, memo, logger)
    finally:
        # The status reflects the new spec (observedGeneration) at once, not at the next round.
        memo.wake_backend((namespace, name))


# --- observe: one daemon per backend (llmop.loops.backend_observer) ------------------------------


# Async, so kopf runs them on the event loop: a sync handler runs in a thread, where setting an
# asyncio.Event is not safe.
@kopf.on.event("", "v1", "pods", labels={LABEL_BACKEND: kopf.PRESENT})
async def wake_on_pod_change(
    namespace: str | None, labels: kopf.Labels, memo: OperatorContext, **_: Any
) -> None:
    memo.wake_backend((namespace or "", labels[LABEL_BACKEND]))


@kopf.on.event(API_GROUP, API_VERSION, "modelpulls")
async def wake_on_pull_change(
    namespace: str | None, spec: kopf.Spec, memo: OperatorContext, **_: Any
) -> None:
    backend = spec.get("backendRef", {}).get("name")
    if backend:
        memo.wake_backend((namespace or "", backend))


@kopf.on.event(API_GROUP, API_VERSION, "llmbackends")
async def wake_on_demand(
    namespace: str | None, name: str, status: kopf.Status, memo: OperatorContext, **_: Any
) -> None:
    memo.wake_on_demand((namespace or "", name), status.get("demand"))


# kopf passes indexes as extra keyword arguments, which its handler protocol cannot express.
# A deleted backend's observer gets 5 s to stop by itself before kopf cancels it: a probe cancelled
# while it connects keeps its slot in httpx's pool for good (encode/httpcore#1093).
@kopf.daemon(  # type: ignore[arg-type]
    API_GROUP,
    API_VERSION,
    "llmbackends",
    cancellation_backoff=5.0,
    cancellation_timeout=5.0,
    backoff=DAEMON_BACKOFF,
)
async def observe_backend(
    name: str,
    namespace: str | None,
    body: kopf.Body,
    memo: OperatorContext,
    stopped: kopf.DaemonStopped,
    pods_by_backend: kopf.Index[BackendKey, PodFacts],
    pulls_by_backend: kopf.Index[BackendKey, Any],
    logger: kopf.Logger,
    **_: Any,
) -> None:
    assert namespace is not None  # LLMBackend is namespaced
    key = (namespace, name)
    observer = BackendObserver(
        name,
        namespace,
        body,
        memo,
        stopped,
        pods=lambda: list(pods_by_backend.get(key, [])),
        pulls=lambda: list(pulls_by_backend.get(key, [])),
        logger=logger,
    )
    await observer.run()

"""ModelCache handlers: ensure its objects, then one loop per cache fills it and writes status
(llmop.loops.model_cache)."""

from __future__ import annotations

from typing import Any

import kopf

from llmop import API_GROUP, API_VERSION
from llmop.loops.context import BackendKey, OperatorContext
from llmop.loops.model_cache import CacheFiller, ensure_cache_objects
from llmop.loops.pace import DAEMON_BACKOFF
from llmop.manifests.model_cache import MODEL_CACHE_LABEL
from llmop.reconcile.backend_status import PodFacts, pod_facts


@kopf.index("", "v1", "pods", labels={MODEL_CACHE_LABEL: kopf.PRESENT})
def filler_pods(
    namespace: str | None, name: str, labels: kopf.Labels, meta: kopf.Meta, status: kopf.Status, **_: Any
) -> dict[BackendKey, PodFacts]:
    return {(namespace or "", labels[MODEL_CACHE_LABEL]): pod_facts(name, meta, status)}


@kopf.index(API_GROUP, API_VERSION, "llmbackends")
def backends_by_cache(
    namespace: str | None, name: str, spec: kopf.Spec, **_: Any
) -> dict[BackendKey, tuple[str, list[str]]]:
    cache = (spec.get("modelCache") or {}).get("name")
    if not cache:
        return {}
    models = [str(model.get("name")) for model in spec.get("models") or [] if isinstance(model, dict)]
    return {(namespace or "", cache): (name, models)}


@kopf.on.resume(API_GROUP, API_VERSION, "modelcaches")
@kopf.on.create(API_GROUP, API_VERSION, "modelcaches")
@kopf.on.update(API_GROUP, API_VERSION, "modelcaches", field="spec")
async def ensure_cache(
    name: str,
    namespace: str | None,
    uid: str,
    spec: kopf.Spec,
    body: kopf.Body,
    memo: OperatorContext,
    **_: Any,
) -> None:
    assert namespace is not None  # ModelCache is namespaced
    await ensure_cache_objects(name, namespace, uid, spec, body, memo)


@kopf.on.event("", "v1", "pods", labels={MODEL_CACHE_LABEL: kopf.PRESENT})
async def wake_on_filler_change(
    namespace: str | None, labels: kopf.Labels, memo: OperatorContext, **_: Any
) -> None:
    waker = memo.cache_wakers.get((namespace or "", labels[MODEL_CACHE_LABEL]))
    if waker is not None:
        waker.set()


# kopf passes indexes as extra keyword arguments, which its handler protocol cannot express.
@kopf.daemon(API_GROUP, API_VERSION, "modelcaches", cancellation_timeout=5.0, backoff=DAEMON_BACKOFF)  # type: ignore[arg-type]
async def fill_cache(
    name: str,
    namespace: str | None,
    body: kopf.Body,
    memo: OperatorContext,
    stopped: kopf.DaemonStopped,
    filler_pods: kopf.Index[BackendKey, PodFacts],
    backends_by_cache: kopf.Index[BackendKey, tuple[str, list[str]]],
    **_: Any,
) -> None:
    assert namespace is not None  # ModelCache is namespaced
    key = (namespace, name)
    filler = CacheFiller(
        name,
        namespace,
        body,
        memo,
        stopped,
        filler_pods=lambda: list(filler_pods.get(key, [])),
        users=lambda: list(backends_by_cache.get(key, [])),
    )
    await filler.run()

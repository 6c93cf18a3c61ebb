"""LLMBackend handlers: ensure the owned objects, then observe the runtime and write status."""

from __future__ import annotations

from typing import Any

import kopf
from pydantic import ValidationError

from llmop import API_GROUP, API_VERSION, metrics
from llmop.k8s.client import (
    DEPLOYMENTS,
    MODELPULLS,
    PVCS,
    SERVICES,
    KubeAPIError,
    KubeClient,
)
from llmop.loops.backend_observer import BackendObserver
from llmop.loops.context import BackendKey, OperatorContext
from llmop.loops.pace import DAEMON_BACKOFF
from llmop.manifests import (
    build_deployment,
    build_model_claim,
    build_model_pull,
    build_service,
)
from llmop.manifests.labels import BACKEND_LABEL as LABEL_BACKEND
from llmop.models.backend import LLMBackendSpec
from llmop.reconcile.backend_status import (
    PodFacts,
    PullFacts,
    pod_facts,
)
from llmop.runtimes.registry import managed_descriptor
from llmop.sources import InvalidModelSource, parse_model_source

# --- indexes: what the operator knows about pods and pulls, without listing the API ------------


@kopf.index("", "v1", "pods", labels={LABEL_BACKEND: kopf.PRESENT})
def pods_by_backend(
    namespace: str | None, name: str, labels: kopf.Labels, meta: kopf.Meta, status: kopf.Status, **_: Any
) -> dict[BackendKey, PodFacts]:
    return {(namespace or "", labels[LABEL_BACKEND]): pod_facts(name, meta, status)}


@kopf.index(API_GROUP, API_VERSION, "modelpulls")
def pulls_by_backend(
    namespace: str | None, spec: kopf.Spec, status: kopf.Status, **_: Any
) -> dict[BackendKey, Any]:
    backend = spec.get("backendRef", {}).get("name")
    if not backend:
        return {}
    progress = status.get("progress") or {}
    facts = PullFacts(
        phase=status.get("phase"), summary=progress.get("summary"), error=status.get("lastError")
    )
    return {(namespace or "", backend): (spec.get("model"), facts)}


# --- ensure: create, resume and update share one idempotent path --------------------------------


def validate_backend_spec(spec: LLMBackendSpec) -> str | None:
    """What the API server cannot check; a message the user can act on, or None."""
    if spec.runtime is None:
        return None
    runtime = managed_descriptor(spec)
    if not runtime.pulls_itself and not spec.models:
        return f"spec.models is empty: {spec.runtime} serves one model, name it in spec.models"
    for model in spec.models if not runtime.pulls_itself else []:
        try:
            source = parse_model_source(model.name)
        except InvalidModelSource as error:
            return str(error)
        if source.kind not in runtime.model_sources:
            return f"{model.name!r}: {spec.runtime} models come from hf://org/repo[...] or https:// URLs"
        if runtime.one_file and not source.is_single_file:
            return f"{model.name!r}: llama.cpp loads one GGUF file, name it: hf://org/repo/path/file.gguf"
    return None


@kopf.on.resume(API_GROUP, API_VERSION, "llmbackends")
@kopf.on.create(API_GROUP, API_VERSION, "llmbackends")
@kopf.on.update(API_GROUP, API_VERSION, "llmbackends", field="spec")
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
        await _ensure_backend(name, namespace, uid, spec, body, memo, logger)
    finally:
        # The status reflects the new spec (observedGeneration) at once, not at the next round.
        memo.wake_backend((namespace, name))


async def _ensure_backend(
    name: str,
    namespace: str,
    uid: str,
    spec: kopf.Spec,
    body: kopf.Body,
    memo: OperatorContext,
    logger: kopf.Logger,
) -> None:
    try:
        parsed = LLMBackendSpec.model_validate(dict(spec))
    except ValidationError as error:
        memo.apply_errors[(namespace, name)] = f"spec is not valid: {error}"
        raise kopf.PermanentError(str(error)) from error
    problem = validate_backend_spec(parsed)
    memo.apply_errors.pop((namespace, name), None)
    if problem:
        memo.apply_errors[(namespace, name)] = problem
        kopf.event(body, type="Warning", reason="InvalidSpec", message=problem)
        return
    kube = memo.kube
    if parsed.external is not None:
        return  # nothing to deploy: the daemon observes the URL
    try:
        claim = build_model_claim(name, namespace, uid, parsed)
        if claim:
            await kube.apply(PVCS, claim)
        await kube.apply(DEPLOYMENTS, build_deployment(name, namespace, uid, parsed, memo.config))
        await kube.apply(SERVICES, build_service(name, namespace, uid, parsed))
        await _ensure_model_pulls(kube, name, namespace, uid, parsed)
    except KubeAPIError as error:
        if error.status_code in (400, 403, 422):
            # The API server refused what the spec asked for: tell the user where they look.
            memo.apply_errors[(namespace, name)] = (
                f"the API server refused the backend's objects: {error.message}"
            )
            kopf.event(body, type="Warning", reason="ApplyFailed", message=error.message)
            raise kopf.PermanentError(error.message) from error
        raise kopf.TemporaryError(str(error), delay=10) from error
    logger.info("ensured the objects of backend %s/%s", namespace, name)


async def _ensure_model_pulls(
    kube: KubeClient, name: str, namespace: str, uid: str, spec: LLMBackendSpec
) -> None:
    wanted = {}
    for model in spec.models:
        pull = build_model_pull(name, namespace, uid, model, runtime=spec.runtime)
        wanted[pull["metadata"]["name"]] = pull
    for pull in wanted.values():
        existing = await kube.get(MODELPULLS, pull["metadata"]["name"], namespace)
        if existing is None or existing.get("spec") != pull["spec"]:
            await kube.apply(MODELPULLS, pull)
    for existing in await kube.list(MODELPULLS, namespace, f"{LABEL_BACKEND}={name}"):
        owned = any(ref.get("uid") == uid for ref in existing["metadata"].get("ownerReferences", []))
        if owned and existing["metadata"]["name"] not in wanted:
            await kube.delete(MODELPULLS, existing["metadata"]["name"], namespace)


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


# kopf passes indexes as extra keyword arguments, which its handler protocol cannot express.
@kopf.daemon(API_GROUP, API_VERSION, "llmbackends", cancellation_timeout=5.0, backoff=DAEMON_BACKOFF)  # type: ignore[arg-type]
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

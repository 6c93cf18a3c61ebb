"""LLMBackend handlers: ensure the owned objects, then observe the runtime and write status."""

from __future__ import annotations

import asyncio
import base64
import random
from datetime import UTC, datetime
from typing import Any

import kopf
from pydantic import ValidationError

from llmop import API_GROUP, API_VERSION, metrics
from llmop.k8s.client import (
    DEPLOYMENTS,
    LLMBACKENDS,
    MODELPULLS,
    PVCS,
    SECRETS,
    SERVICES,
    KubeAPIError,
    KubeClient,
    KubeUnavailable,
)
from llmop.manifests import (
    build_deployment,
    build_model_claim,
    build_model_pull,
    build_service,
    endpoint_url,
    openai_base_url,
)
from llmop.manifests.labels import BACKEND_LABEL as LABEL_BACKEND
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
from llmop.reconcile.conditions import find
from llmop.runtimes import connect
from llmop.runtimes.registry import managed_descriptor, serving_port
from llmop.sources import InvalidModelSource, parse_model_source

BackendKey = tuple[str, str]


def _now() -> datetime:
    # Kubernetes stores times to the second; anything finer would read back as a change.
    return datetime.now(UTC).replace(microsecond=0)


# --- indexes: what the operator knows about pods and pulls, without listing the API ------------


@kopf.index("", "v1", "pods", labels={LABEL_BACKEND: kopf.PRESENT})
def pods_by_backend(
    namespace: str | None, name: str, labels: kopf.Labels, meta: kopf.Meta, status: kopf.Status, **_: Any
) -> dict[BackendKey, PodFacts]:
    return {(namespace or "", labels[LABEL_BACKEND]): pod_facts(name, meta, status)}


def pod_facts(name: str, meta: Any, status: Any) -> PodFacts:
    conditions = {c.get("type"): c for c in status.get("conditions", [])}
    scheduled = conditions.get("PodScheduled", {})
    unschedulable = scheduled.get("message") if scheduled.get("status") == "False" else None
    waiting = None
    containers = [*status.get("initContainerStatuses", []), *status.get("containerStatuses", [])]
    for container in containers:
        state = container.get("state", {}).get("waiting")
        if state:
            waiting = f"{container.get('name')}: {state.get('reason', 'Waiting')} {state.get('message', '')}".strip()
            break
    return PodFacts(
        name=name,
        ip=status.get("podIP"),
        phase=status.get("phase", "Pending"),
        deleting=meta.get("deletionTimestamp") is not None,
        unschedulable=unschedulable,
        scheduled=scheduled.get("status") == "True",
        waiting=waiting,
        running=tuple(c.get("name", "") for c in containers if "running" in c.get("state", {})),
    )


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
    memo: kopf.Memo,
    logger: kopf.Logger,
    **_: Any,
) -> None:
    assert namespace is not None  # LLMBackend is namespaced
    try:
        await _ensure_backend(name, namespace, uid, spec, body, memo, logger)
    finally:
        # The status reflects the new spec (observedGeneration) at once, not at the next round.
        wake_backend(memo, (namespace, name))


async def _ensure_backend(
    name: str,
    namespace: str,
    uid: str,
    spec: kopf.Spec,
    body: kopf.Body,
    memo: kopf.Memo,
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
    kube: KubeClient = memo.kube
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


# --- observe: one daemon per backend probes its runtimes and writes status when it changed ------


async def _api_key(kube: KubeClient, namespace: str, spec: LLMBackendSpec) -> str | None:
    ref = spec.api_key_secret_ref
    if ref is None:
        return None
    secret = await kube.get(SECRETS, ref.name, namespace)
    value = (secret or {}).get("data", {}).get(ref.key)
    return base64.b64decode(value).decode().strip() if value else None


def status_patch(stored: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """A merge patch turning `stored` into `new`: removed fields become null."""
    patch: dict[str, Any] = {key: None for key in stored if key not in new}
    patch.update(new)
    return patch


# How often a backend is probed: every `startup.probeInterval` while it is not Ready (starting,
# loading, failing), so that Ready and failures show within one interval, and once more right after
# any change. Once Ready and unchanged, every STEADY_INTERVAL; with many backends the steady
# rounds of all of them together stay within STEADY_PROBES_PER_SECOND, so one operator's cost
# does not grow with the number of healthy backends (1000 backends: each every 40 s). A steady
# round asks only the health endpoint; every FULL_ROUND_EVERY-th lists models again. An event that
# may matter (the spec, the backend's pods or pulls) wakes the daemon for a full round at once; a
# round that finds a change brings back the fast pace.
STEADY_INTERVAL = 8.0
#: While the API server is away, look again this often: its return shows within this.
API_RETRY_SECONDS = 1.0
#: kopf restarts a daemon that raised after this many seconds.
DAEMON_BACKOFF = 5.0
STEADY_PROBES_PER_SECOND = 25.0
FULL_ROUND_EVERY = 5
#: Probes in flight at once across all backends: a burst (a thousand backends created together,
#: an operator restart) queues here instead of timing out in the HTTP client's pool.
PROBE_CONCURRENCY = 64


def steady_interval(fast: float, observed: int) -> float:
    """Seconds between probes of a Ready backend that changed nothing: STEADY_INTERVAL, stretched
    when many backends share the probe budget, never shorter than the backend's probeInterval."""
    return max(STEADY_INTERVAL, observed / STEADY_PROBES_PER_SECOND, fast)


def _caught_up(seen: str | None, written: str | None, stored: dict[str, Any], ours: dict[str, Any]) -> bool:
    """Whether kopf's view of a backend includes the status llmop last wrote: it carries that
    resourceVersion or a later one (etcd revisions, compared as numbers where they are numbers),
    or already shows that status."""
    if seen == written or stored == ours:
        return True
    try:
        return int(seen or "") > int(written or "")
    except ValueError:
        return False


def wake_backend(memo: kopf.Memo, key: BackendKey) -> None:
    """Something the backend's status depends on changed: observe it now, not at its next round."""
    waker = memo.observers.get(key) if "observers" in memo else None
    if waker is not None:
        waker.set()


async def _pause(stopped: kopf.DaemonStopped, waker: asyncio.Event, seconds: float) -> bool:
    """Sleep `seconds`, less when stopped or woken; True when woken."""
    if waker.is_set() or stopped:
        return waker.is_set()
    woken = asyncio.ensure_future(waker.wait())
    stopping = asyncio.ensure_future(stopped.wait(seconds))
    try:
        await asyncio.wait({woken, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        woken.cancel()
        stopping.cancel()
    return waker.is_set()


# Async, so kopf runs them on the event loop: a sync handler runs in a thread, where setting an
# asyncio.Event is not safe.
@kopf.on.event("", "v1", "pods", labels={LABEL_BACKEND: kopf.PRESENT})
async def wake_on_pod_change(namespace: str | None, labels: kopf.Labels, memo: kopf.Memo, **_: Any) -> None:
    wake_backend(memo, (namespace or "", labels[LABEL_BACKEND]))


@kopf.on.event(API_GROUP, API_VERSION, "modelpulls")
async def wake_on_pull_change(namespace: str | None, spec: kopf.Spec, memo: kopf.Memo, **_: Any) -> None:
    backend = spec.get("backendRef", {}).get("name")
    if backend:
        wake_backend(memo, (namespace or "", backend))


# kopf passes indexes as extra keyword arguments, which its handler protocol cannot express.
# backoff: a daemon that failed anyway is back in seconds, not kopf's default minute.
@kopf.daemon(API_GROUP, API_VERSION, "llmbackends", cancellation_timeout=5.0, backoff=DAEMON_BACKOFF)  # type: ignore[arg-type]
async def observe_backend(
    name: str,
    namespace: str | None,
    body: kopf.Body,
    memo: kopf.Memo,
    stopped: kopf.DaemonStopped,
    pods_by_backend: kopf.Index[BackendKey, PodFacts],
    pulls_by_backend: kopf.Index[BackendKey, Any],
    logger: kopf.Logger,
    **_: Any,
) -> None:
    assert namespace is not None  # LLMBackend is namespaced
    kube: KubeClient = memo.kube
    key = (namespace, name)
    waker = memo.observers.setdefault(key, asyncio.Event())
    generation = -1
    # Not _now(): a start cut to the second would spend up to a second of startup.timeout early.
    observing_since = datetime.now(UTC)
    api_key: str | None = None
    warmed: set[str] = set()
    seen: dict[str, RuntimeObservation] = {}  # the last full observation of each target
    quiet_rounds = 0  # rounds in a row that found a Ready backend unchanged
    doubted = False  # a Ready backend's probe failed once: look again before reporting it
    written: tuple[str | None, dict[str, Any]] | None = None  # resourceVersion and status we wrote
    woken = False  # something changed elsewhere: the next round asks for every listing
    try:
        while not stopped:
            waker.clear()
            # `body` is a live view: it always holds the latest spec and status kopf has seen.
            spec_raw, stored = dict(body.get("spec", {})), dict(body.get("status", {}))
            if written is not None:
                version, status_written = written
                if _caught_up(body.metadata.get("resourceVersion"), version, stored, status_written):
                    written = None
                else:
                    # kopf has not seen our last write yet (a busy operator's view can lag by many
                    # seconds): compare with what we wrote, not with the status before it, or the
                    # same change is written (and announced) again.
                    stored = status_written
            try:
                spec = LLMBackendSpec.model_validate(spec_raw)
            except ValidationError:
                await _pause(stopped, waker, 10)
                continue
            if body.metadata.get("generation") != generation:
                try:
                    api_key = await _api_key(kube, namespace, spec)
                except KubeUnavailable:
                    await _pause(stopped, waker, API_RETRY_SECONDS)
                    continue
                generation = body.metadata.get("generation", 0)
                observing_since = datetime.now(UTC)
                quiet_rounds = 0
            fast = parse_duration(spec.startup.probe_interval)
            previous = LLMBackendStatus.model_validate(stored)
            steady = previous.phase == "Ready" and quiet_rounds > 0 and not woken
            before = seen
            snapshot, targets = await _snapshot(
                name,
                namespace,
                generation,
                spec,
                memo,
                previous,
                observing_since,
                api_key,
                list(pods_by_backend.get((namespace, name), [])),
                list(pulls_by_backend.get((namespace, name), [])),
                seen if steady and quiet_rounds % FULL_ROUND_EVERY else {},
            )
            seen = dict(snapshot.runtimes)
            status = compute_backend_status(snapshot)
            new, old = status.to_api(), previous.to_api()
            stopped_answering = any(
                before[target].probe.serving and not observation.probe.serving
                for target, observation in snapshot.runtimes.items()
                if target in before
            )
            if new != old and previous.phase == "Ready" and stopped_answering and not doubted:
                # One unanswered probe of a serving runtime may be a slow answer on a busy node:
                # ask again, with every listing, before telling the user it failed.
                doubted, quiet_rounds, seen = True, 0, {}
                await _pause(stopped, waker, min(fast, 1.0))
                continue
            doubted = False
            if new != old:
                try:
                    response = await kube.patch_status(
                        LLMBACKENDS, name, namespace, status_patch(stored, new)
                    )
                except KubeUnavailable:
                    # The API server is away: the round after it returns writes what it finds.
                    woken = await _pause(stopped, waker, API_RETRY_SECONDS)
                    continue
                written = (
                    response.get("metadata", {}).get("resourceVersion"),
                    dict(response.get("status") or new),
                )
                _post_phase_event(body, previous, status)
            metrics.observe_backend(body, previous.phase, status.phase, written=new != old)
            if spec.warmup.enabled and status.phase == "Ready":
                await _warm_up(snapshot, targets, spec, memo, api_key, warmed, logger)
            if status.phase != "Ready" or new != old:
                quiet_rounds = 0
                interval = fast
            else:
                quiet_rounds += 1
                # Spread out: backends that became Ready together do not stay in step.
                interval = steady_interval(fast, len(memo.observers)) * random.uniform(0.9, 1.0)
            # A wake-up asks again at once, with every listing; the pace follows what that finds.
            woken = await _pause(stopped, waker, interval)
    finally:
        if memo.observers.get(key) is waker:
            del memo.observers[key]
        metrics.forget_backend(namespace, name)


async def _snapshot(
    name: str,
    namespace: str,
    generation: int,
    spec: LLMBackendSpec,
    memo: kopf.Memo,
    previous: LLMBackendStatus,
    observing_since: datetime,
    api_key: str | None,
    pods: list[PodFacts],
    pulls: list[tuple[str, PullFacts]],
    seen: dict[str, RuntimeObservation] | None = None,
) -> tuple[BackendSnapshot, dict[str, str]]:
    """The snapshot, and the base URL probed for each pod (or `external`).

    A target in `seen` that served there is only health-checked; its listings are carried over."""
    endpoint = endpoint_url(name, namespace, spec, memo.config.cluster_domain)
    kind = spec.runtime_kind
    targets: dict[str, str] = {}
    if spec.external is not None:
        targets[EXTERNAL] = endpoint
    else:
        port = serving_port(spec)
        targets = {
            pod.name: f"http://{pod.ip}:{port}"
            for pod in pods
            if pod.ip and pod.phase == "Running" and not pod.deleting
        }
    seen = seen or {}

    async def observe(key: str, url: str) -> RuntimeObservation:
        async with memo.probe_gate:
            return await observe_runtime(
                kind, url, client=memo.runtime_http, api_key=api_key, previous=seen.get(key)
            )

    observations = await asyncio.gather(*(observe(key, url) for key, url in targets.items()))
    runtimes: dict[str, RuntimeObservation] = dict(zip(targets, observations, strict=True))
    snapshot = BackendSnapshot(
        generation=generation,
        spec=spec,
        endpoint=endpoint,
        openai_base_url=openai_base_url(endpoint, kind),
        now=_now(),
        observing_since=observing_since,
        previous=previous,
        pods=pods,
        runtimes=runtimes,
        pulls=dict(pulls),
        normalize=connect(kind, "http://normalize.invalid").normalize_model_name,
        invalid_spec=memo.apply_errors.get((namespace, name)),
    )
    return snapshot, targets


def _post_phase_event(body: kopf.Body, before: LLMBackendStatus, after: LLMBackendStatus) -> None:
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


async def _warm_up(
    snapshot: BackendSnapshot,
    targets: dict[str, str],
    spec: LLMBackendSpec,
    memo: kopf.Memo,
    api_key: str | None,
    warmed: set[str],
    logger: kopf.Logger,
) -> None:
    """Load each spec model into memory once per serving pod, so the first user request is fast."""
    timeout = parse_duration(spec.warmup.timeout)
    for key, seen in snapshot.runtimes.items():
        if not seen.probe.serving:
            continue
        for model in spec.models:
            marker = f"{key}/{model.name}/{snapshot.generation}"
            if marker in warmed:
                continue
            warmed.add(marker)
            runtime = connect(
                spec.runtime_kind, targets[key], client=memo.runtime_http, api_key=api_key, timeout=timeout
            )
            try:
                name = runtime.normalize_model_name(model.name)
                await runtime.warmup(name, timeout=timeout)
            except Exception as error:  # a failed warmup slows the first request; it breaks nothing
                logger.warning("warmup of %s on %s failed: %s", model.name, key, error)

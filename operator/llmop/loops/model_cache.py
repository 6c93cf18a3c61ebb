"""A ModelCache: its objects (claim, filler token, filler Deployment), applied on create, update and
resume; and one loop per cache that has the filler's agent download each missing model once,
then writes status (llmop.reconcile.cache_status) only when it changed.

The agent's transfers outlive the operator's requests: an operator that restarts joins the
transfer in flight (no byte is sent twice), and a filler that restarts resumes its partials.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import kopf
from pydantic import ValidationError

from llmop.api_keys import not_opted_in, opted_in
from llmop.config import OperatorConfig
from llmop.k8s.client import (
    DEPLOYMENTS,
    MODELCACHES,
    PVCS,
    SECRETS,
    KubeAPIError,
    KubeClient,
    KubeUnavailable,
)
from llmop.loops.context import BackendKey, OperatorContext
from llmop.loops.pace import API_RETRY_SECONDS, FAILED_ROUND_SECONDS, status_patch
from llmop.manifests import AGENT_PORT
from llmop.manifests.agent_access import agent_token_of
from llmop.manifests.model_cache import (
    CACHE_TOKEN_LABEL,
    build_cache_claim,
    build_filler_deployment,
    build_filler_token_secret,
    cache_claim,
    filler_name,
    filler_token_secret_name,
)
from llmop.manifests.ownership import controlled_by
from llmop.models.backend import LLMBackendSpec
from llmop.models.cache import ModelCacheSpec, ModelCacheStatus
from llmop.reconcile.backend_status import PodFacts
from llmop.reconcile.cache_eviction import Evictable, no_room, plan_eviction
from llmop.reconcile.cache_status import (
    CachedFile,
    CacheSnapshot,
    CacheWait,
    Transfer,
    backend_cache_wait,
    cached_sizes,
    compute_cache_status,
    local_path,
)
from llmop.reconcile.conditions import describe_failure, status_text, stored_now
from llmop.reconcile.pull_status import human_bytes
from llmop.runtimes import RuntimeAPIError
from llmop.runtimes.agent import AgentAdapter, connect_agent

logger = logging.getLogger(__name__)
#: Rounds while the cache fills (progress shows this often), and once every model is cached.
FILLING_ROUND_SECONDS = 1.0
STEADY_ROUND_SECONDS = 10.0
#: A model whose download failed is tried again after this.
RETRY_SECONDS = 10.0
#: Models downloaded at once (each repo's files download a few at once in the agent).
PARALLEL_MODELS = 4
#: The agent's answers are small; a larger one is not the agent.
MAX_ANSWER_BYTES = 2 * 1024 * 1024
TOKEN_BYTES = 32
#: Hashing a large model again takes minutes (about as long as hashing it on arrival).
VERIFY_TIMEOUT_SECONDS = 3600.0


class CacheNotApplied(Exception):
    """The cache's objects were not applied; `reason` is the condition reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


# --- ensure: create, update and resume ------------------------------------------------------------


async def ensure_cache_objects(
    name: str, namespace: str, uid: str, spec: kopf.Spec, body: kopf.Body, context: OperatorContext
) -> None:
    """Apply the claim (unless existing), the filler's token and Deployment; what stops it is kept
    for the cache's loop to show, and posted as a Warning Event once."""
    key = (namespace, name)
    previous = context.cache_apply_errors.get(key)
    try:
        parsed = ModelCacheSpec.model_validate(dict(spec))
        await apply_cache_objects(context, name, namespace, uid, parsed)
    except ValidationError as error:
        context.cache_apply_errors[key] = ("InvalidSpec", status_text(f"spec is not valid: {error}"))
        raise kopf.PermanentError(str(error)) from error
    except CacheNotApplied as error:
        context.cache_apply_errors[key] = (error.reason, error.message)
        if previous != (error.reason, error.message):
            kopf.event(body, type="Warning", reason=error.reason, message=status_text(error.message))
        raise kopf.TemporaryError(error.message, delay=30) from error
    except KubeAPIError as error:
        if error.status_code not in (400, 403, 422):
            raise kopf.TemporaryError(str(error), delay=10) from error
        message = status_text(f"the API server refused the cache's objects: {error.message}")
        context.cache_apply_errors[key] = ("InvalidSpec", message)
        kopf.event(body, type="Warning", reason="ApplyFailed", message=message)
        raise kopf.PermanentError(error.message) from error
    context.cache_apply_errors.pop(key, None)
    waker = context.cache_wakers.get(key)
    if waker is not None:
        waker.set()


async def apply_cache_objects(
    context: OperatorContext, name: str, namespace: str, uid: str, spec: ModelCacheSpec
) -> None:
    kube = context.kube
    if spec.storage.existing_claim:
        claim = await kube.get(PVCS, spec.storage.existing_claim, namespace)
        if claim is None:
            raise CacheNotApplied(
                "PersistentVolumeClaimNotFound",
                f"PersistentVolumeClaim {spec.storage.existing_claim!r} (spec.storage.existingClaim) does not exist",
            )
        if not opted_in(claim):
            problem = not_opted_in(
                spec.storage.existing_claim, namespace, "spec.storage.existingClaim", "PersistentVolumeClaim"
            )
            raise CacheNotApplied(problem.reason, problem.message)
    if ref := spec.hf_token_secret_ref:
        await check_secret_opted_in(kube, namespace, ref.name)
    filler = await kube.get(DEPLOYMENTS, filler_name(name), namespace)
    objects: list[tuple[Any, dict[str, Any]]] = []
    if claim_body := build_cache_claim(name, namespace, uid, spec):
        objects.append((PVCS, claim_body))
    config = filler_config(context.config, filler if filler and controlled_by(filler, uid) else None)
    objects.append((DEPLOYMENTS, build_filler_deployment(name, namespace, uid, spec, config)))
    for resource, manifest in objects:
        existing = (
            filler
            if resource == DEPLOYMENTS
            else await kube.get(resource, manifest["metadata"]["name"], namespace)
        )
        if existing is not None and not controlled_by(existing, uid):
            raise CacheNotApplied("NameConflict", _taken(manifest["kind"], manifest["metadata"]["name"]))
    await ensure_filler_token(kube, name, namespace, uid)
    for resource, manifest in objects:
        await kube.apply(resource, manifest)


async def check_secret_opted_in(kube: KubeClient, namespace: str, name: str) -> None:
    """The Secret spec.hfTokenSecretRef names must exist and opt in; its value is never read."""
    secret = await kube.get(SECRETS, name, namespace)
    if secret is None:
        raise CacheNotApplied("SecretNotFound", f"Secret {name!r} (spec.hfTokenSecretRef) does not exist")
    if not opted_in(secret):
        problem = not_opted_in(name, namespace, "spec.hfTokenSecretRef")
        raise CacheNotApplied(problem.reason, problem.message)


def filler_config(config: OperatorConfig, running: dict[str, Any] | None) -> OperatorConfig:
    """The operator's settings with the agent image and Hugging Face endpoint of the `running`
    filler Deployment, if any: a new operator version does not restart the filler (which would
    hash every cached model again)."""
    containers = ((running or {}).get("spec", {}).get("template", {}).get("spec", {}).get("containers")) or []
    if not containers or not isinstance(containers[0], dict) or not containers[0].get("image"):
        return config
    env = {e.get("name"): e.get("value") for e in containers[0].get("env") or [] if isinstance(e, dict)}
    return config.model_copy(
        update={"agent_image": containers[0]["image"], "hf_endpoint": env.get("HF_ENDPOINT")}
    )


def _taken(kind: str, name: str) -> str:
    return (
        f"{kind} {name!r} already exists and does not belong to this ModelCache: llmop leaves it "
        "untouched and creates nothing of the cache; rename the cache, or delete the object if nothing uses it"
    )


async def ensure_filler_token(kube: KubeClient, name: str, namespace: str, uid: str) -> str:
    """The filler's token, its Secret created once (never rewritten, never rotated)."""
    secret_name = filler_token_secret_name(name)
    existing = await kube.get(SECRETS, secret_name, namespace)
    if existing is None:
        body = build_filler_token_secret(name, namespace, uid, secrets.token_urlsafe(TOKEN_BYTES))
        try:
            existing = await kube.create(SECRETS, body)
        except KubeAPIError as error:
            if error.status_code != 409:
                raise
            existing = await kube.get(SECRETS, secret_name, namespace)
    token = agent_token_of(existing or {}, name, uid, label=CACHE_TOKEN_LABEL)
    if token is None:
        raise CacheNotApplied("NameConflict", _taken("Secret", secret_name))
    return token


# --- the loop: fill and observe ------------------------------------------------------------------


@dataclass
class CacheFiller:
    name: str
    namespace: str
    #: kopf's live view of the ModelCache.
    body: kopf.Body
    context: OperatorContext
    stopped: kopf.DaemonStopped
    #: The filler's pods (the operator's in-memory pod index).
    filler_pods: Callable[[], list[PodFacts]]
    #: The backends on this cache, as (name, spec.models names) (the in-memory backend index).
    users: Callable[[], list[tuple[str, list[str]]]]
    transfers: dict[str, Transfer] = field(default_factory=dict)
    tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    failed_at: dict[str, float] = field(default_factory=dict)
    token: str | None = None
    #: The check of a started filler's volume (POST /api/verify of each cached model), and whose.
    verification: asyncio.Task[None] | None = None
    verifying_for: str | None = None
    #: The check of cached models whose files were written since they were verified.
    recheck: asyncio.Task[None] | None = None
    #: Models removed to make room (names): not downloaded again until a backend uses them.
    evicted: set[str] = field(default_factory=set)
    #: What the filler listed last: the candidates for eviction.
    on_disk: dict[str, CachedFile] = field(default_factory=dict)
    #: The volume's free bytes as the filler said last.
    free: int | None = None
    room_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    written: ModelCacheStatus = field(default_factory=ModelCacheStatus)
    waker: asyncio.Event = field(default_factory=asyncio.Event)
    gate: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(PARALLEL_MODELS))

    @property
    def key(self) -> BackendKey:
        return (self.namespace, self.name)

    async def run(self) -> None:
        self.written = readable_cache_status(dict(self.body.get("status") or {}))
        self.evicted = {m.name for m in self.written.models or [] if m.phase == "Evicted"}
        self.waker = self.context.cache_wakers.setdefault(self.key, self.waker)
        try:
            while not self.stopped:
                self.waker.clear()
                try:
                    wait = await self.round()
                except Exception as error:  # whatever the spec or the filler does, the loop goes on
                    logger.warning(
                        "model cache %s/%s: %s", self.namespace, self.name, describe_failure(error)
                    )
                    wait = FAILED_ROUND_SECONDS
                await self.wait(wait)
        finally:
            for task in [*self.tasks.values(), self.verification, self.recheck]:
                if task is not None:
                    task.cancel()
            if self.context.cache_wakers.get(self.key) is self.waker:
                del self.context.cache_wakers[self.key]
            if self.stopped.reason and self.stopped.reason & kopf.DaemonStoppingReason.RESOURCE_DELETED:
                self.context.cache_apply_errors.pop(self.key, None)

    async def wait(self, seconds: float) -> None:
        woken = asyncio.ensure_future(self.waker.wait())
        stopping = asyncio.ensure_future(self.stopped.wait(seconds))
        try:
            await asyncio.wait({woken, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            woken.cancel()
            stopping.cancel()

    async def round(self) -> float:
        generation = int(self.body.metadata.get("generation") or 0)
        spec = ModelCacheSpec.model_validate(dict(self.body.get("spec") or {}))
        url, filler, waiting = self.filler_url()
        on_disk, space, unverified, changed = None, None, frozenset[str](), frozenset[str]()
        if url is not None:
            try:
                on_disk, space = await self.ask_filler(url)
                self.on_disk, self.free = on_disk, space[0] if space else None
                unverified = self.verify_new_filler(url, filler, on_disk, spec)
                changed = self.recheck_changed(url, on_disk, spec)
                self.start_missing(spec, url, on_disk)
            except (RuntimeAPIError, httpx.HTTPError, ValueError) as error:
                waiting = f"the filler's agent does not answer yet: {describe_failure(error)}"
        snapshot = CacheSnapshot(
            generation=generation,
            spec=spec,
            claim=cache_claim(self.name, spec),
            now=stored_now(),
            previous=self.written,
            apply_problem=self.context.cache_apply_errors.get(self.key),
            filler_waiting=waiting,
            on_disk=on_disk,
            transfers=dict(self.transfers),
            users=self.users_by_model(),
            space=space,
            unverified=unverified | changed,
            evicted=frozenset(self.evicted),
            verified_filler=self.written.verified_filler if unverified or on_disk is None else filler,
        )
        status = compute_cache_status(snapshot)
        await self.write(status)
        return STEADY_ROUND_SECONDS if status.phase == "Ready" else FILLING_ROUND_SECONDS

    def filler_url(self) -> tuple[str | None, str, str | None]:
        """The filler agent's address and who it is (its pod and its agent's start), or why there
        is none yet."""
        pods = [pod for pod in self.filler_pods() if not pod.deleting]
        running = [pod for pod in pods if pod.ip and "agent" in pod.running]
        if running:
            started = running[0].times.main_started_at
            filler = f"{running[0].name}@{started.isoformat() if started else ''}"
            return f"http://{running[0].ip}:{AGENT_PORT}", filler, None
        if pods and pods[0].unschedulable:
            return None, "", f"the filler pod cannot be placed: {pods[0].unschedulable}"
        if pods and pods[0].waiting:
            return None, "", f"the filler pod waits: {pods[0].waiting}"
        return None, "", "waiting for the filler pod to start"

    def verify_new_filler(
        self, url: str, filler: str, on_disk: dict[str, CachedFile], spec: ModelCacheSpec
    ) -> frozenset[str]:
        """The cached models a filler that started has not hashed again yet (all of them until its
        check is complete): a backend uses none of them meanwhile. The check runs once per filler
        start; one that failed (the filler went away) runs again."""
        if self.written.verified_filler == filler or not on_disk:
            return frozenset()
        if self.verifying_for != filler or (self.verification and self.verification.cancelled()):
            logger.info(
                "model cache %s/%s: filler %s started; hashing %d cached model(s) again",
                self.namespace,
                self.name,
                filler,
                len(on_disk),
            )
            self.verifying_for = filler
            self.verification = asyncio.create_task(self.verify_all(url, names_by_path(on_disk, spec)))
        if self.verification is not None and self.verification.done() and not self.verification.exception():
            return frozenset()
        if self.verification is not None and self.verification.done():
            failure = describe_failure(self.verification.exception() or RuntimeError("failed"))
            logger.warning(
                "model cache %s/%s: checking the cached models failed: %s", self.namespace, self.name, failure
            )
            self.verifying_for = None  # the next round starts it again
        return frozenset(on_disk)

    def recheck_changed(
        self, url: str, on_disk: dict[str, CachedFile], spec: ModelCacheSpec
    ) -> frozenset[str]:
        """The cached models with files written since they were verified (the agent compares each
        file's stamp): hashed again, and replaced when their bytes differ, before a backend uses
        them. A check that failed starts again on the next round."""
        changed = {path: cached for path, cached in on_disk.items() if cached.changed}
        if self.recheck is not None and self.recheck.done():
            if not self.recheck.cancelled() and self.recheck.exception() is not None:
                failure = describe_failure(self.recheck.exception() or RuntimeError("failed"))
                logger.warning("model cache %s/%s: checking changed models failed: %s", *self.key, failure)
            self.recheck = None
        if changed and self.recheck is None:
            logger.info(
                "model cache %s/%s: files changed on disk; hashing %s again", *self.key, sorted(changed)
            )
            self.recheck = asyncio.create_task(self.verify_all(url, names_by_path(changed, spec)))
        return frozenset(changed)

    async def verify_all(self, url: str, names: dict[str, str]) -> None:
        """POST /api/verify for each cached model (by local path: its name); an Event for each
        whose bytes changed."""
        headers = {"Authorization": f"Bearer {self.token}"}
        for path, name in sorted(names.items()):
            answer = await self.context.runtime_http.post(
                f"{url}/api/verify",
                json={"model": name},
                headers=headers,
                timeout=VERIFY_TIMEOUT_SECONDS,
            )
            if answer.status_code == 404:
                continue  # deleted meanwhile: nothing to check
            answer.raise_for_status()
            corrupt = answer.json().get("corrupt") or []
            if corrupt:
                message = (
                    f"{name} ({path}) changed on disk since it was verified ({len(corrupt)} file(s)); "
                    "llmop removed it and downloads it again: no backend loads the changed bytes"
                )
                logger.warning("model cache %s/%s: %s", self.namespace, self.name, message)
                kopf.event(
                    self.body, type="Warning", reason="CorruptModelReplaced", message=status_text(message)
                )
        self.waker.set()

    async def ask_filler(self, url: str) -> tuple[dict[str, CachedFile], tuple[int, int] | None]:
        """What the agent holds complete, by local path, and the volume's room."""
        if self.token is None:
            self.token = await ensure_filler_token(
                self.context.kube, self.name, self.namespace, str(self.body.metadata.get("uid", ""))
            )
        headers = {"Authorization": f"Bearer {self.token}"}
        client = self.context.runtime_http
        tags = await _get_json(client, f"{url}/api/tags", headers)
        room = await _get_json(client, f"{url}/api/space", headers)
        on_disk = {}
        for entry in tags.get("models") or []:
            details = entry.get("details") or {}
            path = details.get("local_path")
            if isinstance(path, str):
                on_disk[path] = CachedFile(
                    name=entry.get("name") if isinstance(entry.get("name"), str) else "",
                    size=_int(entry.get("size")),
                    digest=entry.get("digest"),
                    modified_at=entry.get("modified_at"),
                    changed=bool(details.get("changed")),
                )
        space = (
            (room["free"], room["capacity"])
            if _int(room.get("free")) is not None and _int(room.get("capacity")) is not None
            else None
        )
        return on_disk, space

    def start_missing(self, spec: ModelCacheSpec, url: str, on_disk: dict[str, CachedFile]) -> None:
        """Start a download of every model not on disk, not downloading, not failed lately, and not
        evicted (unless a backend uses it now)."""
        used = self.users_by_model()
        for model in spec.models:
            path = local_path(model.name)
            if path is None or path in on_disk:
                self.transfers.pop(model.name, None)
                continue
            if model.name in self.evicted and model.name not in used:
                self.transfers.pop(model.name, None)
                continue
            self.evicted.discard(model.name)
            task = self.tasks.get(model.name)
            if task is not None and not task.done():
                continue
            if time.monotonic() - self.failed_at.get(model.name, -RETRY_SECONDS) < RETRY_SECONDS:
                continue
            self.tasks[model.name] = asyncio.create_task(self.fill(url, model.name, model.sha256))

    async def fill(self, url: str, model: str, sha256: str | None) -> None:
        """One model into the cache through the filler's pull API; progress kept for status."""
        agent = connect_agent(url, token=self.token, client=self.context.runtime_http, timeout=30.0)
        files: dict[str, tuple[int, int]] = {}
        self.transfers[model] = Transfer(status="waiting for a download slot")
        async with self.gate:
            known = next(
                (m.size_bytes for m in self.written.models or [] if m.name == model and m.size_bytes), None
            )
            if known and self.free is not None and known > self.free:
                # A model evicted before: its size is known, so room is made before a byte is sent.
                await self.make_room(agent, model, known, self.free)
            try:
                async for line in agent.pull(model, sha256=sha256):
                    if line.digest and line.total:
                        files[line.digest] = (min(line.completed or 0, line.total), line.total)
                    done = sum(c for c, _ in files.values())
                    total = sum(t for _, t in files.values()) or None
                    self.transfers[model] = Transfer(completed=done, total=total, status=line.status)
            except RuntimeAPIError as error:
                failure = str(error)
                if (room := no_room(failure)) and (freed := await self.make_room(agent, model, *room)):
                    self.transfers[model] = Transfer(status=f"evicted {freed} to make room")
                    self.waker.set()  # the next round starts it again
                    return
                self.failed_at[model] = time.monotonic()
                self.transfers[model] = Transfer(error=status_text(failure))
                return
        self.waker.set()  # the next round lists it as cached

    def evictable(self, filling: str) -> list[Evictable]:
        """The cached models no backend uses (the one being filled aside), with when each was last
        used."""
        used = self.users_by_model()
        shown = {m.local_path: m for m in self.written.models or [] if m.local_path}
        candidates = []
        for path, cached in self.on_disk.items():
            entry = shown.get(path)
            name = entry.name if entry else cached.name
            if name == filling or name in used or cached.size is None:
                continue
            last_used = entry.unused_since if entry else None
            candidates.append(Evictable(name, path, cached.size, last_used or _as_time(cached.modified_at)))
        return candidates

    async def make_room(self, agent: AgentAdapter, model: str, needed: int, free: int) -> str | None:
        """Evict the least recently used models no backend uses until `needed` bytes are free, an
        Event for each; what was evicted, in words, or None when that cannot free enough."""
        async with self.room_lock:
            plan = plan_eviction(self.evictable(model), needed, free)
            if not plan:
                return None
            for victim in plan:
                # Marked first: a round meanwhile must not start downloading it again.
                self.evicted.add(victim.name)
                self.on_disk.pop(victim.local_path, None)
                await agent.delete_model(victim.name)
                message = (
                    f"evicted {victim.name} ({human_bytes(victim.size)}, unused since "
                    f"{victim.last_used.isoformat() if victim.last_used else 'its download'}) to make room "
                    f"for {model}, which needs {human_bytes(needed)}; no backend uses it"
                )
                logger.info("model cache %s/%s: %s", self.namespace, self.name, message)
                kopf.event(self.body, type="Normal", reason="ModelEvicted", message=status_text(message))
        return ", ".join(victim.name for victim in plan)

    def users_by_model(self) -> dict[str, list[str]]:
        users: dict[str, list[str]] = {}
        for backend, models in self.users():
            for model in models:
                users.setdefault(model, []).append(backend)
        return users

    async def write(self, status: ModelCacheStatus) -> None:
        new, old = status.to_api(), self.written.to_api()
        if new == old:
            return
        try:
            await self.context.kube.patch_status(
                MODELCACHES, self.name, self.namespace, status_patch(old, new)
            )
        except KubeUnavailable:
            await self.stopped.wait(API_RETRY_SECONDS)
            return
        if status.phase != self.written.phase and status.phase in ("Ready", "Degraded", "Failed"):
            kind = "Normal" if status.phase == "Ready" else "Warning"
            message = next((c.message for c in status.conditions or [] if c.type == "Ready"), "")
            kopf.event(self.body, type=kind, reason=f"Cache{status.phase}", message=status_text(message))
        self.written = status


def names_by_path(cached: dict[str, CachedFile], spec: ModelCacheSpec) -> dict[str, str]:
    """The name to verify each cached model by: the spec's (the agent lists a URL with its query
    redacted), else the agent's."""
    by_path = {local_path(model.name): model.name for model in spec.models}
    return {path: by_path.get(path) or entry.name for path, entry in cached.items()}


def _as_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(str(value)) if value else None
    except ValueError:
        return None


def readable_cache_status(stored: dict[str, Any]) -> ModelCacheStatus:
    try:
        return ModelCacheStatus.model_validate(stored)
    except ValidationError:
        return ModelCacheStatus()


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**60 else None


async def _get_json(client: httpx.AsyncClient, url: str, headers: dict[str, str]) -> dict[str, Any]:
    async with client.stream("GET", url, headers=headers, timeout=10.0) as response:
        response.raise_for_status()
        body = b""
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > MAX_ANSWER_BYTES:
                raise ValueError(f"{url} answered more than {MAX_ANSWER_BYTES} bytes")
    answer = httpx.Response(200, content=body).json()
    if not isinstance(answer, dict):
        raise ValueError(f"{url} answered no JSON object")
    return answer


# --- a backend on a cache --------------------------------------------------------------------------


class WaitingForCache(Exception):
    """A backend on a ModelCache deploys nothing yet; `wait` says why."""

    def __init__(self, wait: CacheWait) -> None:
        super().__init__(wait.message)
        self.wait = wait


async def backend_cache_claim(
    kube: KubeClient, namespace: str, spec: LLMBackendSpec
) -> tuple[str, dict[str, int]] | None:
    """The claim of the backend's spec.modelCache and the sizes of the models it holds, once the
    cache holds every model of the spec; None for a backend without a cache. WaitingForCache
    until then."""
    ref = spec.model_cache
    if ref is None:
        return None
    models = [model.name for model in spec.models]
    cache = None
    if not ref.namespace or ref.namespace == namespace:
        cache = await kube.get(MODELCACHES, ref.name, namespace)
    if wait := backend_cache_wait(namespace, ref.name, ref.namespace, models, cache):
        raise WaitingForCache(wait)
    assert cache is not None  # no wait: the cache exists
    return cache_claim(ref.name, ModelCacheSpec.model_validate(cache.get("spec") or {})), cached_sizes(cache)

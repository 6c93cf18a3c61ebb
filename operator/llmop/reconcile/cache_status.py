"""A ModelCache's status from what llmop observed: the filler pod, the files the agent lists as
complete (verified), the transfers in flight, the backends that use each model. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from llmop.models.base import Condition
from llmop.models.cache import (
    MAX_USERS_SHOWN,
    CachedModelPhase,
    CachedModelStatus,
    CachePhase,
    ModelCacheSpec,
    ModelCacheStatus,
)
from llmop.reconcile.conditions import carry_transition_times, condition, status_text
from llmop.reconcile.pull_status import human_bytes
from llmop.sources import InvalidModelSource, parse_model_source


@dataclass(frozen=True)
class CachedFile:
    """A model the agent lists as complete: verified against its sha256 when it was stored."""

    size: int | None = None
    digest: str | None = None
    modified_at: datetime | None = None
    #: The model's name, as the agent lists it.
    name: str = ""
    #: Files of it were written since they were verified: not to be used until hashed again.
    changed: bool = False


@dataclass(frozen=True)
class Transfer:
    """A model being downloaded into the cache, as the agent's progress lines tell."""

    completed: int = 0
    total: int | None = None
    error: str | None = None
    status: str = ""


@dataclass
class CacheSnapshot:
    generation: int
    spec: ModelCacheSpec
    claim: str
    now: datetime
    previous: ModelCacheStatus
    #: Why the cache's objects were not applied (a taken name, a claim that has not opted in).
    apply_problem: tuple[str, str] | None = None
    #: Why the filler cannot be asked yet (no pod, not running, not answering); None: it answers.
    filler_waiting: str | None = None
    #: What the agent lists as complete, by local path; None: not asked this round.
    on_disk: Mapping[str, CachedFile] | None = None
    #: Transfers by model name.
    transfers: Mapping[str, Transfer] = field(default_factory=dict)
    #: Backends using each model name (spec.modelCache names this cache, spec.models names it).
    users: Mapping[str, list[str]] = field(default_factory=dict)
    #: (free, capacity) bytes of the cache volume, when the agent said.
    space: tuple[int, int] | None = None
    #: Local paths on disk that the running filler has not hashed again yet.
    unverified: frozenset[str] = frozenset()
    #: The filler whose check of the volume is complete (status.verifiedFiller).
    verified_filler: str | None = None
    #: Models removed to make room while no backend used them (names).
    evicted: frozenset[str] = frozenset()


def local_path(name: str) -> str | None:
    try:
        return parse_model_source(name).local_path
    except InvalidModelSource:
        return None


def _model_status(snapshot: CacheSnapshot, name: str) -> CachedModelStatus:
    path = local_path(name)
    users = sorted(snapshot.users.get(name, []))
    shown: dict[str, Any] = {
        "used_by": users[:MAX_USERS_SHOWN] or None,
        "used_by_omitted": len(users) - MAX_USERS_SHOWN if len(users) > MAX_USERS_SHOWN else None,
    }
    if path is None:
        message = (
            f"{name!r} is not a model llmop can cache: name hf://org/repo[@rev][/file] or an https:// URL"
        )
        return CachedModelStatus(name=name, phase="Failed", message=status_text(message), **shown)
    found = (snapshot.on_disk or {}).get(path)
    previous = next((m for m in snapshot.previous.models or [] if m.name == name), None)
    if found is not None:
        cached = CachedModelStatus(
            name=name,
            phase="Verifying" if path in snapshot.unverified else "Ready",
            local_path=path,
            size_bytes=found.size,
            digest=found.digest,
            verified_at=found.modified_at,
            **shown,
        )
        return cached.model_copy(update={"unused_since": _unused_since(snapshot, cached, previous)})
    if snapshot.on_disk is None and previous is not None and previous.phase == "Ready":
        # The filler does not answer this round: what it verified is still on the volume.
        return previous.model_copy(update=shown)
    if name in snapshot.evicted and not users and name not in snapshot.transfers:
        message = "evicted to make room while no backend used it; downloaded again when a backend uses it"
        # Its size is kept: room is made for it before it is asked for again.
        size = previous.size_bytes if previous else None
        return CachedModelStatus(
            name=name, phase="Evicted", local_path=path, size_bytes=size, message=message, **shown
        )
    return _filling(name, path, snapshot.transfers.get(name), shown)


def _unused_since(
    snapshot: CacheSnapshot, cached: CachedModelStatus, previous: CachedModelStatus | None
) -> datetime | None:
    """None while a backend uses the model; when the last one stopped (now, the first round
    without one); or, never used, when it was verified."""
    if cached.used_by:
        return None
    if previous is not None and previous.used_by:
        return snapshot.now
    if previous is not None and previous.unused_since is not None:
        return previous.unused_since
    return cached.verified_at


def _filling(name: str, path: str, transfer: Transfer | None, shown: dict[str, Any]) -> CachedModelStatus:
    if transfer is None:
        return CachedModelStatus(name=name, phase="Pending", local_path=path, **shown)
    phase: CachedModelPhase = "Failed" if transfer.error else "Filling"
    total = transfer.total or None
    percent = round(100.0 * transfer.completed / total, 1) if total else None
    message = transfer.error or (
        f"{human_bytes(transfer.completed)}/{human_bytes(total)}" if total else transfer.status or None
    )
    return CachedModelStatus(
        name=name,
        phase=phase,
        local_path=path,
        size_bytes=total,
        completed_bytes=transfer.completed,
        percent=percent,
        message=status_text(message) if message else None,
        **shown,
    )


def _phase(snapshot: CacheSnapshot, models: list[CachedModelStatus]) -> tuple[CachePhase, str, str]:
    if snapshot.apply_problem:
        reason, message = snapshot.apply_problem
        return "Failed", reason, message
    failed = [m for m in models if m.phase == "Failed"]
    if failed:
        return "Degraded", "FillFailed", f"{failed[0].name}: {failed[0].message or 'failed'}"
    ready = [m for m in models if m.phase == "Ready"]
    if len(ready) + sum(1 for m in models if m.phase == "Evicted") == len(models):
        return (
            "Ready",
            "ModelsCached",
            f"{len(ready)} model{'s' if len(ready) != 1 else ''} cached and verified",
        )
    if snapshot.filler_waiting:
        return "Pending", "FillerStarting", snapshot.filler_waiting
    if verifying := [m.name for m in models if m.phase == "Verifying"]:
        return "Filling", "Verifying", f"hashing the cached {', '.join(verifying)} again: the filler started"
    filling = [m for m in models if m.phase == "Filling"]
    progress = "; ".join(f"{m.name} {m.percent:.0f}%" for m in filling if m.percent is not None)
    message = f"{len(ready)}/{len(models)} models cached" + (f"; filling {progress}" if progress else "")
    return "Filling", "Filling", message


def compute_cache_status(snapshot: CacheSnapshot) -> ModelCacheStatus:
    gen = snapshot.generation
    models = [_model_status(snapshot, model.name) for model in snapshot.spec.models]
    phase, reason, message = _phase(snapshot, models)
    ready = phase == "Ready"
    stalled = phase == "Failed"
    conditions: list[Condition] = [
        condition("Ready", ready, reason, message, gen),
        condition(
            "Reconciling",
            not ready and not stalled,
            reason if not ready else "Reconciled",
            message if not ready else "",
            gen,
        ),
        condition("Stalled", stalled, reason if stalled else "NotStalled", message if stalled else "", gen),
    ]
    free, capacity = snapshot.space or (snapshot.previous.free_bytes, snapshot.previous.capacity_bytes)
    cached = sum(1 for m in models if m.phase == "Ready")
    return ModelCacheStatus(
        observed_generation=gen,
        phase=phase,
        claim_name=snapshot.claim,
        models=models or None,
        summary=f"{cached}/{len(models)}",
        free_bytes=free,
        capacity_bytes=capacity,
        conditions=carry_transition_times(conditions, snapshot.previous.conditions, snapshot.now),
        verified_filler=snapshot.verified_filler,
    )


def missing_for_backend(status: ModelCacheStatus, models: list[str]) -> list[str]:
    """The models of a backend that the cache does not hold complete yet."""
    ready = {m.name for m in status.models or [] if m.phase == "Ready"}
    return [name for name in models if name not in ready]


@dataclass(frozen=True)
class CacheWait:
    """Why a backend on a cache deploys nothing yet: a condition reason and a message; `refused`
    when only a change of the backend's spec can help."""

    reason: str
    message: str
    refused: bool = False


def cached_sizes(cache: Mapping[str, object]) -> dict[str, int]:
    """The size of each model the cache's status knows, by the name spec.models gives it."""
    status = ModelCacheStatus.model_validate(cache.get("status") or {})
    return {m.name: m.size_bytes for m in status.models or [] if m.size_bytes}


def backend_cache_wait(
    namespace: str,
    cache_name: str,
    cache_namespace: str | None,
    models: list[str],
    cache: Mapping[str, object] | None,
) -> CacheWait | None:
    """What keeps a backend of `namespace` from serving `models` from ModelCache `cache_name`
    (`cache`: the object as read, None when it does not exist); None when every model is cached."""
    if cache_namespace and cache_namespace != namespace:
        return CacheWait(
            "ModelCacheNotAllowed",
            f"spec.modelCache names a cache of namespace {cache_namespace!r}: a backend may use only a "
            f"ModelCache of its own namespace ({namespace!r}), whose claim its pods can mount and whose "
            "models this namespace chose; create a ModelCache here and leave spec.modelCache.namespace unset",
            refused=True,
        )
    if cache is None:
        return CacheWait(
            "ModelCacheNotFound",
            f"ModelCache {cache_name!r} does not exist in namespace {namespace!r}: create it with "
            f"spec.models listing {', '.join(models) or 'the models'}",
        )
    spec = ModelCacheSpec.model_validate(cache.get("spec") or {})
    listed = {model.name for model in spec.models}
    if absent := [name for name in models if name not in listed]:
        return CacheWait(
            "ModelNotInCache",
            f"ModelCache {cache_name!r} does not list {', '.join(absent)}: add "
            f"{'them' if len(absent) > 1 else 'it'} to its spec.models",
        )
    status = ModelCacheStatus.model_validate(cache.get("status") or {})
    if missing := missing_for_backend(status, models):
        shown = {m.name: m for m in status.models or []}
        detail = "; ".join(
            f"{name} {shown[name].phase}"
            + (f" {shown[name].percent:.0f}%" if shown[name].percent is not None else "")
            if name in shown
            else f"{name} Pending"
            for name in missing
        )
        return CacheWait(
            "WaitingForModelCache", f"waiting for ModelCache {cache_name!r} to hold the models: {detail}"
        )
    return None

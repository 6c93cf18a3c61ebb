"""A ModelCache's status from what llmop observed, and what a backend on a cache waits for."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from llmop.models.cache import ModelCacheSpec, ModelCacheStatus
from llmop.reconcile.cache_status import (
    CachedFile,
    CacheSnapshot,
    Transfer,
    backend_cache_wait,
    cached_sizes,
    compute_cache_status,
    local_path,
)

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
REPO = "hf://org/repo"
FILE = "https://host/f.gguf"


def snapshot(**fields: Any) -> CacheSnapshot:
    base: dict[str, Any] = {
        "generation": 3,
        "spec": ModelCacheSpec.model_validate(
            {"storage": {"size": "10Gi"}, "models": [{"name": REPO}, {"name": FILE}]}
        ),
        "claim": "shared-model-cache",
        "now": NOW,
        "previous": ModelCacheStatus(),
    }
    return CacheSnapshot(**{**base, **fields})


def ready_of(status: ModelCacheStatus) -> tuple[str, str, str]:
    ready = next(c for c in status.conditions or [] if c.type == "Ready")
    return ready.status, ready.reason, ready.message


def test_models_on_disk_are_ready_with_size_digest_and_their_users() -> None:
    on_disk = {
        local_path(REPO) or "": CachedFile(size=2_000, digest="sha256:aa"),
        local_path(FILE) or "": CachedFile(size=600, digest="sha256:bb"),
    }
    status = compute_cache_status(snapshot(on_disk=on_disk, users={REPO: ["b", "a"]}, space=(5_000, 10_000)))
    assert status.phase == "Ready" and status.summary == "2/2"
    repo, file = status.models or []
    assert (repo.phase, repo.size_bytes, repo.digest, repo.used_by) == (
        "Ready",
        2_000,
        "sha256:aa",
        ["a", "b"],
    )
    assert file.used_by is None and file.local_path == "url/https/host/f.gguf"
    assert (status.free_bytes, status.capacity_bytes, status.claim_name) == (
        5_000,
        10_000,
        "shared-model-cache",
    )
    assert ready_of(status)[:2] == ("True", "ModelsCached")
    assert status.observed_generation == 3


def test_filling_shows_progress_per_model_and_waits_for_the_rest() -> None:
    status = compute_cache_status(
        snapshot(on_disk={}, transfers={REPO: Transfer(completed=512, total=2048, status="pulling")})
    )
    repo, file = status.models or []
    assert (repo.phase, repo.completed_bytes, repo.size_bytes, repo.percent) == ("Filling", 512, 2048, 25.0)
    assert file.phase == "Pending"
    assert status.phase == "Filling" and status.summary == "0/2"
    assert ready_of(status) == ("False", "Filling", f"0/2 models cached; filling {REPO} 25%")
    reconciling = next(c for c in status.conditions or [] if c.type == "Reconciling")
    assert reconciling.status == "True"


def test_a_failed_download_degrades_the_cache_with_the_source_words() -> None:
    status = compute_cache_status(snapshot(on_disk={}, transfers={FILE: Transfer(error="404 Not Found")}))
    assert status.phase == "Degraded"
    assert ready_of(status) == ("False", "FillFailed", f"{FILE}: 404 Not Found")


def test_a_silent_filler_keeps_what_it_verified() -> None:
    before = compute_cache_status(snapshot(on_disk={local_path(FILE) or "": CachedFile(size=600)}))
    status = compute_cache_status(
        snapshot(previous=before, filler_waiting="waiting for the filler pod to start")
    )
    assert [m.phase for m in status.models or []] == ["Pending", "Ready"]
    assert ready_of(status) == ("False", "FillerStarting", "waiting for the filler pod to start")


def test_an_apply_problem_fails_and_stalls_the_cache() -> None:
    status = compute_cache_status(snapshot(apply_problem=("NameConflict", "Deployment 'x' already exists")))
    assert status.phase == "Failed"
    stalled = next(c for c in status.conditions or [] if c.type == "Stalled")
    assert (stalled.status, stalled.reason) == ("True", "NameConflict")


def cache_object(models: list[str], ready: list[str]) -> dict[str, Any]:
    return {
        "spec": {"storage": {"size": "1Gi"}, "models": [{"name": m} for m in models]},
        "status": {
            "models": [
                {"name": m, "phase": "Ready" if m in ready else "Filling", "percent": 40.0} for m in models
            ]
        },
    }


def test_a_backend_waits_for_its_cache_and_is_told_why() -> None:
    missing = backend_cache_wait("team", "shared", None, [FILE], None)
    assert missing is not None and missing.reason == "ModelCacheNotFound" and not missing.refused
    unlisted = backend_cache_wait("team", "shared", None, [FILE], cache_object([REPO], [REPO]))
    assert unlisted is not None and unlisted.reason == "ModelNotInCache" and FILE in unlisted.message
    filling = backend_cache_wait("team", "shared", None, [FILE], cache_object([FILE], []))
    assert filling is not None and filling.reason == "WaitingForModelCache"
    assert f"{FILE} Filling 40%" in filling.message
    assert backend_cache_wait("team", "shared", None, [FILE], cache_object([FILE], [FILE])) is None


def test_a_cache_of_another_namespace_is_refused_whatever_it_holds() -> None:
    wait = backend_cache_wait("team-a", "shared", "team-b", [FILE], cache_object([FILE], [FILE]))
    assert wait is not None and wait.refused and wait.reason == "ModelCacheNotAllowed"
    assert "own namespace" in wait.message
    assert backend_cache_wait("team-a", "shared", "team-a", [FILE], cache_object([FILE], [FILE])) is None


def test_a_backend_waiting_for_its_cache_is_pending_and_never_stalls_on_the_startup_timeout() -> None:
    from datetime import timedelta

    from llmop.models.backend import LLMBackendSpec, LLMBackendStatus
    from llmop.reconcile.backend_status import BackendSnapshot, compute_backend_status

    spec = {"runtime": "llamacpp", "models": [{"name": FILE}], "modelCache": {"name": "shared"}}
    message = f"waiting for ModelCache 'shared' to hold the models: {FILE} Filling 40%"
    status = compute_backend_status(
        BackendSnapshot(
            generation=1,
            spec=LLMBackendSpec.model_validate({**spec, "startup": {"timeout": "1m"}}),
            endpoint="http://b.ns.svc.cluster.local:8080",
            openai_base_url="http://b.ns.svc.cluster.local:8080/v1",
            now=NOW + timedelta(hours=1),  # far past startup.timeout: a large model fills for long
            observing_since=NOW,
            previous=LLMBackendStatus(),
            cache_wait=("WaitingForModelCache", message),
        )
    )
    assert status.phase == "Pending"
    by_type = {c.type: c for c in status.conditions or []}
    assert (by_type["Ready"].status, by_type["Ready"].reason, by_type["Ready"].message) == (
        "False",
        "WaitingForModelCache",
        message,
    )
    assert by_type["Reconciling"].status == "True" and by_type["Stalled"].status == "False"


def test_models_a_started_filler_has_not_hashed_again_are_verifying_not_ready() -> None:
    on_disk = {
        local_path(FILE) or "": CachedFile(size=600, name=FILE),
        local_path(REPO) or "": CachedFile(size=9),
    }
    status = compute_cache_status(
        snapshot(on_disk=on_disk, unverified=frozenset(on_disk), verified_filler="filler-1@t0")
    )
    assert [m.phase for m in status.models or []] == ["Verifying", "Verifying"]
    assert ready_of(status)[:2] == ("False", "Verifying")
    assert status.verified_filler == "filler-1@t0"
    missing = backend_cache_wait(
        "team",
        "shared",
        None,
        [FILE],
        {"spec": {"storage": {"size": "1Gi"}, "models": [{"name": FILE}]}, "status": status.to_api()},
    )
    assert missing is not None and missing.reason == "WaitingForModelCache", "a backend waits for the check"


def test_an_evicted_model_says_so_until_a_backend_uses_it_and_unused_since_follows_its_users() -> None:
    evicted = compute_cache_status(snapshot(on_disk={}, evicted=frozenset({REPO})))
    repo, _ = evicted.models or []
    assert repo.phase == "Evicted" and "downloaded again when a backend uses it" in (repo.message or "")
    wanted = compute_cache_status(snapshot(on_disk={}, evicted=frozenset({REPO}), users={REPO: ["chat"]}))
    assert (wanted.models or [])[0].phase == "Pending"

    verified = datetime(2026, 11, 30, tzinfo=UTC)
    on_disk = {local_path(FILE) or "": CachedFile(size=600, modified_at=verified)}
    used = compute_cache_status(snapshot(on_disk=on_disk, users={FILE: ["chat"]}))
    assert (used.models or [])[1].unused_since is None
    released = compute_cache_status(snapshot(on_disk=on_disk, previous=used))
    assert (released.models or [])[1].unused_since == NOW
    never = compute_cache_status(snapshot(on_disk=on_disk))
    assert (never.models or [])[1].unused_since == verified


def test_the_sizes_a_cache_holds_are_the_known_ones_by_model_name() -> None:
    cache = {
        "status": {
            "models": [
                {"name": FILE, "phase": "Ready", "sizeBytes": 600},
                {"name": REPO, "phase": "Pending"},
            ]
        }
    }
    assert cached_sizes(cache) == {FILE: 600}
    assert cached_sizes({}) == {}

"""The operator's Prometheus metrics, and the small HTTP server that serves them with /healthz.

The loops call the `record_*` functions below; nothing else in llmop touches
prometheus_client. Every name starts with `llmop_`.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar, get_args

import kopf
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest

from llmop import __version__
from llmop.models.backend import BackendPhase
from llmop.serving import serve_routes

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

PHASES: tuple[str, ...] = get_args(BackendPhase)

# Cold starts and downloads take from seconds to hours: buckets that tell 10 s from 10 min.
_LONG_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400)

INFO = Gauge("llmop_info", "The running llmop version (always 1).", ["version"])
LEADER = Gauge(
    "llmop_leader", "1 while this process acts (holds the Lease, or runs without leader election)."
)
RECONCILES = Counter(
    "llmop_reconcile_total",
    "Runs of the ensure handler (create, update, resume), by kind and result.",
    ["kind", "result"],
)
RECONCILE_SECONDS = Histogram(
    "llmop_reconcile_duration_seconds", "Duration of one ensure-handler run, by kind.", ["kind"]
)
STATUS_WRITES = Counter(
    "llmop_status_writes_total", "Status patches written (only when the observed state changed).", ["kind"]
)
BACKENDS = Gauge("llmop_backends", "LLMBackends this operator observes, by status phase.", ["phase"])
TIME_TO_READY = Histogram(
    "llmop_backend_time_to_ready_seconds",
    "Seconds from an LLMBackend's creation to its first Ready (backends whose spec was not changed "
    "before they became Ready).",
    buckets=_LONG_BUCKETS,
)
COLD_START_STAGE_SECONDS = Histogram(
    "llmop_cold_start_stage_seconds",
    "Seconds one replica spent in one stage of its cold start (status.startup), observed once per "
    "replica and stage when the replica becomes ready, by runtime and stage.",
    ["runtime", "stage"],
    buckets=(0.5, *_LONG_BUCKETS),
)
PULL_BYTES = Counter("llmop_pull_bytes_total", "Model bytes transferred by ModelPulls, summed over pods.")
PULL_SECONDS = Histogram(
    "llmop_pull_duration_seconds", "Seconds from a pull's start to its success.", buckets=_LONG_BUCKETS
)
PULL_FAILURES = Counter("llmop_pull_failures_total", "Failed pull attempts (each retry counts).")

INFO.labels(__version__).set(1)
for _phase in PHASES:
    BACKENDS.labels(_phase).set(0)

_backend_phases: dict[tuple[str, str], str] = {}
_ready_recorded: set[str] = set()


# --- reconciles -------------------------------------------------------------------------------


def timed_reconcile(kind: str) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """Count and time an async kopf handler; kopf sees the same name and signature."""

    def decorate(handler: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        @functools.wraps(handler)
        async def timed(*args: P.args, **kwargs: P.kwargs) -> R:
            started, result = time.monotonic(), "error"
            try:
                value = await handler(*args, **kwargs)
                result = "success"
                return value
            except kopf.TemporaryError:
                result = "retry"
                raise
            except kopf.PermanentError:
                result = "failed"
                raise
            finally:
                RECONCILES.labels(kind, result).inc()
                RECONCILE_SECONDS.labels(kind).observe(time.monotonic() - started)

        return timed

    return decorate


# --- backends ---------------------------------------------------------------------------------


def record_backend_phase(
    body: Mapping[str, Any], before: str | None, after: str | None, *, written: bool
) -> None:
    """One observation round of a backend: its phase, whether status was written, first Ready."""
    meta = body.get("metadata", {})
    key = (meta.get("namespace", ""), meta.get("name", ""))
    if written:
        STATUS_WRITES.labels("LLMBackend").inc()
    if after and _backend_phases.get(key) != after:
        _backend_phases[key] = after
        _publish_phases()
    uid = meta.get("uid", "")
    first_ready = (
        after == "Ready"
        and before in (None, "Pending", "Deploying", "Loading")
        and meta.get("generation") == 1
        and uid not in _ready_recorded
    )
    if first_ready and meta.get("creationTimestamp"):
        _ready_recorded.add(uid)
        created = datetime.fromisoformat(str(meta["creationTimestamp"]).replace("Z", "+00:00"))
        TIME_TO_READY.observe(max(0.0, (datetime.now(UTC) - created).total_seconds()))


def record_cold_start_stages(runtime: str, stages: list[tuple[str, int]]) -> None:
    """The stages of each replica that became ready since the last status written."""
    for stage, seconds in stages:
        COLD_START_STAGE_SECONDS.labels(runtime, stage).observe(seconds)


def forget_backend(namespace: str, name: str) -> None:
    """The backend is gone (or no longer this process's): it leaves the phase gauge."""
    if _backend_phases.pop((namespace, name), None) is not None:
        _publish_phases()


def forget_deleted_backend(uid: str) -> None:
    """The backend is deleted: its first Ready can never come again."""
    _ready_recorded.discard(uid)


def _publish_phases() -> None:
    counts = dict.fromkeys(PHASES, 0)
    for phase in _backend_phases.values():
        counts[phase] = counts.get(phase, 0) + 1
    for phase, count in counts.items():
        BACKENDS.labels(phase).set(count)


# --- pulls ------------------------------------------------------------------------------------


def record_pull_bytes(count: int) -> None:
    if count > 0:
        PULL_BYTES.inc(count)


def record_pull_done(seconds: float) -> None:
    PULL_SECONDS.observe(max(0.0, seconds))


def record_pull_failed() -> None:
    PULL_FAILURES.inc()


# --- leadership -------------------------------------------------------------------------------


def set_leader(acting: bool) -> None:
    LEADER.set(1 if acting else 0)


# --- the server -------------------------------------------------------------------------------

HealthCheck = Callable[[], tuple[bool, dict[str, Any]]]


async def start_server(host: str, port: int, health: HealthCheck) -> web.AppRunner | None:
    """Serve /metrics and /healthz; None (and an error in the log) when the port is taken.

    Metrics are an aid: a taken port must not stop the operator from reconciling. In a pod the
    port is the pod's own, and a liveness probe on /healthz makes the failure visible.
    """

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        ok, details = health()
        return web.json_response({"ok": ok, **details}, status=200 if ok else 503)

    return await serve_routes({"/metrics": metrics, "/healthz": healthz}, host, port)

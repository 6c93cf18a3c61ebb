"""Operator-wide settings and shared clients, set once at startup."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import kopf

from llmop.k8s.client import KubeClient
from llmop.loops.context import OperatorContext


@kopf.on.startup()
async def configure(
    settings: kopf.OperatorSettings, memo: OperatorContext, logger: kopf.Logger, **_: Any
) -> None:
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
    memo.kube = KubeClient.from_environment()
    # One pooled client for every runtime probe: connection reuse across backends. Few idle
    # connections: the pool checks each one on every request, and a steady backend's next probe
    # comes after the keep-alive expiry anyway.
    memo.runtime_http = httpx.AsyncClient(
        limits=httpx.Limits(max_connections=200, max_keepalive_connections=16)
    )
    logger.info("llmop started (namespaces: %s)", ", ".join(memo.config.namespaces) or "all")


@kopf.on.cleanup()
async def close_clients(memo: OperatorContext, **_: Any) -> None:
    await memo.kube.close()
    await memo.runtime_http.aclose()

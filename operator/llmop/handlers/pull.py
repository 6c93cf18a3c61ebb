"""ModelPull: one loop per pull gets the model onto every replica of its backend
(llmop.loops.model_puller)."""

from __future__ import annotations

from typing import Any

import kopf

from llmop import API_GROUP, API_VERSION
from llmop.loops.context import BackendKey, OperatorContext
from llmop.loops.model_puller import ModelPuller, StatusWriter
from llmop.loops.pace import DAEMON_BACKOFF
from llmop.reconcile.backend_status import PodFacts


# kopf passes indexes as extra keyword arguments, which its handler protocol cannot express.
# cancellation_backoff: on deletion the daemon gets that long to stop by itself, so it can cancel
# the transfer on the agents; without it kopf cancels the task at once.
@kopf.daemon(  # type: ignore[arg-type]
    API_GROUP,
    API_VERSION,
    "modelpulls",
    cancellation_backoff=5.0,
    cancellation_timeout=10.0,
    backoff=DAEMON_BACKOFF,
)
async def run_model_pull(
    name: str,
    namespace: str | None,
    body: kopf.Body,
    memo: OperatorContext,
    stopped: kopf.DaemonStopped,
    pods_by_backend: kopf.Index[BackendKey, PodFacts],
    **_: Any,
) -> None:
    assert namespace is not None  # ModelPull is namespaced
    writer = StatusWriter(memo.kube, name, namespace, body, memo.config.pull_progress_interval)

    def pods(backend: str) -> list[PodFacts]:
        return list(pods_by_backend.get((namespace, backend), []))

    await ModelPuller(name, namespace, body, memo, stopped, pods, writer).run()

"""Starting the kopf operator: namespaces, logging, metrics, leader election, and the handlers."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from typing import Any

import kopf

from llmop import metrics
from llmop.config import OperatorConfig
from llmop.loops.context import OperatorContext
from llmop.sources import redact_log_records

logger = logging.getLogger(__name__)


def run_operator(
    *,
    namespaces: list[str] | None,
    log_format: str | None,
    verbose: bool = False,
    liveness: str | None = None,
    metrics_port: int | None = None,
    leader_election: bool | None = None,
    lease_name: str | None = None,
    lease_namespace: str | None = None,
) -> int:
    config = OperatorConfig.from_env()
    if namespaces:
        config.namespaces = namespaces
    if log_format:
        config.log_format = log_format
    if metrics_port is not None:
        config.metrics_port = metrics_port
    if leader_election is not None:
        config.leader_election = leader_election
    if lease_name:
        config.lease_name = lease_name
    if lease_namespace:
        config.lease_namespace = lease_namespace
    # The startup handler reads the configuration from here (kopf passes it as `memo`).
    os.environ["LLMOP_LOG_FORMAT"] = config.log_format
    kopf.configure(
        verbose=verbose,
        log_format=kopf.LogFormat.JSON if config.log_format == "json" else kopf.LogFormat.PLAIN,
    )
    # One line per Lease round or probe would drown the operator's own log.
    for noisy in ("httpx", "httpcore", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    redact_log_records()
    import llmop.handlers  # noqa: F401  (registers the handlers with kopf)

    code = asyncio.run(_serve(config, liveness))
    if code == RESTART:
        _run_anew()
    return code


#: What `_serve` returns when the operator stopped to run itself anew (llmop.loops.heap).
RESTART = -1


def _run_anew() -> None:
    """The same process runs the same command again: same PID, same container, a fresh heap."""
    for handler in logging.getLogger().handlers:
        handler.flush()
    os.execv(sys.executable, sys.orig_argv)


async def _serve(config: OperatorConfig, liveness: str | None) -> int:
    state: dict[str, Any] = {"role": "starting", "operator": None}
    context = OperatorContext(config=config)

    def health() -> tuple[bool, dict[str, Any]]:
        return _health(state, config)

    server = None
    if config.metrics_port:
        server = await metrics.start_server(config.metrics_host, config.metrics_port, health)
    try:
        if config.leader_election:
            return await _run_elected(context, liveness, state)
        state["role"] = "standalone"
        metrics.set_leader(True)
        await _kopf(context, liveness)
        return RESTART if context.restart.is_set() else 0
    finally:
        if server is not None:
            await server.cleanup()


def _health(state: dict[str, Any], config: OperatorConfig) -> tuple[bool, dict[str, Any]]:
    """Alive: the event loop answers, kopf has not exited, and a standby still polls its Lease."""
    role = state["role"]
    task = state.get("operator")
    if task is not None and task.done():
        return False, {"role": role, "reason": "the operator loop has exited"}
    elector = state.get("elector")
    if elector is not None and role == "standby":
        silent = time.monotonic() - elector.last_attempt
        if silent > 4 * config.lease_duration:
            return False, {"role": role, "reason": f"no Lease round for {silent:.0f}s"}
    return True, {"role": role}


def _kopf(context: OperatorContext, liveness: str | None) -> Any:
    return kopf.operator(
        clusterwide=not context.config.namespaces,
        namespaces=context.config.namespaces,
        liveness_endpoint=liveness,
        memo=context,
        # llmop elects its leader with a Lease (llmop.leader) rather than kopf's peering objects.
        standalone=True,
        stop_flag=context.restart,
    )


async def _run_elected(context: OperatorContext, liveness: str | None, state: dict[str, Any]) -> int:
    from llmop.k8s.client import KubeClient
    from llmop.leader import LeaseElector, default_identity, default_namespace

    config = context.config
    kube = KubeClient.from_environment()
    elector = LeaseElector(
        kube,
        name=config.lease_name,
        namespace=config.lease_namespace or default_namespace(),
        identity=default_identity(),
        duration=config.lease_duration,
    )
    state.update(role="standby", elector=elector)
    metrics.set_leader(False)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):  # kopf installs its own once it runs
        loop.add_signal_handler(signum, stop.set)
    try:
        if not await elector.acquire(stop):
            return 0
        state["role"] = "leader"
        metrics.set_leader(True)
        operator = asyncio.create_task(_kopf(context, liveness))
        holding = asyncio.create_task(elector.hold())
        state["operator"] = operator
        await asyncio.wait({operator, holding}, return_when=asyncio.FIRST_COMPLETED)
        if holding.done():
            # Another replica may act from now on: stop at once, as client-go's leaders do, and
            # let Kubernetes restart the container as a standby.
            metrics.set_leader(False)
            logger.error("lost the Lease %s/%s; exiting", elector.namespace, elector.name)
            logging.shutdown()
            os._exit(1)
        holding.cancel()
        await elector.release()
        metrics.set_leader(False)
        operator.result()  # an operator that crashed exits non-zero
        return RESTART if context.restart.is_set() else 0
    finally:
        await kube.close()

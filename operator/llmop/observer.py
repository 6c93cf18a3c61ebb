"""Asking a runtime what it is doing: one probe, then its models when it serves."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import httpx

from llmop.reconcile.backend_status import RuntimeObservation
from llmop.runtimes import ProbeResult, ProbeState, RuntimeAPIError, connect


async def observe_runtime(
    kind: str,
    base_url: str,
    *,
    client: httpx.AsyncClient,
    api_key: str | None = None,
    request_timeout: float = 5.0,
    previous: RuntimeObservation | None = None,
) -> RuntimeObservation:
    """Never raises for the runtime's faults: what went wrong is in the observation's probe.

    With `previous` (a full observation of a runtime that served), only the health endpoint is
    asked and the listings are carried over: what a steady, serving runtime costs per round.
    """
    runtime = connect(kind, base_url, api_key=api_key, client=client, timeout=request_timeout)
    probe = await runtime.probe()
    if not probe.serving:
        return RuntimeObservation(probe=probe)
    if previous is not None and previous.probe.serving:
        return replace(previous, probe=probe)
    try:
        models, running, capabilities = await asyncio.gather(
            runtime.list_models(), runtime.list_running(), runtime.capabilities()
        )
    except RuntimeAPIError as error:
        # It answered the health check but not the model list: not serving yet, say why.
        failed = ProbeResult(
            state=ProbeState.ERROR, reason=str(error), url=probe.url, latency_seconds=probe.latency_seconds
        )
        return RuntimeObservation(probe=failed)
    return RuntimeObservation(
        probe=probe, models=tuple(models), running=tuple(running), capabilities=capabilities
    )

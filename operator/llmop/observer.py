"""Asking a runtime what it is doing: one probe, then its models when it serves."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TypeVar

import httpx

from llmop.reconcile.backend_status import RuntimeObservation
from llmop.runtimes import AuthFailed, ProbeResult, ProbeState, RuntimeAPIError, Unsupported, connect

Listing = TypeVar("Listing")


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
            _unless_unsupported(runtime.list_models),
            _unless_unsupported(runtime.list_running),
            _unless_unsupported(runtime.capabilities),
        )
    except RuntimeAPIError as error:
        # It answered the health check but not the model list: not serving, say why. A refused
        # key stays a refused key (vLLM's and llama.cpp's health endpoints need none).
        state = ProbeState.UNAUTHORIZED if isinstance(error, AuthFailed) else ProbeState.ERROR
        failed = ProbeResult(
            state=state, reason=str(error), url=probe.url, latency_seconds=probe.latency_seconds
        )
        return RuntimeObservation(probe=failed)
    return RuntimeObservation(
        probe=probe,
        models=tuple(models or ()),
        running=tuple(running) if running is not None else None,
        capabilities=capabilities,
    )


async def _unless_unsupported(listing: Callable[[], Awaitable[Listing]]) -> Listing | None:
    """What a runtime's API cannot tell is absent from status, never an error.

    Takes the request's function, not its coroutine: an observer cancelled (its backend deleted)
    before gather started this one then leaves no coroutine behind that was never awaited. Each
    such coroutine warned, and the warning read the operator's source files into memory for good,
    in the middle of the heap a burst of backends had grown (loops/heap.py).
    """
    try:
        return await listing()
    except Unsupported:
        return None

"""The operator's metrics: what each recording function moves, and the HTTP server."""

from __future__ import annotations

import socket
from typing import Any

import httpx
import kopf
import pytest
from prometheus_client import REGISTRY

from llmop import metrics


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def backend(name: str, *, generation: int = 1, created: str = "2020-01-01T00:00:00Z") -> dict[str, Any]:
    return {
        "metadata": {
            "namespace": "ns",
            "name": name,
            "uid": f"uid-{name}",
            "generation": generation,
            "creationTimestamp": created,
        }
    }


async def test_timed_reconcile_counts_results_and_keeps_the_handler_name() -> None:
    @metrics.timed_reconcile("Thing")
    async def ensure_thing(fail: str = "", **_: Any) -> str:
        if fail == "temporary":
            raise kopf.TemporaryError("later", delay=1)
        if fail == "permanent":
            raise kopf.PermanentError("never")
        return "done"

    assert ensure_thing.__name__ == "ensure_thing"  # kopf's handler id
    assert await ensure_thing() == "done"
    with pytest.raises(kopf.TemporaryError):
        await ensure_thing(fail="temporary")
    with pytest.raises(kopf.PermanentError):
        await ensure_thing(fail="permanent")
    assert value("llmop_reconcile_total", kind="Thing", result="success") == 1
    assert value("llmop_reconcile_total", kind="Thing", result="retry") == 1
    assert value("llmop_reconcile_total", kind="Thing", result="failed") == 1
    assert value("llmop_reconcile_duration_seconds_count", kind="Thing") == 3


def test_backends_by_phase_follow_each_backend_and_forget_deleted_ones() -> None:
    before = {phase: value("llmop_backends", phase=phase) for phase in metrics.PHASES}
    metrics.record_backend_phase(backend("a"), None, "Deploying", written=True)
    metrics.record_backend_phase(backend("b"), None, "Deploying", written=True)
    metrics.record_backend_phase(backend("a"), "Deploying", "Loading", written=True)
    assert value("llmop_backends", phase="Deploying") == before["Deploying"] + 1
    assert value("llmop_backends", phase="Loading") == before["Loading"] + 1
    metrics.forget_backend("ns", "a")
    metrics.forget_backend("ns", "b")
    assert {phase: value("llmop_backends", phase=phase) for phase in metrics.PHASES} == before


def test_time_to_ready_is_recorded_once_for_a_new_backend_only() -> None:
    count = value("llmop_backend_time_to_ready_seconds_count")
    writes = value("llmop_status_writes_total", kind="LLMBackend")
    metrics.record_backend_phase(backend("new"), "Loading", "Ready", written=True)
    metrics.record_backend_phase(backend("new"), "Loading", "Ready", written=True)  # already recorded
    metrics.record_backend_phase(backend("recovered"), "Degraded", "Ready", written=True)
    metrics.record_backend_phase(backend("edited", generation=3), "Loading", "Ready", written=False)
    assert value("llmop_backend_time_to_ready_seconds_count") == count + 1
    assert value("llmop_status_writes_total", kind="LLMBackend") == writes + 3
    for name in ("new", "recovered", "edited"):
        metrics.forget_backend("ns", name)


def test_pull_metrics() -> None:
    moved, done, failed = (
        value("llmop_pull_bytes_total"),
        value("llmop_pull_duration_seconds_count"),
        value("llmop_pull_failures_total"),
    )
    metrics.record_pull_bytes(1000)
    metrics.record_pull_bytes(0)
    metrics.record_pull_done(12.5)
    metrics.record_pull_failed()
    assert value("llmop_pull_bytes_total") == moved + 1000
    assert value("llmop_pull_duration_seconds_count") == done + 1
    assert value("llmop_pull_failures_total") == failed + 1


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_the_server_serves_metrics_and_health() -> None:
    port = _free_port()
    state = {"ok": True}
    runner = await metrics.start_server("127.0.0.1", port, lambda: (state["ok"], {"role": "leader"}))
    assert runner is not None
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            page = await client.get("/metrics")
            assert page.status_code == 200 and page.headers["content-type"].startswith("text/plain")
            assert 'llmop_info{version="' in page.text and "llmop_pull_bytes_total" in page.text
            health = await client.get("/healthz")
            assert health.status_code == 200 and health.json() == {"ok": True, "role": "leader"}
            state["ok"] = False
            assert (await client.get("/healthz")).status_code == 503
            # A second server on a taken port reports it and lets the operator carry on.
            assert await metrics.start_server("127.0.0.1", port, lambda: (True, {})) is None
    finally:
        await runner.cleanup()


def test_cold_start_stages_are_observed_by_runtime_and_stage() -> None:
    name = "llmop_cold_start_stage_seconds"
    labels = {"runtime": "llamacpp", "stage": "Downloading"}
    before = [value(f"{name}_{kind}", **labels) for kind in ("count", "sum")]
    under_30 = value(f"{name}_bucket", le="30.0", **labels)
    metrics.record_cold_start_stages("llamacpp", [("Scheduling", 1), ("Downloading", 42)])
    assert [value(f"{name}_{kind}", **labels) for kind in ("count", "sum")] == [before[0] + 1, before[1] + 42]
    assert value(f"{name}_bucket", le="30.0", **labels) == under_30

"""Deleted backends give their memory back: one trim of the heap a moment after a burst of
deletions, none while backends only come and stay."""

from __future__ import annotations

import asyncio

import pytest

from llmop.config import OperatorConfig
from llmop.loops.context import OperatorContext
from llmop.loops.heap import HeapSample, HeapTrim, _malloc_trim, restart_reason


class CountedTrim:
    def __init__(self) -> None:
        self.calls: list[int] = []
        self.called = asyncio.Event()

    def __call__(self, pad: int) -> int:
        self.calls.append(pad)
        self.called.set()
        return 1


async def trimmed(trim: CountedTrim, count: int) -> None:
    """Until the heap was trimmed `count` times (however slow a loaded machine runs the loop)."""
    async with asyncio.timeout(30):
        while len(trim.calls) < count:
            await trim.called.wait()
            trim.called.clear()
    assert len(trim.calls) == count, trim.calls


async def test_a_burst_of_deletions_trims_the_heap_once_after_the_delay() -> None:
    trim = CountedTrim()
    context = OperatorContext(OperatorConfig())
    context.heap = HeapTrim(delay=0.05, trim=trim, later=())
    for index in range(300):
        context.forget_backend(("team", f"b-{index}"))
    assert trim.calls == []  # not during the burst
    await trimmed(trim, 1)
    assert context.heap.pending is None  # one trim for the burst, nothing more to come
    context.forget_backend(("team", "later"))
    await trimmed(trim, 2)  # a later deletion trims again


async def test_a_steady_stream_of_deletions_still_trims() -> None:
    trim = CountedTrim()
    heap = HeapTrim(delay=0.1, trim=trim, longest=0.15, later=())
    for _ in range(30):  # a deletion every 20 ms for 0.6 s: never the pause of 0.1 s
        heap.soon()
        await asyncio.sleep(0.02)
    assert len(trim.calls) >= 1  # postponed for 0.15 s at most, then done


async def test_the_heap_is_trimmed_again_for_what_is_let_go_of_later() -> None:
    trim = CountedTrim()
    heap = HeapTrim(delay=0.01, trim=trim, later=(0.05, 0.05))
    heap.soon()
    await trimmed(trim, 3)
    assert heap.pending is None  # the first trim and two later ones, then no more
    heap.soon()
    await trimmed(trim, 4)  # the next burst's first pass, its later ones to come
    assert heap.pending is not None
    heap.soon()  # a deletion before its later passes starts over: three passes more
    await trimmed(trim, 7)
    assert heap.pending is None


def test_without_a_running_loop_nothing_is_scheduled() -> None:
    trim = CountedTrim()
    heap = HeapTrim(delay=0.0, trim=trim)
    heap.soon()
    assert heap.pending is None and trim.calls == []


def test_the_c_library_of_this_machine_has_malloc_trim() -> None:
    # glibc (Debian, the operator's image) has it; it returns 1 when it gave memory back, else 0.
    trim = _malloc_trim()
    assert trim is not None and trim(0) in (0, 1)


MIB = 2**20


def test_a_heap_grown_while_backends_went_is_a_reason_to_restart() -> None:
    start = HeapSample(rss_bytes=80 * MIB, backends=3)
    reason = restart_reason(start, HeapSample(rss_bytes=106 * MIB, backends=0), percent=25)
    assert reason is not None
    assert (
        "106.0 MiB" in reason
        and "32% above the 80.0 MiB" in reason
        and "(backends then: 3, now: 0)" in reason
    )


@pytest.mark.parametrize(
    ("baseline", "now", "percent"),
    [
        (None, HeapSample(500 * MIB, 0), 25),  # no baseline sampled yet
        (HeapSample(0, 3), HeapSample(80 * MIB, 0), 25),  # /proc could not be read for the baseline
        (HeapSample(80 * MIB, 3), HeapSample(99 * MIB, 0), 25),  # under the threshold
        (HeapSample(80 * MIB, 3), HeapSample(200 * MIB, 4), 25),  # more backends: state, not waste
        (HeapSample(80 * MIB, 3), HeapSample(200 * MIB, 0), 0),  # restarts turned off
    ],
)
def test_no_restart_without_waste(baseline: HeapSample | None, now: HeapSample, percent: float) -> None:
    assert restart_reason(baseline, now, percent) is None


async def test_a_trim_that_leaves_the_heap_bloated_restarts_the_operator_once() -> None:
    trim, reasons = CountedTrim(), []
    heap = HeapTrim(delay=0.01, trim=trim, later=(5.0,))
    rss = [80 * MIB]
    heap.measure = lambda: rss[0]
    heap.arm(reasons.append, lambda: 0, percent=25, after=2.0)
    await asyncio.sleep(0.8)  # the baseline, at a third of `after`
    assert heap.baseline == HeapSample(80 * MIB, 0)
    rss[0] = 120 * MIB
    heap.soon()
    await trimmed(trim, 1)
    assert reasons == []  # too soon after start: a restart could follow a restart
    await asyncio.sleep(1.5)
    heap.soon()
    await trimmed(trim, 2)
    assert len(reasons) == 1 and "50% above" in reasons[0]
    assert heap.pending is None  # no later trims: the operator is stopping
    heap.soon()
    await trimmed(trim, 3)
    assert len(reasons) == 1


async def test_the_operator_restarts_through_kopfs_stop_flag() -> None:
    config = OperatorConfig(heap_restart_percent=10, heap_restart_after=0.2)
    context = OperatorContext(config)
    context.heap = HeapTrim(delay=0.01, trim=CountedTrim(), later=())
    context.heap.arm(lambda _: context.restart.set(), lambda: len(context.observers), 10, 0.2)
    context.heap.measure = lambda: 80 * MIB
    await asyncio.sleep(0.25)
    context.heap.measure = lambda: 100 * MIB
    context.forget_backend(("team", "gone"))
    async with asyncio.timeout(10):
        await context.restart.wait()


def test_the_restart_threshold_comes_from_the_environment() -> None:
    config = OperatorConfig.from_env({"LLMOP_HEAP_RESTART_PERCENT": "40", "LLMOP_HEAP_RESTART_AFTER": "5m"})
    assert (config.heap_restart_percent, config.heap_restart_after) == (40.0, 300.0)
    assert OperatorConfig.from_env({}).heap_restart_percent == 25.0

"""Deleted backends give their memory back: one trim of the heap a moment after a burst of
deletions, none while backends only come and stay."""

from __future__ import annotations

import asyncio

from llmop.config import OperatorConfig
from llmop.loops.context import OperatorContext
from llmop.loops.heap import HeapTrim, _malloc_trim


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

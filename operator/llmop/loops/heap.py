"""Giving memory back once backends are gone.

A burst of backends grows the operator's heap; when they are deleted, glibc's malloc keeps the
freed pages for reuse, so the operator would stay at its peak for good. Once a burst of deletions
is over, llmop collects its garbage and asks malloc to return the free pages (`malloc_trim`). Where
the C library has no `malloc_trim` (musl), nothing is done.

That is not enough: Python's allocator gives an arena (1 MiB) back only once every object in it is
freed, and the few objects that outlive a burst (pooled connections, bounded caches, kopf's last
event) are spread over the arenas the burst grew. So when, after a trim, the operator holds no more
backends than soon after it started but its RSS is `restart_percent` above what it was then, it
restarts in place (the same process runs itself anew, as after an upgrade: status lives in the API,
observers resume, no pod is touched). Only at the first trim after deletions, when the heap is at
its fullest and no new burst has begun, and not within `restart_after` seconds of a start.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

logger = logging.getLogger(__name__)

#: After a deletion, wait this long for the rest of a burst: one trim for the lot.
TRIM_DELAY_SECONDS = 10.0
#: A steady stream of deletions still trims this often.
LONGEST_WAIT_SECONDS = 120.0
#: Then trim again after these gaps: kopf's workers, its daemons' tasks and the API connections'
#: keep-alive let go of a deleted backend's memory over the following minute, after the first trim.
LATER_TRIMS_SECONDS = (30.0, 60.0)


#: What `restart_after` defaults to: the baseline is sampled a third of it after start, once kopf
#: has listed what there is and started an observer for each backend.
RESTART_AFTER_SECONDS = 30.0


@dataclass(frozen=True)
class HeapSample:
    rss_bytes: int
    backends: int


def restart_reason(baseline: HeapSample | None, now: HeapSample, percent: float) -> str | None:
    """Why the operator should restart to give its heap back, or None. Only when it holds no more
    backends than at the baseline: then what it grew by is freed memory, not state."""
    if baseline is None or baseline.rss_bytes <= 0 or percent <= 0 or now.backends > baseline.backends:
        return None  # no baseline (or /proc could not be read for it), off, or more state
    if now.rss_bytes <= baseline.rss_bytes * (1 + percent / 100):
        return None
    grown = 100 * (now.rss_bytes - baseline.rss_bytes) / baseline.rss_bytes
    return (
        f"its RSS is {now.rss_bytes / 2**20:.1f} MiB, {grown:.0f}% above the "
        f"{baseline.rss_bytes / 2**20:.1f} MiB it had soon after start (backends then: "
        f"{baseline.backends}, now: {now.backends})"
    )


def resident_bytes() -> int:
    """This process's RSS (0 where /proc is not there)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


class HeapTrim:
    """A trim once deletions have paused for `delay` seconds (at the latest `longest` seconds after
    the first of them, so a steady stream of deletions trims too), and again after each of the
    `later` gaps; a new deletion starts over."""

    def __init__(
        self,
        delay: float = TRIM_DELAY_SECONDS,
        trim: Callable[[int], int] | None = None,
        longest: float = LONGEST_WAIT_SECONDS,
        later: tuple[float, ...] = LATER_TRIMS_SECONDS,
    ) -> None:
        self.delay, self.longest, self.later = delay, longest, later
        self.trim = trim if trim is not None else _malloc_trim()
        self.pending: asyncio.TimerHandle | None = None
        self.awaiting_first = False
        self.first_asked = 0.0
        self.trims = 0
        self.restart: Callable[[str], None] | None = None
        self.backends: Callable[[], int] = lambda: 0
        self.restart_percent, self.restart_after = 0.0, RESTART_AFTER_SECONDS
        self.baseline: HeapSample | None = None
        self.armed_at = 0.0
        self.measure: Callable[[], int] = resident_bytes

    def arm(
        self, restart: Callable[[str], None], backends: Callable[[], int], percent: float, after: float
    ) -> None:
        """Restart through `restart` when a burst leaves the heap `percent` above its size soon
        after start; the baseline is sampled `after / 3` seconds from now."""
        self.restart, self.backends = restart, backends
        self.restart_percent, self.restart_after = percent, after
        self.armed_at = time.monotonic()
        if percent > 0:
            asyncio.get_running_loop().call_later(after / 3, self.sample_baseline)

    def sample_baseline(self) -> None:
        self.baseline = HeapSample(self.measure(), self.backends())

    def soon(self) -> None:
        """A backend went: trim once the burst it belongs to is over."""
        if self.trim is None and self.restart is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop: nothing runs later, so nothing is scheduled
            return
        if self.pending is not None and self.awaiting_first:
            if loop.time() - self.first_asked >= self.longest:
                return
        else:
            self.first_asked = loop.time()
        if self.pending is not None:
            self.pending.cancel()
        self.awaiting_first = True
        self.pending = loop.call_later(self.delay, self.run, self.later, True)

    def run(self, later: tuple[float, ...] = (), first: bool = False) -> None:
        self.pending, self.awaiting_first = None, False
        gc.collect()  # cycles the deleted backends left: freed before malloc is asked
        if self.trim is not None:
            self.trim(0)
            self.trims += 1
        if first and self.restart_due():
            return
        if later:
            self.pending = asyncio.get_running_loop().call_later(later[0], self.run, later[1:])

    def restart_due(self) -> bool:
        if self.restart is None or time.monotonic() - self.armed_at < self.restart_after:
            return False
        now = HeapSample(self.measure(), self.backends())
        reason = restart_reason(self.baseline, now, self.restart_percent)
        if reason is None:
            logger.debug("heap after the trim: %s; soon after start: %s", now, self.baseline)
            return False
        logger.warning("llmop restarts to give back the memory deleted backends left: %s", reason)
        self.restart(reason)
        self.restart = None  # once: the operator is stopping
        return True

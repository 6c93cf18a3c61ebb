"""Giving memory back once backends are gone.

A burst of backends grows the operator's heap; when they are deleted, glibc's malloc keeps the
freed pages for reuse, so the operator would stay at its peak for good. Once a burst of deletions
is over, llmop collects its garbage and asks malloc to return the free pages (`malloc_trim`). Where the C library has no `malloc_trim` (musl), nothing is done.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
from collections.abc import Callable

logger = logging.getLogger(__name__)

#: After a deletion, wait this long for the rest of a burst: one trim for the lot.
TRIM_DELAY_SECONDS = 10.0
#: A steady stream of deletions still trims this often.
LONGEST_WAIT_SECONDS = 120.0
#: Then trim again after these gaps: kopf's workers, its daemons' tasks and the API connections'
#: keep-alive let go of a deleted backend's memory over the following minute, after the first trim.
LATER_TRIMS_SECONDS = (30.0, 60.0)


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

    def soon(self) -> None:
        """A backend went: trim once the burst it belongs to is over."""
        if self.trim is None:
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
        self.pending = loop.call_later(self.delay, self.run, self.later)

    def run(self, later: tuple[float, ...] = ()) -> None:
        self.pending, self.awaiting_first = None, False
        gc.collect()  # cycles the deleted backends left: freed before malloc is asked
        if self.trim is not None:
            self.trim(0)
            self.trims += 1
        if later:
            self.pending = asyncio.get_running_loop().call_later(later[0], self.run, later[1:])

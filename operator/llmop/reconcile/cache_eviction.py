"""Which cached models to remove when a model does not fit in a ModelCache: least recently used
first, never one a backend uses. Pure."""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

#: The agent's words when a download does not fit (llmop.agent.store.VolumeRoom.check).
_NO_ROOM = re.compile(r"needs (\d+) bytes \(.*?\) but the model volume has only (\d+) bytes")


@dataclass(frozen=True)
class Evictable:
    """A model on the cache volume that no backend uses."""

    name: str
    local_path: str
    size: int
    #: When a backend last used it, else when it was verified; the oldest goes first.
    last_used: datetime | None


def no_room(error: str) -> tuple[int, int] | None:
    """(bytes needed, bytes free) when `error` is the agent refusing a download for want of room."""
    match = _NO_ROOM.search(error)
    return (int(match[1]), int(match[2])) if match else None


def plan_eviction(candidates: Collection[Evictable], needed: int, free: int) -> list[Evictable] | None:
    """The fewest least recently used candidates whose removal leaves `needed` bytes free, in the
    order to remove them; None when removing all of them would not be enough (nothing is removed
    then: a model that cannot fit must not empty the cache on its way to failing)."""
    chosen: list[Evictable] = []
    oldest_first = sorted(
        candidates, key=lambda c: (c.last_used is not None, c.last_used or datetime.min, c.name)
    )
    for candidate in oldest_first:
        if free >= needed:
            break
        chosen.append(candidate)
        free += candidate.size
    return chosen if free >= needed else None

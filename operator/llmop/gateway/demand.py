"""The demand the gateway reports for autoscaled backends (spec.autoscaling): how many requests it
relays to each backend's pods, and how many it holds because no pod serves their model yet.

Each gateway pod writes its own entry, `status.demand.<gateway pod name>`, with a JSON merge patch
of the status subresource; the operator decides the replicas from the entries. Writes happen in a
background task, never on a request's path: a request only flags that a count changed.

When an entry is written (per backend): at once when a request is held while the last entry said
none was (the wake: the backend may be at zero); else when the counts changed, at most once per
second; every 15 s while any count is not zero (the operator ignores an entry a minute old, left
by a gateway that died); once more when the counts drop to zero; and at once when status marks a
pod of the backend draining (the operator waits for an entry written after the mark before the
pod goes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from llmop.gateway.table import BackendKey, ModelRoute, RoutingTable
from llmop.k8s.client import LLMBACKENDS, KubeAPIError, KubeClient

logger = logging.getLogger(__name__)

#: At most one write per backend this often while the counts change.
MIN_INTERVAL_SECONDS = 1.0
#: While any count is not zero, the entry is written again this often (the operator trusts an
#: entry for 60 s).
HEARTBEAT_SECONDS = 15.0
#: After a failed write, wait this long before the next try, doubling up to the longest.
RETRY_SECONDS = 0.5
LONGEST_RETRY_SECONDS = 10.0


def gateway_id(environ: dict[str, str] | os._Environ[str]) -> str:
    """The name this gateway pod writes its counts under: the pod's name (the chart passes it
    from the downward API), else the host name, which is the pod's name in a pod too."""
    return environ.get("POD_NAME", "").strip() or socket.gethostname()


@dataclass(frozen=True)
class Counts:
    """One backend's requests through this gateway now."""

    in_flight: int = 0
    waiting: int = 0
    #: (pod, requests in flight) for each pod with some, sorted by pod.
    pods: tuple[tuple[str, int], ...] = ()

    @property
    def zero(self) -> bool:
        return not self.in_flight and not self.waiting


@dataclass
class _Reported:
    """What the API server last took for one backend, and when to try again after a failure."""

    counts: Counts = field(default_factory=Counts)
    written_at: float | None = None
    #: Pods named in any write since the last one that succeeded: a pod left out of the next
    #: write is removed by a null (a merge patch merges maps).
    named_pods: set[str] = field(default_factory=set)
    failures: int = 0
    retry_at: float = 0.0
    #: To be written at once whatever the counts (a pod was marked draining since)...
    forced: bool = False
    #: ...and whether the write on its way is that one (a failure leaves it to do).
    sending_forced: bool = False


class DemandBook:
    """The counts of the autoscaled backends and which are due to be written (no I/O; the
    clock is injected). In-flight counts are the balancer's, read when a write is due."""

    def __init__(self, in_flight: Counter[str], clock: Callable[[], float] = time.monotonic) -> None:
        #: The balancer's requests outstanding per upstream key, `namespace/backend/pod`.
        self.in_flight = in_flight
        self.clock = clock
        self.autoscaled: frozenset[BackendKey] = frozenset()
        self.draining: frozenset[tuple[str, str, str]] = frozenset()
        self.waiting: Counter[BackendKey] = Counter()
        self.reported: dict[BackendKey, _Reported] = {}
        #: Set when a count of an autoscaled backend changed; `wake` when a request is held.
        self.changed = asyncio.Event()
        self.wake = asyncio.Event()

    def follow(self, table: RoutingTable) -> None:
        """The table's autoscaled backends. A pod newly marked draining makes its backend's
        entry due at once: the operator lets the pod go only on an entry written after the mark
        (which says this gateway saw it) with nothing in flight there."""
        self.autoscaled = table.autoscaled
        marked = {(namespace, backend) for namespace, backend, _ in table.draining - self.draining}
        self.draining = table.draining
        for key in marked & self.reported.keys():
            self.reported[key].forced = True
        if marked:
            self.changed.set()
            self.wake.set()

    def touched(self) -> None:
        """A request to an autoscaled backend's pod started or ended (the request path: cheap)."""
        self.changed.set()

    def hold(self, routes: Iterable[ModelRoute]) -> list[BackendKey]:
        """Count a request held for these routes' autoscaled backends; the keys to release."""
        keys = list(dict.fromkeys((r.namespace, r.backend) for r in routes if r.autoscaled and r.coming))
        for key in keys:
            self.waiting[key] += 1
        if keys:
            self.changed.set()
            self.wake.set()
        return keys

    def release(self, keys: Iterable[BackendKey]) -> None:
        for key in keys:
            self.waiting[key] -= 1
            if self.waiting[key] <= 0:
                del self.waiting[key]
        self.changed.set()

    def counts(self) -> dict[BackendKey, Counts]:
        """The counts of every autoscaled backend (zero for those without requests)."""
        pods: dict[BackendKey, dict[str, int]] = {key: {} for key in self.autoscaled}
        for upstream, count in self.in_flight.items():
            namespace, backend, pod = upstream.split("/", 2)
            if count > 0 and (namespace, backend) in pods:
                pods[namespace, backend][pod] = count
        return {
            key: Counts(sum(found.values()), self.waiting.get(key, 0), tuple(sorted(found.items())))
            for key, found in pods.items()
        }

    def due(self) -> list[tuple[BackendKey, Counts]]:
        """The backends whose counts must be written now."""
        now = self.clock()
        current = self.counts()
        for gone in set(self.reported) - set(current):
            del self.reported[gone]  # no longer autoscaled (or deleted): nothing more to say
        return [(key, counts) for key, counts in current.items() if self._when(key, counts, now) <= now]

    def next_due(self) -> tuple[float | None, bool]:
        """Seconds until the next write falls due with the counts as they are (None: none is),
        and whether the counts are as last written: only then must a change end the wait (a
        write waiting for its interval, or a retry, takes the counts as they are by then)."""
        now = self.clock()
        current = self.counts()
        times = [self._when(key, counts, now) for key, counts in current.items()]
        settled = all(counts == self._last(key) for key, counts in current.items())
        soonest = min(times, default=float("inf"))
        return (None if soonest == float("inf") else max(soonest - now, 0.0)), settled

    def _last(self, key: BackendKey) -> Counts:
        reported = self.reported.get(key)
        return reported.counts if reported is not None else Counts()

    def _when(self, key: BackendKey, counts: Counts, now: float) -> float:
        """When the backend's counts are to be written (inf: not while they stay as they are)."""
        reported = self.reported.get(key)
        if reported is None:
            return float("inf") if counts.zero else now
        if reported.forced:
            return reported.retry_at
        if counts == reported.counts:
            if counts.zero or reported.written_at is None:
                return float("inf")
            return max(reported.written_at + HEARTBEAT_SECONDS, reported.retry_at)
        if counts.waiting and not reported.counts.waiting:
            return reported.retry_at  # the wake: at once, unless the API server just failed
        last = reported.written_at if reported.written_at is not None else -MIN_INTERVAL_SECONDS
        return max(last + MIN_INTERVAL_SECONDS, reported.retry_at)

    def patch(self, key: BackendKey, who: str, counts: Counts, at: datetime) -> dict[str, Any]:
        """The status merge patch that writes this gateway's entry, and only it."""
        reported = self.reported.setdefault(key, _Reported())
        pods: dict[str, int | None] = dict(counts.pods)
        pods.update({pod: None for pod in reported.named_pods if pod not in pods})
        reported.named_pods.update(pods)
        # Built after any mark seen so far: a mark that comes while it travels asks for another.
        reported.sending_forced, reported.forced = reported.forced, False
        entry = {
            "inFlight": counts.in_flight,
            "waiting": counts.waiting,
            "pods": pods,
            "time": at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        }
        return {"demand": {who: entry}}

    def written(self, key: BackendKey, counts: Counts) -> None:
        forced = key in self.reported and self.reported[key].forced
        self.reported[key] = _Reported(counts, self.clock(), {pod for pod, _ in counts.pods}, forced=forced)

    def failed(self, key: BackendKey) -> float:
        """Count a failed write; the seconds before the next try."""
        reported = self.reported.setdefault(key, _Reported())
        reported.forced = reported.forced or reported.sending_forced
        reported.failures += 1
        backoff = min(RETRY_SECONDS * 2 ** (reported.failures - 1), LONGEST_RETRY_SECONDS)
        reported.retry_at = self.clock() + backoff
        return backoff


class DemandWriter:
    """Writes the book's due entries into the backends' status, for as long as the gateway runs."""

    def __init__(
        self,
        kube: KubeClient,
        book: DemandBook,
        who: str,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.kube = kube
        self.book = book
        self.who = who
        self.now = now

    async def run(self) -> None:
        while True:
            await self.write_due()
            await self.pause()

    async def write_due(self) -> None:
        self.book.changed.clear()
        self.book.wake.clear()
        due = self.book.due()
        if due:
            await asyncio.gather(*(self.write(key, counts) for key, counts in due))

    async def pause(self) -> None:
        """Until the next write is due, or a change makes one due (a held request at once)."""
        seconds, settled = self.book.next_due()
        if seconds == 0.0:
            return
        event = self.book.changed if settled else self.book.wake
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), seconds)

    async def write(self, key: BackendKey, counts: Counts) -> None:
        namespace, name = key
        patch = self.book.patch(key, self.who, counts, self.now())
        try:
            await self.kube.patch_status(LLMBACKENDS, name, namespace, patch)
        except KubeAPIError as error:
            # Never the request's failure: the counts are written again after a pause (a
            # deleted backend leaves the table, and the book, at the watch's next event).
            backoff = self.book.failed(key)
            logger.warning(
                "gateway: writing the demand of %s/%s failed (again in %.1fs): %s", *key, backoff, error
            )
            return
        self.book.written(key, counts)

"""Which pod gets the next request: the one with the fewest requests outstanding through this
gateway, passing over pods that just failed; with prefix affinity, the conversation's own pod
unless it is much busier than the others."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Collection, Sequence

from llmop.gateway.affinity import rendezvous
from llmop.gateway.table import Upstream

#: How long a pod that failed a request (refused it, or broke a stream) is passed over while
#: another can serve; the operator's status drops a dead pod soon after.
FAILURE_PENALTY_SECONDS = 10.0
#: How many more requests than the least-busy pod a conversation's own pod may have outstanding
#: and still get the next turn: at least this many...
AFFINITY_MIN_SLACK = 2
#: ...or this share of the pods' average, so that a hot conversation never piles onto one pod.
AFFINITY_SLACK_SHARE = 0.25


class Balancer:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.in_flight: Counter[str] = Counter()
        self.failed_until: dict[str, float] = {}
        self.turn = 0

    def choose(
        self, upstreams: Sequence[Upstream], tried: Collection[str] = (), affinity: bytes | None = None
    ) -> Upstream | None:
        """The pod not yet tried that `affinity` (a conversation's key) falls on, while it is not
        much busier than the others; else the least-loaded. A retry thus goes to the
        conversation's next pod, the one its later turns go to while the first is passed over."""
        candidates = [u for u in upstreams if u.key not in tried]
        if not candidates:
            return None
        now = self.clock()
        healthy = [u for u in candidates if self.failed_until.get(u.key, 0.0) <= now] or candidates
        if len(healthy) == 1:
            return healthy[0]  # the usual case of one pod: no order to compute
        if affinity is not None:
            affine = rendezvous(affinity, healthy)
            if self.within_bound(affine, healthy):
                return affine
        return self.least_loaded(healthy)

    def within_bound(self, upstream: Upstream, upstreams: Sequence[Upstream]) -> bool:
        """Whether `upstream` has at most a few more requests outstanding than the least busy."""
        loads = [self.in_flight[u.key] for u in upstreams]
        slack = max(AFFINITY_MIN_SLACK, AFFINITY_SLACK_SHARE * sum(loads) / len(loads))
        return self.in_flight[upstream.key] <= min(loads) + slack

    def least_loaded(self, healthy: Sequence[Upstream]) -> Upstream:
        """The pod with the fewest requests outstanding; ties go round-robin, so that one
        client's requests in a row spread over the pods."""
        self.turn += 1
        count = len(healthy)
        order = {u.key: (index - self.turn) % count for index, u in enumerate(healthy)}
        return min(healthy, key=lambda u: (self.in_flight[u.key], order[u.key]))

    def started(self, upstream: Upstream) -> None:
        self.in_flight[upstream.key] += 1

    def finished(self, upstream: Upstream) -> None:
        self.in_flight[upstream.key] -= 1
        if self.in_flight[upstream.key] <= 0:
            del self.in_flight[upstream.key]

    def failed(self, upstream: Upstream) -> None:
        self.failed_until[upstream.key] = self.clock() + FAILURE_PENALTY_SECONDS
        if len(self.failed_until) > 10_000:
            # Pods come and go: forget penalties that ran out, so the map stays small.
            now = self.clock()
            self.failed_until = {k: t for k, t in self.failed_until.items() if t > now}

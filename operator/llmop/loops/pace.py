"""How often a backend is looked at, and how much is asked: pure decisions, tested alone.

Every `startup.probeInterval` while the backend is not Ready (starting, loading, failing), so that
Ready and failures show within one interval, and once more right after any change. Once Ready and
unchanged, every STEADY_INTERVAL; with many backends the steady rounds of all of them together
stay within STEADY_PROBES_PER_SECOND, so one operator's cost does not grow with the number of
healthy backends (1000 backends: each every 40 s). A steady round asks only the health endpoint;
every FULL_ROUND_EVERY-th lists models again. An event that may matter (the spec, the backend's
pods or pulls) wakes the observer for a full round at once; a round that finds a change brings
back the fast pace.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llmop.models.backend import PROBE_INTERVAL_BOUNDS, WARMUP_TIMEOUT_BOUNDS
from llmop.models.duration import parse_duration

STEADY_INTERVAL = 8.0
STEADY_PROBES_PER_SECOND = 25.0
FULL_ROUND_EVERY = 5
#: Probes in flight at once across all backends: a burst (a thousand backends created together,
#: an operator restart) queues here instead of timing out in the HTTP client's pool.
PROBE_CONCURRENCY = 64
#: While the API server is away, look again this often: its return shows within this.
API_RETRY_SECONDS = 1.0
#: kopf restarts a loop that raised after this many seconds, not its default minute.
DAEMON_BACKOFF = 5.0
#: A doubted probe is asked again after this, or probeInterval if shorter.
DOUBT_SECONDS = 1.0
#: A round that failed for a reason of llmop's own (a spec or an answer it could not handle) is
#: tried again after this: the user reads why in status meanwhile.
FAILED_ROUND_SECONDS = 10.0
#: Phases in which nothing is expected to change: looked at at the steady pace. Idle has no pod
#: to probe; a gateway's demand wakes it.
STEADY_PHASES = ("Ready", "Idle")
#: Status fields the gateways write (status.demand): llmop's status writes never touch them.
GATEWAY_FIELDS = ("demand",)


def probe_interval_seconds(probe_interval: str) -> float:
    """`startup.probeInterval` held to the CRD's bounds: an object stored before the rule (a zero
    interval) must not spin its observer, nor a huge one silence it."""
    shortest, longest = (parse_duration(bound) for bound in PROBE_INTERVAL_BOUNDS)
    return min(max(parse_duration(probe_interval), shortest), longest)


def warmup_timeout_seconds(timeout: str) -> float:
    """`warmup.timeout` held to the CRD's bounds: an object stored before the rule must not hold
    its observer in one warmup request for hours."""
    shortest, longest = (parse_duration(bound) for bound in WARMUP_TIMEOUT_BOUNDS)
    return min(max(parse_duration(timeout), shortest), longest)


def steady_interval(fast: float, observed: int) -> float:
    """Seconds between probes of a Ready backend that changed nothing: STEADY_INTERVAL, stretched
    when many backends share the probe budget, never shorter than the backend's probeInterval."""
    return max(STEADY_INTERVAL, observed / STEADY_PROBES_PER_SECOND, fast)


@dataclass
class ObserverPace:
    """What the last rounds found, and so how the next one looks."""

    #: Rounds in a row that found a Ready backend unchanged.
    quiet_rounds: int = 0
    #: A Ready backend's probe failed once: it is looked at again before being reported.
    doubted: bool = False
    #: Something changed elsewhere: the next round asks for every listing.
    woken: bool = False

    def restart(self) -> None:
        """A new generation of the spec: start over at the fast pace."""
        self.quiet_rounds = 0

    def steady(self, stored_phase: str | None) -> bool:
        return stored_phase in STEADY_PHASES and self.quiet_rounds > 0 and not self.woken

    def full_listing(self, stored_phase: str | None) -> bool:
        """Whether this round lists models (else it only asks health and keeps the listing)."""
        return not self.steady(stored_phase) or self.quiet_rounds % FULL_ROUND_EVERY == 0

    def doubts(self, stored_phase: str | None, changed: bool, stopped_answering: bool) -> bool:
        """One unanswered probe of a serving runtime may be a slow answer on a busy node: look
        again, with every listing, before telling the user it failed."""
        if changed and stored_phase == "Ready" and stopped_answering and not self.doubted:
            self.doubted, self.quiet_rounds = True, 0
            return True
        self.doubted = False
        return False

    def next_interval(
        self, phase: str | None, changed: bool, fast: float, observed: int, jitter: float
    ) -> float:
        """Seconds to the next round. `jitter` (0.9 to 1) spreads out backends that became Ready
        together."""
        if phase not in STEADY_PHASES or changed:
            self.quiet_rounds = 0
            return fast
        self.quiet_rounds += 1
        return steady_interval(fast, observed) * jitter


def caught_up(seen: str | None, written: str | None, stored: dict[str, Any], ours: dict[str, Any]) -> bool:
    """Whether kopf's view of an object includes the status llmop last wrote: it carries that
    resourceVersion or a later one (etcd revisions, compared as numbers where they are numbers),
    or already shows that status."""
    if seen == written or stored == ours:
        return True
    try:
        return int(seen or "") > int(written or "")
    except ValueError:
        return False


def status_patch(
    stored: dict[str, Any], new: dict[str, Any], keep: tuple[str, ...] = GATEWAY_FIELDS
) -> dict[str, Any]:
    """A merge patch turning `stored` into `new`: removed fields become null, in nested objects too
    (a merge patch merges an object into the stored one, where a field left out stays). The
    gateways' fields are left out: they are theirs to write."""
    patch: dict[str, Any] = {key: None for key in stored if key not in new and key not in keep}
    for key, value in new.items():
        old = stored.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            patch[key] = status_patch(old, value, keep=())
        else:
            patch[key] = value
    return patch

"""ModelPull progress and status: pure pieces, fed by the pull streams of each replica."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from llmop.models.base import Condition
from llmop.models.duration import parse_duration
from llmop.models.pull import (
    BACKOFF_BOUNDS,
    MAX_ATTEMPTS_LIMIT,
    ModelPullStatus,
    PullPhase,
    PullProgress,
    ReplicaPull,
    RetrySpec,
)
from llmop.reconcile.conditions import carry_transition_times, condition, find, status_text
from llmop.runtimes.results import PullLine

_RATE_WINDOW_SECONDS = 10.0


def human_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(count) < 1024 or unit == "GiB":
            return f"{count:.0f}{unit}" if unit == "B" else f"{count:.1f}{unit}"
        count /= 1024
    return f"{count:.1f}GiB"


@dataclass
class ReplicaProgress:
    """Byte counts of one replica's pull, per layer (Ollama) or file (the agent)."""

    pod: str
    layers: dict[str, tuple[int, int]] = field(default_factory=dict)  # key -> (completed, total)
    status: str = ""
    current: str | None = None
    phase: PullPhase = "Pulling"
    error: str | None = None

    def record(self, line: PullLine) -> None:
        self.status = line.status
        if line.digest and line.total:
            self.layers[line.digest] = (min(line.completed or 0, line.total), line.total)
            self.current = line.digest
        if line.done:
            self.phase = "Succeeded"
            self.layers = {key: (total, total) for key, (_, total) in self.layers.items()}

    @property
    def completed(self) -> int:
        return sum(done for done, _ in self.layers.values())

    @property
    def total(self) -> int:
        return sum(total for _, total in self.layers.values())

    @property
    def percent(self) -> float | None:
        return round(100.0 * self.completed / self.total, 1) if self.total else None


@dataclass
class PullTracker:
    """Progress summed over replicas, with a transfer rate over a sliding window."""

    replicas: dict[str, ReplicaProgress] = field(default_factory=dict)
    samples: list[tuple[float, int]] = field(default_factory=list)  # (monotonic seconds, completed)

    def replica(self, pod: str) -> ReplicaProgress:
        return self.replicas.setdefault(pod, ReplicaProgress(pod=pod))

    def sample(self, now: float) -> None:
        self.samples.append((now, self.completed))
        self.samples = [s for s in self.samples if now - s[0] <= _RATE_WINDOW_SECONDS]

    @property
    def completed(self) -> int:
        return sum(r.completed for r in self.replicas.values())

    @property
    def total(self) -> int:
        return sum(r.total for r in self.replicas.values())

    def progress(self) -> PullProgress:
        completed, total = self.completed, self.total
        rate = None
        if len(self.samples) >= 2:
            (t0, c0), (t1, c1) = self.samples[0], self.samples[-1]
            if t1 > t0:
                rate = max(0, int((c1 - c0) / (t1 - t0)))
        percent = round(100.0 * completed / total, 1) if total else None
        eta = int((total - completed) / rate) if rate and total else None
        current = next(
            (r.current for r in self.replicas.values() if r.phase == "Pulling" and r.current), None
        )
        summary = f"{percent:.0f}% " if percent is not None else ""
        summary += f"{human_bytes(completed)}/{human_bytes(total)}" if total else "starting"
        if rate:
            summary += f" {human_bytes(rate)}/s"
        return PullProgress(
            completed_bytes=completed,
            total_bytes=total or None,
            percent=percent,
            bytes_per_second=rate,
            eta_seconds=eta,
            current_layer=current and status_text(current, 256),
            summary=summary,
        )

    def replica_states(self) -> list[ReplicaPull]:
        return [
            ReplicaPull(
                pod=r.pod, phase=r.phase, percent=r.percent, message=status_text(r.error or r.status) or None
            )
            for r in sorted(self.replicas.values(), key=lambda r: r.pod)
        ]


def pull_conditions(
    phase: PullPhase,
    reason: str,
    message: str,
    generation: int,
    previous: list[Condition] | None,
    now: datetime,
    stalled: bool = False,
) -> list[Condition]:
    done = phase == "Succeeded"
    return carry_transition_times(
        [
            condition("Ready", done, reason, message, generation),
            condition(
                "Reconciling",
                not done and not stalled,
                reason if not done else "Pulled",
                "" if done or stalled else message,
                generation,
            ),
            condition(
                "Stalled",
                stalled,
                reason if stalled else "NotStalled",
                message if stalled else "",
                generation,
            ),
        ],
        previous,
        now,
    )


def backoff_seconds(base: float, attempt: int, cap: float = 600.0) -> float:
    """Wait before attempt `attempt + 1`: base, 2*base, 4*base ... capped."""
    # The exponent stops where the cap is reached anyway: 2**1100 is no float.
    return float(min(cap, base * (2 ** min(max(0, attempt - 1), 64))))


def retry_limits(retry: RetrySpec) -> tuple[int, float]:
    """maxAttempts and the backoff in seconds, held to the CRD's bounds: a pull stored before the
    rules (a zero backoff) must not retry without pause."""
    shortest, longest = (parse_duration(bound) for bound in BACKOFF_BOUNDS)
    attempts = min(max(retry.max_attempts, 1), MAX_ATTEMPTS_LIMIT)
    return attempts, min(max(parse_duration(retry.backoff), shortest), longest)


#: The Reconciling reason while an attempt runs (as opposed to PullFailed, waiting to retry).
IN_FLIGHT_REASON = "Pulling"


def attempt_number(stored: ModelPullStatus, generation: int, *, resuming: bool) -> int:
    """The number of the attempt about to start, from the status as stored.

    A spec change counts from 1 again. When the operator starts (`resuming`) and finds an attempt
    in flight, that attempt carries on under its own number: the runtime kept pulling while the
    operator was away, and nothing failed.
    """
    if stored.observed_generation != generation:
        return 1
    made = stored.attempts or 0
    reconciling = find(stored.conditions, "Reconciling")
    in_flight = (
        stored.phase == "Pulling"
        and reconciling is not None
        and reconciling.status == "True"
        and reconciling.reason == IN_FLIGHT_REASON
    )
    if resuming and in_flight and made:
        return made
    return made + 1


def waiting_phase(current: PullPhase | None) -> PullPhase:
    """The phase while the pull waits for its backend or runtime: a pull between two attempts
    stays Pulling (it has begun and will go on); one that never started is Pending."""
    return "Pulling" if current == "Pulling" else "Pending"

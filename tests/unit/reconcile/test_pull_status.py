"""ModelPull status pieces: what `kubectl get mpull` shows while a pull runs, fails and resumes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from llmop.models.pull import ModelPullStatus, PullPhase
from llmop.reconcile.conditions import find
from llmop.reconcile.pull_status import (
    IN_FLIGHT_REASON,
    PullTracker,
    attempt_number,
    backoff_seconds,
    pull_conditions,
    waiting_phase,
)
from llmop.runtimes import PullLine

T0 = datetime(2026, 11, 21, 12, 0, 0, tzinfo=UTC)


def stored(phase: PullPhase, reason: str, attempts: int, generation: int = 1) -> ModelPullStatus:
    return ModelPullStatus(
        observed_generation=generation,
        phase=phase,
        attempts=attempts,
        conditions=pull_conditions(phase, reason, "m", generation, None, T0, stalled=phase == "Failed"),
    )


# --- attempts --------------------------------------------------------------------------------


def test_the_first_attempt_is_one() -> None:
    assert attempt_number(ModelPullStatus(), 1, resuming=True) == 1
    assert attempt_number(ModelPullStatus(), 1, resuming=False) == 1


def test_an_attempt_in_flight_when_the_operator_restarted_carries_on_under_its_number() -> None:
    in_flight = stored("Pulling", IN_FLIGHT_REASON, attempts=2)
    assert attempt_number(in_flight, 1, resuming=True) == 2


def test_after_a_failed_attempt_the_next_one_counts() -> None:
    backing_off = stored("Pulling", "PullFailed", attempts=2)
    assert attempt_number(backing_off, 1, resuming=True) == 3
    assert attempt_number(backing_off, 1, resuming=False) == 3


def test_within_one_operator_run_every_attempt_counts() -> None:
    # The daemon's own earlier attempt ended (the stream broke): that is a failure, not a resume.
    in_flight = stored("Pulling", IN_FLIGHT_REASON, attempts=1)
    assert attempt_number(in_flight, 1, resuming=False) == 2


def test_a_spec_change_counts_from_one_again() -> None:
    old = stored("Pulling", IN_FLIGHT_REASON, attempts=4, generation=1)
    assert attempt_number(old, 2, resuming=True) == 1
    failed = stored("Failed", "PullFailed", attempts=5, generation=1)
    assert attempt_number(failed, 2, resuming=False) == 1


def test_a_pull_waiting_for_its_runtime_is_not_resumed_as_in_flight() -> None:
    waiting = stored("Pulling", "WaitingForRuntime", attempts=1)
    assert attempt_number(waiting, 1, resuming=True) == 2


def test_waiting_keeps_a_begun_pull_pulling() -> None:
    assert waiting_phase(None) == "Pending"
    assert waiting_phase("Pending") == "Pending"
    assert waiting_phase("Pulling") == "Pulling"


@pytest.mark.parametrize(
    ("attempt", "wait"), [(1, 10.0), (2, 20.0), (3, 40.0), (6, 320.0), (7, 600.0), (30, 600.0)]
)
def test_backoff_doubles_up_to_its_cap(attempt: int, wait: float) -> None:
    assert backoff_seconds(10.0, attempt) == wait


# --- conditions ------------------------------------------------------------------------------


def test_conditions_while_pulling_after_success_and_once_stalled() -> None:
    pulling = pull_conditions("Pulling", IN_FLIGHT_REASON, "pulling m (attempt 1)", 3, None, T0)
    assert [(c.type, c.status) for c in pulling] == [
        ("Ready", "False"),
        ("Reconciling", "True"),
        ("Stalled", "False"),
    ]
    assert all(c.observed_generation == 3 for c in pulling)

    later = T0 + timedelta(seconds=30)
    done = pull_conditions("Succeeded", "Pulled", "pulled m", 3, pulling, later)
    assert [(c.type, c.status) for c in done] == [
        ("Ready", "True"),
        ("Reconciling", "False"),
        ("Stalled", "False"),
    ]
    stalled_since = find(done, "Stalled")
    assert stalled_since is not None and stalled_since.last_transition_time == T0  # unchanged status

    failed = pull_conditions("Failed", "PullFailed", "gave up: 404", 3, pulling, later, stalled=True)
    stalled = find(failed, "Stalled")
    reconciling = find(failed, "Reconciling")
    assert stalled is not None and stalled.status == "True" and stalled.message == "gave up: 404"
    assert stalled.last_transition_time == later
    assert reconciling is not None and reconciling.status == "False"


# --- progress --------------------------------------------------------------------------------


def line(digest: str | None, completed: int | None, total: int | None, done: bool = False) -> PullLine:
    return PullLine(status="success" if done else "pulling", digest=digest, completed=completed, total=total)


def test_progress_sums_layers_and_replicas_with_a_rate_over_the_window() -> None:
    tracker = PullTracker()
    tracker.replica("pod-a").record(line("sha256:aa", 100, 1000))
    tracker.replica("pod-a").record(line("sha256:bb", 0, 1000))
    tracker.replica("pod-b").record(line("sha256:aa", 300, 1000))
    tracker.sample(0.0)
    tracker.replica("pod-a").record(line("sha256:aa", 600, 1000))
    tracker.sample(2.0)

    progress = tracker.progress()
    assert progress.completed_bytes == 900 and progress.total_bytes == 3000
    assert progress.percent == 30.0
    assert progress.bytes_per_second == 250  # 500 bytes in 2 s
    assert progress.eta_seconds == 8
    assert progress.current_layer == "sha256:aa"
    assert progress.summary == "30% 900B/2.9KiB 250B/s"


def test_a_finished_replica_counts_every_byte() -> None:
    tracker = PullTracker()
    replica = tracker.replica("pod-a")
    replica.record(line("sha256:aa", 10, 1000))
    replica.record(line(None, None, None, done=True))
    assert replica.phase == "Succeeded" and replica.percent == 100.0
    assert [(r.pod, r.phase, r.percent) for r in tracker.replica_states()] == [("pod-a", "Succeeded", 100.0)]


def test_a_line_cannot_report_more_than_its_total() -> None:
    tracker = PullTracker()
    tracker.replica("pod-a").record(line("sha256:aa", 1500, 1000))
    assert tracker.progress().completed_bytes == 1000


def test_before_any_byte_progress_says_starting() -> None:
    progress = PullTracker().progress()
    assert progress.completed_bytes == 0 and progress.total_bytes is None and progress.summary == "starting"

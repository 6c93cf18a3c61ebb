"""Which cached models make room for one that does not fit: least recently used first, only as
many as needed, and none when even all of them would not be enough."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from llmop.reconcile.cache_eviction import Evictable, no_room, plan_eviction

T0 = datetime(2026, 12, 1, tzinfo=UTC)


def model(name: str, size: int, days_ago: int | None) -> Evictable:
    return Evictable(name, f"url/{name}", size, None if days_ago is None else T0 - timedelta(days=days_ago))


def test_the_least_recently_used_go_first_and_only_as_many_as_needed() -> None:
    candidates = [model("new", 50, 1), model("old", 30, 9), model("older", 20, 20)]
    plan = plan_eviction(candidates, needed=60, free=15)
    assert [c.name for c in plan or []] == ["older", "old"]
    assert plan_eviction(candidates, needed=10, free=15) == []


def test_nothing_is_evicted_when_everything_would_not_be_enough() -> None:
    assert plan_eviction([model("a", 10, 3), model("b", 10, 2)], needed=100, free=5) is None
    assert plan_eviction([], needed=1, free=0) is None


def test_a_model_never_used_since_an_unknown_time_goes_before_dated_ones() -> None:
    plan = plan_eviction([model("dated", 10, 400), model("undated", 10, None)], needed=10, free=0)
    assert [c.name for c in plan or []] == ["undated"]


def test_the_agent_refusal_for_room_is_read_with_both_figures() -> None:
    error = (
        "the llmop agent at http://10.0.0.5:8090 failed to pull 'hf://org/big': hf://org/big needs 2000 "
        "bytes (2.0 KiB) but the model volume has only 1500 bytes (1.5 KiB) free: give the volume more room"
    )
    assert no_room(error) == (2000, 1500)
    assert no_room("HTTP 404 from the source") is None

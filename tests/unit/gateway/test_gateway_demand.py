"""The demand the gateway reports for autoscaled backends: what it counts, when it writes it, and
how it routes around draining pods and wakes a backend at zero."""
# ruff: noqa: F811 (the fixtures of test_gateway_server, imported, are the tests' arguments)

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web
from test_gateway_server import CHAT, backend_of, gateway_for, pods  # noqa: F401

from llmop.gateway.demand import (
    HEARTBEAT_SECONDS,
    LONGEST_RETRY_SECONDS,
    MIN_INTERVAL_SECONDS,
    Counts,
    DemandBook,
    DemandWriter,
    gateway_id,
)
from llmop.gateway.table import build_table
from llmop.k8s.client import KubeUnavailable
from support.gateway_backends import backend, pod

KEY = ("team-a", "chat")
AUTOSCALING = {"minReplicas": 0, "maxReplicas": 2, "targetInFlight": 1}
AT = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def autoscaled(body: dict[str, Any]) -> dict[str, Any]:
    body["spec"]["autoscaling"] = dict(AUTOSCALING)
    return body


def book_with(in_flight: Counter[str], clock: Clock) -> DemandBook:
    book = DemandBook(in_flight, clock)
    book.autoscaled = frozenset({KEY})
    return book


def write_due(book: DemandBook) -> list[Counts]:
    """What a writer would write now, taken as written."""
    due = book.due()
    for key, counts in due:
        book.patch(key, "gw-1", counts, AT)
        book.written(key, counts)
    return [counts for _, counts in due]


# --- what is counted ---


def test_requests_are_counted_per_pod_of_autoscaled_backends_only() -> None:
    in_flight = Counter({"team-a/chat/p0": 2, "team-a/chat/p1": 1, "team-a/plain/p9": 5})
    book = book_with(in_flight, Clock())
    book.waiting[KEY] = 1
    assert book.counts() == {KEY: Counts(3, 1, (("p0", 2), ("p1", 1)))}


def test_a_table_marks_only_backends_with_spec_autoscaling() -> None:
    table = build_table(
        [
            autoscaled(backend(pods=[pod("p0", "10.0.0.1", ["m"])], models=[{"name": "m"}])),
            backend(name="plain", pods=[pod("p9", "10.0.0.9", ["m"])], models=[{"name": "m"}]),
        ]
    )
    assert table.autoscaled == {KEY}
    assert {(u.backend, u.autoscaled) for r in table.lookup("m") for u in r.serving} == {
        ("chat", True),
        ("plain", False),
    }


async def test_a_relayed_request_is_in_flight_on_its_pod_until_its_stream_ends(gateway_for, pods) -> None:
    release = asyncio.Event()

    async def stream(request: web.Request) -> web.StreamResponse:
        out = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await out.prepare(request)
        await out.write(b'data: {"n": 1}\n\n')
        await release.wait()
        await out.write(b"data: [DONE]\n\n")
        return out

    p0 = await pods("p0", stream)
    gateway, client = await gateway_for(build_table([autoscaled(backend_of(p0))]))
    response = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    await response.content.readuntil(b"\n\n")
    assert gateway.demand.counts() == {("team-a", "be-p0"): Counts(1, 0, (("p0", 1),))}
    assert gateway.demand.changed.is_set()
    release.set()
    await response.content.read()
    assert gateway.demand.counts() == {("team-a", "be-p0"): Counts()}


async def test_a_request_held_for_a_backend_at_zero_waits_and_wakes_the_writer(gateway_for) -> None:
    idle = autoscaled(backend(phase="Idle"))
    gateway, client = await gateway_for(build_table([idle]), hold=30)
    held = asyncio.ensure_future(
        client.post("/v1/chat/completions", json={**CHAT, "model": "org/repo/m.gguf"})
    )
    await gateway.demand.wake.wait()
    assert gateway.demand.counts() == {KEY: Counts(0, 1)}
    held.cancel()
    with pytest.raises(asyncio.CancelledError):
        await held


async def test_past_the_hold_a_backend_at_zero_is_503_with_retry_after_and_waits_no_more(gateway_for) -> None:
    idle = autoscaled(backend(phase="Idle"))
    gateway, client = await gateway_for(build_table([idle]), hold=0.01)
    response = await client.post("/v1/chat/completions", json={**CHAT, "model": "org/repo/m.gguf"})
    assert response.status == 503 and response.headers["Retry-After"] == "5"
    assert "team-a/chat is Idle" in (await response.json())["error"]["message"]
    assert gateway.demand.counts() == {KEY: Counts()}


# --- routing ---


def test_a_draining_pod_gets_no_new_request() -> None:
    leaving = {**pod("p1", "10.0.0.2", ["m"]), "draining": True}
    table = build_table(
        [autoscaled(backend(pods=[pod("p0", "10.0.0.1", ["m"]), leaving], models=[{"name": "m"}]))]
    )
    assert [u.pod for u in table.lookup("m")[0].serving] == ["p0"]


def test_an_autoscaled_backend_whose_last_pod_drains_holds_requests_and_a_plain_one_does_not() -> None:
    leaving = {**pod("p0", "10.0.0.1", ["m"]), "draining": True}
    draining = autoscaled(backend(pods=[leaving], models=[{"name": "m"}]))
    assert build_table([draining]).lookup("m")[0].coming
    plain = backend(pods=[leaving], models=[{"name": "m"}])
    assert not build_table([plain]).lookup("m")[0].coming
    failed = autoscaled(backend(phase="Failed", models=[{"name": "m"}]))
    assert not build_table([failed]).lookup("m")[0].coming


def test_an_idle_backend_is_known_by_its_spec_models_and_coming() -> None:
    (route,) = build_table([autoscaled(backend(phase="Idle"))]).lookup("org/repo/m.gguf")
    assert route.coming and route.autoscaled and route.serving == ()


# --- when it is written ---


def test_the_first_request_is_written_at_once_then_changes_at_most_once_a_second() -> None:
    in_flight, clock = Counter[str](), Clock()
    book = book_with(in_flight, clock)
    assert write_due(book) == []  # nothing asked yet: nothing to say
    in_flight["team-a/chat/p0"] = 1
    assert write_due(book) == [Counts(1, 0, (("p0", 1),))]
    in_flight["team-a/chat/p0"] = 2
    clock.now += 0.4
    assert write_due(book) == []
    assert book.next_due() == (pytest.approx(MIN_INTERVAL_SECONDS - 0.4), False)
    clock.now += 0.6
    assert write_due(book) == [Counts(2, 0, (("p0", 2),))]


def test_a_held_request_is_written_at_once_even_within_the_second() -> None:
    in_flight, clock = Counter({"team-a/chat/p0": 1}), Clock()
    book = book_with(in_flight, clock)
    write_due(book)
    clock.now += 0.1
    book.waiting[KEY] = 1
    assert write_due(book) == [Counts(1, 1, (("p0", 1),))]


def test_non_zero_counts_are_written_again_every_heartbeat_and_zero_once() -> None:
    in_flight, clock = Counter({"team-a/chat/p0": 1}), Clock()
    book = book_with(in_flight, clock)
    write_due(book)
    assert book.next_due() == (HEARTBEAT_SECONDS, True)
    clock.now += HEARTBEAT_SECONDS - 0.1
    assert write_due(book) == []
    clock.now += 0.1
    assert write_due(book) == [Counts(1, 0, (("p0", 1),))]
    del in_flight["team-a/chat/p0"]
    clock.now += MIN_INTERVAL_SECONDS
    assert write_due(book) == [Counts()]
    clock.now += 10 * HEARTBEAT_SECONDS
    assert write_due(book) == [] and book.next_due() == (None, True)


def test_a_pod_that_has_no_request_left_is_removed_from_the_entry() -> None:
    in_flight = Counter({"team-a/chat/p0": 1, "team-a/chat/p1": 1})
    book = book_with(in_flight, Clock())
    first = book.patch(KEY, "gw-1", book.counts()[KEY], AT)
    assert first == {
        "demand": {
            "gw-1": {
                "inFlight": 2,
                "waiting": 0,
                "pods": {"p0": 1, "p1": 1},
                "time": "2026-12-01T12:00:00.000Z",
            }
        }
    }
    book.written(KEY, book.counts()[KEY])
    del in_flight["team-a/chat/p1"]
    assert book.patch(KEY, "gw-1", book.counts()[KEY], AT)["demand"]["gw-1"]["pods"] == {"p0": 1, "p1": None}


def test_a_failed_write_is_tried_again_after_a_pause_that_grows() -> None:
    in_flight, clock = Counter[str](), Clock()
    book = book_with(in_flight, clock)
    book.waiting[KEY] = 1
    assert [counts for _, counts in book.due()] == [Counts(0, 1)]
    first = book.failed(KEY)
    assert book.due() == []  # not even the wake spins against a failing API server
    clock.now += first
    assert [counts for _, counts in book.due()] == [Counts(0, 1)]
    assert book.failed(KEY) > first


def draining_table(*draining: str) -> Any:
    pods = [
        {**pod(name, f"10.0.0.{i}", ["m"]), "draining": name in draining}
        for i, name in enumerate(("p0", "p1"))
    ]
    return build_table([autoscaled(backend(pods=pods, models=[{"name": "m"}]))])


def test_a_pod_marked_draining_has_the_entry_written_at_once_even_unchanged() -> None:
    in_flight, clock = Counter({"team-a/chat/p0": 1, "team-a/chat/p1": 1}), Clock()
    book = book_with(in_flight, clock)
    book.follow(draining_table())
    write_due(book)
    clock.now += 0.1
    book.follow(draining_table("p1"))
    assert book.wake.is_set()
    assert write_due(book) == [Counts(2, 0, (("p0", 1), ("p1", 1)))]
    book.follow(draining_table("p1"))  # the same mark again: nothing new to say
    assert write_due(book) == []


def test_a_mark_that_comes_while_a_write_travels_asks_for_another_and_a_failure_keeps_it() -> None:
    in_flight, clock = Counter({"team-a/chat/p0": 1}), Clock()
    book = book_with(in_flight, clock)
    book.follow(draining_table())
    write_due(book)
    book.follow(draining_table("p1"))
    ((key, counts),) = book.due()
    book.patch(key, "gw-1", counts, AT)  # built after the mark...
    book.failed(KEY)  # ...and refused: the mark is still to be answered
    clock.now += LONGEST_RETRY_SECONDS
    (again,) = book.due()
    book.patch(KEY, "gw-1", again[1], AT)
    book.follow(draining_table("p0", "p1"))  # a mark while it travels
    book.written(KEY, again[1])
    assert write_due(book) == [Counts(1, 0, (("p0", 1),))]


def test_a_backend_no_longer_autoscaled_is_forgotten() -> None:
    in_flight = Counter({"team-a/chat/p0": 1})
    book = book_with(in_flight, Clock())
    write_due(book)
    book.autoscaled = frozenset()
    assert write_due(book) == [] and book.reported == {}


# --- the writer ---


class RecordingKube:
    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.patches: list[tuple[str, str, dict[str, Any]]] = []

    async def patch_status(self, resource: Any, name: str, namespace: str, status: dict[str, Any]) -> Any:
        if self.failures:
            self.failures -= 1
            raise KubeUnavailable("etcdserver: request timed out")
        self.patches.append((namespace, name, status))
        return {}


async def test_the_writer_patches_only_its_own_entry_and_logs_a_failure(caplog) -> None:
    kube = RecordingKube(failures=1)
    clock = Clock()
    book = book_with(Counter[str](), clock)
    writer = DemandWriter(kube, book, "gw-1", now=lambda: AT)  # type: ignore[arg-type]
    book.waiting[KEY] = 1
    with caplog.at_level(logging.WARNING):
        await writer.write_due()
    assert kube.patches == [] and "writing the demand of team-a/chat failed" in caplog.text
    clock.now += 1
    await writer.write_due()
    entry = {"inFlight": 0, "waiting": 1, "pods": {}, "time": "2026-12-01T12:00:00.000Z"}
    assert kube.patches == [("team-a", "chat", {"demand": {"gw-1": entry}})]


def test_the_gateway_writes_under_its_pod_name_else_its_host_name() -> None:
    assert gateway_id({"POD_NAME": "llmop-gateway-7c9f-abcde"}) == "llmop-gateway-7c9f-abcde"
    assert gateway_id({}) != ""

"""Lease leader election against an in-memory API that behaves like the real one on writes:
a PUT with a stale resourceVersion is a 409, a second create is a 409."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest

from llmop.k8s.client import LEASES, KubeAPIError, Resource
from llmop.leader import LeaseElector


class FakeLeases:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.version = 0
        self.fail = False

    def _check(self) -> None:
        if self.fail:
            raise KubeAPIError(503, "the API server is away")

    async def get(self, resource: Resource, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        assert resource == LEASES
        self._check()
        found = self.objects.get((namespace or "", name))
        return copy.deepcopy(found) if found else None

    async def create(self, resource: Resource, body: dict[str, Any]) -> dict[str, Any]:
        self._check()
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        if key in self.objects:
            raise KubeAPIError(409, "already exists", "AlreadyExists")
        return self._store(key, body)

    async def replace(self, resource: Resource, body: dict[str, Any]) -> dict[str, Any]:
        self._check()
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        if body["metadata"].get("resourceVersion") != self.objects[key]["metadata"]["resourceVersion"]:
            raise KubeAPIError(409, "the object has been modified", "Conflict")
        return self._store(key, body)

    def _store(self, key: tuple[str, str], body: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        stored = copy.deepcopy(body)
        stored["metadata"]["resourceVersion"] = str(self.version)
        stored["spec"] = {k: v for k, v in stored["spec"].items() if v is not None}
        self.objects[key] = stored
        return copy.deepcopy(stored)

    def spec(self) -> dict[str, Any]:
        return dict(self.objects[("ns", "llmop")]["spec"])


def elector(api: FakeLeases, identity: str, duration: float = 1.0) -> LeaseElector:
    return LeaseElector(api, "llmop", "ns", identity, duration=duration, retry_period=0.05)  # type: ignore[arg-type]


async def test_the_first_candidate_creates_the_lease_and_the_second_waits() -> None:
    api = FakeLeases()
    first, second = elector(api, "a"), elector(api, "b")
    assert await first.try_acquire_or_renew()
    assert not await second.try_acquire_or_renew()
    assert api.spec()["holderIdentity"] == "a" and api.spec()["leaseTransitions"] == 0
    assert await first.try_acquire_or_renew()  # renewing keeps it
    assert not await second.try_acquire_or_renew()


async def test_a_standby_takes_over_only_after_the_lease_went_unrenewed_for_its_duration() -> None:
    api = FakeLeases()
    holder, standby = elector(api, "a", duration=0.6), elector(api, "b", duration=0.6)
    assert await holder.try_acquire_or_renew()
    assert not await standby.try_acquire_or_renew()
    for _ in range(4):  # the holder keeps renewing: the standby never takes over
        await asyncio.sleep(0.2)
        assert await holder.try_acquire_or_renew()
        assert not await standby.try_acquire_or_renew()
    # The holder dies: the standby waits one full duration from when it saw the last renewal.
    loop = asyncio.get_running_loop()
    started = loop.time()
    stop = asyncio.Event()
    assert await standby.acquire(stop)
    waited = loop.time() - started
    assert 0.5 <= waited <= 1.6, waited
    spec = api.spec()
    assert spec["holderIdentity"] == "b" and spec["leaseTransitions"] == 1


async def test_two_standbys_racing_for_an_expired_lease_cannot_both_win() -> None:
    api = FakeLeases()
    assert await elector(api, "dead").try_acquire_or_renew()
    b, c = elector(api, "b", duration=0.1), elector(api, "c", duration=0.1)
    await b.try_acquire_or_renew(), await c.try_acquire_or_renew()  # both see the record
    await asyncio.sleep(1.05)  # the dead holder's leaseDurationSeconds: 1, the least there is
    results = await asyncio.gather(b.try_acquire_or_renew(), c.try_acquire_or_renew())
    assert sorted(results) == [False, True]


async def test_a_released_lease_is_taken_at_once() -> None:
    api = FakeLeases()
    holder, standby = elector(api, "a", duration=30), elector(api, "b", duration=30)
    assert await holder.try_acquire_or_renew()
    assert not await standby.try_acquire_or_renew()
    await holder.release()
    assert "holderIdentity" not in api.spec()
    assert await standby.try_acquire_or_renew()


async def test_hold_returns_when_renewals_fail_past_the_deadline() -> None:
    api = FakeLeases()
    holder = LeaseElector(api, "llmop", "ns", "a", duration=0.6, renew_deadline=0.3, retry_period=0.05)  # type: ignore[arg-type]
    assert await holder.acquire(asyncio.Event())
    holding = asyncio.create_task(holder.hold())
    await asyncio.sleep(0.2)
    assert not holding.done()
    api.fail = True
    await asyncio.wait_for(holding, 2)
    assert not holder.is_leader


async def test_hold_returns_when_another_holder_wrote_the_lease() -> None:
    api = FakeLeases()
    holder = elector(api, "a", duration=30)
    assert await holder.acquire(asyncio.Event())
    holding = asyncio.create_task(holder.hold())
    await asyncio.sleep(0.1)
    api.objects[("ns", "llmop")]["spec"]["holderIdentity"] = "intruder"
    api.objects[("ns", "llmop")]["spec"]["renewTime"] = "2030-01-01T00:00:00.000000Z"
    await asyncio.wait_for(holding, 2)


async def test_acquire_gives_up_when_asked_to_stop() -> None:
    api = FakeLeases()
    assert await elector(api, "a", duration=30).try_acquire_or_renew()
    stop = asyncio.Event()
    waiting = asyncio.create_task(elector(api, "b", duration=30).acquire(stop))
    await asyncio.sleep(0.1)
    stop.set()
    assert await asyncio.wait_for(waiting, 1) is False


@pytest.mark.parametrize("status", [500, 403])
async def test_other_api_errors_do_not_count_as_leadership(status: int) -> None:
    api = FakeLeases()

    async def refuse(*_: Any, **__: Any) -> None:
        raise KubeAPIError(status, "no")

    api.get = refuse  # type: ignore[method-assign]
    stop = asyncio.Event()
    candidate = elector(api, "a")
    waiting = asyncio.create_task(candidate.acquire(stop))
    await asyncio.sleep(0.2)
    assert not waiting.done() and not candidate.is_leader
    stop.set()
    assert await waiting is False

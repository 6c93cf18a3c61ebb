"""spec.autoscaling's decision: the replicas a user sees in status, and the words that say why."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from llmop.models.backend import AutoscalingSpec, AutoscalingStatus, GatewayDemand, readable_demand
from llmop.reconcile.autoscale import AutoscaleDecision, AutoscaleFacts, PodLoad, decide, gone_gateways

T0 = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)


def entry(in_flight: int = 0, waiting: int = 0, age: float = 1.0, **pods: int) -> GatewayDemand:
    return GatewayDemand(
        in_flight=in_flight, waiting=waiting, pods=pods or None, time=T0 - timedelta(seconds=age)
    )


def spec(**fields: Any) -> AutoscalingSpec:
    return AutoscalingSpec.model_validate({"maxReplicas": 4, **fields})


def held(replicas: int, **fields: Any) -> AutoscalingStatus:
    return AutoscalingStatus(replicas=replicas, **fields)


def pods(*names: str, ready: bool = True) -> list[PodLoad]:
    return [PodLoad(name, ready=ready) for name in names]


@dataclass
class Case:
    facts: AutoscaleFacts
    replicas: int
    message: str
    draining: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)


CASES = {
    "wake-from-zero": Case(
        AutoscaleFacts(spec(minReplicas=0), T0, {"gw-a": entry(waiting=1)}, held(0)),
        1,
        "0 requests in flight and 1 waiting, 4 per replica: 1 replica",
    ),
    "up-at-once": Case(
        AutoscaleFacts(spec(), T0, {"gw-a": entry(in_flight=7), "gw-b": entry(in_flight=2)}, held(1)),
        3,
        "9 requests in flight, 4 per replica: 3 replicas",
    ),
    "clamped-to-max": Case(
        AutoscaleFacts(spec(), T0, {"gw-a": entry(in_flight=40)}, held(1)),
        4,
        "40 requests in flight, 4 per replica: 4 replicas (maxReplicas)",
    ),
    "held-at-min": Case(
        AutoscaleFacts(spec(minReplicas=2), T0, {}, held(2)),
        2,
        "0 requests in flight, 4 per replica: 2 replicas (minReplicas)",
    ),
    "down-held-until-the-delay": Case(
        AutoscaleFacts(spec(), T0, {"gw-a": entry(in_flight=1)}, held(3), pods=pods("p1", "p2", "p3")),
        3,
        "1 request in flight, 4 per replica: 1 replica; keeping 3 replicas for scaleDownDelay 5m",
        extra={"scale_down_since": T0, "scale_down_to": 1},
    ),
    "one-replica-never-to-zero-with-min-1": Case(
        AutoscaleFacts(
            spec(scaleDownDelay="1m"),
            T0,
            {},
            held(1, scale_down_since=T0 - timedelta(hours=1)),
            pods=pods("p1"),
        ),
        1,
        "0 requests in flight, 4 per replica: 1 replica (minReplicas)",
    ),
    "stale-gateway-entries-are-ignored": Case(
        AutoscaleFacts(
            spec(), T0, {"dead": entry(in_flight=100, age=61), "ahead": entry(in_flight=50, age=-30)}, held(1)
        ),
        1,
        "0 requests in flight, 4 per replica: 1 replica (minReplicas)",
    ),
    "a-new-backend-starts-with-one-replica": Case(
        AutoscaleFacts(spec(minReplicas=0), T0, {}, None),
        1,
        "0 requests in flight, 4 per replica: 0 replicas; keeping 1 replica for scaleDownDelay 5m",
    ),
    "a-backend-that-had-replicas-keeps-them-until-the-delay": Case(
        AutoscaleFacts(spec(), T0, {}, None, start=3, pods=pods("p1", "p2", "p3")),
        3,
        "0 requests in flight, 4 per replica: 1 replica (minReplicas); keeping 3 replicas for scaleDownDelay 5m",
        extra={"scale_down_since": T0},
    ),
    "a-lowered-max-drains-at-once": Case(
        AutoscaleFacts(
            spec(maxReplicas=2), T0, {"gw-a": entry(in_flight=20)}, held(4), pods=pods("a", "b", "c", "d")
        ),
        4,
        "draining a (0 in flight), b (0 in flight): 4 replicas to 2",
        draining=("a", "b"),
    ),
}


@pytest.mark.parametrize("name", list(CASES), ids=str)
def test_the_decision_and_its_message(name: str) -> None:
    case = CASES[name]
    decision = decide(case.facts)
    assert decision.replicas == case.replicas
    assert decision.status.replicas == case.replicas
    assert decision.status.message == case.message
    assert decision.draining == case.draining
    for key, value in case.extra.items():
        assert getattr(decision.status, key) == value, key


def scale_down_to_zero() -> list[AutoscaleDecision]:
    """A backend at one replica whose last request ended: the rounds the observer runs."""
    rules = spec(minReplicas=0, scaleDownDelay="5m", drainTimeout="2m")
    last = {"gw-a": entry(in_flight=0, age=1)}
    holding = decide(AutoscaleFacts(rules, T0, last, held(1), pods=pods("p1")))
    later = T0 + timedelta(minutes=5)
    marking = decide(AutoscaleFacts(rules, later, {}, holding.status, pods=pods("p1")))
    leaving = [PodLoad("p1", ready=True, draining=True)]
    after = later + timedelta(seconds=1)
    done = decide(AutoscaleFacts(rules, after, {}, marking.status, pods=leaving))
    return [holding, marking, done]


def test_scales_to_zero_after_the_delay_once_the_pod_has_drained() -> None:
    holding, marking, done = scale_down_to_zero()
    assert holding.replicas == 1 and holding.recheck_seconds is not None
    assert holding.recheck_seconds <= 300
    # The pod is marked first, so that the gateway stops sending to it; lowered a round later.
    assert (marking.replicas, marking.draining) == (1, ("p1",))
    assert marking.status.message == "draining p1 (0 in flight): 1 replica to 0"
    assert (done.replicas, done.draining) == (0, ("p1",))
    assert done.status.message == "no request for 5m: scaled to zero"
    # The pod stays marked until it is gone; then nothing is left of the drain.
    leaving = [PodLoad("p1", ready=True, draining=True)]
    gone = decide(
        AutoscaleFacts(spec(minReplicas=0), T0 + timedelta(minutes=6), {}, done.status, pods=leaving)
    )
    assert (gone.replicas, gone.draining) == (0, ("p1",))
    idle = decide(AutoscaleFacts(spec(minReplicas=0), T0 + timedelta(minutes=6), {}, gone.status))
    assert (idle.replicas, idle.draining, idle.status.drain_started) == (0, (), None)
    assert idle.status.message == "no request for 5m: scaled to zero"


def test_a_pod_with_a_stream_in_flight_is_kept_until_it_ends_or_drain_timeout() -> None:
    rules = spec(scaleDownDelay="0s", drainTimeout="2m")
    streams = {"gw-a": entry(in_flight=2, age=-1, p1=1, p2=1)}
    there = pods("p1", "p2")
    marking = decide(AutoscaleFacts(rules, T0, streams, held(2), pods=there))
    assert marking.draining == ("p1",) and marking.replicas == 2
    leaving = [PodLoad("p1", ready=True, draining=True), PodLoad("p2", ready=True)]
    later = T0 + timedelta(seconds=30)
    streams = {"gw-a": entry(in_flight=2, age=-30, p1=1, p2=1)}
    busy = decide(AutoscaleFacts(rules, later, streams, marking.status, pods=leaving))
    assert busy.replicas == 2 and busy.status.message == "draining p1 (1 in flight): 2 replicas to 1"
    assert busy.recheck_seconds is not None and busy.recheck_seconds <= 90
    ended = {"gw-a": entry(in_flight=1, age=-30, p2=1)}
    assert decide(AutoscaleFacts(rules, later, ended, marking.status, pods=leaving)).replicas == 1
    timed_out = T0 + timedelta(minutes=2)
    streams = {"gw-a": entry(in_flight=2, age=-120, p1=1, p2=1)}
    assert decide(AutoscaleFacts(rules, timed_out, streams, busy.status, pods=leaving)).replicas == 1


def test_replicas_go_down_only_once_the_pods_that_stay_are_ready_to_kubernetes() -> None:
    """A ReplicaSet removes a pod that is not Ready before any other: lowering replicas while the
    pod that stays (and carries a stream: llmop saw its runtime answer) is not Ready yet would
    remove that pod, not the drained one."""
    rules = spec(scaleDownDelay="0s", drainTimeout="2m")
    quiet = {"gw-a": entry(in_flight=1, age=-1, p2=1)}
    there = [PodLoad("p1", ready=True), PodLoad("p2", ready=True, kube_ready=False)]
    marking = decide(AutoscaleFacts(rules, T0, quiet, held(2), pods=there))
    assert marking.draining == ("p1",) and marking.replicas == 2
    leaving = [PodLoad("p1", ready=True, draining=True), PodLoad("p2", ready=True, kube_ready=False)]
    later = T0 + timedelta(seconds=5)
    quiet = {"gw-a": entry(in_flight=1, age=-5, p2=1)}
    waiting = decide(AutoscaleFacts(rules, later, quiet, marking.status, pods=leaving))
    assert waiting.replicas == 2, "lowered while the pod that stays was not Ready"
    assert waiting.status.message == "draining p1 (0 in flight), once p2 staying is Ready: 2 replicas to 1"
    assert waiting.recheck_seconds is not None and waiting.recheck_seconds <= 2
    ready = [PodLoad("p1", ready=True, draining=True), PodLoad("p2", ready=True)]
    assert decide(AutoscaleFacts(rules, later, quiet, marking.status, pods=ready)).replicas == 1
    # A pod that never gets Ready holds the GPUs no longer than drainTimeout.
    timed_out = T0 + timedelta(minutes=2)
    quiet = {"gw-a": entry(in_flight=1, age=-120, p2=1)}
    assert decide(AutoscaleFacts(rules, timed_out, quiet, waiting.status, pods=leaving)).replicas == 1


def test_new_demand_during_a_drain_cancels_it() -> None:
    _, marking, _ = scale_down_to_zero()
    woken = T0 + timedelta(minutes=5, seconds=2)
    demand = {"gw-a": GatewayDemand(waiting=1, time=woken)}
    leaving = [PodLoad("p1", ready=True, draining=True)]
    decision = decide(AutoscaleFacts(spec(minReplicas=0), woken, demand, marking.status, pods=leaving))
    assert (decision.replicas, decision.draining) == (1, ())
    assert decision.status.scale_down_since is None and decision.status.drain_started is None


def test_the_pods_not_ready_and_least_busy_leave_first() -> None:
    rules = spec(scaleDownDelay="0s")
    demand = {"gw-a": entry(in_flight=3, p1=2, p2=0, p3=1), "gw-b": entry(in_flight=1, p2=1)}
    there = [PodLoad("p1", ready=True), PodLoad("p2", ready=True), PodLoad("p3", ready=True), PodLoad("p4")]
    decision = decide(AutoscaleFacts(rules, T0, demand, held(4), pods=there))
    assert decision.replicas == 4  # 4 in flight: 1 replica, after the drain
    assert decision.draining == ("p4", "p2", "p3")


def test_the_highest_demand_within_the_delay_is_where_replicas_go() -> None:
    rules = spec(scaleDownDelay="5m")
    there = pods("a", "b", "c", "d")
    first = decide(AutoscaleFacts(rules, T0, {"g": entry(in_flight=1)}, held(4), pods=there))
    peak_at = T0 + timedelta(minutes=2)
    peak = decide(
        AutoscaleFacts(rules, peak_at, {"g": entry(in_flight=12, age=-120)}, first.status, pods=there)
    )
    assert peak.status.scale_down_to == 3
    end = T0 + timedelta(minutes=5)
    after = decide(AutoscaleFacts(rules, end, {"g": entry(in_flight=1, age=-300)}, peak.status, pods=there))
    assert after.draining == ("a",) and after.status.scale_down_to == 3


def test_a_gateway_that_wrote_before_the_drain_and_relays_something_is_waited_for() -> None:
    rules = spec(scaleDownDelay="0s", drainTimeout="2m")
    started = held(2, drain_started=T0 - timedelta(seconds=5), scale_down_since=T0, scale_down_to=1)
    there = [PodLoad("a", ready=True, draining=True), PodLoad("b", ready=True)]
    old = {"gw": entry(in_flight=1, age=10, b=1)}
    assert decide(AutoscaleFacts(rules, T0, old, started, pods=there)).replicas == 2
    new = {"gw": entry(in_flight=1, age=1, b=1)}
    assert decide(AutoscaleFacts(rules, T0, new, started, pods=there)).replicas == 1


def test_hostile_demand_is_bounded_and_never_raises() -> None:
    raw: dict[str, Any] = {f"gw-{i}": {"inFlight": 1, "time": T0.isoformat()} for i in range(5000)}
    raw["huge"] = {"inFlight": 10**30, "time": T0.isoformat()}
    raw["negative"] = {"inFlight": -5, "time": T0.isoformat()}
    raw["bad-time"] = {"inFlight": 3, "time": "yesterday"}
    raw["not-an-object"] = "lots"
    raw["bad-pods"] = {"inFlight": 1, "pods": {"p": "x"}, "time": T0.isoformat()}
    demand = readable_demand(raw)
    assert len(demand) == 1000 and not {"huge", "negative", "bad-time", "not-an-object", "bad-pods"} & set(
        demand
    )
    decision = decide(AutoscaleFacts(spec(maxReplicas=10**6, targetInFlight=1), T0, demand, held(1)))
    assert decision.replicas == 1000
    assert readable_demand(None) == {} and readable_demand(["x"]) == {}


def test_times_written_without_an_offset_are_read_as_utc_and_never_raise() -> None:
    """The API server's date-time format accepts a time without an offset; compared with llmop's
    own times it would raise in every round."""
    naive = T0.replace(tzinfo=None).isoformat()
    demand = readable_demand({"gw": {"inFlight": 5, "time": naive}})
    previous = AutoscalingStatus.model_validate(
        {"replicas": 3, "scaleDownSince": naive, "drainStarted": naive}
    )
    decision = decide(AutoscaleFacts(spec(), T0, demand, previous))
    assert decision.replicas == 3 and decision.status.in_flight == 5
    assert gone_gateways({"gw": {"time": naive}}, T0 + timedelta(hours=2)) == ["gw"]


def test_gone_gateways_are_the_old_and_the_unreadable_and_at_most_a_thousand() -> None:
    raw: dict[str, Any] = {f"gw-{i}": {"time": (T0 - timedelta(hours=2)).isoformat()} for i in range(3000)}
    raw["live"] = {"inFlight": 0, "time": (T0 - timedelta(minutes=59)).isoformat()}
    raw["undated"] = {"inFlight": 1}
    gone = gone_gateways(raw, T0)
    assert len(gone) == 1000 and "live" not in gone
    assert gone_gateways({"live": raw["live"], "undated": raw["undated"], "bad": 7}, T0) == ["undated", "bad"]
    assert gone_gateways("not a map", T0) == []


def test_whatever_the_counts_and_the_past_the_decision_stays_within_its_bounds() -> None:
    """Seeded random rounds of one backend: the replicas never leave [0, max(held, maxReplicas)],
    never go below minReplicas (within maxReplicas), only existing pods drain, and a decision
    below the replicas held comes only once scaleDownDelay has passed or a drain ends."""
    rng = random.Random(17)
    for _ in range(300):
        rules = spec(
            minReplicas=rng.randint(0, 3),
            maxReplicas=rng.randint(3, 6),
            targetInFlight=rng.randint(1, 5),
            scaleDownDelay=rng.choice(["0s", "30s", "5m"]),
            drainTimeout=rng.choice(["0s", "10s", "2m"]),
        )
        previous: AutoscalingStatus | None = None
        names = [f"p{i}" for i in range(rng.randint(0, 6))]
        now = T0
        for _ in range(20):
            now += timedelta(seconds=rng.choice([0, 1, 5, 40, 400]))
            demand = {
                f"gw-{g}": GatewayDemand(
                    in_flight=rng.randint(0, 30),
                    waiting=rng.choice([0, 0, 1, 7]),
                    pods={name: rng.randint(0, 3) for name in names if rng.random() < 0.5},
                    time=now - timedelta(seconds=rng.choice([0, 30, 90, -20])),
                )
                for g in range(rng.randint(0, 3))
            }
            there = [PodLoad(n, ready=rng.random() < 0.7, draining=rng.random() < 0.2) for n in names]
            decision = decide(
                AutoscaleFacts(rules, now, demand, previous, start=rng.choice([None, 2]), pods=there)
            )
            held = previous.replicas if previous else None
            assert 0 <= decision.replicas <= max(held or 0, rules.max_replicas, 2)
            assert (
                decision.replicas >= min(rules.min_replicas, rules.max_replicas)
                or (held or 0) < rules.min_replicas
            )
            assert set(decision.draining) <= set(names)
            assert decision.recheck_seconds is None or decision.recheck_seconds >= 0
            assert decision.status.replicas == decision.replicas and decision.status.message
            previous = decision.status

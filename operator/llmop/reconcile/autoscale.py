"""spec.autoscaling: how many replicas a backend runs, from the gateways' counts; pure, tested alone.

Each gateway writes what it relays to the backend under status.demand (docs/scaling.md). llmop
adds up the fresh entries: replicas = (in flight + waiting) / targetInFlight, rounded up, at least
one while a request waits, within [minReplicas, maxReplicas]. Up at once; down only once the lower
count has held for scaleDownDelay, and then only after the leaving pods drained: they are marked
draining (the gateway sends them nothing new) and go once no gateway has a request in flight on
them, or drainTimeout passed. The decision is what the Deployment runs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from llmop.models.backend import MAX_DEMAND_GATEWAYS, AutoscalingSpec, AutoscalingStatus, GatewayDemand
from llmop.models.duration import format_duration, parse_duration

#: A gateway rewrites its entry at least every 15 s while it counts anything: an older entry is a
#: gateway that died.
FRESH_SECONDS = 60.0
#: An entry dated this far ahead is still read (the gateways' clocks are not the operator's); one
#: dated further is not to be trusted.
CLOCK_SKEW_SECONDS = 10.0
#: An entry not rewritten for this long is a gateway that is gone (each gateway pod writes under
#: its own name, so a rollout of the gateway leaves the old names behind): llmop removes it.
GONE_AFTER_SECONDS = 3600.0
#: While a pod that stays is not Ready yet, look again this often (the kubelet's probes are
#: seconds apart).
UNREADY_RECHECK_SECONDS = 2.0
#: Pods named in the drain message, the rest counted.
_NAMED_PODS = 3


@dataclass(frozen=True)
class PodLoad:
    """A pod of the backend that is not being deleted, as the last observation saw it."""

    name: str
    ready: bool = False
    draining: bool = False
    #: The pod's Ready condition. A ReplicaSet removes pods not Ready first, whatever their
    #: deletion cost: lowering replicas while a pod that stays is not Ready would remove it, even
    #: one llmop already sees serving (its runtime answers before the kubelet's probe says so).
    kube_ready: bool = True


@dataclass(frozen=True)
class AutoscaleFacts:
    spec: AutoscalingSpec
    now: datetime
    demand: dict[str, GatewayDemand]
    #: What llmop decided last (the stored status.autoscaling); None before its first decision.
    previous: AutoscalingStatus | None
    #: The replicas in place before llmop decided anything (a backend that had spec.replicas).
    start: int | None = None
    pods: Sequence[PodLoad] = ()


@dataclass(frozen=True)
class AutoscaleDecision:
    #: The replicas the Deployment runs now (status.replicas.desired).
    replicas: int
    #: Pods leaving: status.pods[].draining, and the pod-deletion-cost annotation.
    draining: tuple[str, ...]
    status: AutoscalingStatus
    #: Seconds until the decision may change without any new event (a delay or an entry that
    #: expires); None when only an event can change it.
    recheck_seconds: float | None = None


@dataclass(frozen=True)
class Demand:
    """The fresh entries of status.demand, added up."""

    in_flight: int = 0
    waiting: int = 0
    entries: dict[str, GatewayDemand] = field(default_factory=dict)
    #: The newest time of an entry that counts a request.
    last_request: datetime | None = None
    #: When the first of the fresh entries stops being fresh.
    expires: datetime | None = None


def fresh_demand(demand: dict[str, GatewayDemand], now: datetime) -> Demand:
    """The entries written in the last FRESH_SECONDS (not dated ahead beyond CLOCK_SKEW_SECONDS)."""
    oldest = now - timedelta(seconds=FRESH_SECONDS)
    newest = now + timedelta(seconds=CLOCK_SKEW_SECONDS)
    fresh = {
        gateway: entry
        for gateway, entry in demand.items()
        if entry.time is not None and oldest <= entry.time <= newest
    }
    busy = [entry.time for entry in fresh.values() if entry.time and (entry.in_flight or entry.waiting)]
    times = [entry.time for entry in fresh.values() if entry.time]
    return Demand(
        in_flight=sum(entry.in_flight for entry in fresh.values()),
        waiting=sum(entry.waiting for entry in fresh.values()),
        entries=fresh,
        last_request=max(busy, default=None),
        expires=min(times) + timedelta(seconds=FRESH_SECONDS) if times else None,
    )


def gone_gateways(raw: object, now: datetime) -> list[str]:
    """The entries of status.demand to remove (at most MAX_DEMAND_GATEWAYS): those older than
    GONE_AFTER_SECONDS, and those no gateway of llmop's could have written (unreadable, or
    undated): they count for nothing, and would stay forever."""
    if not isinstance(raw, dict):
        return []
    oldest = now - timedelta(seconds=GONE_AFTER_SECONDS)
    gone = []
    for gateway, value in raw.items():
        try:
            entry = GatewayDemand.model_validate(value)
        except (ValueError, TypeError):  # pydantic's ValidationError is a ValueError
            entry = None
        if entry is None or entry.time is None or entry.time < oldest:
            gone.append(str(gateway))
        if len(gone) >= MAX_DEMAND_GATEWAYS:
            break
    return gone


def clamp(spec: AutoscalingSpec, replicas: int) -> int:
    # A minReplicas above maxReplicas (stored before the rule) gives maxReplicas: the user's cap.
    return max(min(replicas, spec.max_replicas), min(spec.min_replicas, spec.max_replicas), 0)


def wanted_replicas(spec: AutoscalingSpec, demand: Demand) -> int:
    """What the counts ask for now, within the bounds."""
    requests = demand.in_flight + demand.waiting
    wanted = math.ceil(requests / max(spec.target_in_flight, 1))
    if demand.waiting:
        wanted = max(wanted, 1)  # a held request needs a pod, however low the target
    return clamp(spec, wanted)


def held_replicas(facts: AutoscaleFacts) -> int:
    """The replicas in place: llmop's last decision; a backend's earlier replicas at first, or one."""
    if facts.previous is not None:
        return facts.previous.replicas
    if facts.start is not None:
        return facts.start
    return max(facts.spec.min_replicas, 1)


def decide(facts: AutoscaleFacts) -> AutoscaleDecision:
    spec, now = facts.spec, facts.now
    demand = fresh_demand(facts.demand, now)
    wanted = wanted_replicas(spec, demand)
    held = held_replicas(facts)
    previous = facts.previous or AutoscalingStatus()
    last_request = max(
        (t for t in (previous.last_request_time, demand.last_request) if t is not None), default=None
    )
    base = AutoscalingStatus(
        in_flight=demand.in_flight, waiting=demand.waiting, last_request_time=last_request
    )
    rechecks = [(demand.expires - now).total_seconds()] if demand.expires else []
    if wanted < held:
        return _lower(facts, demand, wanted, held, base, rechecks)
    # Up at once (or stay); pods that drained before stay marked until they are gone.
    leaving = _leaving(facts, demand, len(facts.pods) - wanted) if previous.drain_started else ()
    update = {
        "replicas": wanted,
        "message": _decided(spec, demand, wanted),
        "drain_started": previous.drain_started if leaving else None,
    }
    return AutoscaleDecision(wanted, leaving, base.model_copy(update=update), _soonest(rechecks))


def _lower(
    facts: AutoscaleFacts,
    demand: Demand,
    wanted: int,
    held: int,
    base: AutoscalingStatus,
    rechecks: list[float],
) -> AutoscaleDecision:
    """Demand asks for fewer replicas than run: hold them for scaleDownDelay (a cap lowered below
    them goes at once), then drain the leaving pods, then lower."""
    spec, now, previous = facts.spec, facts.now, facts.previous or AutoscalingStatus()
    since = previous.scale_down_since or now
    target = max(previous.scale_down_to or 0, wanted) if previous.scale_down_since else wanted
    delay = parse_duration(spec.scale_down_delay)
    waited = (now - since).total_seconds()
    forced = held > spec.max_replicas
    if forced:
        target = min(target, spec.max_replicas)
    if waited < delay and not forced:
        rechecks.append(delay - waited)
        message = _counted(spec, demand, wanted)
        message += f"; keeping {_replicas(held)} for scaleDownDelay {format_duration(delay)}"
        update = {"replicas": held, "message": message, "scale_down_since": since, "scale_down_to": target}
        return AutoscaleDecision(held, (), base.model_copy(update=update), _soonest(rechecks))
    return _drain(facts, demand, held, target, since, base, rechecks)


def _drain(
    facts: AutoscaleFacts,
    demand: Demand,
    held: int,
    target: int,
    since: datetime,
    base: AutoscalingStatus,
    rechecks: list[float],
) -> AutoscaleDecision:
    spec, now, previous = facts.spec, facts.now, facts.previous or AutoscalingStatus()
    leaving = _leaving(facts, demand, len(facts.pods) - target)
    started = previous.drain_started or now
    timeout = parse_duration(spec.drain_timeout)
    elapsed = (now - started).total_seconds()
    # Drained only in a round after the one that marked the pods: the gateways have had the
    # chance to read the mark.
    busy = {pod: _in_flight(demand, pod) for pod in leaving}
    drained = previous.drain_started is not None and not any(busy.values()) and not _unsure(demand, started)
    unready = [pod.name for pod in facts.pods if pod.name not in leaving and not pod.kube_ready]
    if ((leaving and not drained) or unready) and elapsed < timeout:
        rechecks.append(min(timeout - elapsed, UNREADY_RECHECK_SECONDS) if unready else timeout - elapsed)
        message = f"{_draining(busy, leaving, unready)}: {_replicas(held)} to {target}"
        update = {
            "replicas": held,
            "message": message,
            "scale_down_since": since,
            "scale_down_to": target,
            "drain_started": started,
        }
        return AutoscaleDecision(held, leaving, base.model_copy(update=update), _soonest(rechecks))
    message = _decided(spec, demand, target)
    # Leaving pods stay marked until they are gone: between the lower replicas and the pods'
    # deletion the gateway must still leave them alone.
    update = {"replicas": target, "message": message, "drain_started": started if leaving else None}
    return AutoscaleDecision(target, leaving, base.model_copy(update=update), _soonest(rechecks))


def _draining(busy: dict[str, int], leaving: tuple[str, ...], unready: list[str]) -> str:
    """What the lowering waits for, in words."""
    named = ", ".join(f"{pod} ({count} in flight)" for pod, count in list(busy.items())[:_NAMED_PODS])
    more = f" and {len(leaving) - _NAMED_PODS} more" if len(leaving) > _NAMED_PODS else ""
    text = f"draining {named}{more}" if leaving else "lowering"
    if unready:
        text += (
            f", once {', '.join(unready[:_NAMED_PODS])} staying {'is' if len(unready) == 1 else 'are'} Ready"
        )
    return text


def _leaving(facts: AutoscaleFacts, demand: Demand, count: int) -> tuple[str, ...]:
    """The `count` pods to remove: those already leaving, then those not ready, then the fewest
    requests in flight, then by name (stable from one round to the next)."""
    if count <= 0:
        return ()

    def order(pod: PodLoad) -> tuple[bool, bool, int, str]:
        return (not pod.draining, pod.ready, _in_flight(demand, pod.name), pod.name)

    return tuple(pod.name for pod in sorted(facts.pods, key=order)[:count])


def _in_flight(demand: Demand, pod: str) -> int:
    """Requests the gateways report on a pod."""
    return sum((entry.pods or {}).get(pod, 0) for entry in demand.entries.values())


def _unsure(demand: Demand, drain_started: datetime) -> bool:
    """Whether a gateway that relays requests wrote before the drain began: it may not have read
    the mark, nor reported what it sends to the leaving pods since."""
    return any(
        entry.in_flight > 0 and entry.time is not None and entry.time < drain_started
        for entry in demand.entries.values()
    )


def _decided(spec: AutoscalingSpec, demand: Demand, replicas: int) -> str:
    if replicas == 0:
        return f"no request for {format_duration(parse_duration(spec.scale_down_delay))}: scaled to zero"
    return _counted(spec, demand, replicas)


def _counted(spec: AutoscalingSpec, demand: Demand, replicas: int) -> str:
    requests = f"{demand.in_flight} request{'s' if demand.in_flight != 1 else ''} in flight"
    if demand.waiting:
        requests += f" and {demand.waiting} waiting"
    text = f"{requests}, {spec.target_in_flight} per replica: {_replicas(replicas)}"
    if replicas == spec.max_replicas and replicas < _unbounded(spec, demand):
        text += " (maxReplicas)"
    elif replicas == spec.min_replicas and replicas > _unbounded(spec, demand):
        text += " (minReplicas)"
    return text


def _unbounded(spec: AutoscalingSpec, demand: Demand) -> int:
    return math.ceil((demand.in_flight + demand.waiting) / max(spec.target_in_flight, 1))


def _replicas(count: int) -> str:
    return f"{count} replica{'s' if count != 1 else ''}"


def _soonest(seconds: list[float]) -> float | None:
    return max(min(seconds), 0.0) if seconds else None

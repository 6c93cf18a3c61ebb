"""kstatus conditions: built whole, with transition times kept when nothing changed."""

from __future__ import annotations

from datetime import UTC, datetime

from llmop.models.base import Condition, ConditionStatus


def stored_now() -> datetime:
    """Now, as Kubernetes stores times: to the second (anything finer reads back as a change)."""
    return datetime.now(UTC).replace(microsecond=0)


def condition(
    type_: str, status: bool | ConditionStatus, reason: str, message: str, generation: int | None
) -> Condition:
    value: ConditionStatus = ("True" if status else "False") if isinstance(status, bool) else status
    return Condition(type=type_, status=value, reason=reason, message=message, observed_generation=generation)


def carry_transition_times(
    new: list[Condition], previous: list[Condition] | None, now: datetime
) -> list[Condition]:
    """Keep `lastTransitionTime` of a condition whose status did not change; stamp `now` otherwise."""
    before = {c.type: c for c in previous or []}
    stamped = []
    for cond in new:
        old = before.get(cond.type)
        since = (
            old.last_transition_time
            if old and old.status == cond.status and old.last_transition_time
            else now
        )
        stamped.append(cond.model_copy(update={"last_transition_time": since}))
    return stamped


def find(conditions: list[Condition] | None, type_: str) -> Condition | None:
    return next((c for c in conditions or [] if c.type == type_), None)

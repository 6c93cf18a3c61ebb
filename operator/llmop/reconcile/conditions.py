"""kstatus conditions: built whole, with transition times kept when nothing changed."""

from __future__ import annotations

from datetime import UTC, datetime

from llmop.models.base import Condition, ConditionStatus
from llmop.sources import redact_credentials

#: Longest condition message, lastError or pod message: status stays far below the API server's
#: object limit whatever a runtime says, and an Event quotes one of them.
MESSAGE_CHARS = 1024


def stored_now() -> datetime:
    """Now, as Kubernetes stores times: to the second (anything finer reads back as a change)."""
    return datetime.now(UTC).replace(microsecond=0)


def status_text(text: str, limit: int = MESSAGE_CHARS) -> str:
    """Text fit for status, Events and logs: credentials in URLs redacted, at most `limit`
    characters."""
    text = redact_credentials(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def describe_failure(error: BaseException) -> str:
    """An unexpected error in words, without quoting what it may carry of a Secret."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    if isinstance(error, UnicodeError):
        # Its message quotes bytes of the value, which may be a Secret's.
        return "a value is not UTF-8 text (is the key that spec.apiKeySecretRef names text?)"
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def condition(
    type_: str, status: bool | ConditionStatus, reason: str, message: str, generation: int | None
) -> Condition:
    value: ConditionStatus = ("True" if status else "False") if isinstance(status, bool) else status
    return Condition(
        type=type_, status=value, reason=reason, message=status_text(message), observed_generation=generation
    )


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

"""Shared pieces of the llmop API: the camelCase base model, conditions, references, CEL helpers."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from llmop.models.duration import DURATION_PATTERN


class ApiModel(BaseModel):
    """Kubernetes field naming (camelCase on the wire, snake_case in Python)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    def to_api(self) -> dict[str, Any]:
        """The JSON form Kubernetes stores: camelCase, unset fields left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


def cel(rule: str, message: str, **extra: str) -> dict[str, str]:
    """One `x-kubernetes-validations` entry; the message tells the user what to fix."""
    return {"rule": rule, "message": message, **extra}


def validations(*rules: dict[str, str]) -> dict[str, Any]:
    return {"x-kubernetes-validations": list(rules)}


def duration_field(default: str, description: str) -> Any:
    return Field(
        default=default,
        max_length=32,
        description=f"{description} A duration such as 30s, 5m or 1h30m. Defaults to {default}.",
        json_schema_extra=validations(
            cel(f"self.matches('{DURATION_PATTERN}')", "must be a duration such as 30s, 5m or 1h30m")
        ),
    )


def bounded_duration_field(default: str, description: str, shortest: str, longest: str) -> Any:
    """A duration between `shortest` and `longest`: a zero probe interval or retry backoff would
    spin a loop, a huge one silences it."""
    field = duration_field(default, f"{description} Between {shortest} and {longest}.")
    bounds = (
        f"!self.matches('{DURATION_PATTERN}') || "
        f"(duration(self) >= duration('{shortest}') && duration(self) <= duration('{longest}'))"
    )
    extra = field.json_schema_extra["x-kubernetes-validations"]
    extra.append(cel(bounds, f"must be between {shortest} and {longest}"))
    return field


def non_negative_field(default: int, description: str) -> Any:
    return Field(
        default=default,
        description=f"{description} Defaults to {default}.",
        json_schema_extra=validations(cel("self >= 0", "must be 0 or more")),
    )


# Free-form Kubernetes objects (tolerations, affinity, env) are passed through to the pod as
# written; the API server validates them when the Deployment is created.
_FREE_FORM = {"x-kubernetes-preserve-unknown-fields": True}
KubeObject = Annotated[dict[str, Any], Field(json_schema_extra=_FREE_FORM)]
Toleration = Annotated[
    dict[str, Any], Field(description="A toleration, as in a pod spec.", json_schema_extra=_FREE_FORM)
]
EnvVar = Annotated[
    dict[str, Any],
    Field(description="An environment variable, as in a container spec.", json_schema_extra=_FREE_FORM),
]

ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(ApiModel):
    """The standard Kubernetes condition (metav1.Condition)."""

    type: str = Field(description="Condition type: Ready, Reconciling, Stalled or Scheduled.")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(default="", description="One CamelCase word a program can match on.")
    message: str = Field(default="", description="What happened, in words a person can act on.")
    observed_generation: int | None = Field(
        default=None, description="The metadata.generation this condition was computed for."
    )
    last_transition_time: datetime | None = Field(
        default=None, description="When status last changed from one value to another."
    )


# Conditions are a map keyed by type, so server-side apply merges them per condition.
CONDITIONS_LIST: dict[str, Any] = {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]}


class LocalObjectReference(ApiModel):
    """A reference to an object in the same namespace."""

    name: str = Field(
        description="Name of the object in the same namespace.",
        json_schema_extra=validations(cel("self.size() > 0", "name must not be empty")),
    )


class SecretKeyReference(ApiModel):
    """One key of a Secret in the same namespace."""

    name: str = Field(
        description="Name of a Secret in the same namespace.",
        json_schema_extra=validations(cel("self.size() > 0", "name must not be empty")),
    )
    key: str = Field(
        description="Key inside the Secret whose value is used.",
        json_schema_extra=validations(cel("self.size() > 0", "key must not be empty")),
    )

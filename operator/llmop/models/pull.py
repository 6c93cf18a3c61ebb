"""ModelPull: get one model into every replica of a backend, with visible progress."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from llmop.models.backend import MAX_MODEL_NAME_CHARS, URL_PORT_MESSAGE, URL_PORT_RULE
from llmop.models.base import (
    CONDITIONS_LIST,
    ApiModel,
    Condition,
    LocalObjectReference,
    bounded_duration_field,
    cel,
    validations,
)

PullPhase = Literal["Pending", "Pulling", "Succeeded", "Failed"]
#: retry's bounds: the CRD rejects others, and the operator holds a pull stored before the rules
#: to them (a zero backoff would retry a failing pull without pause).
MAX_ATTEMPTS_LIMIT = 100
BACKOFF_BOUNDS = ("1s", "10m")


class RetrySpec(ApiModel):
    """Retries with exponential backoff."""

    max_attempts: int = Field(
        default=5,
        description=f"Attempts before the pull is Stalled, from 1 to {MAX_ATTEMPTS_LIMIT}. Defaults to 5.",
        json_schema_extra=validations(
            cel(
                f"self >= 1 && self <= {MAX_ATTEMPTS_LIMIT}",
                f"maxAttempts must be 1 or more, and at most {MAX_ATTEMPTS_LIMIT}",
            )
        ),
    )
    backoff: str = bounded_duration_field(
        "10s", "Wait before the second attempt; doubles each time, capped at 10m.", *BACKOFF_BOUNDS
    )


class ModelPullSpec(ApiModel):
    """Which model to pull into which backend."""

    backend_ref: LocalObjectReference = Field(description="The LLMBackend to pull the model into.")
    model: str = Field(
        description="Ollama: a tag (qwen3:0.6b, or registry.host/ns/model:tag). vLLM: hf://org/repo[@revision]. "
        "llama.cpp: hf://org/repo/file.gguf or https://host/path/file.gguf. A vLLM or llama.cpp backend "
        "pulls only the models its spec.models names.",
        # maxLength in the schema only: the operator still reads a pull stored before it.
        json_schema_extra={
            "maxLength": MAX_MODEL_NAME_CHARS,
            **validations(
                cel("self.trim().size() > 0", "model must not be empty or only spaces"),
                cel(
                    "!self.matches('^https?://') || !isURL(self) || " + URL_PORT_RULE,
                    "model " + URL_PORT_MESSAGE,
                ),
            ),
        },
    )
    sha256: str | None = Field(
        default=None,
        description="Expected sha256 of the file, where the source publishes no digest.",
        pattern=r"^[a-f0-9]{64}$",
    )
    insecure: bool = Field(default=False, description="Allow a plain-HTTP registry (Ollama).")
    retry: RetrySpec = Field(default_factory=RetrySpec, description="Retries with exponential backoff.")


class PullProgress(ApiModel):
    """Byte-level progress, summed over replicas."""

    completed_bytes: int = Field(default=0, description="Bytes transferred so far.")
    total_bytes: int | None = Field(default=None, description="Bytes in all, once known.")
    percent: float | None = Field(default=None, description="completedBytes / totalBytes, in percent.")
    bytes_per_second: int | None = Field(default=None, description="Recent transfer rate.")
    eta_seconds: int | None = Field(default=None, description="Estimated seconds left.")
    current_layer: str | None = Field(default=None, description="Layer digest or file being transferred.")
    summary: str | None = Field(default=None, description="Progress in words, for kubectl get.")


class ReplicaPull(ApiModel):
    """The pull on one pod of the backend."""

    pod: str = Field(description="Pod of the backend.")
    phase: PullPhase = Field(description="Pull phase on this pod.")
    percent: float | None = Field(default=None, description="Progress on this pod, in percent.")
    message: str | None = Field(default=None, description="Last status line or error from this pod.")


class ModelPullStatus(ApiModel):
    """State of the pull, observed from the runtime or the download."""

    observed_generation: int | None = Field(default=None, description="The generation this status describes.")
    phase: PullPhase | None = Field(default=None, description="Pending, Pulling, Succeeded or Failed.")
    progress: PullProgress | None = Field(default=None, description="Byte-level progress.")
    replicas: list[ReplicaPull] | None = Field(default=None, description="Progress on each pod.")
    digest: str | None = Field(default=None, description="Digest of the pulled model, when done.")
    size_bytes: int | None = Field(default=None, description="Size of the pulled model, when done.")
    attempts: int | None = Field(default=None, description="Attempts made so far.")
    last_error: str | None = Field(
        default=None, description="Last error, in the runtime's or source's words."
    )
    started_at: datetime | None = Field(default=None, description="When the current pull began.")
    completed_at: datetime | None = Field(default=None, description="When the pull succeeded.")
    conditions: list[Condition] | None = Field(
        default=None, description="Ready, Reconciling and Stalled.", json_schema_extra=CONDITIONS_LIST
    )

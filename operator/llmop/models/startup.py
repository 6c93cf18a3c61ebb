"""The cold-start timeline in LLMBackend status: where the time between an apply and Ready went."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from llmop.models.base import ApiModel

StageName = Literal["Scheduling", "PullingImage", "Downloading", "Starting", "Loading", "Warming"]
#: Where a replica (or the whole rollout) is: in a stage, or through all of them.
Stage = Literal["Scheduling", "PullingImage", "Downloading", "Starting", "Loading", "Warming", "Ready"]
#: Every stage, in the order a runtime with the agent goes through them (Ollama starts before it
#: downloads: docs/status.md#cold-start-timeline).
STAGE_NAMES: tuple[StageName, ...] = (
    "Scheduling",
    "PullingImage",
    "Downloading",
    "Starting",
    "Loading",
    "Warming",
)
#: Replicas the timeline lists: status stays small however many replicas a backend has.
MAX_STARTUP_REPLICAS = 16


class StartupStage(ApiModel):
    """One stage of a replica's cold start; each begins where the one before it ended."""

    name: StageName = Field(
        description="Scheduling (until a node is chosen), PullingImage (until the pod's first "
        "container runs), Downloading (until every model is complete on the volume), Starting "
        "(until the runtime container runs, its image pulled; Ollama: until its API answers), "
        "Loading (until the runtime's API answers with the model loaded) or Warming (until the "
        "warmup request answered)."
    )
    start: datetime = Field(description="When the stage began.")
    end: datetime | None = Field(default=None, description="When it ended; absent while it goes on.")
    seconds: int | None = Field(default=None, description="end - start, in seconds, once it ended.")


class StartupProgress(ApiModel):
    """How far the current stage is, where llmop can tell (downloads: bytes)."""

    completed_bytes: int | None = Field(default=None, description="Bytes of the models downloaded so far.")
    total_bytes: int | None = Field(default=None, description="Bytes of the models in all, once known.")
    percent: int | None = Field(default=None, description="completedBytes / totalBytes, in percent.")


class ReplicaStartup(ApiModel):
    """One replica's cold start."""

    pod: str = Field(description="Pod name.")
    stage: Stage = Field(description="The stage the replica is in now, or Ready once its last stage ended.")
    progress: StartupProgress | None = Field(default=None, description="Progress of the current stage.")
    stages: list[StartupStage] = Field(
        default_factory=list,
        json_schema_extra={"maxItems": len(STAGE_NAMES)},
        description="The stages so far, in order, the last one open while the replica is not ready.",
    )
    ready_at: datetime | None = Field(default=None, description="When the last stage ended.")
    seconds: int | None = Field(default=None, description="readyAt - the first stage's start, in seconds.")


class StartupStatus(ApiModel):
    """The cold start of the backend's current rollout (its newest pod template)."""

    rollout: str = Field(description="The rollout's pod template hash (the pods' pod-template-hash label).")
    applied_at: datetime = Field(
        description="When the rollout was asked for: the backend's creation for its first pods, "
        "otherwise when llmop saw the spec change that made the new pod template."
    )
    stage: Stage = Field(
        description="The least advanced replica's stage, or Ready once every replica asked for is."
    )
    summary: str | None = Field(
        default=None,
        description="The stage and its progress while not Ready (e.g. Downloading 42%), for kubectl get.",
    )
    ready_at: datetime | None = Field(
        default=None, description="When the last replica asked for became ready."
    )
    seconds: int | None = Field(default=None, description="readyAt - appliedAt, in seconds.")
    replicas: list[ReplicaStartup] = Field(
        default_factory=list,
        json_schema_extra={"maxItems": MAX_STARTUP_REPLICAS},
        description=f"Each replica's cold start, at most {MAX_STARTUP_REPLICAS}.",
    )
    replicas_omitted: int | None = Field(
        default=None, description=f"Replicas left out of replicas (beyond {MAX_STARTUP_REPLICAS})."
    )

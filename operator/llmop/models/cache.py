"""ModelCache: a ReadWriteMany volume llmop fills once with models that backends then mount read-only."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from llmop.models.backend import MAX_MODEL_NAME_CHARS, MAX_SPEC_MODELS, OBJECT_NAME_PATTERN, QUANTITY_PATTERN
from llmop.models.base import CONDITIONS_LIST, ApiModel, Condition, SecretKeyReference, cel, validations

CachePhase = Literal["Pending", "Filling", "Ready", "Degraded", "Failed"]
CachedModelPhase = Literal["Pending", "Filling", "Verifying", "Ready", "Evicted", "Failed"]
#: Backends listed per cached model; the rest are counted.
MAX_USERS_SHOWN = 20


class CacheStorageSpec(ApiModel):
    """The claim that holds the cache: one llmop creates, or one of the namespace."""

    size: str | None = Field(
        default=None,
        max_length=32,
        pattern=QUANTITY_PATTERN,
        description="Size of the ReadWriteMany claim llmop creates, e.g. 100Gi.",
    )
    storage_class_name: str | None = Field(
        default=None,
        max_length=253,
        description="StorageClass of the claim llmop creates; it must offer ReadWriteMany (NFS, "
        "CephFS, EFS, Filestore, Azure Files). The cluster default when empty.",
    )
    existing_claim: str | None = Field(
        default=None,
        max_length=253,
        pattern=OBJECT_NAME_PATTERN,
        description="Use this ReadWriteMany claim of the namespace instead of creating one; it must "
        'carry the label llmop.dev/use: "true".',
    )


CacheStorageSpec.model_config["json_schema_extra"] = validations(
    cel(
        "has(self.size) != has(self.existingClaim)",
        "set exactly one of storage.size (llmop creates a ReadWriteMany claim) or storage.existingClaim",
    ),
    cel(
        "!has(self.existingClaim) || !has(self.storageClassName)",
        "storage.storageClassName applies to the claim llmop creates, not to storage.existingClaim",
    ),
)


class CachedModelSpec(ApiModel):
    """One model the cache holds."""

    name: str = Field(
        description="vLLM: hf://org/repo[@revision]. llama.cpp: hf://org/repo/file.gguf or "
        "https://host/path/file.gguf.",
        json_schema_extra={
            "maxLength": MAX_MODEL_NAME_CHARS,
            **validations(cel("self.trim().size() > 0", "name must not be empty or only spaces")),
        },
    )
    sha256: str | None = Field(
        default=None,
        pattern=r"^[a-f0-9]{64}$",
        description="Expected sha256 of a single file, where the source publishes no digest.",
    )


class ModelCacheSpec(ApiModel):
    """Where the cache lives and which models it holds."""

    storage: CacheStorageSpec = Field(description="The ReadWriteMany claim that holds the models.")
    models: list[CachedModelSpec] = Field(
        default_factory=list,
        description="The models to download into the cache, once each. A backend of this namespace "
        "with spec.modelCache naming this cache serves only models listed here.",
        json_schema_extra={
            "maxItems": MAX_SPEC_MODELS,
            **validations(
                cel("self.all(m, self.exists_one(n, n.name == m.name))", "model names must be unique")
            ),
        },
    )
    hf_token_secret_ref: SecretKeyReference | None = Field(
        default=None,
        description="The Hugging Face token for gated and private repos: a key of a Secret of the "
        'namespace labelled llmop.dev/use: "true". The filler gets it as HF_TOKEN through a '
        "secretKeyRef; llmop never reads its value.",
    )


class CachedModelStatus(ApiModel):
    """One model of the cache as llmop observed it."""

    name: str = Field(description="The model, as spec.models names it.")
    phase: CachedModelPhase = Field(
        description="Pending, Filling, Verifying (its bytes hashed again after the filler started), Ready "
        "(complete and verified), Evicted (removed to make room while no backend used it; downloaded "
        "again when a backend does) or Failed."
    )
    local_path: str | None = Field(default=None, description="Where it lies in the cache volume.")
    size_bytes: int | None = Field(default=None, description="Its size, once known.")
    digest: str | None = Field(
        default=None, description="The sha256 the agent verified (a repo's: of its files' list)."
    )
    completed_bytes: int | None = Field(default=None, description="Bytes in the cache so far, while filling.")
    percent: float | None = Field(default=None, description="completedBytes / sizeBytes, in percent.")
    used_by: list[str] | None = Field(default=None, description="The backends that serve it from this cache.")
    used_by_omitted: int | None = Field(default=None, description="Backends using it beyond those listed.")
    message: str | None = Field(default=None, description="The last error or progress line, in words.")
    verified_at: datetime | None = Field(default=None, description="When the agent verified it complete.")
    unused_since: datetime | None = Field(
        default=None,
        description="Since when no backend uses it (its verification, if none ever did): when the cache "
        "is full, the model unused the longest is evicted first.",
    )


class ModelCacheStatus(ApiModel):
    """What llmop observed of the cache."""

    observed_generation: int | None = Field(default=None, description="The generation this status describes.")
    phase: CachePhase | None = Field(default=None, description="Pending, Filling, Ready, Degraded or Failed.")
    claim_name: str | None = Field(default=None, description="The claim backends mount read-only.")
    models: list[CachedModelStatus] | None = Field(default=None, description="Each model of spec.models.")
    summary: str | None = Field(
        default=None, description="Models ready out of those asked for, for kubectl get."
    )
    free_bytes: int | None = Field(default=None, description="Free space on the cache volume.")
    capacity_bytes: int | None = Field(default=None, description="Size of the cache volume.")
    conditions: list[Condition] | None = Field(
        default=None, description="Ready, Reconciling and Stalled.", json_schema_extra=CONDITIONS_LIST
    )
    verified_filler: str | None = Field(
        default=None,
        description="The filler pod (and its agent's start) that hashed every cached model again: a "
        "filler that starts checks the bytes it did not write before a backend may use them.",
    )

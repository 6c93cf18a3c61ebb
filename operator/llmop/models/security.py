"""The security contexts a backend may ask for: only what a baseline or restricted workload needs.

A tenant who may write LLMBackends but not pods must not get through llmop a pod it could not
create itself: nothing here grants a privilege (no privileged, allowPrivilegeEscalation,
capabilities, seLinuxOptions, sysctls, procMount, windowsOptions, hostUsers, Unconfined seccomp).
Any other field is unknown to the CRD's schema, so `kubectl apply` (field validation Strict, its
default) refuses it by name; a client that asks for no strict validation has it pruned, and the
operator, reading these models, never writes it into a pod.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from llmop.models.base import ApiModel, cel, validations

#: The range the API server accepts for a user or group id.
MAX_ID = 2147483647


def _id_field(description: str) -> int | None:
    result: int | None = Field(default=None, ge=0, le=MAX_ID, description=description)
    return result


class SeccompProfile(ApiModel):
    """A seccomp filter: the container runtime's default, or a profile installed on the node."""

    type: Literal["RuntimeDefault", "Localhost"] = Field(
        description="RuntimeDefault (the container runtime's filter) or Localhost (a profile file on "
        "the node, named in localhostProfile). Unconfined is not allowed."
    )
    localhost_profile: str | None = Field(
        default=None,
        max_length=1024,
        description="Path of the profile under the kubelet's seccomp directory; only with type Localhost.",
    )


SeccompProfile.model_config["json_schema_extra"] = validations(
    cel(
        "(self.type == 'Localhost') == has(self.localhostProfile)",
        "seccompProfile: set localhostProfile with type Localhost, and only then",
    )
)

_RUN_AS_NON_ROOT = "Refuse to start a container whose user is root (Pod Security 'restricted' asks it)."
_SECCOMP = "The seccomp filter: RuntimeDefault or Localhost."


class PodSecurity(ApiModel):
    """The pod-level securityContext fields a backend may set."""

    run_as_user: int | None = _id_field("User id the containers run as (the agent keeps its own).")
    run_as_group: int | None = _id_field("Primary group id of the containers' processes.")
    run_as_non_root: bool | None = Field(default=None, description=_RUN_AS_NON_ROOT)
    fs_group: int | None = _id_field("Group that owns the pod's volumes; llmop's default is 65532.")
    supplemental_groups: list[Annotated[int, Field(ge=0, le=MAX_ID)]] | None = Field(
        default=None,
        json_schema_extra={"maxItems": 32},
        description="Further group ids of the containers' processes, at most 32.",
    )
    seccomp_profile: SeccompProfile | None = Field(default=None, description=_SECCOMP)


class ContainerSecurity(ApiModel):
    """The container-level securityContext fields a backend may set on its runtime container."""

    run_as_user: int | None = _id_field("User id the runtime runs as.")
    run_as_group: int | None = _id_field("Primary group id of the runtime's process.")
    run_as_non_root: bool | None = Field(default=None, description=_RUN_AS_NON_ROOT)
    read_only_root_filesystem: bool | None = Field(
        default=None, description="Mount the container's root filesystem read-only."
    )
    seccomp_profile: SeccompProfile | None = Field(default=None, description=_SECCOMP)

"""What llmop chooses for a backend where its spec says nothing: the runtime's image, the agent's
image, the Hugging Face endpoint the agent downloads from.

They come from the operator's settings, which an operator upgrade changes. Chosen anew on every
reconcile, an upgrade would change every backend's pod template and restart every runtime at once
(GPU backends use Recreate). So they are recorded on the backend's Deployment when it is deployed
and kept while the spec is the one they were chosen for; a change of spec (other than replicas,
autoscaling and disruptionBudget) or a new value of the backend's annotation `upgrade.llmop.dev/adopt-defaults`
takes the current ones (docs/upgrades.md). While they are kept, so is the whole pod template the
Deployment runs: a newer llmop that builds pods differently restarts nothing either.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field, replace
from typing import Any

from llmop.config import OperatorConfig
from llmop.manifests.deployment import AGENT_CONTAINER, RUNTIME_CONTAINER, build_deployment
from llmop.manifests.runtime_pods import managed_runtime, runtime_pod
from llmop.models.backend import LLMBackendSpec

#: On the LLMBackend: a new value (any text) makes llmop take its current defaults now. Not under
#: llmop.dev/, whose annotations kopf keeps out of the state it compares (its own storage prefix):
#: a change there would never reach a handler.
ADOPT_DEFAULTS_ANNOTATION = "upgrade.llmop.dev/adopt-defaults"
#: On the Deployment: the defaults its pod template was built with, and the spec they were chosen for.
RESOLVED_DEFAULTS_ANNOTATION = "llmop.dev/resolved-defaults"
#: Spec fields that do not reach the pod template: scaling never rolls the pods onto new defaults.
OUTSIDE_THE_POD = ("replicas", "autoscaling", "disruptionBudget")
#: The agent's variable that carries the Hugging Face endpoint.
HF_ENDPOINT_ENV = "HF_ENDPOINT"


@dataclass(frozen=True)
class ResolvedDefaults:
    """The defaults a backend's pods get. An image is None where the spec chooses it (spec.image)
    or the pod has no such container (Ollama has no agent); so is the endpoint without an agent,
    and with one when the agent uses huggingface.co."""

    runtime_image: str | None
    agent_image: str | None
    hf_endpoint: str | None
    #: The digest of the spec (and adopt-defaults value) they were chosen for (`resolved_for`).
    resolved_for: str
    #: The pod template of the Deployment they were kept from, kept with them; None: build anew.
    template: dict[str, Any] | None = field(default=None, compare=False, repr=False)

    def images(self) -> dict[str, str]:
        """The images by container, as status.images shows them."""
        images = {"runtime": self.runtime_image, "agent": self.agent_image}
        return {container: image for container, image in images.items() if image}

    def shown(self) -> dict[str, str]:
        """Every default this backend has, by name: what the status compares and names."""
        return {**self.images(), **({"hfEndpoint": self.hf_endpoint} if self.hf_endpoint else {})}

    def to_annotation(self) -> str:
        return json.dumps({"for": self.resolved_for, **self.shown()}, sort_keys=True, separators=(",", ":"))


def resolved_for(spec: LLMBackendSpec, adopt_defaults: str | None) -> str:
    """A digest of what the user wrote in the spec (not llmop's defaults for what they left out,
    which a newer llmop may change), less the fields outside the pod, and of the adopt-defaults
    value. It must stay the same across llmop versions for the same spec: a golden test holds it."""
    written = spec.model_dump(mode="json", by_alias=True, exclude_unset=True)
    for key in OUTSIDE_THE_POD:
        written.pop(key, None)
    text = json.dumps(
        {"spec": written, "adoptDefaults": adopt_defaults or ""}, sort_keys=True, separators=(",", ":")
    )
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def current_defaults(spec: LLMBackendSpec, config: OperatorConfig, digest: str) -> ResolvedDefaults:
    """The operator's defaults for this spec now."""
    agent = runtime_pod(spec).needs_agent
    return ResolvedDefaults(
        runtime_image=None if spec.image else config.images[managed_runtime(spec)],
        agent_image=config.agent_image if agent else None,
        hf_endpoint=config.hf_endpoint if agent else None,
        resolved_for=digest,
    )


def resolve_defaults(current: ResolvedDefaults, deployment: dict[str, Any] | None) -> ResolvedDefaults:
    """The defaults to build the Deployment with: those recorded on the backend's existing
    Deployment while the spec is the one they were chosen for, the current ones otherwise.

    A Deployment without a readable record (applied by an llmop that kept none, or an annotation
    someone damaged) keeps what its containers run: restarting serving pods is never the way to
    find out."""
    if deployment is None:
        return current
    recorded = recorded_defaults(deployment) or running_defaults(deployment, current)
    if recorded is None or recorded.resolved_for != current.resolved_for:
        return current
    return replace(recorded, template=running_template(deployment))


def running_template(deployment: dict[str, Any]) -> dict[str, Any] | None:
    """The Deployment's pod template, as the API server stores it; None when it has none."""
    template = (deployment.get("spec") or {}).get("template")
    return copy.deepcopy(template) if isinstance(template, dict) and template.get("spec") else None


def recorded_defaults(deployment: dict[str, Any]) -> ResolvedDefaults | None:
    """The record on a Deployment; None when there is none or it is not one llmop wrote."""
    annotations = (deployment.get("metadata") or {}).get("annotations") or {}
    try:
        record = json.loads(annotations[RESOLVED_DEFAULTS_ANNOTATION])
    except (KeyError, TypeError, ValueError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("for"), str):
        return None
    values = {key: record.get(key) for key in ("runtime", "agent", "hfEndpoint")}
    if not all(value is None or (isinstance(value, str) and value) for value in values.values()):
        return None
    return ResolvedDefaults(
        runtime_image=values["runtime"],
        agent_image=values["agent"],
        hf_endpoint=values["hfEndpoint"],
        resolved_for=record["for"],
    )


def running_defaults(deployment: dict[str, Any], current: ResolvedDefaults) -> ResolvedDefaults | None:
    """What the Deployment's containers run, where this spec takes a default; None when a
    container it needs is missing."""
    pod = ((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}
    containers = {
        c.get("name"): c for c in [*(pod.get("initContainers") or []), *(pod.get("containers") or [])]
    }
    runtime = containers.get(RUNTIME_CONTAINER, {}).get("image")
    agent = containers.get(AGENT_CONTAINER, {})
    if (current.runtime_image and not runtime) or (current.agent_image and not agent.get("image")):
        return None
    env = {var.get("name"): var.get("value") for var in agent.get("env") or []}
    return ResolvedDefaults(
        runtime_image=runtime if current.runtime_image else None,
        agent_image=agent.get("image") if current.agent_image else None,
        hf_endpoint=env.get(HF_ENDPOINT_ENV) if current.agent_image else None,
        resolved_for=current.resolved_for,
    )


def build_pinned_deployment(
    name: str,
    namespace: str,
    uid: str,
    spec: LLMBackendSpec,
    config: OperatorConfig,
    defaults: ResolvedDefaults,
    replicas: int | None = None,
) -> dict[str, Any]:
    """The backend's Deployment built with `defaults`, which it records, and with the pod template
    kept with them, if any: replicas follow the spec (or `replicas`, spec.autoscaling's decision),
    the pods stay as they are."""
    pinned: dict[str, Any] = {}
    if defaults.runtime_image:
        pinned["images"] = {**config.images, managed_runtime(spec): defaults.runtime_image}
    if defaults.agent_image:
        pinned["agent_image"] = defaults.agent_image
        pinned["hf_endpoint"] = defaults.hf_endpoint
    deployment = build_deployment(name, namespace, uid, spec, config.model_copy(update=pinned), replicas)
    if defaults.template is not None:
        deployment["spec"]["template"] = copy.deepcopy(defaults.template)
    deployment["metadata"].setdefault("annotations", {})[RESOLVED_DEFAULTS_ANNOTATION] = (
        defaults.to_annotation()
    )
    return deployment

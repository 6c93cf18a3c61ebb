"""Ensure a backend's objects: create, resume and update share this one idempotent path."""

from __future__ import annotations

from typing import Any

import kopf
from pydantic import ValidationError

from llmop.config import OperatorConfig
from llmop.k8s.client import (
    DEPLOYMENTS,
    MODELPULLS,
    NETWORKPOLICIES,
    PODDISRUPTIONBUDGETS,
    PVCS,
    SERVICES,
    KubeAPIError,
    KubeClient,
    Resource,
)
from llmop.loops.agent_token import AgentTokenUnavailable, ensure_agent_token
from llmop.loops.context import BackendKey, OperatorContext
from llmop.loops.model_cache import WaitingForCache, backend_cache_claim
from llmop.loops.name_conflicts import NameConflict, check_names_free
from llmop.loops.secret_access import SecretNotUsable, check_pod_references
from llmop.manifests import AGENT_PORT, build_model_claim, build_model_pull, build_service
from llmop.manifests.agent_access import build_agent_network_policy
from llmop.manifests.disruption_budget import build_disruption_budget
from llmop.manifests.labels import BACKEND_LABEL
from llmop.manifests.ownership import controlled_by
from llmop.manifests.resolved_defaults import (
    ADOPT_DEFAULTS_ANNOTATION,
    ResolvedDefaults,
    build_pinned_deployment,
    current_defaults,
    resolve_defaults,
    resolved_for,
)
from llmop.manifests.runtime_pods import has_agent, runtime_pod
from llmop.models.backend import LLMBackendSpec, reserved_pod_annotation, reserved_pod_label
from llmop.reconcile.conditions import status_text
from llmop.runtimes.registry import managed_descriptor, serving_port
from llmop.sources import InvalidModelSource, parse_model_source

#: How often kopf tries again while a Secret the pods would get has not opted in.
SECRET_RETRY_SECONDS = 30
#: How often kopf tries again while a name the backend needs is taken (a GET per object), and
#: while it is taken by a deleted backend's object, which the garbage collector removes in seconds.
CONFLICT_RETRY_SECONDS = 30
LEFTOVER_RETRY_SECONDS = 3
#: How often kopf looks again at the ModelCache of a backend that waits for it (one GET).
CACHE_RETRY_SECONDS = 3


def validate_backend_spec(spec: LLMBackendSpec) -> str | None:
    """What the API server cannot check; a message the user can act on, or None."""
    # Also a blank name, which the CRD rejects only since it had the rule.
    if blank := [index for index, model in enumerate(spec.models) if not model.name.strip()]:
        return f"spec.models[{blank[0]}].name is empty or only spaces: name a model"
    if spec.runtime is None:
        return None
    if problem := pod_metadata_problem(spec):
        return problem
    if spec.model_cache is not None and (not runtime_pod(spec).needs_agent or spec.storage is not None):
        # Also a backend stored before the CRD had the rules.
        return "spec.modelCache applies to runtime vllm or llamacpp, without spec.storage"
    if runtime_pod(spec).needs_agent and serving_port(spec) == AGENT_PORT:
        # Also a port the CRD refuses only since it had the rule: the runtime could not bind it.
        return f"spec.port {AGENT_PORT} is the llmop agent's port in {spec.runtime} pods: choose another"
    runtime = managed_descriptor(spec)
    if not runtime.pulls_itself and not spec.models:
        return f"spec.models is empty: {spec.runtime} serves one model, name it in spec.models"
    for model in spec.models if not runtime.pulls_itself else []:
        try:
            source = parse_model_source(model.name)
        except InvalidModelSource as error:
            return str(error)
        if source.kind not in runtime.model_sources:
            return f"{model.name!r}: {spec.runtime} models come from hf://org/repo[...] or https:// URLs"
        if runtime.one_file and not source.is_single_file:
            return f"{model.name!r}: llama.cpp loads one GGUF file, name it: hf://org/repo/path/file.gguf"
    return None


def pod_metadata_problem(spec: LLMBackendSpec) -> str | None:
    """A pod label or annotation the CRD refuses, in a backend stored before its rule."""
    if labels := sorted(key for key in spec.pod_labels or {} if reserved_pod_label(key)):
        return f"spec.podLabels must not set llmop's own label {labels[0]!r}: llmop selects the pods by it"
    if annotations := sorted(key for key in spec.pod_annotations or {} if reserved_pod_annotation(key)):
        return (
            f"spec.podAnnotations must not set {annotations[0]!r}: set AppArmor and seccomp with "
            "spec.podSecurityContext and spec.securityContext"
        )
    return None


async def ensure_backend_objects(
    name: str,
    namespace: str,
    uid: str,
    spec: kopf.Spec,
    body: kopf.Body,
    context: OperatorContext,
    logger: kopf.Logger,
) -> None:
    """Apply what the spec asks for (claim, Deployment, Service, one ModelPull per model); what
    the API server or llmop refuses is kept for the observer to show and posted."""
    key = (namespace, name)
    previous = context.apply_errors.get(key)
    try:
        parsed = LLMBackendSpec.model_validate(dict(spec))
    except ValidationError as error:
        context.apply_errors[key] = ("InvalidSpec", f"spec is not valid: {error}")
        raise kopf.PermanentError(str(error)) from error
    if problem := validate_backend_spec(parsed):
        report_refusal(context, body, key, previous, "InvalidSpec", problem)
        return
    try:
        if parsed.external is None:  # else nothing to deploy: the daemon observes the URL
            adopt = body.metadata.annotations.get(ADOPT_DEFAULTS_ANNOTATION)
            status = dict(body.get("status") or {})
            await apply_backend_objects(
                context, name, namespace, uid, parsed, adopt_defaults=adopt, status=status
            )
    except NameConflict as conflict:
        # Retried: once the object is gone, the backend deploys.
        report_refusal(context, body, key, previous, "NameConflict", conflict.message)
        delay = LEFTOVER_RETRY_SECONDS if conflict.leftover else CONFLICT_RETRY_SECONDS
        raise kopf.TemporaryError(conflict.message, delay=delay) from conflict
    except WaitingForCache as waiting:
        report_cache_wait(context, body, key, previous, waiting)
        return
    except SecretNotUsable as error:
        # The observer shows it in status; kopf retries, so a label added later takes effect.
        context.apply_errors.pop(key, None)
        raise kopf.TemporaryError(error.message, delay=SECRET_RETRY_SECONDS) from error
    except AgentTokenUnavailable as error:
        report_refusal(context, body, key, previous, "InvalidSpec", str(error), event_reason="ApplyFailed")
        raise kopf.TemporaryError(str(error), delay=30) from error
    except KubeAPIError as error:
        if error.status_code not in (400, 403, 422):
            # "Not now" rather than "no": status keeps what it said until the retry.
            raise kopf.TemporaryError(str(error), delay=10) from error
        # The API server refused what the spec asked for: tell the user where they look.
        message = f"the API server refused the backend's objects: {error.message}"
        report_refusal(context, body, key, previous, "InvalidSpec", message, event_reason="ApplyFailed")
        raise kopf.PermanentError(error.message) from error
    context.apply_errors.pop(key, None)
    context.cache_waits.pop(key, None)
    logger.info("ensured the objects of backend %s/%s", namespace, name)


def report_cache_wait(
    context: OperatorContext,
    body: kopf.Body,
    key: BackendKey,
    previous: tuple[str, str] | None,
    waiting: WaitingForCache,
) -> None:
    """A cache that is refused is said once; one that is filling is waited for, an Event per new
    reason, and looked at again in CACHE_RETRY_SECONDS."""
    wait = waiting.wait
    if wait.refused:
        report_refusal(context, body, key, previous, wait.reason, wait.message)
        return
    context.apply_errors.pop(key, None)
    if context.cache_waits.get(key) != (wait.reason, wait.message):
        kopf.event(body, type="Normal", reason=wait.reason, message=status_text(wait.message))
    context.cache_waits[key] = (wait.reason, wait.message)
    raise kopf.TemporaryError(wait.message, delay=CACHE_RETRY_SECONDS) from waiting


def report_refusal(
    context: OperatorContext,
    body: kopf.Body,
    key: BackendKey,
    previous: tuple[str, str] | None,
    reason: str,
    message: str,
    event_reason: str | None = None,
) -> None:
    """Keep why the backend's objects were not applied, for its observer to show in status (a
    condition with this reason), and post a Warning Event when it is news: a retry that meets
    the same refusal posts nothing."""
    context.apply_errors[key] = (reason, message)
    if (reason, message) != previous:
        kopf.event(body, type="Warning", reason=event_reason or reason, message=status_text(message))


async def apply_backend_objects(
    context: OperatorContext,
    name: str,
    namespace: str,
    uid: str,
    spec: LLMBackendSpec,
    adopt_defaults: str | None = None,
    status: dict[str, Any] | None = None,
) -> None:
    """Every object of a managed backend, in the order the pods need them; nothing at all while
    one of their names belongs to an object this backend does not control (NameConflict)."""
    kube = context.kube
    # Before anything that leads to pods: a Secret that has not opted in never reaches one.
    await check_pod_references(kube, namespace, spec)
    # A backend on a ModelCache deploys once the cache holds its models: its pods only read them.
    on_cache = await backend_cache_claim(kube, namespace, spec)
    cache_claim = on_cache[0] if on_cache else None
    # The models' sizes for the Fits condition: no ModelPull tells them for a backend on a cache.
    context.cache_model_sizes[(namespace, name)] = on_cache[1] if on_cache else {}
    deployment = await kube.get(DEPLOYMENTS, name, namespace)
    defaults, current = backend_defaults(context.config, uid, spec, adopt_defaults, deployment)
    replicas = decided_replicas(context, (namespace, name), spec, status or {}, deployment)
    owned = owned_objects(
        context, name, namespace, uid, spec, defaults, replicas=replicas, cache_claim=cache_claim
    )
    await check_names_free(kube, name, uid, owned, already_read={DEPLOYMENTS: deployment})
    if has_agent(spec):
        # Before the pods that mount it; created once, never applied.
        await ensure_agent_token(context, name, namespace, uid, spec.runtime or "")
    for resource, manifest in owned:
        await kube.apply(resource, manifest)
    if not any(resource == PODDISRUPTIONBUDGETS for resource, _ in owned):
        await remove_disruption_budget(kube, name, namespace, uid)
    await ensure_model_pulls(kube, name, namespace, uid, spec)
    context.resolved_defaults[(namespace, name)] = (defaults.shown(), current.shown())
    # The observer, woken by the handler, sets its decision again in case this apply crossed it.
    context.scaled.pop((namespace, name), None)


def decided_replicas(
    context: OperatorContext,
    key: BackendKey,
    spec: LLMBackendSpec,
    status: dict[str, Any],
    deployment: dict[str, Any] | None,
) -> int | None:
    """The replicas of an autoscaled backend's Deployment: the observer decides them, this path
    only keeps them (what the observer set last, else what status says it decided, else what the
    Deployment runs: a backend that had spec.replicas keeps them until the observer decides).
    None without spec.autoscaling: spec.replicas then."""
    if spec.autoscaling is None:
        return None
    decided = (status.get("autoscaling") or {}).get("replicas")
    running = ((deployment or {}).get("spec") or {}).get("replicas")
    for replicas in (context.scaled.get(key), decided, running):
        if isinstance(replicas, int) and not isinstance(replicas, bool) and replicas >= 0:
            return replicas  # a lowered maxReplicas too: the observer drains the pods first
    return max(spec.autoscaling.min_replicas, 1)


def backend_defaults(
    config: OperatorConfig,
    uid: str,
    spec: LLMBackendSpec,
    adopt: str | None,
    existing: dict[str, Any] | None,
) -> tuple[ResolvedDefaults, ResolvedDefaults]:
    """The defaults to build the pods with (those recorded on the backend's `existing`
    Deployment while its spec is unchanged, so an operator upgrade alone restarts nothing), and
    the current ones."""
    current = current_defaults(spec, config, resolved_for(spec, adopt))
    if existing is None or not controlled_by(existing, uid):
        return current, current  # another's Deployment is no record of ours (NameConflict follows)
    return resolve_defaults(current, existing), current


async def remove_disruption_budget(kube: KubeClient, name: str, namespace: str, uid: str) -> None:
    """Delete the backend's PodDisruptionBudget once it wants none (one replica, or disabled): left
    in place, it would block every drain of the last pod's node. Someone else's is left alone."""
    existing = await kube.get(PODDISRUPTIONBUDGETS, name, namespace)
    if existing is not None and controlled_by(existing, uid):
        await kube.delete(PODDISRUPTIONBUDGETS, name, namespace)


def owned_objects(
    context: OperatorContext,
    name: str,
    namespace: str,
    uid: str,
    spec: LLMBackendSpec,
    defaults: ResolvedDefaults,
    *,
    replicas: int | None = None,
    cache_claim: str | None = None,
) -> list[tuple[Resource, dict[str, Any]]]:
    """The objects llmop applies for a managed backend, each before those that need it: the
    model claim (none with spec.storage.existingClaim, the user's own), the NetworkPolicy that
    lets only the operator's pods reach the agent, the Deployment, the Service and, with more than
    one replica, the PodDisruptionBudget. The Deployment is built with `defaults` and records them."""
    objects: list[tuple[Resource, dict[str, Any]]] = []
    if claim := build_model_claim(name, namespace, uid, spec):
        objects.append((PVCS, claim))
    if has_agent(spec):
        policy = build_agent_network_policy(name, namespace, uid, spec, context.config, AGENT_PORT)
        if policy is not None:
            objects.append((NETWORKPOLICIES, policy))
    deployment = build_pinned_deployment(
        name, namespace, uid, spec, context.config, defaults, replicas=replicas, cache_claim=cache_claim
    )
    objects.append((DEPLOYMENTS, deployment))
    objects.append((SERVICES, build_service(name, namespace, uid, spec)))
    if budget := build_disruption_budget(name, namespace, uid, spec):
        objects.append((PODDISRUPTIONBUDGETS, budget))
    return objects


async def ensure_model_pulls(
    kube: KubeClient, name: str, namespace: str, uid: str, spec: LLMBackendSpec
) -> None:
    wanted = {}
    # A cache's filler downloads for a backend on it: no pull into its pods.
    for model in spec.models if spec.model_cache is None else []:
        pull = build_model_pull(name, namespace, uid, model, runtime=spec.runtime)
        wanted[pull["metadata"]["name"]] = pull
    for pull in wanted.values():
        existing = await kube.get(MODELPULLS, pull["metadata"]["name"], namespace)
        if existing is None or existing.get("spec") != pull["spec"]:
            await kube.apply(MODELPULLS, pull)
    for existing in await kube.list(MODELPULLS, namespace, f"{BACKEND_LABEL}={name}"):
        if controlled_by(existing, uid) and existing["metadata"]["name"] not in wanted:
            await kube.delete(MODELPULLS, existing["metadata"]["name"], namespace)

"""Ensure a backend's objects: create, resume and update share this one idempotent path."""

from __future__ import annotations

import kopf
from pydantic import ValidationError

from llmop.k8s.client import (
    DEPLOYMENTS,
    MODELPULLS,
    NETWORKPOLICIES,
    PVCS,
    SERVICES,
    KubeAPIError,
    KubeClient,
)
from llmop.loops.agent_token import AgentTokenUnavailable, ensure_agent_token
from llmop.loops.context import OperatorContext
from llmop.loops.secret_access import SecretNotUsable, check_pod_secrets
from llmop.manifests import AGENT_PORT, build_deployment, build_model_claim, build_model_pull, build_service
from llmop.manifests.agent_access import build_agent_network_policy
from llmop.manifests.labels import BACKEND_LABEL
from llmop.manifests.runtime_pods import runtime_pod
from llmop.models.backend import LLMBackendSpec
from llmop.reconcile.conditions import status_text
from llmop.runtimes.registry import managed_descriptor, serving_port
from llmop.sources import InvalidModelSource, parse_model_source

#: How often kopf tries again while a Secret the pods would get has not opted in.
SECRET_RETRY_SECONDS = 30


def validate_backend_spec(spec: LLMBackendSpec) -> str | None:
    """What the API server cannot check; a message the user can act on, or None."""
    # Also a blank name, which the CRD rejects only since it had the rule.
    if blank := [index for index, model in enumerate(spec.models) if not model.name.strip()]:
        return f"spec.models[{blank[0]}].name is empty or only spaces: name a model"
    if spec.runtime is None:
        return None
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
    the API server or llmop refuses is kept for the observer to show (InvalidSpec) and posted."""
    try:
        parsed = LLMBackendSpec.model_validate(dict(spec))
    except ValidationError as error:
        context.apply_errors[(namespace, name)] = f"spec is not valid: {error}"
        raise kopf.PermanentError(str(error)) from error
    problem = validate_backend_spec(parsed)
    context.apply_errors.pop((namespace, name), None)
    if problem:
        context.apply_errors[(namespace, name)] = problem
        kopf.event(body, type="Warning", reason="InvalidSpec", message=status_text(problem))
        return
    kube = context.kube
    if parsed.external is not None:
        return  # nothing to deploy: the daemon observes the URL
    try:
        # Before anything that leads to pods: a Secret that has not opted in never reaches one.
        await check_pod_secrets(kube, namespace, parsed)
        claim = build_model_claim(name, namespace, uid, parsed)
        if claim:
            await kube.apply(PVCS, claim)
        if runtime_pod(parsed).needs_agent:
            await ensure_agent_access(context, name, namespace, uid, parsed)
        await kube.apply(DEPLOYMENTS, build_deployment(name, namespace, uid, parsed, context.config))
        await kube.apply(SERVICES, build_service(name, namespace, uid, parsed))
        await ensure_model_pulls(kube, name, namespace, uid, parsed)
    except SecretNotUsable as error:
        # The observer shows it in status; kopf retries, so a label added later takes effect.
        raise kopf.TemporaryError(error.message, delay=SECRET_RETRY_SECONDS) from error
    except AgentTokenUnavailable as error:
        context.apply_errors[(namespace, name)] = str(error)
        kopf.event(body, type="Warning", reason="ApplyFailed", message=status_text(str(error)))
        raise kopf.TemporaryError(str(error), delay=30) from error
    except KubeAPIError as error:
        if error.status_code in (400, 403, 422):
            # The API server refused what the spec asked for: tell the user where they look.
            context.apply_errors[(namespace, name)] = (
                f"the API server refused the backend's objects: {error.message}"
            )
            kopf.event(body, type="Warning", reason="ApplyFailed", message=status_text(error.message))
            raise kopf.PermanentError(error.message) from error
        raise kopf.TemporaryError(str(error), delay=10) from error
    logger.info("ensured the objects of backend %s/%s", namespace, name)


async def ensure_agent_access(
    context: OperatorContext, name: str, namespace: str, uid: str, spec: LLMBackendSpec
) -> None:
    """Before the pods that mount it: the agent's token Secret (created once), and the
    NetworkPolicy that lets only the operator's pods reach the agent."""
    await ensure_agent_token(context, name, namespace, uid, spec.runtime or "")
    policy = build_agent_network_policy(name, namespace, uid, spec, context.config, AGENT_PORT)
    if policy is not None:
        await context.kube.apply(NETWORKPOLICIES, policy)


async def ensure_model_pulls(
    kube: KubeClient, name: str, namespace: str, uid: str, spec: LLMBackendSpec
) -> None:
    wanted = {}
    for model in spec.models:
        pull = build_model_pull(name, namespace, uid, model, runtime=spec.runtime)
        wanted[pull["metadata"]["name"]] = pull
    for pull in wanted.values():
        existing = await kube.get(MODELPULLS, pull["metadata"]["name"], namespace)
        if existing is None or existing.get("spec") != pull["spec"]:
            await kube.apply(MODELPULLS, pull)
    for existing in await kube.list(MODELPULLS, namespace, f"{BACKEND_LABEL}={name}"):
        owned = any(ref.get("uid") == uid for ref in existing["metadata"].get("ownerReferences", []))
        if owned and existing["metadata"]["name"] not in wanted:
            await kube.delete(MODELPULLS, existing["metadata"]["name"], namespace)

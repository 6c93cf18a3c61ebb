"""Ensure a backend's objects: create, resume and update share this one idempotent path."""

from __future__ import annotations

import kopf
from pydantic import ValidationError

from llmop.k8s.client import DEPLOYMENTS, MODELPULLS, PVCS, SERVICES, KubeAPIError, KubeClient
from llmop.loops.context import OperatorContext
from llmop.manifests import build_deployment, build_model_claim, build_model_pull, build_service
from llmop.manifests.labels import BACKEND_LABEL
from llmop.models.backend import LLMBackendSpec
from llmop.runtimes.registry import managed_descriptor
from llmop.sources import InvalidModelSource, parse_model_source


def validate_backend_spec(spec: LLMBackendSpec) -> str | None:
    """What the API server cannot check; a message the user can act on, or None."""
    if spec.runtime is None:
        return None
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
        kopf.event(body, type="Warning", reason="InvalidSpec", message=problem)
        return
    kube = context.kube
    if parsed.external is not None:
        return  # nothing to deploy: the daemon observes the URL
    try:
        claim = build_model_claim(name, namespace, uid, parsed)
        if claim:
            await kube.apply(PVCS, claim)
        await kube.apply(DEPLOYMENTS, build_deployment(name, namespace, uid, parsed, context.config))
        await kube.apply(SERVICES, build_service(name, namespace, uid, parsed))
        await ensure_model_pulls(kube, name, namespace, uid, parsed)
    except KubeAPIError as error:
        if error.status_code in (400, 403, 422):
            # The API server refused what the spec asked for: tell the user where they look.
            context.apply_errors[(namespace, name)] = (
                f"the API server refused the backend's objects: {error.message}"
            )
            kopf.event(body, type="Warning", reason="ApplyFailed", message=error.message)
            raise kopf.PermanentError(error.message) from error
        raise kopf.TemporaryError(str(error), delay=10) from error
    logger.info("ensured the objects of backend %s/%s", namespace, name)


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

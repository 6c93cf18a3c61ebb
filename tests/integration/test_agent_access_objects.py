"""Who may reach a backend's agent, and what its pods may do, on a real API server: the
NetworkPolicy llmop renders is valid, the agent token is made once and only llmop's own Secret is
trusted, and the runtime pod passes Pod Security admission ("baseline" as built, "restricted" with
a non-root runtime)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import yaml

from llmop.k8s.client import NETWORKPOLICIES, SECRETS
from llmop.loops.agent_token import AgentTokenUnavailable, agent_token, ensure_agent_token
from llmop.loops.context import OperatorContext
from llmop.loops.name_conflicts import NameConflict
from llmop.manifests import AGENT_PORT, build_deployment
from llmop.manifests.agent_access import build_agent_network_policy
from llmop.models.backend import LLMBackendSpec
from support.configs import IN_CLUSTER_CONFIG
from support.kube import REPO, Kube

pytestmark = pytest.mark.integration

#: The labels the chart gives the operator's pods (its selector labels), in the release namespace.
SPEC = {"runtime": "llamacpp", "models": [{"name": "hf://org/repo/m.gguf"}], "gpu": {"count": 0}}


def create_backend(kube: Kube, namespace: str, name: str, spec: dict[str, Any] = SPEC) -> str:
    """A real LLMBackend (no operator runs here): the owner of what the test builds; its UID."""
    manifest = {
        "apiVersion": "llmop.dev/v1alpha1",
        "kind": "LLMBackend",
        "metadata": {"name": name},
        "spec": spec,
    }
    kube.apply(manifest, namespace)
    return str(kube.get("llmb", name, namespace)["metadata"]["uid"])


async def test_the_agent_network_policy_is_accepted_as_built(
    kube: Kube, namespace: str, context: OperatorContext
) -> None:
    uid = create_backend(kube, namespace, "chat")
    spec = LLMBackendSpec.model_validate(SPEC)
    policy = build_agent_network_policy("chat", namespace, uid, spec, IN_CLUSTER_CONFIG, AGENT_PORT)
    assert policy is not None

    await context.kube.apply(NETWORKPOLICIES, policy)
    await context.kube.apply(NETWORKPOLICIES, policy)  # idempotent, as every ensure

    stored = kube.get("networkpolicy", "chat-agent", namespace)
    assert stored["spec"] == policy["spec"]  # nothing dropped or defaulted away
    assert stored["metadata"]["ownerReferences"][0]["uid"] == uid
    described = kube.run("describe", "networkpolicy", "chat-agent", "-n", namespace).stdout
    assert "kubernetes.io/metadata.name=llmop-system" in described and "8090/TCP" in described


async def test_the_token_secret_is_created_once_and_never_rotated(
    kube: Kube, namespace: str, context: OperatorContext
) -> None:
    uid = create_backend(kube, namespace, "chat")

    first = await ensure_agent_token(context, "chat", namespace, uid, "llamacpp")
    version = kube.get("secret", "chat-agent-token", namespace)["metadata"]["resourceVersion"]
    context.agent_tokens.clear()  # as after an operator restart
    again = await ensure_agent_token(context, "chat", namespace, uid, "llamacpp")

    assert first == again and len(first) >= 40
    secret = kube.get("secret", "chat-agent-token", namespace)
    assert secret["metadata"]["resourceVersion"] == version, "the token was rewritten"
    assert secret["metadata"]["ownerReferences"][0]["uid"] == uid
    context.agent_tokens.clear()
    assert await agent_token(context, "chat", namespace, uid) == first


async def test_a_secret_llmop_did_not_make_is_never_used_as_a_token(
    kube: Kube, namespace: str, context: OperatorContext
) -> None:
    uid = create_backend(kube, namespace, "chat")
    planted = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "chat-agent-token", "labels": {"llmop.dev/agent-token": "chat"}},
        "stringData": {"token": "a-tenants-secret"},
    }
    kube.apply(planted, namespace)

    # The rule of every object llmop writes: a Secret this backend does not control is not its.
    with pytest.raises(NameConflict, match="Secret 'chat-agent-token' already exists and does not belong"):
        await ensure_agent_token(context, "chat", namespace, uid, "llamacpp")
    with pytest.raises(AgentTokenUnavailable, match="is not the agent token"):
        await agent_token(context, "chat", namespace, uid)
    assert context.agent_tokens == {}
    missing = await context.kube.get(SECRETS, "other-agent-token", namespace)
    assert missing is None
    with pytest.raises(AgentTokenUnavailable, match="does not exist yet"):
        await agent_token(context, "other", namespace, uid)


def runtime_pod(spec: dict[str, Any], namespace: str) -> dict[str, Any]:
    """The pod the backend's Deployment makes, as a Pod: Pod Security admission enforces on pods."""
    deployment = build_deployment(
        "chat", namespace, "uid-1", LLMBackendSpec.model_validate(spec), IN_CLUSTER_CONFIG
    )
    template = copy.deepcopy(deployment["spec"]["template"])
    metadata = {"name": "chat-0", "labels": template["metadata"]["labels"]}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template["spec"]}


def admitted(kube: Kube, namespace: str, pod: dict[str, Any]) -> tuple[bool, str]:
    result = kube.run(
        "create", "--dry-run=server", "-n", namespace, "-f", "-", input=json.dumps(pod), check=False
    )
    return result.returncode == 0, result.stderr


@pytest.mark.parametrize("runtime", ["llamacpp", "vllm", "ollama"])
def test_runtime_pods_pass_pod_security_baseline_as_built(kube: Kube, runtime: str) -> None:
    example = yaml.safe_load((REPO / "examples" / f"{runtime}.yaml").read_text())["spec"]
    with kube.namespace("baseline") as namespace:
        kube.run("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=baseline")
        ok, why = admitted(kube, namespace, runtime_pod(example, namespace))
        assert ok, why


def test_a_runtime_pod_passes_pod_security_restricted_with_a_non_root_runtime(kube: Kube) -> None:
    with kube.namespace("restricted") as namespace:
        kube.run("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")

        ok, why = admitted(kube, namespace, runtime_pod(SPEC, namespace))
        assert not ok and "runAsNonRoot" in why, why  # the runtime images run as root by default

        non_root = {**SPEC, "podSecurityContext": {"runAsNonRoot": True, "runAsUser": 1000}}
        ok, why = admitted(kube, namespace, runtime_pod(non_root, namespace))
        assert ok, why

"""Hardened runtime pods, and who may reach the agent: what `kubectl get -o yaml` shows."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from pydantic import ValidationError

from llmop.config import OperatorConfig, parse_labels
from llmop.manifests import AGENT_PORT, build_deployment
from llmop.manifests.agent_access import (
    agent_token_of,
    build_agent_network_policy,
    build_agent_token_secret,
)
from llmop.models.backend import LLMBackendSpec

CONFIG = OperatorConfig(agent_image="llmop:test")
MODELS = {"ollama": "qwen3:0.6b", "vllm": "hf://Qwen/Qwen3-0.6B", "llamacpp": "hf://org/repo/m.gguf"}
HARDENED = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def spec(runtime: str, **fields: Any) -> LLMBackendSpec:
    fields.setdefault("models", [{"name": MODELS[runtime]}])
    return LLMBackendSpec.model_validate({"runtime": runtime, **fields})


def pod(backend: LLMBackendSpec) -> dict[str, Any]:
    result: dict[str, Any] = build_deployment("chat", "ai", "uid-1", backend, CONFIG)["spec"]["template"][
        "spec"
    ]
    return result


@pytest.mark.parametrize("runtime", ["ollama", "vllm", "llamacpp"])
def test_every_runtime_container_is_hardened_and_the_pod_has_no_api_token(runtime: str) -> None:
    spec_ = pod(spec(runtime))
    assert spec_["containers"][0]["securityContext"] == HARDENED
    assert spec_["automountServiceAccountToken"] is False
    assert spec_["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}


@pytest.mark.parametrize("runtime", ["vllm", "llamacpp"])
def test_the_agent_runs_as_non_root_on_a_read_only_root_with_a_writable_tmp(runtime: str) -> None:
    spec_ = pod(spec(runtime))
    agent = spec_["initContainers"][0]
    assert agent["securityContext"] == {
        **HARDENED,
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "readOnlyRootFilesystem": True,
    }
    assert {"name": "agent-tmp", "mountPath": "/tmp"} in agent["volumeMounts"]
    assert {"name": "agent-tmp", "emptyDir": {"sizeLimit": "64Mi"}} in spec_["volumes"]
    assert spec_["securityContext"]["fsGroup"] == 65532


@pytest.mark.parametrize("runtime", ["vllm", "llamacpp"])
def test_the_agent_reads_its_token_from_the_backends_secret_as_a_file(runtime: str) -> None:
    spec_ = pod(spec(runtime))
    agent = spec_["initContainers"][0]
    assert {
        "name": "agent-token",
        "secret": {"secretName": "chat-agent-token", "defaultMode": 0o440},
    } in spec_["volumes"]
    mount = {"name": "agent-token", "mountPath": "/var/run/llmop/agent-token", "readOnly": True}
    assert mount in agent["volumeMounts"]
    assert agent["args"][-2:] == ["--token-file", "/var/run/llmop/agent-token/token"]
    # Never as a variable: `kubectl describe pod` and the process environment would show it.
    assert all("token" not in variable["name"].lower() for variable in agent["env"])


def test_the_agent_is_told_the_models_the_backend_declares() -> None:
    backend = spec("llamacpp", models=[{"name": "hf://org/repo/a.gguf"}, {"name": "https://h/x,y.gguf"}])
    env = {variable["name"]: variable["value"] for variable in pod(backend)["initContainers"][0]["env"]}
    assert env["LLMOP_DECLARED_MODELS"] == '["hf://org/repo/a.gguf", "https://h/x,y.gguf"]'


def test_the_users_security_contexts_are_merged_over_llmops_key_by_key() -> None:
    localhost = {"type": "Localhost", "localhostProfile": "profiles/llm.json"}
    backend = spec(
        "llamacpp",
        podSecurityContext={
            "runAsNonRoot": True,
            "runAsUser": 1000,
            "runAsGroup": 1000,
            "fsGroup": 2000,
            "supplementalGroups": [3000],
        },
        securityContext={"readOnlyRootFilesystem": True, "runAsUser": 1001, "seccompProfile": localhost},
    )
    spec_ = pod(backend)
    assert spec_["securityContext"] == {
        "seccompProfile": {"type": "RuntimeDefault"},
        "fsGroup": 2000,
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "runAsGroup": 1000,
        "supplementalGroups": [3000],
    }
    assert spec_["containers"][0]["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": localhost,
        "readOnlyRootFilesystem": True,
        "runAsUser": 1001,
    }
    # The agent keeps its own user whatever the pod's.
    assert spec_["initContainers"][0]["securityContext"]["runAsUser"] == 65532


@pytest.mark.parametrize("runtime", ["ollama", "vllm", "llamacpp"])
def test_a_privilege_in_a_backend_stored_before_the_typed_schema_never_reaches_the_pod(runtime: str) -> None:
    # The CRD refuses these fields now; a backend stored earlier still reads back with them, and
    # llmop re-hardens its pods on the next reconcile.
    backend = spec(
        runtime,
        podSecurityContext={
            "runAsUser": 1000,
            "sysctls": [{"name": "kernel.shm_rmid_forced", "value": "0"}],
            "seLinuxOptions": {"type": "spc_t"},
            "windowsOptions": {"hostProcess": True},
        },
        securityContext={
            "privileged": True,
            "allowPrivilegeEscalation": True,
            "capabilities": {"add": ["SYS_ADMIN"]},
            "procMount": "Unmasked",
            "readOnlyRootFilesystem": True,
        },
    )
    spec_ = pod(backend)
    assert spec_["containers"][0]["securityContext"] == {**HARDENED, "readOnlyRootFilesystem": True}
    pod_context = spec_["securityContext"]
    assert pod_context["runAsUser"] == 1000
    assert not {"sysctls", "seLinuxOptions", "windowsOptions"} & set(pod_context)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("securityContext", {"seccompProfile": {"type": "Unconfined"}}),
        ("podSecurityContext", {"seccompProfile": {"type": "Unconfined"}}),
        ("podSecurityContext", {"runAsUser": -1}),
    ],
)
def test_an_unconfined_seccomp_profile_or_a_negative_id_is_not_a_valid_spec(
    field: str, value: dict[str, Any]
) -> None:
    with pytest.raises(ValidationError):
        spec("vllm", **{field: value})


def test_the_token_secret_is_owned_by_the_backend_and_only_that_one_is_trusted() -> None:
    secret = build_agent_token_secret("chat", "ai", "uid-1", "vllm", "tok")
    assert secret["metadata"]["name"] == "chat-agent-token"
    assert secret["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert secret["metadata"]["labels"]["llmop.dev/agent-token"] == "chat"
    assert base64.b64decode(secret["data"]["token"]) == b"tok"
    assert agent_token_of(secret, "chat", "uid-1") == "tok"
    # A backend of the same name created later, or a Secret llmop did not label, is not trusted.
    assert agent_token_of(secret, "chat", "uid-2") is None
    unlabelled = {**secret, "metadata": {**secret["metadata"], "labels": {}}}
    assert agent_token_of(unlabelled, "chat", "uid-1") is None
    assert agent_token_of({**secret, "data": {"token": "%%%"}}, "chat", "uid-1") is None


def test_the_network_policy_lets_only_the_operators_pods_reach_the_agent() -> None:
    config = OperatorConfig(operator_namespace="llmop-system", operator_pod_labels=parse_labels("a=b, c=d"))
    policy = build_agent_network_policy("chat", "ai", "uid-1", spec("vllm"), config, AGENT_PORT)
    assert policy is not None
    assert policy["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert policy["spec"]["podSelector"] == {
        "matchLabels": {"llmop.dev/backend": "chat", "app.kubernetes.io/instance": "chat"}
    }
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    agent_rule, runtime_rule = policy["spec"]["ingress"]
    assert agent_rule == {
        "from": [
            {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "llmop-system"}},
                "podSelector": {"matchLabels": {"a": "b", "c": "d"}},
            }
        ],
        "ports": [{"protocol": "TCP", "port": 8090}],
    }
    assert runtime_rule == {"ports": [{"protocol": "TCP", "port": 8000}]}  # open, as without a policy


def test_an_operator_outside_the_cluster_renders_no_network_policy() -> None:
    assert build_agent_network_policy("chat", "ai", "uid-1", spec("vllm"), CONFIG, AGENT_PORT) is None


def test_operator_pod_labels_are_key_value_pairs() -> None:
    assert parse_labels("") == {}
    with pytest.raises(ValueError, match="'oops' is not key=value"):
        parse_labels("a=b,oops")

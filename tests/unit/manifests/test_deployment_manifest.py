"""The runtime Deployment: what a user would see in `kubectl get deployment -o yaml`."""

from __future__ import annotations

import json
from typing import Any

import pytest

from llmop.agent.settings import parse_required_models
from llmop.config import OperatorConfig
from llmop.manifests import (
    AGENT_CONTAINER,
    RUNTIME_CONTAINER,
    backend_labels,
    backend_selector,
    build_deployment,
)
from llmop.models.backend import LLMBackendSpec
from llmop.models.duration import parse_duration
from llmop.sources import InvalidModelSource

CONFIG = OperatorConfig(
    images={"ollama": "ollama:test", "vllm": "vllm:test", "llamacpp": "llamacpp:test"},
    agent_image="llmop:test",
)
MODELS = {"ollama": "qwen3:0.6b", "vllm": "hf://Qwen/Qwen3-0.6B", "llamacpp": "hf://org/repo/m-Q4_K_M.gguf"}


def spec(runtime: str = "vllm", **fields: Any) -> LLMBackendSpec:
    fields.setdefault("models", [{"name": MODELS[runtime]}])
    return LLMBackendSpec.model_validate({"runtime": runtime, **fields})


def deployment(backend: LLMBackendSpec, config: OperatorConfig = CONFIG) -> dict[str, Any]:
    return build_deployment("chat", "ai", "uid-1", backend, config)


def pod(backend: LLMBackendSpec) -> dict[str, Any]:
    result: dict[str, Any] = deployment(backend)["spec"]["template"]["spec"]
    return result


def runtime(backend: LLMBackendSpec) -> dict[str, Any]:
    containers = pod(backend)["containers"]
    assert [c["name"] for c in containers] == [RUNTIME_CONTAINER]
    result: dict[str, Any] = containers[0]
    return result


def agent(backend: LLMBackendSpec) -> dict[str, Any]:
    init = pod(backend)["initContainers"]
    assert [c["name"] for c in init] == [AGENT_CONTAINER]
    result: dict[str, Any] = init[0]
    return result


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {variable["name"]: variable for variable in container.get("env", [])}


GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


# --- GPUs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("runtime_name", ["ollama", "vllm", "llamacpp"])
def test_a_gpu_backend_requests_and_limits_its_gpus_and_tolerates_the_gpu_taint(runtime_name: str) -> None:
    backend = spec(runtime_name, gpu={"count": 1})
    resources = runtime(backend)["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == "1"
    # Extended resources must have requests equal to limits.
    assert resources["requests"]["nvidia.com/gpu"] == "1"
    assert pod(backend)["tolerations"] == [GPU_TOLERATION]


def test_a_cpu_backend_asks_for_no_gpu_and_adds_no_toleration() -> None:
    backend = spec("vllm", gpu={"count": 0})
    assert "resources" not in runtime(backend)
    assert "tolerations" not in pod(backend)


@pytest.mark.parametrize(
    "toleration",
    [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"},
        {"key": "nvidia.com/gpu", "operator": "Exists"},
        {"operator": "Exists"},  # tolerates every taint
    ],
)
def test_a_user_toleration_of_the_gpu_key_is_kept_and_not_duplicated(toleration: dict[str, Any]) -> None:
    backend = spec("vllm", gpu={"count": 1}, tolerations=[toleration])
    assert pod(backend)["tolerations"] == [toleration]


def test_other_user_tolerations_are_kept_and_the_gpu_one_is_added() -> None:
    dedicated = {"key": "dedicated", "operator": "Equal", "value": "llm", "effect": "NoSchedule"}
    backend = spec("vllm", gpu={"count": 1}, tolerations=[dedicated])
    assert pod(backend)["tolerations"] == [dedicated, GPU_TOLERATION]


def test_user_tolerations_pass_through_on_a_cpu_backend() -> None:
    dedicated = {"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}
    assert pod(spec("ollama", tolerations=[dedicated]))["tolerations"] == [dedicated]


def test_a_custom_gpu_resource_name_is_used_for_limits_and_the_toleration() -> None:
    backend = spec("vllm", gpu={"count": 2, "resourceName": "amd.com/gpu"})
    resources = runtime(backend)["resources"]
    assert resources == {"requests": {"amd.com/gpu": "2"}, "limits": {"amd.com/gpu": "2"}}
    assert pod(backend)["tolerations"] == [
        {"key": "amd.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]


def test_user_resources_are_merged_with_the_gpus() -> None:
    backend = spec(
        "vllm",
        gpu={"count": 1},
        resources={"requests": {"cpu": "4", "memory": "16Gi"}, "limits": {"memory": "32Gi"}},
    )
    assert runtime(backend)["resources"] == {
        "requests": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"},
        "limits": {"memory": "32Gi", "nvidia.com/gpu": "1"},
    }


def test_gpu_spec_wins_over_a_gpu_count_written_in_resources() -> None:
    backend = spec("vllm", gpu={"count": 2}, resources={"limits": {"nvidia.com/gpu": "1"}})
    assert runtime(backend)["resources"]["limits"]["nvidia.com/gpu"] == "2"


# --- runtime container ---------------------------------------------------------------------------


def test_vllm_serves_the_first_model_from_the_volume_under_the_name_clients_send() -> None:
    backend = spec("vllm", models=[{"name": "hf://Qwen/Qwen3-0.6B@abc123"}, {"name": "hf://other/model"}])
    assert runtime(backend)["args"] == [
        "--model",
        "/models/hf/Qwen/Qwen3-0.6B/abc123",
        "--served-model-name",
        "Qwen/Qwen3-0.6B",
        "--host",
        "0.0.0.0",
        "--port",
        "8000",
    ]


def test_llamacpp_serves_the_gguf_file_under_its_file_name() -> None:
    backend = spec("llamacpp", models=[{"name": "https://example.com/files/tiny.gguf"}])
    assert runtime(backend)["args"] == [
        "--host",
        "0.0.0.0",
        "--port",
        "8080",
        "--model",
        "/models/url/https/example.com/files/tiny.gguf",
        "--alias",
        "tiny.gguf",
        "--metrics",
    ]


def test_llamacpp_serves_prometheus_metrics_once_whoever_asks() -> None:
    """--metrics: /metrics for the chart's runtimes PodMonitor; a user's own flag is not doubled."""
    plain = spec("llamacpp", models=[{"name": "https://example.com/files/tiny.gguf"}])
    assert runtime(plain)["args"].count("--metrics") == 1
    asked = spec("llamacpp", models=[{"name": "https://example.com/files/tiny.gguf"}], args=["--metrics"])
    assert runtime(asked)["args"].count("--metrics") == 1


def test_ollama_serves_with_its_settings_in_the_environment() -> None:
    container = runtime(spec("ollama"))
    assert container["args"] == ["serve"]
    env = env_of(container)
    assert env["OLLAMA_HOST"] == {"name": "OLLAMA_HOST", "value": "0.0.0.0:11434"}
    assert env["OLLAMA_MODELS"] == {"name": "OLLAMA_MODELS", "value": "/models/ollama"}
    assert env["OLLAMA_KEEP_ALIVE"] == {"name": "OLLAMA_KEEP_ALIVE", "value": "-1"}


@pytest.mark.parametrize("runtime_name", ["ollama", "vllm", "llamacpp"])
def test_extra_args_come_after_llmops_own(runtime_name: str) -> None:
    args = runtime(spec(runtime_name, args=["--max-model-len", "4096"]))["args"]
    assert args[-2:] == ["--max-model-len", "4096"]
    assert args[:-2] == runtime(spec(runtime_name))["args"]


@pytest.mark.parametrize("runtime_name", ["ollama", "vllm", "llamacpp"])
def test_a_custom_port_is_where_the_runtime_listens(runtime_name: str) -> None:
    container = runtime(spec(runtime_name, port=9000))
    assert container["ports"] == [{"name": "http", "containerPort": 9000, "protocol": "TCP"}]
    if runtime_name == "ollama":
        assert env_of(container)["OLLAMA_HOST"]["value"] == "0.0.0.0:9000"
    else:
        port_at = container["args"].index("--port")
        assert container["args"][port_at + 1] == "9000"


@pytest.mark.parametrize(("runtime_name", "port"), [("ollama", 11434), ("vllm", 8000), ("llamacpp", 8080)])
def test_the_runtime_port_defaults_per_runtime(runtime_name: str, port: int) -> None:
    assert runtime(spec(runtime_name))["ports"] == [
        {"name": "http", "containerPort": port, "protocol": "TCP"}
    ]


def test_vllm_without_models_gets_no_model_argument_and_requires_nothing() -> None:
    backend = spec("vllm", models=[])
    assert "--model" not in runtime(backend)["args"]
    assert env_of(agent(backend))["LLMOP_REQUIRED_MODELS"]["value"] == "[]"


def test_an_unreadable_model_name_raises_a_message_the_user_can_act_on() -> None:
    with pytest.raises(InvalidModelSource, match="hf://org/repo"):
        deployment(spec("vllm", models=[{"name": "hf://only-an-org"}]))


def test_an_external_backend_has_no_deployment() -> None:
    backend = LLMBackendSpec.model_validate({"external": {"url": "http://10.0.0.5:8000"}})
    with pytest.raises(ValueError, match="external"):
        deployment(backend)


@pytest.mark.parametrize("runtime_name", ["ollama", "vllm", "llamacpp"])
def test_the_image_defaults_to_the_operators_choice_for_the_runtime(runtime_name: str) -> None:
    assert runtime(spec(runtime_name))["image"] == f"{runtime_name}:test"


def test_the_image_can_be_overridden() -> None:
    assert (
        runtime(spec("vllm", image="registry.local/vllm:nightly"))["image"] == "registry.local/vllm:nightly"
    )
    # An empty string is "unset", as the field's description says.
    assert runtime(spec("vllm", image=""))["image"] == "vllm:test"


# --- probes ------------------------------------------------------------------------------------


def covered_seconds(probe: dict[str, Any]) -> int:
    result: int = probe["periodSeconds"] * probe["failureThreshold"]
    return result


@pytest.mark.parametrize("timeout", ["30m", "45m", "1h30m", "90s", "7s", "500ms", "0s"])
@pytest.mark.parametrize("runtime_name", ["ollama", "vllm", "llamacpp"])
def test_the_startup_probe_allows_the_whole_cold_start_budget(runtime_name: str, timeout: str) -> None:
    probe = runtime(spec(runtime_name, startup={"timeout": timeout}))["startupProbe"]
    seconds = parse_duration(timeout)
    assert probe["tcpSocket"] == {"port": "http"}
    assert probe["periodSeconds"] == 10
    assert probe["failureThreshold"] >= 1
    assert covered_seconds(probe) >= seconds
    # ... and not much more, or a broken runtime would be noticed late.
    assert covered_seconds(probe) < max(seconds, 1) + probe["periodSeconds"]


def test_thirty_minutes_of_startup_is_thirty_minutes_of_probes() -> None:
    probe = runtime(spec("vllm", startup={"timeout": "30m"}))["startupProbe"]
    assert probe["failureThreshold"] == 180 and covered_seconds(probe) == 1800


@pytest.mark.parametrize(
    ("runtime_name", "path"), [("ollama", "/api/version"), ("vllm", "/health"), ("llamacpp", "/health")]
)
def test_readiness_asks_the_runtimes_health_path(runtime_name: str, path: str) -> None:
    probe = runtime(spec(runtime_name))["readinessProbe"]
    assert probe["httpGet"] == {"path": path, "port": "http"}


@pytest.mark.parametrize("runtime_name", ["ollama", "vllm", "llamacpp"])
def test_liveness_is_a_patient_tcp_check(runtime_name: str) -> None:
    probe = runtime(spec(runtime_name))["livenessProbe"]
    assert probe["tcpSocket"] == {"port": "http"}
    assert probe["failureThreshold"] == 6 and probe["periodSeconds"] == 20


# --- agent sidecar -----------------------------------------------------------------------------


@pytest.mark.parametrize("runtime_name", ["vllm", "llamacpp"])
def test_runtimes_that_cannot_pull_get_the_agent_as_a_native_sidecar(runtime_name: str) -> None:
    sidecar = agent(spec(runtime_name, startup={"timeout": "30m"}))
    assert sidecar["restartPolicy"] == "Always"
    assert sidecar["image"] == "llmop:test"
    assert sidecar["args"] == [
        "agent",
        "--models-dir",
        "/models",
        "--port",
        "8090",
        "--token-file",
        "/var/run/llmop/agent-token/token",
    ]
    assert sidecar["ports"] == [{"name": "agent", "containerPort": 8090, "protocol": "TCP"}]
    assert sidecar["volumeMounts"] == [
        {"name": "models", "mountPath": "/models"},
        {"name": "agent-token", "mountPath": "/var/run/llmop/agent-token", "readOnly": True},
        {"name": "agent-tmp", "mountPath": "/tmp"},
    ]
    probe = sidecar["startupProbe"]
    assert probe["httpGet"] == {"path": "/startup", "port": "agent"}
    assert probe["periodSeconds"] == 5
    assert covered_seconds(probe) >= 1800


@pytest.mark.parametrize(
    ("runtime_name", "model", "required"),
    [
        ("vllm", "hf://Qwen/Qwen3-0.6B", "hf/Qwen/Qwen3-0.6B/main"),
        ("llamacpp", "hf://org/repo@v2/sub/m.gguf", "hf-file/org/repo/v2/sub/m.gguf"),
        ("llamacpp", "https://example.com:8443/m.gguf", "url/https/example.com:8443/m.gguf"),
    ],
)
def test_the_agent_waits_for_the_model_the_runtime_serves(
    runtime_name: str, model: str, required: str
) -> None:
    backend = spec(runtime_name, models=[{"name": model}, {"name": "hf://not/served"}])
    assert env_of(agent(backend))["LLMOP_REQUIRED_MODELS"] == {
        "name": "LLMOP_REQUIRED_MODELS",
        "value": f'["{required}"]',
    }
    # The runtime reads the very path the agent waits for.
    assert f"/models/{required}" in runtime(backend)["args"]


@pytest.mark.parametrize("runtime_name", ["vllm", "llamacpp"])
def test_the_hugging_face_token_of_spec_env_reaches_the_agent_as_a_reference(runtime_name: str) -> None:
    token = {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}}
    other = {"name": "VLLM_LOGGING_LEVEL", "value": "DEBUG"}
    backend = spec(runtime_name, env=[token, other])

    assert env_of(agent(backend))["HF_TOKEN"] == token
    assert "VLLM_LOGGING_LEVEL" not in env_of(agent(backend))  # the runtime's settings stay its own
    assert env_of(runtime(backend))["HF_TOKEN"] == token
    assert "HF_TOKEN" not in env_of(agent(spec(runtime_name)))


@pytest.mark.parametrize("runtime_name", ["vllm", "llamacpp"])
def test_of_two_hugging_face_tokens_the_agent_gets_the_last_as_the_runtime_does(runtime_name: str) -> None:
    # The API server refuses a container with one variable twice (422): the pod would never come.
    first = {"name": "HF_TOKEN", "value": "hf_old"}
    last = {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}}
    backend = spec(runtime_name, env=[first, {"name": "OTHER", "value": "x"}, last])

    agent_tokens = [variable for variable in agent(backend)["env"] if variable["name"] == "HF_TOKEN"]
    runtime_tokens = [variable for variable in runtime(backend)["env"] if variable["name"] == "HF_TOKEN"]
    assert agent_tokens == runtime_tokens == [last]


def test_a_required_model_whose_url_holds_a_comma_reaches_the_agent_whole() -> None:
    backend = spec("llamacpp", models=[{"name": "https://h.example/a,b/m.gguf"}])
    required = json.loads(env_of(agent(backend))["LLMOP_REQUIRED_MODELS"]["value"])
    assert required == ["url/https/h.example/a,b/m.gguf"]
    assert parse_required_models(json.dumps(required)) == ("url/https/h.example/a,b/m.gguf",)


def test_ollama_pulls_by_itself_and_gets_no_agent() -> None:
    assert "initContainers" not in pod(spec("ollama"))


# --- volumes -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("storage", "volume"),
    [
        (None, {"name": "models", "emptyDir": {"sizeLimit": "50Gi"}}),
        ({"size": "100Gi"}, {"name": "models", "persistentVolumeClaim": {"claimName": "chat-models"}}),
        (
            {"existingClaim": "shared-models"},
            {"name": "models", "persistentVolumeClaim": {"claimName": "shared-models"}},
        ),
    ],
)
@pytest.mark.parametrize("runtime_name", ["ollama", "vllm", "llamacpp"])
def test_the_model_volume_is_the_claim_or_an_empty_dir(
    runtime_name: str, storage: dict[str, str] | None, volume: dict[str, Any]
) -> None:
    backend = spec(runtime_name, storage=storage)
    assert pod(backend)["volumes"][0] == volume
    mount = {"name": "models", "mountPath": "/models"}
    assert mount in runtime(backend)["volumeMounts"]


def test_vllm_gets_a_memory_backed_dev_shm() -> None:
    backend = spec("vllm")
    assert {"name": "dshm", "emptyDir": {"medium": "Memory"}} in pod(backend)["volumes"]
    assert {"name": "dshm", "mountPath": "/dev/shm"} in runtime(backend)["volumeMounts"]
    assert all(volume["name"] != "dshm" for volume in pod(spec("ollama"))["volumes"])


# --- environment and the API key ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("runtime_name", "variable"), [("vllm", "VLLM_API_KEY"), ("llamacpp", "LLAMA_API_KEY")]
)
def test_the_api_key_comes_from_the_secret_and_never_as_a_literal(runtime_name: str, variable: str) -> None:
    backend = spec(runtime_name, apiKeySecretRef={"name": "llm-keys", "key": "chat"})
    entry = env_of(runtime(backend))[variable]
    assert entry == {"name": variable, "valueFrom": {"secretKeyRef": {"name": "llm-keys", "key": "chat"}}}
    assert "value" not in entry
    assert "--api-key" not in runtime(backend)["args"]


def test_ollama_has_no_api_key_setting_so_none_is_added() -> None:
    backend = spec("ollama", apiKeySecretRef={"name": "llm-keys", "key": "chat"})
    assert "llm-keys" not in repr(deployment(backend))


def test_user_env_is_appended() -> None:
    backend = spec("vllm", env=[{"name": "HF_HUB_OFFLINE", "value": "1"}])
    assert runtime(backend)["env"] == [{"name": "HF_HUB_OFFLINE", "value": "1"}]
    ollama = runtime(spec("ollama", env=[{"name": "OLLAMA_DEBUG", "value": "1"}]))["env"]
    assert ollama[-1] == {"name": "OLLAMA_DEBUG", "value": "1"}


def test_a_user_variable_replaces_llmops_of_the_same_name() -> None:
    # Server-side apply rejects two env entries with one name; the user's choice wins.
    backend = spec(
        "ollama",
        env=[{"name": "OLLAMA_KEEP_ALIVE", "value": "5m"}, {"name": "OLLAMA_KEEP_ALIVE", "value": "10m"}],
    )
    env = runtime(backend)["env"]
    names = [variable["name"] for variable in env]
    assert len(names) == len(set(names))
    assert env_of(runtime(backend))["OLLAMA_KEEP_ALIVE"]["value"] == "10m"


# --- pod and Deployment settings ----------------------------------------------------------------


def test_placement_settings_pass_through() -> None:
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "gpu", "operator": "In", "values": ["h100"]}]}
                ]
            }
        }
    }
    backend = spec(
        "vllm",
        nodeSelector={"pool": "h100"},
        affinity=affinity,
        runtimeClassName="nvidia",
        priorityClassName="inference",
    )
    result = pod(backend)
    assert result["nodeSelector"] == {"pool": "h100"}
    assert result["affinity"] == affinity
    assert result["runtimeClassName"] == "nvidia"
    assert result["priorityClassName"] == "inference"


def test_unset_placement_settings_are_left_out() -> None:
    result = pod(spec("vllm", runtimeClassName="", priorityClassName="", nodeSelector={}, affinity={}))
    for field in ("nodeSelector", "affinity", "runtimeClassName", "priorityClassName"):
        assert field not in result


def test_service_links_are_off_and_the_grace_period_is_thirty_seconds() -> None:
    result = pod(spec("ollama"))
    assert result["enableServiceLinks"] is False
    assert result["terminationGracePeriodSeconds"] == 30


@pytest.mark.parametrize(
    ("fields", "strategy"),
    [
        ({"gpu": {"count": 1}}, {"type": "Recreate"}),
        ({"storage": {"size": "10Gi"}}, {"type": "Recreate"}),
        ({"storage": {"existingClaim": "shared"}}, {"type": "Recreate"}),
        ({}, {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}),
    ],
)
def test_pods_that_cannot_run_beside_their_successor_are_recreated(
    fields: dict[str, Any], strategy: dict[str, Any]
) -> None:
    assert deployment(spec("llamacpp", **fields))["spec"]["strategy"] == strategy


def test_replicas_follow_the_spec() -> None:
    assert deployment(spec("ollama", replicas=3))["spec"]["replicas"] == 3
    assert deployment(spec("ollama", replicas=0))["spec"]["replicas"] == 0


@pytest.mark.parametrize("runtime_name", ["ollama", "vllm", "llamacpp"])
def test_labels_owner_and_selector(runtime_name: str) -> None:
    result = deployment(spec(runtime_name))
    labels = backend_labels("chat", runtime_name)
    assert result["apiVersion"] == "apps/v1" and result["kind"] == "Deployment"
    assert result["metadata"]["name"] == "chat" and result["metadata"]["namespace"] == "ai"
    assert result["metadata"]["labels"] == labels
    assert result["spec"]["template"]["metadata"]["labels"] == labels
    assert result["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "llmop.dev/v1alpha1",
            "kind": "LLMBackend",
            "name": "chat",
            "uid": "uid-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    selector = result["spec"]["selector"]["matchLabels"]
    assert selector == backend_selector("chat")
    # The API server rejects a Deployment whose selector does not match its own pods.
    assert selector.items() <= labels.items()


def test_the_selector_survives_a_change_of_runtime() -> None:
    # A Deployment's selector is immutable; switching runtime must not change it.
    assert deployment(spec("ollama"))["spec"]["selector"] == deployment(spec("vllm"))["spec"]["selector"]


def test_no_pod_template_annotation_is_needed_for_rollouts() -> None:
    assert "annotations" not in deployment(spec("vllm"))["spec"]["template"]["metadata"]


# --- determinism -------------------------------------------------------------------------------


FULL = {
    "gpu": {"count": 1},
    "storage": {"size": "10Gi"},
    "env": [{"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
    "tolerations": [{"key": "x", "operator": "Exists"}],
    "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}},
    "nodeSelector": {"pool": "a"},
    "apiKeySecretRef": {"name": "k", "key": "v"},
    "args": ["--foo"],
}


@pytest.mark.parametrize("runtime_name", ["ollama", "vllm", "llamacpp"])
def test_the_same_spec_always_builds_an_equal_deployment(runtime_name: str) -> None:
    first = deployment(spec(runtime_name, **FULL))
    second = deployment(spec(runtime_name, **FULL))
    assert first == second
    assert repr(first) == repr(second)  # same key order too


def test_a_change_of_args_changes_the_pod_template() -> None:
    before = deployment(spec("vllm", args=["--max-model-len", "4096"]))
    after = deployment(spec("vllm", args=["--max-model-len", "8192"]))
    assert before["spec"]["template"] != after["spec"]["template"]


def test_a_change_of_replicas_leaves_the_pod_template_alone() -> None:
    before = deployment(spec("vllm", replicas=1))
    after = deployment(spec("vllm", replicas=2))
    assert before["spec"]["template"] == after["spec"]["template"]


def test_changing_a_built_deployment_does_not_change_the_spec_or_the_next_build() -> None:
    backend = spec("vllm", **FULL)
    first = deployment(backend)
    template = first["spec"]["template"]["spec"]
    template["affinity"]["podAntiAffinity"]["changed"] = True
    template["tolerations"][0]["key"] = "changed"
    template["containers"][0]["env"][-1]["valueFrom"]["fieldRef"]["fieldPath"] = "changed"
    template["containers"][0]["resources"]["limits"]["cpu"] = "1"
    assert deployment(backend) == deployment(spec("vllm", **FULL))

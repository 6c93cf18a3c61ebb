"""One full Deployment per runtime, compared with reviewed YAML in golden/.

After an intended change: `LLMOP_UPDATE_GOLDEN=1 pytest tests/unit/manifests`, then review the
diff of golden/ like any other change.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmop.config import OperatorConfig
from llmop.manifests import build_deployment
from llmop.manifests.disruption_budget import build_disruption_budget
from llmop.models.backend import LLMBackendSpec

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("LLMOP_UPDATE_GOLDEN") == "1"

# Images are fixed here so that a new default image in the config does not rewrite the files.
CONFIG = OperatorConfig(
    images={
        "ollama": "docker.io/ollama/ollama:test",
        "vllm": "docker.io/vllm/vllm-openai:test",
        "llamacpp": "ghcr.io/ggml-org/llama.cpp:server-test",
    },
    agent_image="ghcr.io/llmop/llmop:test",
)

SPECS: dict[str, dict[str, Any]] = {
    # A GPU Ollama with a persistent model store and one setting of the user's own.
    "ollama": {
        "runtime": "ollama",
        "models": [{"name": "qwen3:0.6b"}],
        "gpu": {"count": 1},
        "storage": {"size": "20Gi", "storageClassName": "fast"},
        "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
        "env": [{"name": "OLLAMA_CONTEXT_LENGTH", "value": "8192"}],
    },
    # A vLLM on a shared claim, with an API key, a RuntimeClass and a longer cold start.
    "vllm": {
        "runtime": "vllm",
        "replicas": 2,
        "models": [{"name": "hf://Qwen/Qwen3-0.6B@main"}],
        "gpu": {"count": 1},
        "resources": {"requests": {"cpu": "4", "memory": "16Gi"}, "limits": {"memory": "32Gi"}},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "llm", "effect": "NoSchedule"}],
        "runtimeClassName": "nvidia",
        "priorityClassName": "inference",
        "storage": {"existingClaim": "shared-models"},
        "args": ["--max-model-len", "4096"],
        "apiKeySecretRef": {"name": "llm-keys", "key": "chat"},
        "startup": {"timeout": "45m"},
        # Pod fields of a production team: a private registry, a cloud identity, a scraper's
        # annotation, spread over zones (this backend's pods counted by default) and nodes.
        "imagePullSecrets": [{"name": "registry-creds"}],
        "serviceAccountName": "model-reader",
        "podLabels": {"team": "search", "cost-center": "ml-42"},
        "podAnnotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "8000"},
        "topologySpreadConstraints": [
            {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "minDomains": 2},
            {
                "maxSkew": 2,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": {"team": "search"}},
            },
        ],
    },
    # A vLLM over two GPUs of a chosen product and size, beside the user's own zone affinity:
    # tensor parallelism 2, every node selector term asking for the GPUs.
    "vllm-two-gpus": {
        "runtime": "vllm",
        "models": [{"name": "hf://Qwen/Qwen3-32B"}],
        "gpu": {"count": 2, "product": ["NVIDIA-H100-80GB-HBM3", "NVIDIA-H200"], "minMemory": "80G"},
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["a"]}
                            ]
                        }
                    ]
                }
            }
        },
        "args": ["--max-model-len", "32768"],
    },
    # A CPU llama.cpp with its GGUF on an emptyDir.
    "llamacpp": {
        "runtime": "llamacpp",
        "models": [{"name": "hf://unsloth/Qwen3-0.6B-GGUF/Qwen3-0.6B-Q4_K_M.gguf"}],
        "resources": {"requests": {"cpu": "2", "memory": "2Gi"}},
        "args": ["--ctx-size", "4096"],
        "apiKeySecretRef": {"name": "llm-keys", "key": "local"},
        "port": 8081,
        # A chat template from a ConfigMap, and scratch space.
        "volumes": [
            {"name": "templates", "configMap": {"name": "chat-templates"}},
            {"name": "scratch", "emptyDir": {"sizeLimit": "1Gi"}},
        ],
        "volumeMounts": [
            {"name": "templates", "mountPath": "/etc/templates", "readOnly": True},
            {"name": "scratch", "mountPath": "/scratch"},
        ],
    },
}


def to_yaml(obj: dict[str, Any]) -> str:
    return yaml.safe_dump(obj, sort_keys=False, default_flow_style=False, width=120)


def check_golden(path: Path, obj: dict[str, Any], update: bool) -> None:
    """Compare `obj` with the YAML at `path` (key order included); with `update`, rewrite it."""
    text = to_yaml(obj)
    if update:
        path.write_text(text)
        return
    if not path.exists():
        pytest.fail(f"{path} is missing; create it with LLMOP_UPDATE_GOLDEN=1 and review it")
    assert text == path.read_text(), f"{path.name} differs; if intended, rerun with LLMOP_UPDATE_GOLDEN=1"


@pytest.mark.parametrize("runtime", sorted(SPECS))
def test_deployment_matches_golden(runtime: str) -> None:
    spec = LLMBackendSpec.model_validate(SPECS[runtime])
    deployment = build_deployment("chat", "ai", "0b5e1c2a-8f3d-4e51-9a7c-2d6f0e4b1a93", spec, CONFIG)
    check_golden(GOLDEN / f"deployment-{runtime}.yaml", deployment, UPDATE)


def test_disruption_budget_matches_golden() -> None:
    # The two-replica vLLM backend: one pod at a time may be drained.
    spec = LLMBackendSpec.model_validate(SPECS["vllm"])
    budget = build_disruption_budget("chat", "ai", "0b5e1c2a-8f3d-4e51-9a7c-2d6f0e4b1a93", spec)
    assert budget is not None
    check_golden(GOLDEN / "poddisruptionbudget-vllm.yaml", budget, UPDATE)


def test_golden_files_parse_back_to_the_built_objects() -> None:
    # Guards the YAML form itself: quoted port numbers stay strings, booleans stay booleans.
    for runtime, raw in SPECS.items():
        path = GOLDEN / f"deployment-{runtime}.yaml"
        built = build_deployment(
            "chat", "ai", "0b5e1c2a-8f3d-4e51-9a7c-2d6f0e4b1a93", LLMBackendSpec.model_validate(raw), CONFIG
        )
        assert yaml.safe_load(path.read_text()) == built


def test_a_difference_from_the_golden_file_fails(tmp_path: Path) -> None:
    path = tmp_path / "deployment.yaml"
    obj: dict[str, Any] = {"spec": {"replicas": 1, "args": ["--a"]}}
    check_golden(path, obj, update=True)
    check_golden(path, obj, update=False)
    with pytest.raises(AssertionError):
        check_golden(path, {"spec": {"replicas": 1, "args": ["--b"]}}, update=False)
    with pytest.raises(AssertionError):
        # The file pins key order as well, so the golden diff shows exactly what the builder emits.
        check_golden(path, {"spec": {"args": ["--a"], "replicas": 1}}, update=False)


def test_a_missing_golden_file_fails(tmp_path: Path) -> None:
    with pytest.raises(pytest.fail.Exception, match="LLMOP_UPDATE_GOLDEN"):
        check_golden(tmp_path / "absent.yaml", {"a": 1}, update=False)

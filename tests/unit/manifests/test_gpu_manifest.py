"""GPUs in the runtime pod: how many a runtime uses, and which nodes' GPUs the pods run on."""

from __future__ import annotations

from typing import Any

import pytest

from llmop.config import OperatorConfig
from llmop.manifests import build_deployment
from llmop.manifests.gpu_placement import min_memory_mib
from llmop.models.backend import LLMBackendSpec

CONFIG = OperatorConfig(
    images={"ollama": "ollama:test", "vllm": "vllm:test", "llamacpp": "llamacpp:test"},
    agent_image="llmop:test",
)
MODELS = {"ollama": "qwen3:0.6b", "vllm": "hf://Qwen/Qwen3-0.6B", "llamacpp": "hf://org/repo/m-Q4_K_M.gguf"}


def pod(runtime: str = "vllm", **fields: Any) -> dict[str, Any]:
    spec = LLMBackendSpec.model_validate(
        {"runtime": runtime, "models": [{"name": MODELS[runtime]}], **fields}
    )
    result: dict[str, Any] = build_deployment("chat", "ai", "uid-1", spec, CONFIG)["spec"]["template"]["spec"]
    return result


def args(runtime: str = "vllm", **fields: Any) -> list[str]:
    result: list[str] = pod(runtime, **fields)["containers"][0]["args"]
    return result


def flag(arguments: list[str], name: str) -> str | None:
    return arguments[arguments.index(name) + 1] if name in arguments else None


# --- vLLM tensor parallelism --------------------------------------------------------------------


@pytest.mark.parametrize("count", [2, 4, 8])
def test_vllm_spreads_the_model_over_every_gpu_of_a_replica(count: int) -> None:
    assert flag(args(gpu={"count": count}), "--tensor-parallel-size") == str(count)


@pytest.mark.parametrize("count", [0, 1])
def test_vllm_on_one_gpu_or_none_gets_no_tensor_parallelism(count: int) -> None:
    assert "--tensor-parallel-size" not in args(gpu={"count": count})


@pytest.mark.parametrize(
    "user_args",
    [
        ["--tensor-parallel-size", "2"],
        ["--tensor-parallel-size=2"],
        ["-tp", "2"],
        ["-tp=2"],
        ["--tensor_parallel_size", "2"],
    ],
)
def test_vllm_keeps_the_users_tensor_parallelism(user_args: list[str]) -> None:
    # e.g. 4 GPUs as 2-way tensor and 2-way pipeline parallelism: the user's choice, given once.
    given = [*user_args, "--pipeline-parallel-size", "2"]
    result = args(gpu={"count": 4}, args=given)
    assert result[-len(given) :] == given
    names = ("--tensor-parallel-size", "-tp", "--tensor_parallel_size")
    assert sum(a.split("=")[0] in names for a in result) == 1


def test_an_argument_that_only_contains_the_flag_name_does_not_count() -> None:
    result = args(gpu={"count": 2}, args=["--served-model-name", "--tensor-parallel-size-docs"])
    assert flag(result, "--tensor-parallel-size") == "2"


def test_other_runtimes_get_no_tensor_parallelism() -> None:
    assert "--tensor-parallel-size" not in args("llamacpp", gpu={"count": 2})
    assert "--tensor-parallel-size" not in args("ollama", gpu={"count": 2})


# --- llama.cpp GPU offload ----------------------------------------------------------------------


@pytest.mark.parametrize("count", [1, 2])
def test_llamacpp_offloads_every_layer_when_it_has_gpus(count: int) -> None:
    assert flag(args("llamacpp", gpu={"count": count}), "--n-gpu-layers") == "999"


def test_llamacpp_on_cpu_offloads_nothing() -> None:
    assert "--n-gpu-layers" not in args("llamacpp")


@pytest.mark.parametrize("user_args", [["-ngl", "20"], ["--gpu-layers", "20"], ["--n-gpu-layers", "20"]])
def test_llamacpp_keeps_the_users_offload(user_args: list[str]) -> None:
    result = args("llamacpp", gpu={"count": 1}, args=user_args)
    assert result.count("999") == 0 and result[-2:] == user_args


def test_llamacpp_keeps_an_offload_set_in_the_environment() -> None:
    env = [{"name": "LLAMA_ARG_N_GPU_LAYERS", "value": "10"}]
    assert "--n-gpu-layers" not in args("llamacpp", gpu={"count": 1}, env=env)


# --- GPU product and memory ---------------------------------------------------------------------

REQUIRED = "requiredDuringSchedulingIgnoredDuringExecution"


def terms(result: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = result["affinity"]["nodeAffinity"][REQUIRED]["nodeSelectorTerms"]
    return found


PRODUCT = {"key": "nvidia.com/gpu.product", "operator": "In", "values": ["NVIDIA-H100-80GB-HBM3"]}


@pytest.mark.parametrize("runtime", ["vllm", "llamacpp", "ollama"])
def test_a_gpu_product_selects_nodes_by_the_feature_discovery_label(runtime: str) -> None:
    result = pod(runtime, gpu={"count": 1, "product": ["NVIDIA-H100-80GB-HBM3"]})
    assert terms(result) == [{"matchExpressions": [PRODUCT]}]


def test_several_products_are_alternatives() -> None:
    result = pod(gpu={"count": 1, "product": ["NVIDIA-A100-SXM4-80GB", "NVIDIA-H100-80GB-HBM3"]})
    [term] = terms(result)
    assert term["matchExpressions"][0]["values"] == ["NVIDIA-A100-SXM4-80GB", "NVIDIA-H100-80GB-HBM3"]


@pytest.mark.parametrize(
    ("size", "floor"),
    [("40Gi", "40959"), ("80G", "76293"), ("1Mi", "0"), ("1", "0"), ("81559Mi", "81558")],
)
def test_a_minimum_memory_needs_at_least_that_many_mib_on_the_label(size: str, floor: str) -> None:
    # The label counts whole MiB: a node with exactly the minimum (rounded up to MiB) qualifies.
    result = pod(gpu={"count": 1, "minMemory": size})
    assert terms(result) == [
        {"matchExpressions": [{"key": "nvidia.com/gpu.memory", "operator": "Gt", "values": [floor]}]}
    ]


def test_an_80gb_gpu_has_80g_but_not_80gi() -> None:
    # GPU feature discovery labels an H100 80GB with 81559 MiB (as hack/localcluster.py does its
    # fake nodes): 80G selects it, 80Gi (81920 MiB) does not. docs/architecture.md says so.
    assert min_memory_mib("80G") <= 81559 < min_memory_mib("80Gi")


def test_the_gpu_choice_is_added_to_every_term_of_the_users_affinity() -> None:
    zone = {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["a"]}
    pool = {"key": "pool", "operator": "In", "values": ["big"]}
    preferred = [{"weight": 1, "preference": {"matchExpressions": [pool]}}]
    affinity = {
        "nodeAffinity": {
            REQUIRED: {"nodeSelectorTerms": [{"matchExpressions": [zone]}, {"matchFields": [pool]}]},
            "preferredDuringSchedulingIgnoredDuringExecution": preferred,
        },
        "podAntiAffinity": {"x": 1},
    }
    result = pod(gpu={"count": 1, "product": ["NVIDIA-H100-80GB-HBM3"]}, affinity=affinity)
    assert terms(result) == [
        {"matchExpressions": [zone, PRODUCT]},
        {"matchFields": [pool], "matchExpressions": [PRODUCT]},
    ]
    assert result["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"] == preferred
    assert result["affinity"]["podAntiAffinity"] == {"x": 1}


def test_the_users_affinity_passes_through_unchanged_without_a_gpu_choice() -> None:
    affinity = {"podAntiAffinity": {"x": 1}}
    assert pod(gpu={"count": 1}, affinity=affinity)["affinity"] == affinity
    assert "affinity" not in pod(gpu={"count": 1})


@pytest.mark.parametrize(
    "odd", [{"nodeAffinity": "h100"}, {"nodeAffinity": {REQUIRED: {"nodeSelectorTerms": "x"}}}]
)
def test_an_affinity_of_the_wrong_shape_is_passed_on_for_the_api_server_to_refuse(
    odd: dict[str, Any],
) -> None:
    assert pod(gpu={"count": 1, "product": ["NVIDIA-H100-80GB-HBM3"]}, affinity=odd)["affinity"] == odd


def test_building_does_not_change_the_spec() -> None:
    affinity = {"nodeAffinity": {REQUIRED: {"nodeSelectorTerms": [{"matchExpressions": []}]}}}
    spec = LLMBackendSpec.model_validate(
        {"runtime": "vllm", "gpu": {"count": 1, "minMemory": "40Gi"}, "affinity": affinity}
    )
    first = build_deployment("chat", "ai", "uid-1", spec, CONFIG)
    assert spec.affinity == {"nodeAffinity": {REQUIRED: {"nodeSelectorTerms": [{"matchExpressions": []}]}}}
    assert build_deployment("chat", "ai", "uid-1", spec, CONFIG) == first

"""A ModelCache's objects, and the pods of a backend on a cache: they read the cache's claim
read-only, carry no download agent, and roll without Recreate."""

from __future__ import annotations

from typing import Any

from llmop.config import OperatorConfig
from llmop.loops.backend_ensure import validate_backend_spec
from llmop.loops.model_cache import filler_config
from llmop.manifests import build_deployment
from llmop.manifests.model_cache import (
    build_cache_claim,
    build_filler_deployment,
    build_filler_token_secret,
    cache_claim,
)
from llmop.manifests.resolved_defaults import current_defaults
from llmop.models.backend import LLMBackendSpec
from llmop.models.cache import ModelCacheSpec

CONFIG = OperatorConfig()
MODEL = "hf://org/repo/model.gguf"


def cache_spec(**storage: Any) -> ModelCacheSpec:
    return ModelCacheSpec.model_validate(
        {"storage": storage or {"size": "100Gi"}, "models": [{"name": MODEL}, {"name": "hf://org/other"}]}
    )


def backend_on_cache(**fields: Any) -> LLMBackendSpec:
    return LLMBackendSpec.model_validate(
        {"runtime": "llamacpp", "models": [{"name": MODEL}], "modelCache": {"name": "shared"}, **fields}
    )


def test_the_cache_claim_is_read_write_many_and_owned_by_the_cache() -> None:
    claim = build_cache_claim("shared", "team", "uid-c", cache_spec(size="100Gi", storageClassName="nfs"))
    assert claim is not None
    assert claim["metadata"]["name"] == "shared-model-cache"
    assert claim["spec"] == {
        "accessModes": ["ReadWriteMany"],
        "resources": {"requests": {"storage": "100Gi"}},
        "storageClassName": "nfs",
    }
    (owner,) = claim["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("ModelCache", "uid-c", True)


def test_an_existing_claim_is_mounted_never_created() -> None:
    spec = cache_spec(existingClaim="team-nfs")
    assert build_cache_claim("shared", "team", "uid-c", spec) is None
    assert cache_claim("shared", spec) == "team-nfs"


def test_the_filler_is_one_agent_pod_and_the_models_are_not_in_it() -> None:
    deployment = build_filler_deployment("shared", "team", "uid-c", cache_spec(), CONFIG)
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["name"] == "agent" and container["image"] == CONFIG.agent_image
    # The claim's size bounds the cache (a share reports the free room of the whole share).
    assert container["env"] == [{"name": "LLMOP_MODELS_VOLUME_LIMIT", "value": "100Gi"}]
    existing = build_filler_deployment("shared", "team", "uid-c", cache_spec(existingClaim="nfs"), CONFIG)
    assert "env" not in existing["spec"]["template"]["spec"]["containers"][0]
    # Adding a model to the cache must not restart the filler (it would hash every model again).
    fewer = ModelCacheSpec.model_validate({"storage": {"size": "100Gi"}, "models": [{"name": MODEL}]})
    assert build_filler_deployment("shared", "team", "uid-c", fewer, CONFIG) == deployment
    # Pod Security baseline (and restricted's container rules): non-root, nothing to escalate.
    security = container["securityContext"]
    assert security["runAsNonRoot"] and not security["allowPrivilegeEscalation"]
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert pod["automountServiceAccountToken"] is False
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["models"]["persistentVolumeClaim"] == {"claimName": "shared-model-cache"}
    assert volumes["agent-token"]["secret"]["secretName"] == "shared-filler-token"
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert labels["llmop.dev/model-cache"] == "shared" and "llmop.dev/backend" not in labels


def test_the_filler_token_is_marked_as_the_cache_own() -> None:
    secret = build_filler_token_secret("shared", "team", "uid-c", "s3cret")
    assert secret["metadata"]["labels"]["llmop.dev/cache-token"] == "shared"
    assert secret["metadata"]["ownerReferences"][0]["uid"] == "uid-c"


def test_pods_on_a_cache_read_its_claim_read_only_without_an_agent_and_roll_without_recreate() -> None:
    deployment = build_deployment(
        "chat", "team", "uid-b", backend_on_cache(replicas=3), CONFIG, cache_claim="shared-model-cache"
    )
    pod = deployment["spec"]["template"]["spec"]
    assert "initContainers" not in pod
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["models"] == {
        "name": "models",
        "persistentVolumeClaim": {"claimName": "shared-model-cache", "readOnly": True},
    }
    assert "agent-token" not in volumes
    runtime = pod["containers"][0]
    assert {"name": "models", "mountPath": "/models", "readOnly": True} in runtime["volumeMounts"]
    assert "--model" in runtime["args"]
    assert runtime["args"][runtime["args"].index("--model") + 1].startswith("/models/hf-file/org/repo/")
    # No agent, so no agent image is recorded: an agent upgrade restarts none of these pods.
    assert current_defaults(backend_on_cache(), CONFIG, "d").agent_image is None


def test_a_gpu_backend_on_a_cache_still_recreates() -> None:
    spec = backend_on_cache(gpu={"count": 1})
    deployment = build_deployment("chat", "team", "uid-b", spec, CONFIG, cache_claim="shared-model-cache")
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}


def test_a_cache_for_ollama_or_beside_storage_is_refused_by_the_operator_too() -> None:
    ollama = LLMBackendSpec.model_validate(
        {"runtime": "ollama", "models": [{"name": "qwen3:0.6b"}], "modelCache": {"name": "shared"}}
    )
    assert "vllm or llamacpp" in (validate_backend_spec(ollama) or "")
    with_storage = backend_on_cache(storage={"size": "1Gi"})
    assert "without spec.storage" in (validate_backend_spec(with_storage) or "")
    assert validate_backend_spec(backend_on_cache()) is None


def test_an_operator_upgrade_keeps_the_running_filler_image() -> None:
    old = CONFIG.model_copy(update={"agent_image": "llmop:0.1", "hf_endpoint": "http://mirror"})
    running = build_filler_deployment("shared", "team", "uid-c", cache_spec(), old)
    kept = filler_config(CONFIG, running)
    assert (kept.agent_image, kept.hf_endpoint) == ("llmop:0.1", "http://mirror")
    assert filler_config(CONFIG, None) == CONFIG


def test_the_hugging_face_token_reaches_the_filler_as_a_reference() -> None:
    spec = ModelCacheSpec.model_validate(
        {
            "storage": {"existingClaim": "nfs"},
            "models": [{"name": MODEL}],
            "hfTokenSecretRef": {"name": "hf", "key": "token"},
        }
    )
    (container,) = build_filler_deployment("shared", "team", "uid-c", spec, CONFIG)["spec"]["template"][
        "spec"
    ]["containers"]
    assert container["env"] == [
        {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}}
    ]

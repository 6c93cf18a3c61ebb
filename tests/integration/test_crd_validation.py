"""The CRDs on a real API server: examples apply, and each CEL rule rejects bad input with its message."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.kube import REPO, Kube

pytestmark = pytest.mark.integration

EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_is_accepted_by_the_api_server(kube: Kube, namespace: str, path: Path) -> None:
    result = kube.run("apply", "--dry-run=server", "-n", namespace, "-f", str(path))
    assert "created (server dry run)" in result.stdout


def test_kubectl_shows_short_names_and_category(kube: Kube, namespace: str) -> None:
    kube.run("apply", "-n", namespace, "-f", str(REPO / "examples" / "external.yaml"))
    listed = kube.run("get", "llmop", "-n", namespace).stdout
    assert "llmbackend.llmop.dev/external-openai" in listed
    header = kube.run("get", "llmb", "-n", namespace).stdout.splitlines()[0].split()
    assert header == ["NAME", "RUNTIME", "PHASE", "READY", "MODELS", "ENDPOINT", "STAGE", "AGE"]
    explained = kube.run("explain", "llmbackend.spec.startup.timeout").stdout
    assert "Cold-start budget" in explained
    for field, words in [
        ("imagePullSecrets", "registry credentials"),
        ("serviceAccountName", "GKE Workload Identity"),
        ("automountServiceAccountToken", "Defaults to false"),
        ("podLabels", "Not llmop's own"),
        ("podAnnotations", "Not AppArmor or seccomp"),
        ("topologySpreadConstraints.labelSelector", "this backend's pods"),
        ("disruptionBudget", "replicas > 1"),
        ("volumes", "configMap, secret, emptyDir (with a sizeLimit) or persistentVolumeClaim only"),
        ("volumeMounts.mountPath", "not /models or /dev/shm"),
    ]:
        # Joined: kubectl wraps the description.
        assert words in " ".join(kube.run("explain", f"llmbackend.spec.{field}").stdout.split()), field
    explained = kube.run("explain", "llmbackend.spec.gpu").stdout
    assert "product" in explained and "minMemory" in explained


def _backend(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "llmop.dev/v1alpha1",
        "kind": "LLMBackend",
        "metadata": {"name": "bad"},
        "spec": spec,
    }


def _pull(spec: dict[str, Any]) -> dict[str, Any]:
    base = {"backendRef": {"name": "chat"}, "model": "qwen3:0.6b"}
    return {
        "apiVersion": "llmop.dev/v1alpha1",
        "kind": "ModelPull",
        "metadata": {"name": "bad"},
        "spec": {**base, **spec},
    }


BAD_MANIFESTS = {
    "runtime-and-external": (
        _backend({"runtime": "ollama", "external": {"url": "http://10.0.0.5:8000"}}),
        "set exactly one of spec.runtime",
    ),
    "neither-runtime-nor-external": (_backend({"replicas": 1}), "set exactly one of spec.runtime"),
    "negative-replicas": (_backend({"runtime": "vllm", "replicas": -1}), "spec.replicas: Invalid value"),
    "negative-gpus": (_backend({"runtime": "vllm", "gpu": {"count": -2}}), "must be 0 or more"),
    "gpu-product-empty-list": (
        _backend({"runtime": "vllm", "gpu": {"count": 1, "product": []}}),
        "gpu.product must list at least one product, or be left out",
    ),
    "gpu-product-not-a-label-value": (
        _backend({"runtime": "vllm", "gpu": {"count": 1, "product": ["NVIDIA H100"]}}),
        "each gpu.product must be a node label value",
    ),
    "gpu-product-blank": (
        _backend({"runtime": "vllm", "gpu": {"count": 1, "product": [""]}}),
        "each gpu.product must be a node label value",
    ),
    "gpu-product-too-many": (
        _backend({"runtime": "vllm", "gpu": {"count": 1, "product": [f"p{i}" for i in range(17)]}}),
        "spec.gpu.product: Too many",
    ),
    "gpu-min-memory-not-a-size": (
        _backend({"runtime": "vllm", "gpu": {"count": 1, "minMemory": "lots"}}),
        "gpu.minMemory must be a size above 0",
    ),
    "gpu-min-memory-zero": (
        _backend({"runtime": "vllm", "gpu": {"count": 1, "minMemory": "0Gi"}}),
        "gpu.minMemory must be a size above 0",
    ),
    "gpu-min-memory-fraction": (
        _backend({"runtime": "vllm", "gpu": {"count": 1, "minMemory": "1.5Gi"}}),
        "gpu.minMemory must be a size above 0",
    ),
    "gpu-min-memory-huge": (
        _backend({"runtime": "vllm", "gpu": {"count": 1, "minMemory": "99999999Ti"}}),
        "gpu.minMemory must be a size above 0",
    ),
    "gpu-choice-without-gpus": (
        _backend({"runtime": "vllm", "gpu": {"product": ["NVIDIA-H100-80GB-HBM3"]}}),
        "set gpu.count to 1 or more",
    ),
    "gpu-memory-without-gpus": (
        _backend({"runtime": "vllm", "gpu": {"count": 0, "minMemory": "40Gi"}}),
        "set gpu.count to 1 or more",
    ),
    "bad-duration": (
        _backend({"runtime": "vllm", "startup": {"timeout": "ten minutes"}}),
        "must be a duration such as 30s, 5m or 1h30m",
    ),
    "bad-probe-interval": (
        _backend({"runtime": "vllm", "startup": {"probeInterval": "2"}}),
        "spec.startup.probeInterval",
    ),
    "not-a-url": (
        _backend({"external": {"url": "10.0.0.5:8000"}}),
        "url must be an absolute http:// or https:// URL",
    ),
    "ftp-url": (_backend({"external": {"url": "ftp://10.0.0.5/models"}}), "url must be an absolute http://"),
    "url-with-user-info": (
        _backend({"external": {"url": "http://admin:hunter2@10.0.0.5:8000"}}),
        "url must not carry user info",
    ),
    "url-with-query": (
        _backend({"external": {"url": "http://10.0.0.5:8000/v1?key=abc"}}),
        "url must not carry a query",
    ),
    # A bare `?` would swallow the probe path: llmop would GET /internal and report what it says.
    "url-ending-in-question-mark": (
        _backend({"external": {"url": "http://10.0.0.5/internal?"}}),
        "url must not carry a query",
    ),
    "url-with-fragment": (
        _backend({"external": {"url": "http://10.0.0.5:8000/#x"}}),
        "url must not carry a fragment",
    ),
    "empty-model-name": (
        _backend({"runtime": "ollama", "models": [{"name": ""}]}),
        "model name must not be empty",
    ),
    "bad-port": (_backend({"runtime": "ollama", "port": 70000}), "port must be between 0 and 65535"),
    "empty-backend-ref": (_pull({"backendRef": {"name": ""}}), "name must not be empty"),
    "empty-model": (_pull({"model": ""}), "model must not be empty"),
    "zero-attempts": (_pull({"retry": {"maxAttempts": 0}}), "maxAttempts must be 1 or more"),
    # Inputs that crashed or spun the operator before the schema bounded them.
    "zero-probe-interval": (
        _backend({"runtime": "vllm", "startup": {"probeInterval": "0s"}}),
        "must be between 100ms and 10m",
    ),
    "tiny-probe-interval": (
        _backend({"runtime": "vllm", "startup": {"probeInterval": "99ms"}}),
        "must be between 100ms and 10m",
    ),
    "huge-probe-interval": (
        _backend({"runtime": "vllm", "startup": {"probeInterval": "2h"}}),
        "must be between 100ms and 10m",
    ),
    "blank-model-name": (
        _backend({"runtime": "ollama", "models": [{"name": " "}]}),
        "model name must not be empty or only spaces",
    ),
    "blank-pull-model": (_pull({"model": " \t"}), "model must not be empty or only spaces"),
    "external-port-65536": (
        _backend({"external": {"url": "http://10.0.0.5:65536"}}),
        "the port in the URL must be between 1 and 65535",
    ),
    "external-port-0": (
        _backend({"external": {"url": "http://10.0.0.5:0/v1"}}),
        "the port in the URL must be between 1 and 65535",
    ),
    "model-url-port-99999": (
        _backend({"runtime": "llamacpp", "models": [{"name": "https://h.example:99999/m.gguf"}]}),
        "model the port in the URL must be between 1 and 65535",
    ),
    "pull-url-port-65536": (
        _pull({"model": "https://h.example:65536/m.gguf"}),
        "model the port in the URL must be between 1 and 65535",
    ),
    "zero-backoff": (_pull({"retry": {"backoff": "0s"}}), "must be between 1s and 10m"),
    "huge-backoff": (_pull({"retry": {"backoff": "11m"}}), "must be between 1s and 10m"),
    "too-many-attempts": (_pull({"retry": {"maxAttempts": 101}}), "at most 100"),
    "bad-backoff": (_pull({"retry": {"backoff": "soon"}}), "must be a duration such as 30s"),
    # A tenant who may not create pods gets no privilege through a backend's pods: kubectl's
    # field validation (Strict) names a field the schema does not have.
    "privileged-container": (
        _backend({"runtime": "vllm", "securityContext": {"privileged": True}}),
        'unknown field "spec.securityContext.privileged"',
    ),
    "added-capability": (
        _backend({"runtime": "vllm", "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}),
        'unknown field "spec.securityContext.capabilities"',
    ),
    "privilege-escalation": (
        _backend({"runtime": "ollama", "securityContext": {"allowPrivilegeEscalation": True}}),
        'unknown field "spec.securityContext.allowPrivilegeEscalation"',
    ),
    "pod-sysctls": (
        _backend({"runtime": "ollama", "podSecurityContext": {"sysctls": [{"name": "net.x", "value": "1"}]}}),
        'unknown field "spec.podSecurityContext.sysctls"',
    ),
    "pod-selinux": (
        _backend({"runtime": "ollama", "podSecurityContext": {"seLinuxOptions": {"type": "spc_t"}}}),
        'unknown field "spec.podSecurityContext.seLinuxOptions"',
    ),
    "unconfined-seccomp": (
        _backend({"runtime": "ollama", "securityContext": {"seccompProfile": {"type": "Unconfined"}}}),
        'Unsupported value: "Unconfined"',
    ),
    "localhost-seccomp-without-profile": (
        _backend({"runtime": "ollama", "podSecurityContext": {"seccompProfile": {"type": "Localhost"}}}),
        "set localhostProfile with type Localhost",
    ),
    "negative-user": (
        _backend({"runtime": "ollama", "podSecurityContext": {"runAsUser": -1}}),
        "spec.podSecurityContext.runAsUser",
    ),
    "vllm-on-the-agent-port": (
        _backend({"runtime": "vllm", "port": 8090}),
        "spec.port 8090 is the llmop agent's port",
    ),
    "llamacpp-on-the-agent-port": (
        _backend({"runtime": "llamacpp", "port": 8090}),
        "spec.port 8090 is the llmop agent's port",
    ),
    "huge-warmup-timeout": (
        _backend({"runtime": "ollama", "warmup": {"timeout": "11m"}}),
        "must be between 1s and 10m",
    ),
    "zero-warmup-timeout": (
        _backend({"runtime": "ollama", "warmup": {"timeout": "0s"}}),
        "must be between 1s and 10m",
    ),
    # Another backend's selector label would put this backend's pods behind its Service.
    "pod-label-of-llmops-selector": (
        _backend({"runtime": "ollama", "podLabels": {"llmop.dev/backend": "other"}}),
        "podLabels must not set llmop's own labels",
    ),
    "pod-label-instance": (
        _backend({"runtime": "ollama", "podLabels": {"app.kubernetes.io/instance": "other"}}),
        "podLabels must not set llmop's own labels",
    ),
    "pod-annotation-apparmor-unconfined": (
        _backend(
            {
                "runtime": "ollama",
                "podAnnotations": {"container.apparmor.security.beta.kubernetes.io/runtime": "unconfined"},
            }
        ),
        "podAnnotations must not set AppArmor or seccomp annotations",
    ),
    "service-account-not-a-name": (
        _backend({"runtime": "ollama", "serviceAccountName": "../default"}),
        "spec.serviceAccountName",
    ),
    "image-pull-secret-without-name": (
        _backend({"runtime": "ollama", "imagePullSecrets": [{}]}),
        "spec.imagePullSecrets[0].name: Required value",
    ),
    "spread-zero-skew": (
        _backend({"runtime": "ollama", "topologySpreadConstraints": [{"maxSkew": 0, "topologyKey": "k"}]}),
        "maxSkew must be 1 or more",
    ),
    "spread-min-domains-schedule-anyway": (
        _backend(
            {
                "runtime": "ollama",
                "topologySpreadConstraints": [
                    {"maxSkew": 1, "topologyKey": "k", "whenUnsatisfiable": "ScheduleAnyway", "minDomains": 2}
                ],
            }
        ),
        "minDomains needs whenUnsatisfiable DoNotSchedule",
    ),
    "spread-unknown-operator": (
        _backend(
            {
                "runtime": "ollama",
                "topologySpreadConstraints": [
                    {
                        "maxSkew": 1,
                        "topologyKey": "k",
                        "labelSelector": {"matchExpressions": [{"key": "a", "operator": "Gt"}]},
                    }
                ],
            }
        ),
        'Unsupported value: "Gt"',
    ),
    # A hostPath would hand the node's files to a tenant who may not create pods.
    "volume-host-path": (
        _backend({"runtime": "ollama", "volumes": [{"name": "h", "hostPath": {"path": "/"}}]}),
        'unknown field "spec.volumes[0].hostPath"',
    ),
    "volume-of-no-type": (
        _backend({"runtime": "ollama", "volumes": [{"name": "h"}]}),
        "a volume takes exactly one of configMap, secret, emptyDir or persistentVolumeClaim",
    ),
    "volume-of-two-types": (
        _backend(
            {
                "runtime": "ollama",
                "volumes": [{"name": "h", "configMap": {"name": "a"}, "secret": {"secretName": "b"}}],
            }
        ),
        "a volume takes exactly one of configMap, secret, emptyDir or persistentVolumeClaim",
    ),
    "volume-named-like-llmops": (
        _backend({"runtime": "vllm", "volumes": [{"name": "agent-token", "emptyDir": {"sizeLimit": "1Gi"}}]}),
        "volume name is llmop's own",
    ),
    "volume-empty-dir-without-limit": (
        _backend({"runtime": "ollama", "volumes": [{"name": "t", "emptyDir": {}}]}),
        "spec.volumes[0].emptyDir.sizeLimit: Required value",
    ),
    "volume-names-twice": (
        _backend(
            {
                "runtime": "ollama",
                "volumes": [
                    {"name": "t", "emptyDir": {"sizeLimit": "1Gi"}},
                    {"name": "t", "configMap": {"name": "a"}},
                ],
            }
        ),
        "volume names must be unique in spec.volumes",
    ),
    "mount-of-no-volume": (
        _backend({"runtime": "ollama", "volumeMounts": [{"name": "t", "mountPath": "/t"}]}),
        "each volumeMounts[].name must name a volume in spec.volumes",
    ),
    "mount-over-the-models": (
        _backend(
            {
                "runtime": "ollama",
                "volumes": [{"name": "t", "emptyDir": {"sizeLimit": "1Gi"}}],
                "volumeMounts": [{"name": "t", "mountPath": "/models/x"}],
            }
        ),
        "mountPath must not be /models or /dev/shm",
    ),
    "mount-relative": (
        _backend(
            {
                "runtime": "ollama",
                "volumes": [{"name": "t", "emptyDir": {"sizeLimit": "1Gi"}}],
                "volumeMounts": [{"name": "t", "mountPath": "etc/../x"}],
            }
        ),
        "mountPath must be an absolute path without '..'",
    ),
    "autoscaling-min-above-max": (
        _backend({"runtime": "ollama", "autoscaling": {"minReplicas": 3, "maxReplicas": 2}}),
        "autoscaling.minReplicas must not be above autoscaling.maxReplicas",
    ),
    "autoscaling-without-max": (
        _backend({"runtime": "ollama", "autoscaling": {"minReplicas": 0}}),
        "spec.autoscaling.maxReplicas: Required value",
    ),
    "autoscaling-max-zero": (
        _backend({"runtime": "ollama", "autoscaling": {"maxReplicas": 0, "minReplicas": 0}}),
        "autoscaling.maxReplicas must be 1 or more",
    ),
    "autoscaling-target-zero": (
        _backend({"runtime": "ollama", "autoscaling": {"maxReplicas": 2, "targetInFlight": 0}}),
        "autoscaling.targetInFlight must be 1 or more",
    ),
    "autoscaling-delay-too-long": (
        _backend({"runtime": "ollama", "autoscaling": {"maxReplicas": 2, "scaleDownDelay": "25h"}}),
        "must be between 0s and 24h",
    ),
    "autoscaling-with-replicas": (
        _backend({"runtime": "ollama", "replicas": 2, "autoscaling": {"maxReplicas": 2}}),
        "set spec.replicas or spec.autoscaling, not both",
    ),
    "autoscaling-of-an-external-server": (
        _backend({"external": {"url": "http://10.0.0.5:8000"}, "autoscaling": {"maxReplicas": 2}}),
        "spec.autoscaling applies to spec.runtime only",
    ),
    "disruption-budget-both-limits": (
        _backend({"runtime": "ollama", "disruptionBudget": {"maxUnavailable": 1, "minAvailable": 1}}),
        "set at most one of disruptionBudget.maxUnavailable and disruptionBudget.minAvailable",
    ),
}


@pytest.mark.parametrize("case", list(BAD_MANIFESTS), ids=str)
def test_bad_manifest_is_rejected_with_a_message_that_says_what_to_fix(
    kube: Kube, namespace: str, case: str
) -> None:
    manifest, message = BAD_MANIFESTS[case]
    result = kube.apply(copy.deepcopy(manifest), namespace, check=False)
    assert result.returncode != 0, f"{case} was accepted"
    assert message in result.stderr, result.stderr


@pytest.mark.parametrize(
    "url", ["http://10.0.0.5:8000", "https://llm.example.com/v1", "http://10.0.0.5/models/a@b"]
)
def test_plain_external_urls_are_accepted(kube: Kube, namespace: str, url: str) -> None:
    manifest = _backend({"external": {"url": url}})
    result = kube.apply(manifest, namespace, check=False)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "spec",
    [
        {"runtime": "vllm", "startup": {"probeInterval": "100ms"}, "models": [{"name": "hf://o/r"}]},
        {"runtime": "vllm", "startup": {"probeInterval": "10m"}, "models": [{"name": "hf://o/r"}]},
        {"runtime": "llamacpp", "models": [{"name": "https://h.example:8443/m.gguf"}]},
        {"external": {"url": "http://10.0.0.5:65535"}},
        {"runtime": "ollama", "warmup": {"timeout": "10m"}},
        {
            "runtime": "ollama",
            "autoscaling": {"minReplicas": 0, "maxReplicas": 1, "scaleDownDelay": "0s", "drainTimeout": "1h"},
        },
        {"runtime": "ollama", "port": 8090},  # Ollama's pods have no agent
        {
            "runtime": "vllm",
            "gpu": {"count": 2, "product": [f"NVIDIA-H{i}" for i in range(16)], "minMemory": "80G"},
        },
        {"runtime": "llamacpp", "gpu": {"count": 1, "minMemory": "63Ti"}},
        {
            "runtime": "vllm",
            "podSecurityContext": {
                "runAsNonRoot": True,
                "runAsUser": 1000,
                "runAsGroup": 1000,
                "fsGroup": 2000,
                "supplementalGroups": [3000],
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 1000,
                "runAsGroup": 1000,
                "readOnlyRootFilesystem": True,
                "seccompProfile": {"type": "Localhost", "localhostProfile": "profiles/llm.json"},
            },
        },
        {
            "runtime": "vllm",
            "replicas": 3,
            "imagePullSecrets": [{"name": "registry-creds"}],
            "serviceAccountName": "model-reader",
            "automountServiceAccountToken": True,
            "podLabels": {f"team.example.com/k{i}": "v" for i in range(64)},
            "podAnnotations": {f"example.com/{'a' * 200}{i}": "v" * 1000 for i in range(64)},
            "topologySpreadConstraints": [
                {
                    "maxSkew": 1,
                    "topologyKey": "topology.kubernetes.io/zone",
                    "whenUnsatisfiable": "DoNotSchedule",
                    "minDomains": 3,
                    "labelSelector": {
                        "matchExpressions": [{"key": "team", "operator": "In", "values": ["a"]}]
                    },
                }
            ],
            "disruptionBudget": {"minAvailable": 2},
        },
        {
            "runtime": "vllm",
            "volumes": [{"name": f"cm{i}", "configMap": {"name": "c" * 253}} for i in range(12)]
            + [
                {"name": "s", "secret": {"secretName": "ca"}},
                {"name": "e", "emptyDir": {"medium": "Memory", "sizeLimit": "1.5Gi"}},
                {"name": "p", "persistentVolumeClaim": {"claimName": "shared", "readOnly": True}},
                {"name": "x" * 63, "emptyDir": {"sizeLimit": "10Mi"}},
            ],
            "volumeMounts": [
                {"name": f"cm{i}", "mountPath": f"/etc/{'d' * 1000}{i}"[:1024]} for i in range(12)
            ]
            + [{"name": "e", "mountPath": "/modelsx", "readOnly": True}],
        },
    ],
    ids=[
        "probe-100ms",
        "probe-10m",
        "model-url-port",
        "external-port-65535",
        "warmup-10m",
        "autoscaling-at-its-bounds",
        "ollama-port-8090",
        "gpu-sixteen-products-and-memory",
        "gpu-memory-below-64ti",
        "restricted-security-contexts",
        "pod-fields-at-their-bounds",
        "volumes-at-their-bounds",
    ],
)
def test_values_at_the_bounds_are_accepted(kube: Kube, namespace: str, spec: dict[str, Any]) -> None:
    result = kube.apply(_backend(spec), namespace, check=False)
    assert result.returncode == 0, result.stderr


def test_pull_retry_at_its_bounds_is_accepted(kube: Kube, namespace: str) -> None:
    for retry in ({"maxAttempts": 100, "backoff": "1s"}, {"maxAttempts": 1, "backoff": "10m"}):
        result = kube.apply(_pull({"retry": retry}), namespace, check=False)
        assert result.returncode == 0, result.stderr


def test_a_privileged_field_sent_without_strict_validation_is_pruned_never_stored(
    kube: Kube, namespace: str
) -> None:
    """A client that asks for no field validation (kubectl --validate=false) gets no error, but the
    field is dropped: neither the stored backend nor, therefore, its pods carry it."""
    privileged = {"privileged": True, "capabilities": {"add": ["SYS_ADMIN"]}, "runAsUser": 1000}
    manifest = _backend({"runtime": "ollama", "securityContext": privileged})
    text = yaml.safe_dump(manifest)
    kube.run("apply", "--validate=false", "-n", namespace, "-f", "-", input=text)
    assert kube.get("llmb", "bad", namespace)["spec"]["securityContext"] == {"runAsUser": 1000}


def test_rejected_manifest_leaves_nothing_behind(kube: Kube, namespace: str) -> None:
    manifest, _ = BAD_MANIFESTS["negative-replicas"]
    kube.apply(manifest, namespace, check=False)
    assert kube.get_or_none("llmb", "bad", namespace) is None


def test_valid_manifest_is_stored_exactly_as_written(kube: Kube, namespace: str) -> None:
    """No schema defaults: what the user applied is what GitOps tools read back."""
    manifest = yaml.safe_load((REPO / "examples" / "vllm.yaml").read_text())
    kube.apply(manifest, namespace)
    stored = kube.get("llmb", manifest["metadata"]["name"], namespace)
    assert stored["spec"] == manifest["spec"]


def test_kubectl_scale_of_an_autoscaled_backend_is_refused_with_the_reason(
    kube: Kube, namespace: str
) -> None:
    """One owner decides the replicas: a write through /scale would make a second one."""
    kube.apply(_backend({"runtime": "ollama", "autoscaling": {"maxReplicas": 3}}), namespace)
    result = kube.run("scale", "llmb/bad", "--replicas=2", "-n", namespace, check=False)
    assert result.returncode != 0
    assert "set spec.replicas or spec.autoscaling, not both" in result.stderr
    assert "replicas" not in kube.get("llmb", "bad", namespace)["spec"]


def test_a_gateway_demand_entry_out_of_bounds_is_refused(kube: Kube, namespace: str) -> None:
    """status.demand is the gateways' to write: the API server holds each entry to its bounds."""
    kube.apply(_backend({"runtime": "ollama", "autoscaling": {"maxReplicas": 3}}), namespace)

    def write(entry: dict[str, Any]) -> Any:
        patch = json.dumps({"status": {"demand": {"gw-1": entry}}})
        args = ["patch", "llmb", "bad", "-n", namespace, "--subresource=status", "--type=merge", "-p", patch]
        return kube.run(*args, check=False)

    fine = write({"inFlight": 3, "waiting": 1, "pods": {"bad-x": 3}, "time": "2026-12-01T12:00:00Z"})
    assert fine.returncode == 0, fine.stderr
    huge = write({"inFlight": 10**9, "time": "2026-12-01T12:00:00Z"})
    assert huge.returncode != 0 and "inFlight" in huge.stderr
    negative = write({"waiting": -1, "time": "2026-12-01T12:00:00Z"})
    assert negative.returncode != 0 and "waiting" in negative.stderr
    stored = kube.get("llmb", "bad", namespace)["status"]["demand"]
    assert stored == {
        "gw-1": {"inFlight": 3, "waiting": 1, "pods": {"bad-x": 3}, "time": "2026-12-01T12:00:00Z"}
    }

"""Pod fields a team sets on a backend (labels, annotations, service account, image pull Secrets,
topology spread) reach the pod template, and none of them takes llmop's labels."""

from __future__ import annotations

from typing import Any

import pytest

from llmop.config import OperatorConfig
from llmop.loops.backend_ensure import validate_backend_spec
from llmop.manifests import backend_selector, build_deployment
from llmop.manifests.disruption_budget import build_disruption_budget
from llmop.models.backend import LLMBackendSpec

CONFIG = OperatorConfig()


def spec(**fields: Any) -> LLMBackendSpec:
    fields.setdefault("runtime", "ollama")
    fields.setdefault("models", [{"name": "qwen3:0.6b"}])
    return LLMBackendSpec.model_validate(fields)


def template(backend: LLMBackendSpec) -> dict[str, Any]:
    deployment: dict[str, Any] = build_deployment("chat", "ns", "uid-1", backend, CONFIG)
    return deployment["spec"]["template"]


def test_no_pod_field_set_leaves_the_pod_as_before() -> None:
    pod = template(spec())
    assert pod["metadata"] == {"labels": pod["metadata"]["labels"]}
    assert pod["spec"]["automountServiceAccountToken"] is False
    for field in ("serviceAccountName", "imagePullSecrets", "topologySpreadConstraints"):
        assert field not in pod["spec"]


def test_the_service_account_is_used_without_its_api_token_unless_asked() -> None:
    pod = template(spec(serviceAccountName="model-reader"))["spec"]
    assert (pod["serviceAccountName"], pod["automountServiceAccountToken"]) == ("model-reader", False)
    pod = template(spec(serviceAccountName="model-reader", automountServiceAccountToken=True))["spec"]
    assert pod["automountServiceAccountToken"] is True


def test_image_pull_secrets_reach_the_pod() -> None:
    pod = template(spec(imagePullSecrets=[{"name": "a"}, {"name": "b"}]))["spec"]
    assert pod["imagePullSecrets"] == [{"name": "a"}, {"name": "b"}]


def test_pod_labels_and_annotations_reach_the_pod_and_the_selector_still_matches() -> None:
    deployment = build_deployment(
        "chat", "ns", "uid-1", spec(podLabels={"team": "a"}, podAnnotations={"x.io/y": "1"}), CONFIG
    )
    metadata = deployment["spec"]["template"]["metadata"]
    assert metadata["labels"]["team"] == "a"
    assert metadata["annotations"] == {"x.io/y": "1"}
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= metadata["labels"].items()


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"podLabels": {"llmop.dev/backend": "other"}}, "spec.podLabels must not set llmop's own label"),
        ({"podLabels": {"app.kubernetes.io/instance": "x"}}, "'app.kubernetes.io/instance'"),
        ({"podLabels": {"llmop.dev/use": "true"}}, "'llmop.dev/use'"),
        (
            {"podAnnotations": {"container.apparmor.security.beta.kubernetes.io/runtime": "unconfined"}},
            "spec.podAnnotations must not set 'container.apparmor.security.beta.kubernetes.io/runtime'",
        ),
    ],
)
def test_a_pod_label_or_annotation_the_crd_refuses_is_refused_by_the_operator_too(
    fields: dict[str, Any], words: str
) -> None:
    """A backend stored before the CEL rules: a label of another backend's selector would put this
    backend's pods behind that backend's Service."""
    problem = validate_backend_spec(spec(**fields))
    assert problem is not None and words in problem


def test_labels_and_annotations_of_the_users_own_are_accepted() -> None:
    fields = {"podLabels": {"app.kubernetes.io/part-of": "search"}, "podAnnotations": {"a/b": "c"}}
    assert validate_backend_spec(spec(**fields)) is None


@pytest.mark.parametrize("selector", [None, {}, {"matchLabels": {}}])
def test_a_spread_constraint_without_a_selector_counts_this_backends_pods(selector: Any) -> None:
    constraint: dict[str, Any] = {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone"}
    if selector is not None:
        constraint["labelSelector"] = selector
    (built,) = template(spec(topologySpreadConstraints=[constraint]))["spec"]["topologySpreadConstraints"]
    assert built == {
        "maxSkew": 1,
        "topologyKey": "topology.kubernetes.io/zone",
        "whenUnsatisfiable": "DoNotSchedule",
        "labelSelector": {"matchLabels": backend_selector("chat")},
    }


def test_a_spread_constraints_own_selector_is_kept() -> None:
    expression = {"key": "team", "operator": "In", "values": ["a"]}
    constraint = {"maxSkew": 1, "topologyKey": "k", "labelSelector": {"matchExpressions": [expression]}}
    (built,) = template(spec(topologySpreadConstraints=[constraint]))["spec"]["topologySpreadConstraints"]
    assert built["labelSelector"] == {"matchExpressions": [expression]}


@pytest.mark.parametrize(
    ("fields", "limit"),
    [
        ({"replicas": 2}, {"maxUnavailable": 1}),
        ({"replicas": 3, "disruptionBudget": {"maxUnavailable": 2}}, {"maxUnavailable": 2}),
        ({"replicas": 3, "disruptionBudget": {"minAvailable": 2}}, {"minAvailable": 2}),
    ],
)
def test_a_multi_replica_backend_gets_a_disruption_budget(
    fields: dict[str, Any], limit: dict[str, int]
) -> None:
    budget = build_disruption_budget("chat", "ns", "uid-1", spec(**fields))
    assert budget is not None
    assert budget["spec"] == {
        **limit,
        "selector": {"matchLabels": backend_selector("chat")},
        "unhealthyPodEvictionPolicy": "AlwaysAllow",
    }
    assert budget["metadata"]["ownerReferences"][0]["uid"] == "uid-1"


@pytest.mark.parametrize(
    "fields", [{"replicas": 1}, {"replicas": 0}, {"replicas": 3, "disruptionBudget": {"enabled": False}}]
)
def test_one_replica_or_a_disabled_budget_gets_none(fields: dict[str, Any]) -> None:
    """With one replica a budget would block every drain of its node, or protect nothing."""
    assert build_disruption_budget("chat", "ns", "uid-1", spec(**fields)) is None


def test_extra_volumes_reach_the_pod_and_the_runtime_container() -> None:
    volumes = [
        {"name": "tpl", "configMap": {"name": "templates"}},
        {"name": "certs", "secret": {"secretName": "ca"}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
        {"name": "data", "persistentVolumeClaim": {"claimName": "shared", "readOnly": True}},
    ]
    mounts = [
        {"name": "tpl", "mountPath": "/etc/tpl", "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    pod = template(spec(volumes=volumes, volumeMounts=mounts))["spec"]
    assert pod["volumes"][-4:] == volumes
    (runtime,) = pod["containers"]
    assert runtime["volumeMounts"][-2:] == mounts
    assert runtime["volumeMounts"][0]["mountPath"] == "/models", "llmop's mounts stay first"


def test_llmops_own_volume_names_and_paths_are_the_ones_the_schema_reserves() -> None:
    from llmop.models.backend import RESERVED_MOUNT_PATHS, RESERVED_VOLUMES

    pod = template(spec(runtime="vllm", models=[{"name": "hf://o/r"}], gpu={"count": 1}))["spec"]
    ours = {volume["name"] for volume in pod["volumes"]}
    # A user's mounts go into the runtime container only.
    (runtime,) = pod["containers"]
    assert ours <= set(RESERVED_VOLUMES)
    assert {mount["mountPath"] for mount in runtime["volumeMounts"]} <= set(RESERVED_MOUNT_PATHS)

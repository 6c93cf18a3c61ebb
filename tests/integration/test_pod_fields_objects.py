"""A backend's pod fields and its PodDisruptionBudget on a real API server: the objects llmop
builds are accepted as built, the budget comes with a second replica and goes with it, and no pod
is made to run as a ServiceAccount or pull with a Secret that did not opt in."""

from __future__ import annotations

import re
from typing import Any

import pytest

from llmop.k8s.client import PODDISRUPTIONBUDGETS
from llmop.loops.backend_ensure import apply_backend_objects
from llmop.loops.context import OperatorContext
from llmop.loops.secret_access import SecretNotUsable
from llmop.manifests.labels import SECRET_OPT_IN_LABEL
from llmop.models.backend import LLMBackendSpec
from support.kube import Kube

pytestmark = pytest.mark.integration

SPEC: dict[str, Any] = {
    "runtime": "ollama",
    "models": [{"name": "qwen3:0.6b"}],
    "replicas": 2,
    "imagePullSecrets": [{"name": "registry-creds"}],
    "serviceAccountName": "model-reader",
    "podLabels": {"team": "search"},
    "podAnnotations": {"prometheus.io/scrape": "true"},
    "volumes": [{"name": "scratch", "emptyDir": {"sizeLimit": "1Gi"}}],
    "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
    "topologySpreadConstraints": [
        {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "minDomains": 2},
    ],
}


def create_backend(kube: Kube, namespace: str, spec: dict[str, Any]) -> str:
    manifest = {"apiVersion": "llmop.dev/v1alpha1", "kind": "LLMBackend", "metadata": {"name": "chat"}}
    kube.apply({**manifest, "spec": spec}, namespace)
    return str(kube.get("llmb", "chat", namespace)["metadata"]["uid"])


def create_opted_in(kube: Kube, namespace: str, *, labelled: bool = True) -> None:
    labels = {SECRET_OPT_IN_LABEL: "true"} if labelled else {}
    account = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": "model-reader", "labels": labels},
    }
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/dockerconfigjson",
        "metadata": {"name": "registry-creds", "labels": {SECRET_OPT_IN_LABEL: "true"}},
        "stringData": {".dockerconfigjson": '{"auths": {}}'},
    }
    kube.apply(account, namespace)
    kube.apply(secret, namespace)


async def test_the_pod_fields_and_the_budget_are_accepted_and_the_budget_goes_with_one_replica(
    kube: Kube, namespace: str, context: OperatorContext
) -> None:
    uid = create_backend(kube, namespace, SPEC)
    create_opted_in(kube, namespace)
    await apply_backend_objects(context, "chat", namespace, uid, LLMBackendSpec.model_validate(SPEC))

    pod = kube.get("deployment", "chat", namespace)["spec"]["template"]
    assert pod["metadata"]["labels"]["team"] == "search"
    assert pod["metadata"]["annotations"] == {"prometheus.io/scrape": "true"}
    assert pod["spec"]["serviceAccountName"] == "model-reader"
    assert pod["spec"]["automountServiceAccountToken"] is False
    assert pod["spec"]["imagePullSecrets"] == [{"name": "registry-creds"}]
    assert pod["spec"]["volumes"][-1] == {"name": "scratch", "emptyDir": {"sizeLimit": "1Gi"}}
    assert pod["spec"]["containers"][0]["volumeMounts"][-1] == {"name": "scratch", "mountPath": "/scratch"}
    (spread,) = pod["spec"]["topologySpreadConstraints"]
    assert spread["labelSelector"] == {
        "matchLabels": {"llmop.dev/backend": "chat", "app.kubernetes.io/instance": "chat"}
    }
    budget = kube.get("pdb", "chat", namespace)
    assert budget["spec"]["maxUnavailable"] == 1
    assert budget["metadata"]["ownerReferences"][0]["uid"] == uid

    one = {**SPEC, "replicas": 1}
    kube.apply(
        {"apiVersion": "llmop.dev/v1alpha1", "kind": "LLMBackend", "metadata": {"name": "chat"}, "spec": one},
        namespace,
    )
    await apply_backend_objects(context, "chat", namespace, uid, LLMBackendSpec.model_validate(one))
    assert await context.kube.get(PODDISRUPTIONBUDGETS, "chat", namespace) is None


async def test_a_service_account_without_the_label_gets_no_pod(
    kube: Kube, namespace: str, context: OperatorContext
) -> None:
    uid = create_backend(kube, namespace, SPEC)
    create_opted_in(kube, namespace, labelled=False)
    with pytest.raises(
        SecretNotUsable,
        match=re.escape("ServiceAccount 'model-reader' (spec.serviceAccountName) is not labeled"),
    ):
        await apply_backend_objects(context, "chat", namespace, uid, LLMBackendSpec.model_validate(SPEC))
    assert kube.get_or_none("deployment", "chat", namespace) is None
    assert kube.get_or_none("pdb", "chat", namespace) is None

"""The Helm chart, rendered with `helm template` (no cluster): what it installs, the environment it
gives the operator, the RBAC it grants, and the values it refuses."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import chartdocs
import pytest
import yaml
from localcluster import binaries_cached

from llmop import __version__
from llmop.cli import build_parser, main
from llmop.config import DEFAULT_AGENT_IMAGE, DEFAULT_IMAGES, OperatorConfig
from llmop.gateway.cli import gateway_namespaces, gateway_settings
from llmop.manifests.deployment import AGENT_USER
from llmop.models.crd import all_crds

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "llmop"
KUBE_VERSION = "1.36.3"


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(binaries_cached()["helm"]), *args], capture_output=True, text=True, timeout=120
    )
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stderr}")
    return result


def render(*settings: str, namespace: str = "llmop-system") -> list[dict[str, Any]]:
    out = helm("template", "llmop", str(CHART), "-n", namespace, "--kube-version", KUBE_VERSION, *settings)
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def refused(*settings: str) -> str:
    result = helm("template", "llmop", str(CHART), "--kube-version", KUBE_VERSION, *settings, check=False)
    assert result.returncode != 0, f"helm accepted {settings}"
    return result.stderr


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"{len(found)} {kind} {name or ''}"
    return found[0]


def container_env(docs: list[dict[str, Any]]) -> dict[str, str]:
    return gateway_env(docs, "llmop")


def gateway_env(docs: list[dict[str, Any]], name: str = "llmop-gateway") -> dict[str, str]:
    container = one(docs, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def test_helm_lint_is_clean() -> None:
    result = helm("lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION)
    assert "0 chart(s) failed" in result.stdout
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout


def test_chart_and_operator_versions_agree_and_runtime_images_match_the_operator_defaults() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == chart["version"] == __version__
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["runtimeImages"] == DEFAULT_IMAGES


def test_default_install_objects() -> None:
    docs = render()
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(
        [
            "ServiceAccount",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "Service",
            "Deployment",
            # The gateway: its own identity, its Role (reads, and the demand it writes), its pods and its Service.
            "ServiceAccount",
            "Role",
            "RoleBinding",
            "Service",
            "Deployment",
        ]
    )
    for doc in docs:
        if doc["kind"] not in ("CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"):
            assert doc["metadata"]["namespace"] == "llmop-system", doc["kind"]
    account = one(docs, "ServiceAccount", "llmop")["metadata"]["name"]
    pod = one(docs, "Deployment", "llmop")["spec"]["template"]["spec"]
    assert account == "llmop" and pod["serviceAccountName"] == "llmop"


def test_chart_crds_are_the_generated_ones_and_survive_uninstall() -> None:
    # The files the chart reads are generated from the models, like crds/.
    assert main(["crds", "--check", "--dir", str(CHART / "files" / "crds")]) == 0
    generated = all_crds()
    rendered = [d for d in render() if d["kind"] == "CustomResourceDefinition"]
    assert len(rendered) == len(generated)
    by_name = {yaml.safe_load(text)["metadata"]["name"]: yaml.safe_load(text) for text in _crd_texts()}
    for crd in rendered:
        meta = crd.pop("metadata")
        assert meta["annotations"] == {"helm.sh/resource-policy": "keep"}
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "Helm"
        assert crd == {k: v for k, v in by_name[meta["name"]].items() if k != "metadata"}
    assert not [d for d in render("--set", "crds.install=false") if d["kind"] == "CustomResourceDefinition"]
    for crd in [d for d in render("--set", "crds.keep=false") if d["kind"] == "CustomResourceDefinition"]:
        assert "annotations" not in crd["metadata"]


def _crd_texts() -> list[str]:
    return [path.read_text() for path in sorted((CHART / "files" / "crds").glob("*.yaml"))]


def test_the_operator_reads_every_value_the_chart_sets() -> None:
    docs = render(
        "--set-json",
        'watchNamespaces=["team-a","team-b"]',
        "--set",
        "hfEndpoint=https://hf-mirror.internal",
        "--set",
        "runtimeImages.vllm=registry.internal/vllm:1",
        "--set",
        "pullProgressInterval=5s",
        "--set",
        "logFormat=plain",
        "--set",
        "leaderElection.leaseDuration=30s",
        "--set",
        "metrics.port=9100",
        "--set",
        "image.tag=9.9.9",
        "--set-json",
        'externalDenyCIDRs=["169.254.0.0/16","10.0.0.0/8"]',
    )
    config = OperatorConfig.from_env(container_env(docs))
    assert config.external_deny_cidrs == ["169.254.0.0/16", "10.0.0.0/8"]
    assert config.namespaces == ["team-a", "team-b"]
    assert config.hf_endpoint == "https://hf-mirror.internal"
    assert config.images == {**DEFAULT_IMAGES, "vllm": "registry.internal/vllm:1"}
    assert config.pull_progress_interval == 5
    assert config.log_format == "plain"
    assert config.leader_election and config.lease_duration == 30 and config.lease_name == "llmop"
    assert config.metrics_port == 9100
    # The agent is versioned on its own: a new operator tag leaves the pods' sidecar as it was.
    assert config.agent_image == DEFAULT_AGENT_IMAGE
    container = one(docs, "Deployment", "llmop")["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "ghcr.io/llmop/llmop:9.9.9"
    assert container["ports"] == [{"name": "metrics", "containerPort": 9100, "protocol": "TCP"}]


def test_defaults_give_the_operator_its_own_defaults() -> None:
    config = OperatorConfig.from_env(container_env(render()))
    assert config.namespaces == [] and config.hf_endpoint is None
    assert config.images == DEFAULT_IMAGES and config.agent_image == DEFAULT_AGENT_IMAGE
    assert config.metrics_port == 8080 and config.leader_election
    assert config.external_deny_cidrs == OperatorConfig().external_deny_cidrs


def test_the_agent_image_is_the_charts_agent_value_and_its_default_the_operators() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())["agent"]["image"]
    assert f"{values['repository']}:{values['tag']}" == DEFAULT_AGENT_IMAGE
    docs = render(
        "--set", "agent.image.repository=registry.internal/llmop", "--set-string", "agent.image.tag=7"
    )
    assert OperatorConfig.from_env(container_env(docs)).agent_image == "registry.internal/llmop:7"


def test_the_agents_network_policy_names_the_operators_own_pods() -> None:
    docs = render()
    config = OperatorConfig.from_env(container_env(docs))
    pod_labels = one(docs, "Deployment", "llmop")["spec"]["template"]["metadata"]["labels"]
    assert config.operator_namespace == "llmop-system"
    assert config.operator_pod_labels == {
        "app.kubernetes.io/name": "llmop",
        "app.kubernetes.io/instance": "llmop",
    }
    assert config.operator_pod_labels.items() <= pod_labels.items()
    elsewhere = OperatorConfig.from_env(
        container_env(render("--set", "agentNetworkPolicy.operatorNamespace=ops"))
    )
    assert elsewhere.operator_namespace == "ops"
    off = OperatorConfig.from_env(container_env(render("--set", "agentNetworkPolicy.enabled=false")))
    assert off.operator_namespace is None and off.operator_pod_labels == {}


def test_the_pod_runs_non_root_on_a_read_only_root_filesystem_with_a_liveness_probe() -> None:
    deployment = one(render(), "Deployment", "llmop")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["args"] == ["run"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == AGENT_USER  # the image's own user
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False and security["capabilities"]["drop"] == ["ALL"]
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/tmp"}
    probe = container["livenessProbe"]["httpGet"]
    assert probe == {"path": "/healthz", "port": "metrics"}
    downward = {
        e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container["env"] if "valueFrom" in e
    }
    assert downward == {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"}


def _rules(doc: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in doc["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


# The objects llmop applies for a backend, each read first by name (it writes over none the
# backend does not own).
OWNED = [
    ("apps", "deployments"),
    ("", "services"),
    ("", "persistentvolumeclaims"),
    ("networking.k8s.io", "networkpolicies"),
    ("policy", "poddisruptionbudgets"),
]
# What llmop does in a namespace it manages, and nothing more (see templates/_helpers.tpl).
NAMESPACED = {
    *{
        ("llmop.dev", kind, verb)
        for kind in ("llmbackends", "modelpulls", "modelcaches")
        for verb in ("get", "list", "watch", "patch")
    },
    ("llmop.dev", "llmbackends/status", "patch"),
    ("llmop.dev", "modelpulls/status", "patch"),
    ("llmop.dev", "modelcaches/status", "patch"),
    ("llmop.dev", "modelcaches/finalizers", "update"),
    ("llmop.dev", "modelpulls", "create"),
    ("llmop.dev", "modelpulls", "delete"),
    ("llmop.dev", "llmbackends/finalizers", "update"),
    *{(group, kind, verb) for group, kind in OWNED for verb in ("get", "create", "patch")},
    ("", "pods", "list"),
    ("", "pods", "watch"),
    ("", "pods", "patch"),  # the deletion-cost annotation on a pod spec.autoscaling drained
    ("", "secrets", "get"),
    ("", "configmaps", "get"),
    ("", "serviceaccounts", "get"),
    ("policy", "poddisruptionbudgets", "delete"),  # only the backend's own, once it has one replica
    ("", "persistentvolumeclaims", "get"),
    ("", "secrets", "create"),
    ("", "events", "create"),
}
CRDS = {("apiextensions.k8s.io", "customresourcedefinitions", v) for v in ("list", "watch")}
NODES = {("", "nodes", "get")}  # the GPU memory label of a GPU backend's node (Fits)
LEASES = {("coordination.k8s.io", "leases", v) for v in ("get", "create", "update")}


def test_cluster_wide_rbac_is_exactly_what_llmop_uses() -> None:
    docs = render()
    assert _rules(one(docs, "ClusterRole")) == NAMESPACED | CRDS | NODES
    role = one(docs, "Role", "llmop-leader-election")
    assert role["metadata"]["namespace"] == "llmop-system" and _rules(role) == LEASES
    for doc in docs:
        for rule in doc.get("rules", []):
            assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], rule


def test_watched_namespaces_get_roles_and_nothing_namespaced_is_granted_cluster_wide() -> None:
    docs = render("--set-json", 'watchNamespaces=["team-a","team-b"]')
    cluster = _rules(one(docs, "ClusterRole"))
    assert cluster == CRDS | NODES | {("", "namespaces", "list"), ("", "namespaces", "watch")}
    roles = {
        d["metadata"]["namespace"]: _rules(d)
        for d in docs
        if d["kind"] == "Role" and d["metadata"]["name"] == "llmop"
    }
    assert roles == {"team-a": NAMESPACED, "team-b": NAMESPACED}
    bindings = [d for d in docs if d["kind"] == "RoleBinding" and d["metadata"]["name"] == "llmop"]
    assert {b["metadata"]["namespace"] for b in bindings} == {"team-a", "team-b"}
    for binding in bindings:
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "llmop", "namespace": "llmop-system"}
        ]


def test_no_lease_role_without_leader_election_and_no_rbac_when_turned_off() -> None:
    roles = [
        d["metadata"]["name"] for d in render("--set", "leaderElection.enabled=false") if d["kind"] == "Role"
    ]
    assert roles == ["llmop-gateway"]
    kinds = {d["kind"] for d in render("--set", "rbac.create=false")}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (["--set", "logFormat=xml"], "logFormat"),
        (["--set", "replicas=2"], "replicas"),  # a misspelt key is refused, not ignored
        (["--set", "metrics.port=0"], "metrics/port"),
        (["--set", "pullProgressInterval=soon"], "pullProgressInterval"),
        (["--set-json", 'watchNamespaces=["Team A"]'], "watchNamespaces"),
        (["--set", "hfEndpoint=ftp://mirror"], "hfEndpoint"),
        (["--set-json", 'externalDenyCIDRs=["metadata.internal"]'], "externalDenyCIDRs"),
        (["--set", "image.pullPolicy=Sometimes"], "pullPolicy"),
        (["--set", "gateway.holdTimeout=soon"], "holdTimeout"),
        (["--set-json", 'gateway.namespaces=["Team A"]'], "gateway/namespaces"),
        (["--set", "gateway.service.type=ExternalName"], "gateway/service/type"),
        (["--set", "gateway.auth=off"], "gateway/auth"),
        (["--set", "gateway.prefixAffinity=sometimes"], "gateway/prefixAffinity"),
        (
            ["--set", "replicaCount=2", "--set", "leaderElection.enabled=false"],
            "needs leaderElection.enabled",
        ),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else v,
)
def test_bad_values_fail_with_the_value_named(settings: list[str], message: str) -> None:
    assert message in refused(*settings)


def test_two_replicas_with_leader_election_render() -> None:
    assert one(render("--set", "replicaCount=2"), "Deployment", "llmop")["spec"]["replicas"] == 2


def test_service_monitor_on_request() -> None:
    docs = render(
        "--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.serviceMonitor.labels.release=prom"
    )
    monitor = one(docs, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    service = one(docs, "Service", "llmop-metrics")
    assert service["spec"]["ports"][0]["name"] == "metrics"


def test_values_yaml_validates_and_every_value_is_described() -> None:
    import jsonschema

    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    jsonschema.validate(values, schema)

    def walk(node: dict[str, Any], path: str) -> None:
        for key, child in node.get("properties", {}).items():
            assert child.get("description"), f"{path}{key} has no description"
            walk(child, f"{path}{key}.")

    walk(schema, "")
    assert set(values) == set(schema["properties"])


def test_configuration_reference_is_current() -> None:
    assert chartdocs.main(["--check"]) == 0, "run `python hack/chartdocs.py`"


GATEWAY_RULES = {
    ("llmop.dev", "llmbackends", "get"),
    ("llmop.dev", "llmbackends", "list"),
    ("llmop.dev", "llmbackends", "watch"),
    # Its demand counts, status.demand.<gateway pod>, for spec.autoscaling: no other write.
    ("llmop.dev", "llmbackends/status", "patch"),
    ("", "secrets", "get"),  # the runtime API keys of Secrets that opt in
    # The gateway's own keys: Secrets labelled llmop.dev/gateway-key (gateway.auth=keys).
    ("", "secrets", "list"),
    ("", "secrets", "watch"),
}
#: With gateway.auth=none the gateway finds no keys: it reads only the Secrets backends name.
OPEN_GATEWAY_RULES = GATEWAY_RULES - {("", "secrets", "list"), ("", "secrets", "watch")}


def _gateway_roles(docs: list[dict[str, Any]]) -> dict[str, set[tuple[str, str, str]]]:
    return {
        d["metadata"]["namespace"]: _rules(d)
        for d in docs
        if d["kind"] == "Role" and d["metadata"]["name"] == "llmop-gateway"
    }


def test_the_gateway_serves_its_own_namespace_by_default_reading_there_and_writing_only_demand() -> None:
    docs = render()
    assert gateway_namespaces(None, gateway_env(docs)) == ["llmop-system"]
    assert _gateway_roles(docs) == {"llmop-system": GATEWAY_RULES}
    binding = one(docs, "RoleBinding", "llmop-gateway")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "llmop-gateway", "namespace": "llmop-system"}
    ]
    pod = one(docs, "Deployment", "llmop-gateway")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "llmop-gateway"
    # Each gateway pod writes its demand under its own name, from the downward API.
    (pod_name,) = [e for e in pod["containers"][0]["env"] if e["name"] == "POD_NAME"]
    assert pod_name["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    # Nothing cluster-wide is the gateway's: the only ClusterRole binds the operator.
    assert [b["subjects"][0]["name"] for b in docs if b["kind"] == "ClusterRoleBinding"] == ["llmop"]


def test_the_gateway_serves_the_namespaces_listed_and_reads_nothing_elsewhere() -> None:
    docs = render("--set-json", 'gateway.namespaces=["team-a","team-b"]', "--set", "gateway.holdTimeout=2m")
    env = gateway_env(docs)
    assert gateway_namespaces(None, {**env, "POD_NAMESPACE": "llmop-system"}) == ["team-a", "team-b"]
    assert env["LLMOP_GATEWAY_HOLD"] == "2m"
    assert env["LLMOP_GATEWAY_AUTH"] == "keys"
    # The operator's deny list guards the gateway's connections to external servers too.
    assert env["LLMOP_EXTERNAL_DENY_CIDRS"] == container_env(docs)["LLMOP_EXTERNAL_DENY_CIDRS"]
    # Its own namespace holds the admin's keys, which may reach across the served namespaces.
    assert _gateway_roles(docs) == {
        "team-a": GATEWAY_RULES,
        "team-b": GATEWAY_RULES,
        "llmop-system": GATEWAY_RULES,
    }


@pytest.mark.parametrize(
    ("settings", "wanted"), [((), False), (("--set", "gateway.prefixAffinity=true"), True)]
)
def test_prefix_affinity_is_off_unless_the_chart_turns_it_on(
    monkeypatch: pytest.MonkeyPatch, settings: tuple[str, ...], wanted: bool
) -> None:
    for name, value in gateway_env(render(*settings)).items():
        monkeypatch.setenv(name, value)
    assert gateway_settings(build_parser().parse_args(["gateway"])).prefix_affinity is wanted


def test_an_open_gateway_neither_lists_secrets_nor_looks_in_its_own_namespace() -> None:
    docs = render("--set-json", 'gateway.namespaces=["team-a"]', "--set", "gateway.auth=none")
    assert gateway_env(docs)["LLMOP_GATEWAY_AUTH"] == "none"
    assert _gateway_roles(docs) == {"team-a": OPEN_GATEWAY_RULES}


def test_the_gateway_pod_is_hardened_probed_and_behind_its_service() -> None:
    docs = render("--set", "gateway.port=9000", "--set", "gateway.service.port=8080")
    deployment = one(docs, "Deployment", "llmop-gateway")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == ["gateway", "--port", "9000", "--metrics-port", "8080"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    service = one(docs, "Service", "llmop-gateway")
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}
    ]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    # Not the operator's pods: neither its Service nor its agent NetworkPolicy selects them.
    operator_selector = one(docs, "Deployment", "llmop")["spec"]["selector"]["matchLabels"]
    assert not operator_selector.items() <= labels.items()


def test_no_gateway_when_turned_off() -> None:
    names = {d["metadata"]["name"] for d in render("--set", "gateway.enabled=false")}
    assert not {name for name in names if "gateway" in name}

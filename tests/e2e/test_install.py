"""Installing llmop like a product: `helm install` onto the test cluster, the operator running with
the chart's ServiceAccount and nothing more, two replicas with one acting, and its metrics.

The cluster runs no containers (kwok fakes the pods), so the chart's operator pods never run.
The tests run `llmop run` on this machine instead, with the environment the chart gives the
pod and a token of the chart's ServiceAccount, so the API server's RBAC judges every request
exactly as it would judge the pod's.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from localcluster import binaries_cached
from prometheus_client.parser import text_string_to_metric_families

from support.argocd import argocd_health
from support.kube import LLMOP_CRDS, REPO, Kube, eventually
from support.operator import TEST_DENY_CIDRS, OperatorProcess
from support.runtimes import ModelSource, PodRunner, run_vllm_standin

# External backends here only need some server to observe: the vLLM stand-in starts at once, where
# the real vLLM takes a minute and 3.7 GB (the real one behind each external kind:
# test_external_kinds.py).
pytestmark = pytest.mark.e2e

CHART = REPO / "charts" / "llmop"
KUBE_VERSION = "1.36.3"
#: The authorizer's refusal: `pods is forbidden: User "system:serviceaccount:…" cannot list …`.
RBAC_REFUSAL = re.compile(r"forbidden: User .{1,300}? cannot ", re.IGNORECASE)
LEASE_SECONDS = 6  # short, so that the takeover test is quick; the chart's default is 15s


def helm(kube: Kube, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(binaries_cached()["helm"]), "--kubeconfig", str(kube.kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stderr}")
    return result


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the operator's /metrics: (name, sorted labels) -> value."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def metric(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def role_of(port: int) -> str:
    try:
        return str(httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).json()["role"])
    except httpx.HTTPError:
        return "down"


@pytest.fixture(scope="module")
def release(kube: Kube, no_session_operator: None) -> Iterator[dict[str, Any]]:
    """The chart installed with two replicas, adopting the CRDs the session applied with kubectl."""
    with kube.namespace("llmop") as namespace:
        name = f"llmop-{namespace.rsplit('-', 1)[1]}"
        # CRDs applied with `kubectl apply -f crds/` (the session did) become the release's by
        # Helm's adoption rules: its annotations and label on the existing objects.
        for crd in LLMOP_CRDS:
            kube.run(
                "annotate",
                "--overwrite",
                f"crd/{crd}",
                f"meta.helm.sh/release-name={name}",
                f"meta.helm.sh/release-namespace={namespace}",
            )
            kube.run("label", "--overwrite", f"crd/{crd}", "app.kubernetes.io/managed-by=Helm")
        installed = helm(
            kube,
            "install",
            name,
            str(CHART),
            "-n",
            namespace,
            "--set",
            "replicaCount=2",
            "--set",
            f"leaderElection.leaseDuration={LEASE_SECONDS}s",
            # The external servers of these tests run on this machine's loopback.
            "--set-json",
            f"externalDenyCIDRs={json.dumps(TEST_DENY_CIDRS.split(','))}",
        )
        manifest = [
            doc
            for doc in yaml.safe_load_all(helm(kube, "get", "manifest", name, "-n", namespace).stdout)
            if doc
        ]
        try:
            yield {"name": name, "namespace": namespace, "notes": installed.stdout, "manifest": manifest}
        finally:
            helm(kube, "uninstall", name, "-n", namespace, "--wait", check=False)


def test_the_chart_renders_objects_the_api_server_accepts(kube: Kube) -> None:
    with kube.namespace("render") as namespace, kube.namespace("team") as team:
        for settings in (
            [],
            ["--set", "replicaCount=3", "--set", "crds.keep=false"],
            ["--set-json", f'watchNamespaces=["{team}"]', "--set", "metrics.service.enabled=false"],
            [
                "--set",
                "leaderElection.enabled=false",
                "--set",
                "rbac.create=false",
                "--set",
                "serviceAccount.create=false",
                "--set",
                "serviceAccount.name=default",
            ],
        ):
            rendered = helm(
                kube,
                "template",
                "llmop",
                str(CHART),
                "-n",
                namespace,
                "--kube-version",
                KUBE_VERSION,
                *settings,
            ).stdout
            result = kube.run("apply", "--dry-run=server", "-f", "-", input=rendered, check=False)
            assert result.returncode == 0, f"{settings}: {result.stderr}"
            assert (
                "created (server dry run)" in result.stdout or "configured (server dry run)" in result.stdout
            )


def test_helm_install_creates_the_operator_its_identity_and_its_roles(
    kube: Kube, release: dict[str, Any]
) -> None:
    name, namespace = release["name"], release["namespace"]
    status = helm(kube, "status", name, "-n", namespace, "-o", "json").stdout
    assert '"status":"deployed"' in status.replace(" ", "")
    deployment = kube.get("deployment", name, namespace)
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == name
    assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    assert kube.get("serviceaccount", name, namespace)
    assert kube.get("clusterrole", name)["rules"]
    assert kube.get("clusterrolebinding", name)["subjects"] == [
        {"kind": "ServiceAccount", "name": name, "namespace": namespace}
    ]
    assert kube.get("role", f"{name}-leader-election", namespace)
    assert kube.get("service", f"{name}-metrics", namespace)["spec"]["ports"][0]["name"] == "metrics"
    for crd in LLMOP_CRDS:
        meta = kube.get("crd", crd)["metadata"]
        assert meta["annotations"]["meta.helm.sh/release-name"] == name
        assert meta["annotations"]["helm.sh/resource-policy"] == "keep"
    # kwok schedules the pods and reports them Running (it runs no containers).
    eventually(
        lambda: (
            len(
                [
                    p
                    # The operator's own pods (the gateway's share the instance label).
                    for p in kube.list(
                        "pods", namespace, f"app.kubernetes.io/name=llmop,app.kubernetes.io/instance={name}"
                    )
                    if p["status"].get("phase") == "Running"
                ]
            )
            == 2
        ),
        timeout=60,
        message="two operator pods Running",
    )
    notes = release["notes"]
    assert "wait --for=condition=Ready llmb/tiny" in notes and f"get lease {name}" in notes
    # The first backend the notes suggest is one the API server accepts, pasted as it is.
    suggested = notes.split("<<'YAML'\n", 1)[1].split("\nYAML\n", 1)[0]
    kube.run("apply", "--dry-run=server", "-n", "default", "-f", "-", input=suggested)


def can_i(kube: Kube, account: str, *args: str) -> bool:
    result = kube.run("auth", "can-i", *args, f"--as={account}", check=False)
    return result.stdout.strip() == "yes"


def test_the_service_account_may_do_what_llmop_does_and_nothing_else(
    kube: Kube, release: dict[str, Any]
) -> None:
    account = f"system:serviceaccount:{release['namespace']}:{release['name']}"
    allowed = [
        ("patch", "deployments.apps", "-n", "anywhere"),
        ("create", "services", "-n", "anywhere"),
        ("get", "services", "-n", "anywhere"),  # read first: llmop writes over no one else's
        ("patch", "llmbackends.llmop.dev/status", "-n", "anywhere"),
        ("create", "modelpulls.llmop.dev", "-n", "anywhere"),
        ("watch", "pods", "--all-namespaces"),
        ("get", "secrets", "-n", "anywhere"),
        ("create", "events", "-n", "anywhere"),
        ("update", "leases.coordination.k8s.io", "-n", release["namespace"]),
        ("create", "secrets", "-n", "anywhere"),  # each agent's token; never updated or deleted
        ("get", "configmaps", "-n", "anywhere"),  # a ConfigMap a pod would get must opt in
        ("get", "serviceaccounts", "-n", "anywhere"),  # the ServiceAccount a pod would run as too
        ("patch", "poddisruptionbudgets.policy", "-n", "anywhere"),  # a multi-replica backend's
        ("get", "nodes"),  # the GPU memory label of a GPU backend's node (Fits)
        ("patch", "pods", "-n", "anywhere"),  # the deletion cost of a drained pod (spec.autoscaling)
        ("watch", "modelcaches.llmop.dev", "--all-namespaces"),
        ("patch", "modelcaches.llmop.dev/status", "-n", "anywhere"),
    ]
    denied = [
        ("update", "secrets", "-n", "anywhere"),
        ("delete", "secrets", "-n", "anywhere"),
        ("list", "secrets", "-n", "anywhere"),
        ("patch", "nodes"),
        ("list", "nodes"),  # get by name only
        ("delete", "deployments.apps", "-n", "anywhere"),
        ("delete", "llmbackends.llmop.dev", "-n", "anywhere"),
        ("create", "llmbackends.llmop.dev", "-n", "anywhere"),  # users create backends, llmop never
        ("update", "llmbackends.llmop.dev", "-n", "anywhere"),  # kopf patches; nothing replaces
        ("update", "leases.coordination.k8s.io", "-n", "kube-system"),
        ("list", "configmaps", "-n", "anywhere"),  # get only: a ConfigMap's opt-in label
        ("create", "serviceaccounts", "-n", "anywhere"),  # get only: its opt-in label
        ("create", "pods", "-n", "anywhere"),
        ("delete", "pods", "-n", "anywhere"),  # a scale-down goes through the Deployment
        ("create", "modelcaches.llmop.dev", "-n", "anywhere"),  # users declare caches
        ("delete", "modelcaches.llmop.dev", "-n", "anywhere"),
        ("create", "customresourcedefinitions.apiextensions.k8s.io"),
    ]
    assert [a for a in allowed if not can_i(kube, account, *a)] == []
    assert [d for d in denied if can_i(kube, account, *d)] == []


def test_a_namespaced_install_grants_nothing_outside_its_namespaces(
    kube: Kube, release: dict[str, Any]
) -> None:
    with kube.namespace("team") as team, kube.namespace("other") as other, kube.namespace("ops") as ops:
        name = f"team-{team.rsplit('-', 1)[1]}"
        helm(
            kube,
            "install",
            name,
            str(CHART),
            "-n",
            ops,
            "--set",
            "crds.install=false",
            "--set-json",
            f'watchNamespaces=["{team}"]',
        )
        try:
            account = f"system:serviceaccount:{ops}:{name}-llmop"
            assert can_i(kube, account, "patch", "deployments.apps", "-n", team)
            assert can_i(kube, account, "get", "secrets", "-n", team)
            assert not can_i(kube, account, "patch", "deployments.apps", "-n", other)
            assert not can_i(kube, account, "get", "secrets", "-n", other)
            assert not can_i(kube, account, "watch", "pods", "--all-namespaces")
            assert can_i(kube, account, "watch", "namespaces")  # kopf notices namespaces come and go
        finally:
            helm(kube, "uninstall", name, "-n", ops, "--wait", check=False)


# --- the operator as the chart's ServiceAccount ---------------------------------------------------


def service_account_kubeconfig(kube: Kube, release: dict[str, Any], path: Path) -> Path:
    """A kubeconfig that authenticates with a token of the chart's ServiceAccount."""
    token = kube.run(
        "create", "token", release["name"], "-n", release["namespace"], "--duration=2h"
    ).stdout.strip()
    admin = yaml.safe_load(kube.kubeconfig.read_text())
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": admin["clusters"],
        "users": [{"name": "llmop", "user": {"token": token}}],
        "contexts": [
            {"name": "llmop", "context": {"cluster": admin["clusters"][0]["name"], "user": "llmop"}}
        ],
        "current-context": "llmop",
    }
    path.write_text(yaml.safe_dump(config))
    return path


def chart_env(release: dict[str, Any]) -> dict[str, str]:
    deployment = next(doc for doc in release["manifest"] if doc["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


@pytest.fixture(scope="module")
def operators(
    kube: Kube,
    release: dict[str, Any],
    modelsource: ModelSource,
    podrunner: PodRunner,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Any]]:
    """Two `llmop run` replicas with the chart's environment and the chart's ServiceAccount."""
    work = tmp_path_factory.mktemp("install")
    kubeconfig = service_account_kubeconfig(kube, release, work / "llmop.kubeconfig")
    env = chart_env(release)
    assert env["LLMOP_LEADER_ELECTION"] == "true" and env["LLMOP_LEASE_DURATION"] == f"{LEASE_SECONDS}s"
    replicas: dict[str, Any] = {}
    for replica in ("replica-a", "replica-b"):
        port = free_port()
        process = OperatorProcess(
            kubeconfig=kubeconfig,
            log_path=work / f"{replica}.log",
            env={
                **env,
                "POD_NAME": replica,
                "POD_NAMESPACE": release["namespace"],
                # This machine is not a pod: loopback, and a port of its own for each replica.
                "LLMOP_METRICS_HOST": "127.0.0.1",
                "LLMOP_METRICS_PORT": str(port),
                "LLMOP_HF_ENDPOINT": modelsource.url,
                "LLMOP_PULL_PROGRESS_INTERVAL": "1s",
                "LLMOP_LOG_FORMAT": "plain",
            },
        )
        process.start()
        replicas[replica] = {"process": process, "port": port}
        # One after the other, so the first is the leader and the second a standby.
        if replica == "replica-a":
            process.wait_started()
    eventually(lambda: role_of(replicas["replica-b"]["port"]) == "standby", timeout=30, message="a standby")
    try:
        yield {"replicas": replicas, "kubeconfig": kubeconfig, "work": work}
    finally:
        for replica in replicas.values():
            replica["process"].stop()
        if os.environ.get("LLMOP_SHOW_OPERATOR_LOG"):
            for name, replica in replicas.items():
                print(f"--- {name}\n{replica['process'].log()[-20000:]}")


def leader_and_standby(kube: Kube, release: dict[str, Any], operators: dict[str, Any]) -> tuple[str, str]:
    holder = kube.get("lease", release["name"], release["namespace"])["spec"].get("holderIdentity")
    others = [name for name in operators["replicas"] if name != holder]
    assert holder in operators["replicas"] and len(others) == 1, holder
    return holder, others[0]


def wait_ready(kube: Kube, kind_name: str, namespace: str, timeout: str = "180s") -> None:
    result = kube.run(
        "wait",
        "-n",
        namespace,
        "--for=condition=Ready",
        kind_name,
        f"--timeout={timeout}",
        check=False,
        timeout=600,
    )
    if result.returncode != 0:
        body = kube.get(*kind_name.split("/"), namespace)
        raise AssertionError(
            f"{kind_name} not Ready: {result.stderr}\nstatus: {yaml.safe_dump(body.get('status'))}"
        )


def example(name: str) -> dict[str, Any]:
    return dict(yaml.safe_load((REPO / "examples" / f"{name}.yaml").read_text()))


def test_the_operator_as_the_chart_service_account_brings_backends_to_ready(
    kube: Kube, release: dict[str, Any], operators: dict[str, Any], tmp_path: Path
) -> None:
    leader, standby = leader_and_standby(kube, release, operators)
    replicas = operators["replicas"]
    lead_port, standby_port = replicas[leader]["port"], replicas[standby]["port"]
    assert role_of(lead_port) == "leader" and role_of(standby_port) == "standby"
    before = scrape(lead_port)
    assert metric(before, "llmop_leader") == 1 and metric(scrape(standby_port), "llmop_leader") == 0

    with (
        kube.namespace("install") as namespace,
        run_vllm_standin(tmp_path, served_model_name="gateway") as url,
    ):
        external = example("external")
        external["spec"]["external"]["url"] = url
        kube.apply(external, namespace)
        kube.apply(example("llamacpp"), namespace)
        wait_ready(kube, "llmb/external-openai", namespace)
        wait_ready(kube, "llmb/llamacpp-tiny", namespace)
        pull = kube.list("mpull", namespace)[0]
        assert pull["status"]["phase"] == "Succeeded", pull["status"]
        # What Argo CD shows for the live objects.
        for backend in kube.list("llmb", namespace):
            assert argocd_health("LLMBackend", backend)["status"] == "Healthy", backend["status"]
        assert argocd_health("ModelPull", pull)["status"] == "Healthy"

        # Every request was the ServiceAccount's, and RBAC refused none of them. (A namespace
        # another module is deleting answers 403 "being terminated": that is no RBAC refusal.)
        for replica in replicas.values():
            log = replica["process"].log()
            assert RBAC_REFUSAL.search(log) is None, log[-3000:]
            assert "Not enough permissions" not in log
        # Outside its role, the same identity is refused: it may not list Secrets.
        refused = subprocess.run(
            [
                str(binaries_cached()["kubectl"]),
                "--kubeconfig",
                str(operators["kubeconfig"]),
                "get",
                "secrets",
                "-n",
                namespace,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert refused.returncode != 0 and "forbidden" in refused.stderr.lower()

        # The leader did the work, and its metrics moved; the standby did nothing.
        after = scrape(lead_port)
        assert metric(after, "llmop_reconcile_total", kind="LLMBackend", result="success") >= 2
        assert metric(after, "llmop_reconcile_duration_seconds_count", kind="LLMBackend") >= 2
        assert metric(after, "llmop_backends", phase="Ready") == 2
        assert metric(after, "llmop_backend_time_to_ready_seconds_count") >= 2
        assert metric(after, "llmop_status_writes_total", kind="LLMBackend") > metric(
            before, "llmop_status_writes_total", kind="LLMBackend"
        )
        assert metric(after, "llmop_pull_bytes_total") > 0
        assert metric(after, "llmop_pull_duration_seconds_count") >= 1
        idle = scrape(standby_port)
        assert metric(idle, "llmop_reconcile_duration_seconds_count", kind="LLMBackend") == 0
        assert metric(idle, "llmop_status_writes_total", kind="LLMBackend") == 0
        assert "ensured the objects" not in replicas[standby]["process"].log()


def test_killing_the_leader_hands_over_to_the_standby_within_the_lease(
    kube: Kube, release: dict[str, Any], operators: dict[str, Any], tmp_path: Path
) -> None:
    leader, standby = leader_and_standby(kube, release, operators)
    replicas = operators["replicas"]
    with (
        kube.namespace("takeover") as namespace,
        run_vllm_standin(tmp_path, served_model_name="handover") as url,
    ):
        killed = time.monotonic()
        replicas[leader]["process"].kill()  # SIGKILL: no chance to release the Lease
        manifest = example("external")
        manifest["metadata"]["name"] = "after-takeover"
        manifest["spec"]["external"]["url"] = url
        kube.apply(manifest, namespace)
        eventually(
            lambda: (
                kube.get("lease", release["name"], release["namespace"])["spec"].get("holderIdentity")
                == standby
            ),
            timeout=LEASE_SECONDS * 5,
            interval=0.2,
            message=f"{standby} holds the Lease",
        )
        took_lease = time.monotonic() - killed
        wait_ready(kube, "llmb/after-takeover", namespace, timeout="60s")
        ready = time.monotonic() - killed
        print(
            f"\ntakeover: the standby held the Lease {took_lease:.1f}s after the leader was killed "
            f"(lease {LEASE_SECONDS}s); a backend created at the kill was Ready after {ready:.1f}s"
        )
        # Not before the lease ran out (nobody may act while the dead leader's lease is valid),
        # and not much after it (generous: one lease, a retry period, and scheduling noise).
        assert LEASE_SECONDS - 1 <= took_lease <= LEASE_SECONDS + 10, took_lease
        assert ready <= LEASE_SECONDS + 30, ready
        port = replicas[standby]["port"]
        assert role_of(port) == "leader"
        samples = scrape(port)
        assert metric(samples, "llmop_leader") == 1
        assert metric(samples, "llmop_reconcile_total", kind="LLMBackend", result="success") >= 1

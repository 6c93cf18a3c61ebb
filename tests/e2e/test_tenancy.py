"""A hostile tenant: a user who may manage LLMBackends and ModelPulls in one namespace and may not
read Secrets, acting through `kubectl --as`. Each attack in docs/security.md is tried and must be
refused with a message the tenant can read, while nothing of a Secret, an internal page's body or
a URL's credentials reaches status, Events or the operator's log.
"""

from __future__ import annotations

import base64
import http.server
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from support.kube import Kube, eventually, ready_condition, wait_backend_ready
from support.operator import OperatorProcess
from support.runtimes import run_openai_standin

pytestmark = pytest.mark.e2e

TENANT = "tenant@example.com"
SECRET_LABEL = {"llmop.dev/use": "true"}
API_KEY = "sk-tenancy-5f1c0ffee"
INTERNAL_MARKER = "INTERNAL-ADMIN-PAGE-7d41"


@dataclass
class Tenant(Kube):
    """kubectl as the tenant user: the API server's RBAC decides what it may do."""

    user: str = TENANT

    def run(self, *args: str, **kwargs: Any) -> Any:
        return super().run(f"--as={self.user}", *args, **kwargs)


def tenant_role(namespace: str) -> str:
    rules = [
        {"apiGroups": ["llmop.dev"], "resources": ["llmbackends", "modelpulls"], "verbs": ["*"]},
        {"apiGroups": [""], "resources": ["events", "pods"], "verbs": ["get", "list", "watch"]},
    ]
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "llm-team", "namespace": namespace},
        "rules": rules,
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "llm-team", "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "llm-team"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": TENANT}],
    }
    return yaml.safe_dump_all([role, binding])


@pytest.fixture
def tenant_ns(kube: Kube, operator: OperatorProcess) -> Iterator[str]:
    with kube.namespace("tenant") as name:
        kube.apply(tenant_role(name), name)
        yield name


@pytest.fixture
def tenant(kube: Kube, tenant_ns: str) -> Tenant:
    as_tenant = Tenant(kube.kubectl_path, kube.kubeconfig)
    assert (
        as_tenant.run("auth", "can-i", "get", "secrets", "-n", tenant_ns, check=False).stdout.strip() == "no"
    )
    return as_tenant


def external_backend(name: str, url: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "llmop.dev/v1alpha1",
        "kind": "LLMBackend",
        "metadata": {"name": name},
        "spec": {"external": {"url": url, "kind": "openai"}, "startup": {"probeInterval": "1s"}, **spec},
    }


def wait_not_ready(kube: Kube, name: str, namespace: str, words: str) -> dict[str, Any]:
    """The Ready condition once it is False and its message says `words`, as a user waits for it."""

    def refused() -> dict[str, Any] | None:
        condition = ready_condition(kube, name, namespace)
        return condition if condition.get("status") == "False" and words in condition["message"] else None

    found: dict[str, Any] = eventually(refused, timeout=30, message=f"Ready=False saying {words!r}")
    return found


def everything_shown(kube: Kube, namespace: str, operator: OperatorProcess) -> str:
    """What a user or the platform team can read about the namespace's backends."""
    statuses = [
        kube.run("get", kind, "-n", namespace, "-o", "jsonpath={.items[*].status}").stdout
        for kind in ("llmb", "modelpulls")
    ]
    events = kube.run("get", "events", "-n", namespace, "-o", "yaml").stdout
    return "".join(statuses) + events + operator.log()


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("http://10.0.0.5:8000/internal?", "query"),
        ("http://10.0.0.5:8000/v1?next=/admin", "query"),
        ("http://10.0.0.5:8000/#admin", "fragment"),
        ("http://admin:hunter2@10.0.0.5:8000", "user"),
        ("http://10.0.0.5:65536", "port"),
    ],
)
def test_an_external_url_that_could_reach_elsewhere_is_refused_at_apply(
    tenant: Tenant, tenant_ns: str, url: str, words: str
) -> None:
    result = tenant.apply(external_backend("sneaky", url), tenant_ns, check=False)
    assert result.returncode != 0 and words in result.stderr.lower(), result.stderr


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ({"startup": {"probeInterval": "0s"}}, "probeinterval"),
        ({"models": [{"name": " "}]}, "only spaces"),
        ({"securityContext": {"privileged": True}}, 'unknown field "spec.securitycontext.privileged"'),
        (
            {"podSecurityContext": {"sysctls": [{"name": "kernel.shm_rmid_forced", "value": "0"}]}},
            "unknown field",
        ),
    ],
)
def test_values_that_would_spin_or_break_the_operator_are_refused_at_apply(
    tenant: Tenant, tenant_ns: str, spec: dict[str, Any], words: str
) -> None:
    backend = external_backend("spinner", "http://10.0.0.5:8000", **spec)
    result = tenant.apply(backend, tenant_ns, check=False)
    assert result.returncode != 0 and words in result.stderr.lower(), result.stderr


def api_server_url(kube: Kube) -> str:
    config = yaml.safe_load(Path(kube.kubeconfig).read_text())
    return str(config["clusters"][0]["cluster"]["server"])


@pytest.mark.parametrize("target", ["api-server", "metadata"])
def test_the_api_server_and_the_metadata_address_are_never_probed(
    kube: Kube, tenant: Tenant, tenant_ns: str, operator: OperatorProcess, target: str
) -> None:
    url = api_server_url(kube) if target == "api-server" else "http://169.254.169.254"
    tenant.apply(external_backend("inside", url), tenant_ns)
    host = str(urlsplit(url).hostname)
    refused = wait_not_ready(tenant, "inside", tenant_ns, host)
    assert refused["reason"] == "TargetRefused", refused
    events = tenant.list("events", tenant_ns)
    assert any(e["reason"] == "TargetRefused" and host in e["message"] for e in events), events


class InternalPage(http.server.BaseHTTPRequestHandler):
    """An internal admin page: answers every path with HTML a tenant must never see echoed."""

    def do_GET(self) -> None:
        body = f"<html><body>{INTERNAL_MARKER} root password: hunter2</body></html>".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def internal_page() -> Iterator[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), InternalPage)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()


def test_an_internal_pages_body_is_described_never_echoed(
    kube: Kube, tenant: Tenant, tenant_ns: str, operator: OperatorProcess, internal_page: str
) -> None:
    tenant.apply(external_backend("echo", internal_page), tenant_ns)
    seen = wait_not_ready(tenant, "echo", tenant_ns, "text/html")
    assert "200" in seen["message"], seen
    assert INTERNAL_MARKER not in everything_shown(kube, tenant_ns, operator)


@pytest.fixture
def keyed_server(tmp_path: Path) -> Iterator[str]:
    with run_openai_standin(tmp_path, "localai", ["org/keyed"], api_key=API_KEY) as url:
        yield url


def api_key_secret(labels: dict[str, str] | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": "team-key", **({"labels": labels} if labels else {})}
    value = base64.b64encode(API_KEY.encode()).decode()
    return {"apiVersion": "v1", "kind": "Secret", "metadata": metadata, "data": {"key": value}}


def test_a_secret_is_read_only_once_it_opts_in(
    kube: Kube, tenant: Tenant, tenant_ns: str, operator: OperatorProcess, keyed_server: str
) -> None:
    kube.apply(api_key_secret(), tenant_ns)  # the admin's Secret, which the tenant may not read
    ref = {"name": "team-key", "key": "key"}
    tenant.apply(external_backend("keyed", keyed_server, apiKeySecretRef=ref), tenant_ns)
    refused = wait_not_ready(tenant, "keyed", tenant_ns, "team-key")
    assert "llmop.dev/use" in refused["message"], refused

    kube.apply(api_key_secret(SECRET_LABEL), tenant_ns)  # whoever may read it opts it in
    wait_backend_ready(tenant, "keyed", tenant_ns, timeout="60s")
    assert API_KEY not in everything_shown(kube, tenant_ns, operator)


def test_credentials_in_a_model_url_are_never_shown(
    kube: Kube, tenant: Tenant, tenant_ns: str, operator: OperatorProcess, keyed_server: str
) -> None:
    port = urlsplit(keyed_server).port
    model = f"http://puller:hunter2@127.0.0.1:{port}/files/tiny.gguf?X-Amz-Signature=f00dfeed"
    backend = {
        "apiVersion": "llmop.dev/v1alpha1",
        "kind": "LLMBackend",
        "metadata": {"name": "creds"},
        "spec": {"runtime": "llamacpp", "models": [{"name": model}], "storage": {"size": "1Gi"}},
    }
    tenant.apply(backend, tenant_ns)
    eventually(
        lambda: kube.get("llmb", "creds", tenant_ns).get("status", {}).get("phase"),
        timeout=30,
        message="a status for the backend",
    )
    shown = everything_shown(kube, tenant_ns, operator)
    assert "hunter2" not in shown and "f00dfeed" not in shown


def victim_service() -> dict[str, Any]:
    """Another workload's Service, which the tenant may not edit."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "victim"},
        "spec": {"selector": {"app": "database"}, "ports": [{"port": 5432, "targetPort": 5432}]},
    }


def test_a_backend_named_after_a_service_it_does_not_own_takes_nothing_over(
    kube: Kube, tenant: Tenant, tenant_ns: str, operator: OperatorProcess
) -> None:
    """A forced apply under a taken name would point the database's clients at the tenant's pods,
    and deleting the backend would then delete the database's Service."""
    kube.apply(victim_service(), tenant_ns)
    assert (
        tenant.run("auth", "can-i", "patch", "services", "-n", tenant_ns, check=False).stdout.strip() == "no"
    )
    before = kube.get("service", "victim", tenant_ns)
    backend = {
        "apiVersion": "llmop.dev/v1alpha1",
        "kind": "LLMBackend",
        "metadata": {"name": "victim"},
        "spec": {"runtime": "ollama", "models": [{"name": "tiny:latest"}]},
    }
    tenant.apply(backend, tenant_ns)
    refused = wait_not_ready(tenant, "victim", tenant_ns, "Service 'victim' already exists")
    assert refused["reason"] == "NameConflict", refused

    after = kube.get("service", "victim", tenant_ns)
    assert after["spec"]["selector"] == {"app": "database"}
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert not after["metadata"].get("ownerReferences")
    assert kube.get_or_none("deployment", "victim", tenant_ns) is None

    tenant.run("delete", "llmb", "victim", "-n", tenant_ns, "--wait=true", "--timeout=60s")
    assert kube.get_or_none("service", "victim", tenant_ns) is not None, "the database's Service survived"

"""Session fixtures: the cluster the integration and e2e tiers run against."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.kube import REPO, Kube, eventually


@pytest.fixture(scope="session")
def kube() -> Iterator[Kube]:
    """A real API server with the llmop CRDs installed.

    With KUBECONFIG set, the tests run against that cluster (kind, or any other); otherwise a
    local control plane is built (cached) and started for the session, and stopped after it.
    """
    from localcluster import LocalCluster, binaries_cached

    kubectl = binaries_cached()["kubectl"]
    given = os.environ.get("KUBECONFIG")
    cluster = None
    if given:
        kubeconfig = Path(given)
    else:
        # One cluster per test session, so sessions running side by side never share pods.
        cluster = LocalCluster(os.environ.get("LLMOP_TEST_CLUSTER") or f"cluster-test-{os.getpid()}")
        kubeconfig = cluster.up()
    client = Kube(kubectl, kubeconfig)
    client.run("apply", "--server-side", "-f", str(REPO / "crds"))
    for crd in ("llmbackends.llmop.dev", "modelpulls.llmop.dev"):
        client.run("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")
    # Established can precede discovery by a moment; wait until kubectl can resolve the kinds.
    eventually(
        lambda: client.run("get", "llmb,mpull", "-A", check=False).returncode == 0,
        timeout=30,
        message="llmop kinds served",
    )
    try:
        yield client
    finally:
        if cluster is not None and not os.environ.get("LLMOP_KEEP_CLUSTER"):
            cluster.down()


@pytest.fixture
def namespace(kube: Kube) -> Iterator[str]:
    with kube.namespace() as name:
        yield name

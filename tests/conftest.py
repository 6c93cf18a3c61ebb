"""Session fixtures: the cluster the integration and e2e tiers run against."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.kube import LLMOP_CRDS, REPO, Kube, eventually


@pytest.fixture(scope="session")
def local_cluster() -> Iterator[Any]:
    """The local control plane the tests run against (a `localcluster.LocalCluster`); None when
    KUBECONFIG names another cluster (kind, or any other)."""
    from localcluster import LocalCluster

    if os.environ.get("KUBECONFIG"):
        yield None
        return
    # One cluster per test session, so sessions running side by side never share pods.
    cluster = LocalCluster(os.environ.get("LLMOP_TEST_CLUSTER") or f"cluster-test-{os.getpid()}")
    cluster.up()
    try:
        yield cluster
    finally:
        if not os.environ.get("LLMOP_KEEP_CLUSTER"):
            cluster.down()


@pytest.fixture(scope="session")
def kube(local_cluster: Any) -> Iterator[Kube]:
    """A real API server with the llmop CRDs installed: the local control plane, built (cached)
    and started for the session, or the cluster KUBECONFIG names."""
    from localcluster import binaries_cached

    kubectl = binaries_cached()["kubectl"]
    kubeconfig = local_cluster.kubeconfig if local_cluster is not None else Path(os.environ["KUBECONFIG"])
    client = Kube(kubectl, kubeconfig)
    client.run("apply", "--server-side", "-f", str(REPO / "crds"))
    for crd in LLMOP_CRDS:
        client.run("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")
    # Established can precede discovery by a moment; wait until kubectl can resolve the kinds.
    eventually(
        lambda: client.run("get", "llmb,mpull,mcache", "-A", check=False).returncode == 0,
        timeout=30,
        message="llmop kinds served",
    )
    yield client


@pytest.fixture
def namespace(kube: Kube) -> Iterator[str]:
    with kube.namespace() as name:
        yield name

"""What the integration tests that drive llmop's ensure path share: an operator context whose
client talks to the session's API server, configured as the chart configures an in-cluster
operator."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from llmop.k8s.client import KubeClient
from llmop.loops.context import OperatorContext
from support.configs import IN_CLUSTER_CONFIG
from support.kube import Kube


@pytest.fixture
async def context(kube: Kube) -> AsyncIterator[OperatorContext]:
    result = OperatorContext(config=IN_CLUSTER_CONFIG)
    result.kube = KubeClient.from_environment(str(kube.kubeconfig))
    yield result
    await result.kube.close()

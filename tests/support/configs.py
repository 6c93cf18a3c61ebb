"""Operator settings the tests build llmop's objects with."""

from __future__ import annotations

from llmop.config import OperatorConfig, parse_labels

#: An operator that knows where its pods run, as the chart sets it: NetworkPolicies are rendered.
IN_CLUSTER_CONFIG = OperatorConfig(
    operator_namespace="llmop-system",
    operator_pod_labels=parse_labels("app.kubernetes.io/name=llmop,app.kubernetes.io/instance=llmop"),
)

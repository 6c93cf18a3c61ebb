"""A BackendObserver built around a context the test shapes, for the backend ns/b."""

from __future__ import annotations

from typing import Any

import kopf

from llmop.loops.backend_observer import BackendObserver
from llmop.loops.context import OperatorContext


def observer_of(context: OperatorContext, spec: dict[str, Any]) -> BackendObserver:
    """The observer of backend ns/b (generation 1) with `spec`, no pods and no pulls."""
    body = kopf.Body({"metadata": {"name": "b", "namespace": "ns", "generation": 1}, "spec": spec})
    return BackendObserver(
        "b",
        "ns",
        body,
        context,
        kopf.DaemonStopped({}),
        pods=list,
        pulls=list,
        logger=kopf.LocalObjectLogger(body=body, settings=kopf.OperatorSettings()),
    )

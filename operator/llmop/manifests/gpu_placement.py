"""GPUs chosen by what they are: gpu.product and gpu.minMemory as a required node affinity on
the labels GPU feature discovery publishes, added to whatever affinity the user wrote."""

from __future__ import annotations

import math
import re
from copy import deepcopy
from typing import Any

from llmop.models.backend import GPU_MEMORY_LABEL, GPU_PRODUCT_LABEL, LLMBackendSpec

MIB = 1024 * 1024
_QUANTITY = re.compile(r"^([0-9]+)(Ki|Mi|Gi|Ti|k|M|G|T)?$")
_UNITS: dict[str | None, int] = {
    None: 1,
    **{suffix: 1024 ** (power + 1) for power, suffix in enumerate(("Ki", "Mi", "Gi", "Ti"))},
    **{suffix: 1000 ** (power + 1) for power, suffix in enumerate(("k", "M", "G", "T"))},
}


def min_memory_mib(text: str) -> int:
    """gpu.minMemory in whole MiB, rounded up (the label counts MiB); ValueError if it is no size
    the CRD accepts."""
    match = _QUANTITY.match(text.strip())
    if match is None:
        raise ValueError(f"gpu.minMemory {text!r} is not a size such as 40Gi")
    return math.ceil(int(match[1]) * _UNITS[match[2]] / MIB)


def gpu_requirements(spec: LLMBackendSpec) -> list[dict[str, Any]]:
    """Node selector requirements for the GPUs the spec asks for; none when it names none."""
    requirements: list[dict[str, Any]] = []
    if spec.gpu.product:
        requirements.append({"key": GPU_PRODUCT_LABEL, "operator": "In", "values": list(spec.gpu.product)})
    if spec.gpu.min_memory:
        # Gt compares integers: more than one MiB below the minimum is at least the minimum.
        floor = str(min_memory_mib(spec.gpu.min_memory) - 1)
        requirements.append({"key": GPU_MEMORY_LABEL, "operator": "Gt", "values": [floor]})
    return requirements


def pod_affinity(spec: LLMBackendSpec) -> dict[str, Any] | None:
    """The user's affinity with the GPU requirements added to every required node selector term
    (terms are ORed, requirements within a term ANDed: each term must also pick the GPUs).

    An affinity whose shape is not a pod's is passed on as written: the API server rejects the
    Deployment with its own message, which the status shows.
    """
    affinity = deepcopy(spec.affinity) if spec.affinity else {}
    requirements = gpu_requirements(spec)
    if not requirements:
        return affinity or None
    node = affinity.setdefault("nodeAffinity", {})
    if not isinstance(node, dict):
        return affinity
    required = node.setdefault("requiredDuringSchedulingIgnoredDuringExecution", {})
    if not isinstance(required, dict):
        return affinity
    terms = required.get("nodeSelectorTerms") or []
    if not isinstance(terms, list) or not all(isinstance(term, dict) for term in terms):
        return affinity
    if not terms:
        terms = [{}]
    for term in terms:
        expressions = term.get("matchExpressions") or []
        if isinstance(expressions, list):
            term["matchExpressions"] = [*expressions, *deepcopy(requirements)]
    required["nodeSelectorTerms"] = terms
    return affinity

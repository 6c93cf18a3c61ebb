"""The Fits condition: does the model the runtime loads fit in the GPUs its pods were given?

Pure, from what llmop already knows: the model's size (the runtime's own listing, or what its
ModelPull's source announced), and the GPU memory of the nodes the pods are placed on (the
`nvidia.com/gpu.memory` label GPU feature discovery publishes, in MiB) times `gpu.count`. The size
is of the weights alone: the runtime needs more (the KV cache of its context, activations, CUDA's
own share), so a model that does not fit by this count cannot load, and one that fits may still
not. Messages say "at least" for that reason.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from llmop.models.backend import GPU_MEMORY_LABEL, LLMBackendSpec
from llmop.models.base import Condition
from llmop.reconcile.conditions import condition, status_text

FITS = "Fits"
MIB = 1024 * 1024
GIB = 1024 * MIB
#: Sizes past these are no model and no GPU (a runtime's or a status's absurd answer): unknown.
MAX_MODEL_BYTES = 1 << 50  # 1 PiB
MAX_GPU_MIB = 16 * 1024 * 1024  # 16 TiB per GPU
_MIB_LABEL = re.compile(r"^[0-9]{1,9}$")
_SHOWN_CHARS = 256


@dataclass(frozen=True)
class NodeGpus:
    """What llmop read of one node: the per-GPU memory its label gives, or why it has none."""

    memory_mib: int | None = None
    problem: str | None = None


def node_gpus(labels: Mapping[str, Any] | None) -> NodeGpus:
    """The node's per-GPU memory from its GPU feature discovery label; a label that is no whole
    number of MiB (or no plausible one) is reported, never trusted."""
    value = (labels or {}).get(GPU_MEMORY_LABEL)
    if value is None:
        return NodeGpus(problem=f"it has no {GPU_MEMORY_LABEL} label (is GPU feature discovery installed?)")
    text = str(value)
    if not _MIB_LABEL.match(text) or not 0 < int(text) <= MAX_GPU_MIB:
        return NodeGpus(problem=f"its {GPU_MEMORY_LABEL} label is no size in MiB: {text[:64]!r}")
    return NodeGpus(memory_mib=int(text))


def plausible_bytes(value: Any) -> int | None:
    """A byte count from an answer llmop does not control (a runtime, a status): a whole number
    from 1 byte to 1 PiB, else unknown."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        count = int(value)
    except (ValueError, OverflowError):
        return None
    return count if 0 < count <= MAX_MODEL_BYTES else None


def pull_model_bytes(status: Mapping[str, Any]) -> int | None:
    """One pod's worth of a ModelPull: the size the runtime listed once done, else the bytes the
    source announced, which the status sums over the pods pulling (a pod that announced nothing
    yet makes it less: still a floor)."""
    if (done := plausible_bytes(status.get("sizeBytes"))) is not None:
        return done
    _, total = pull_progress_bytes(status)
    replicas = status.get("replicas")
    pods = len(replicas) if isinstance(replicas, list) and replicas else 1
    return total // pods if total else None


def pull_progress_bytes(status: Mapping[str, Any]) -> tuple[int, int | None]:
    """The bytes a ModelPull has landed and the total it expects (None: not known yet), as its
    progress says, each held to the same plausible bounds."""
    progress = status.get("progress")
    if not isinstance(progress, Mapping):
        return 0, None
    return plausible_bytes(progress.get("completedBytes")) or 0, plausible_bytes(progress.get("totalBytes"))


@dataclass(frozen=True)
class FitsFacts:
    """What the Fits condition is computed from."""

    spec: LLMBackendSpec
    generation: int
    #: Each model the runtime may load, with its size in bytes where known (None: not yet).
    model_bytes: Mapping[str, int | None]
    #: The nodes the backend's pods are placed on, with what llmop read of each.
    nodes: Mapping[str, NodeGpus]
    context_length: int | None = None


def fits_condition(facts: FitsFacts) -> Condition | None:
    """Fits: False when a model's weights alone exceed the memory of the GPUs a pod was given;
    True when every model's weights fit; Unknown, saying which, when a size or the memory is not
    known. None for a backend without GPUs."""
    spec, gen = facts.spec, facts.generation
    if spec.external is not None or spec.gpu.count <= 0:
        return None
    if not facts.model_bytes:
        return condition(FITS, "Unknown", "NoModel", "the backend declares no model to load", gen)
    known = {name: size for name, size in facts.model_bytes.items() if size is not None}
    largest = max(known, key=lambda name: known[name], default=None)
    memory = _gpu_memory(facts.nodes, spec.gpu.count)
    if isinstance(memory, str):
        needs = f"; model {_shown(largest)} needs at least {_gib(known[largest])}" if largest else ""
        return condition(FITS, "Unknown", "GPUMemoryUnknown", f"{memory}{needs}", gen)
    total_bytes, described = memory
    if largest is not None and known[largest] > total_bytes:
        message = (
            f"model {_shown(largest)} needs at least {_gib(known[largest])} of GPU memory (its weights); "
            f"the selected GPUs have {_gib(total_bytes)} ({described}): it cannot load"
        )
        return condition(FITS, False, "ModelTooLarge", message, gen)
    if unknown := [name for name, size in facts.model_bytes.items() if size is None]:
        message = (
            f"the size of model {_shown(unknown[0])} is not known yet (its pull's source announces it, or "
            f"the runtime lists it); the selected GPUs have {_gib(total_bytes)} ({described})"
        )
        return condition(FITS, "Unknown", "ModelSizeUnknown", message, gen)
    assert largest is not None
    return condition(FITS, True, "WeightsFit", _fits_message(facts, largest, known[largest], memory), gen)


def _fits_message(facts: FitsFacts, name: str, size: int, memory: tuple[int, str]) -> str:
    total_bytes, described = memory
    context = f" of {facts.context_length} tokens" if facts.context_length else ""
    return (
        f"model {_shown(name)} needs at least {_gib(size)} of GPU memory (its weights); the selected GPUs "
        f"have {_gib(total_bytes)} ({described}); the KV cache of its context{context} comes on top"
    )


def _gpu_memory(nodes: Mapping[str, NodeGpus], count: int) -> tuple[int, str] | str:
    """(bytes, in words) of the smallest node's GPUs times gpu.count, or why it is not known."""
    if not nodes:
        return "no pod is placed on a node yet: the GPU memory is not known"
    for name, node in sorted(nodes.items()):
        if node.memory_mib is None:
            return status_text(f"the GPU memory of node {name} is not known: {node.problem}")
    name, node = min(sorted(nodes.items()), key=lambda item: item[1].memory_mib or 0)
    assert node.memory_mib is not None
    return count * node.memory_mib * MIB, f"{count} x {node.memory_mib} MiB on node {name}"


def loaded_models(spec: LLMBackendSpec, pulled: Iterable[str]) -> list[str]:
    """The models the runtime loads: vLLM and llama.cpp the first of spec.models (the one they
    serve); Ollama any model of the spec or pulled into it (it loads one at a time when they do not
    all fit, so each must fit on its own)."""
    names = [model.name for model in spec.models]
    if spec.runtime != "ollama":
        return names[:1]
    return list(dict.fromkeys([*names, *(name for name in pulled if isinstance(name, str) and name.strip())]))


def _gib(count: int) -> str:
    """GiB to a tenth, rounded down: "at least" stays true."""
    return f"{math.floor(count * 10 / GIB) / 10:.1f} GiB"


def _shown(name: str | None) -> str:
    return status_text(name or "", _SHOWN_CHARS)

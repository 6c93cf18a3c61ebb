"""Every runtime llmop knows, by kind. Adding a runtime: one module with its `DESCRIPTOR`, and one
line here."""

from __future__ import annotations

from llmop.models.backend import LLMBackendSpec
from llmop.runtimes import llamacpp, ollama, openai_compatible, vllm
from llmop.runtimes.descriptor import AdapterFactory, RuntimeDescriptor
from llmop.runtimes.errors import UnknownRuntimeKind

RUNTIMES: dict[str, RuntimeDescriptor] = {
    descriptor.kind: descriptor
    for descriptor in (
        ollama.DESCRIPTOR,
        vllm.DESCRIPTOR,
        llamacpp.DESCRIPTOR,
        *openai_compatible.DESCRIPTORS,
    )
}

KNOWN_KINDS: tuple[str, ...] = tuple(RUNTIMES)
#: The runtimes llmop deploys (spec.runtime); the rest it only observes (spec.external.kind).
MANAGED_KINDS: tuple[str, ...] = tuple(kind for kind, descriptor in RUNTIMES.items() if descriptor.managed)
#: Where a server llmop does not deploy listens when its URL names no port.
_EXTERNAL_DEFAULT_PORT = 8000


def descriptor_of(kind: str) -> RuntimeDescriptor:
    try:
        return RUNTIMES[kind.strip().lower()]
    except KeyError:
        raise UnknownRuntimeKind(kind, KNOWN_KINDS) from None


def adapter_factory(kind: str) -> AdapterFactory:
    return descriptor_of(kind).adapter


def managed_descriptor(spec: LLMBackendSpec) -> RuntimeDescriptor:
    """The runtime llmop deploys; ValueError for an external backend, which has no objects."""
    if spec.runtime is None:
        raise ValueError("an external backend has no Deployment or Service: llmop only observes it")
    return RUNTIMES[spec.runtime]


def serving_port(spec: LLMBackendSpec) -> int:
    """The port the runtime serves on: spec.port, else the runtime's own default."""
    default = RUNTIMES[spec.runtime].default_port if spec.runtime else None
    return spec.port or default or _EXTERNAL_DEFAULT_PORT

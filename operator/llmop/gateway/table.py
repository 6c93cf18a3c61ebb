"""The gateway's routing table: which pods serve which model right now, from LLMBackend objects.

Pure: built from the objects as the API server returns them (and the API keys read for them), so
it is tested without a cluster or a runtime. The operator's status is the truth the gateway routes
by: a pod is a target for a model only while the operator saw it serving that model.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from llmop.models.backend import MAX_POD_MODELS, LLMBackendSpec, LLMBackendStatus, ObservedModel
from llmop.runtimes.registry import serving_port
from llmop.sources import served_model_name

#: The capability each endpoint needs, as status names it per model (ObservedModel.capabilities).
CHAT = "chat"
COMPLETION = "completion"
EMBEDDINGS = "embeddings"
#: A chat request with `tools`.
TOOLS = "tools"
#: The same capability in status.capabilities, the backend-wide flags.
_BACKEND_FLAG = {CHAT: "chat", COMPLETION: "completions", EMBEDDINGS: "embeddings", TOOLS: "tools"}
#: Backend phases in which a model it expects is on its way: a request for it waits. `Idle` is
#: an autoscaled backend at zero replicas: the held request is what wakes it.
_COMING_PHASES = ("Pending", "Deploying", "Loading", "Degraded", "Idle", None)

#: Servers that say nothing per model: status guesses a generating model, which an embedding
#: model behind a generic OpenAI-compatible server is not; the server's own flags decide.
_UNKNOWN_PER_MODEL = ("openai",)

BackendKey = tuple[str, str]


@dataclass(frozen=True)
class Upstream:
    """One server that serves a model: a backend's pod, or an external server."""

    namespace: str
    backend: str
    pod: str
    #: The OpenAI-compatible base URL, ending in /v1.
    base_url: str
    api_key: str | None = field(default=None, repr=False)
    #: A server the tenant named (spec.external.url): connections to it pass the deny list.
    external: bool = False
    #: The backend has spec.autoscaling: the gateway reports its requests in flight.
    autoscaled: bool = False

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.backend}/{self.pod}"


@dataclass(frozen=True)
class ModelRoute:
    """One backend's offer of one model."""

    model: str
    namespace: str
    backend: str
    runtime: str | None
    serving: tuple[Upstream, ...]
    #: The backend expects to serve the model but no pod serves it yet (starting, loading).
    coming: bool
    #: What status says the model can do; None when status does not say.
    capabilities: frozenset[str] | None
    context_length: int | None = None
    loaded: bool | None = None
    #: The backend's phase, for messages (Loading, Failed, ...).
    phase: str | None = None
    #: The backend has spec.autoscaling: a request held for it is reported, which wakes it.
    autoscaled: bool = False
    #: The backend's pods that status marks draining (they get no new request).
    draining: tuple[str, ...] = ()

    def can(self, capability: str) -> bool:
        if capability == TOOLS and not self.observes_tools:
            return True  # the runtime does not say: it answers for itself
        return self.capabilities is None or capability in self.capabilities

    @property
    def observes_tools(self) -> bool:
        """Whether status knows tool support: Ollama says per model; llama.cpp serving one model
        reads it from its chat template (a router, which reports `loaded`, cannot). vLLM's
        tools depend on flags its API does not reveal."""
        return self.runtime == "ollama" or (self.runtime == "llamacpp" and self.loaded is None)


@dataclass(frozen=True)
class RoutingTable:
    routes: Mapping[str, tuple[ModelRoute, ...]] = field(default_factory=dict)
    #: Backends the table could not read, with why (a spec or status the models refuse).
    unreadable: tuple[str, ...] = ()
    #: The backends with spec.autoscaling, whose demand the gateway reports.
    autoscaled: frozenset[BackendKey] = frozenset()
    #: The pods marked draining, as (namespace, backend, pod).
    draining: frozenset[tuple[str, str, str]] = frozenset()

    def lookup(self, model: str) -> tuple[ModelRoute, ...]:
        return self.routes.get(model, ())

    def model_names(self) -> list[str]:
        return sorted(self.routes)


def build_table(
    backends: Iterable[Mapping[str, Any]], api_keys: Mapping[BackendKey, str | None] | None = None
) -> RoutingTable:
    """The table of every model the backends serve or are about to serve."""
    offers = {
        backend_key(body): read_backend(body, (api_keys or {}).get(backend_key(body))) for body in backends
    }
    return assemble(offers)


#: One backend's routes, or why the table cannot read it.
Offer = list[ModelRoute] | str


def backend_key(body: Mapping[str, Any]) -> BackendKey:
    metadata = body.get("metadata") or {}
    return str(metadata.get("namespace", "")), str(metadata.get("name", ""))


def read_backend(body: Mapping[str, Any], api_key: str | None) -> Offer:
    """The routes of one LLMBackend object; a watch reads only the backend that changed."""
    key = backend_key(body)
    try:
        spec = LLMBackendSpec.model_validate(body.get("spec") or {})
        status = LLMBackendStatus.model_validate(body.get("status") or {})
    except ValidationError as error:
        return f"{key[0]}/{key[1]}: {error.error_count()} invalid fields"
    autoscaled = spec.external is None and spec.autoscaling is not None
    return backend_routes(key, spec, status, api_key, autoscaled)


def assemble(offers: Mapping[BackendKey, Offer]) -> RoutingTable:
    """The table from each backend's routes, in the backends' order (cheap: nothing is parsed)."""
    routes: dict[str, list[ModelRoute]] = {}
    unreadable = []
    autoscaled = set()
    draining: set[tuple[str, str, str]] = set()
    for key, offer in sorted(offers.items()):
        if isinstance(offer, str):
            unreadable.append(offer)
            continue
        for route in offer:
            routes.setdefault(route.model, []).append(route)
            if route.autoscaled:
                autoscaled.add(key)
            draining.update((*key, pod) for pod in route.draining)
    found = {model: tuple(found) for model, found in routes.items()}
    return RoutingTable(found, tuple(unreadable), frozenset(autoscaled), frozenset(draining))


def backend_routes(
    key: BackendKey,
    spec: LLMBackendSpec,
    status: LLMBackendStatus,
    api_key: str | None,
    autoscaled: bool = False,
) -> list[ModelRoute]:
    """One route per model the backend's status lists, and per model of its spec while it is not
    Ready (a client sending that name waits for it rather than hearing it does not exist)."""
    observed = {model.name: model for model in status.models or []}
    names = list(observed)
    if status.phase in _COMING_PHASES:
        # By the name the runtime will serve it under, the one clients send (`org/repo`, not
        # `hf://org/repo`), so that a request for it waits rather than hearing it does not exist.
        names += [
            n for n in dict.fromkeys(served_model_name(m.name) for m in spec.models) if n not in observed
        ]
    upstreams = _upstreams(key, spec, status, api_key, autoscaled)
    return [_route(key, status, name, observed.get(name), upstreams, autoscaled) for name in names]


def _on_its_way(status: LLMBackendStatus, autoscaled: bool) -> bool:
    """Whether a request for a model the backend lists should wait for a pod: it is starting,
    or it is autoscaled and not failed (at zero, or its last pods draining: the request held is
    what brings a pod back)."""
    return status.phase in _COMING_PHASES or (autoscaled and status.phase != "Failed")


def _route(
    key: BackendKey,
    status: LLMBackendStatus,
    name: str,
    observed: ObservedModel | None,
    upstreams: list[tuple[Upstream, list[str] | None]],
    autoscaled: bool,
) -> ModelRoute:
    serving = tuple(upstream for upstream, listed in upstreams if listed is None or name in listed)
    return ModelRoute(
        model=name,
        namespace=key[0],
        backend=key[1],
        runtime=status.runtime,
        serving=serving,
        coming=not serving and _on_its_way(status, autoscaled),
        capabilities=_capabilities(status, observed),
        context_length=observed.context_length if observed else None,
        loaded=observed.loaded if observed else None,
        phase=status.phase,
        autoscaled=autoscaled,
        draining=tuple(pod.name for pod in status.pods or [] if pod.draining),
    )


def _upstreams(
    key: BackendKey, spec: LLMBackendSpec, status: LLMBackendStatus, api_key: str | None, autoscaled: bool
) -> list[tuple[Upstream, list[str] | None]]:
    """Each serving pod with the models it lists (None: every model status lists). A draining
    pod is leaving: it finishes what it has and gets nothing new."""
    namespace, name = key
    if spec.external is not None:
        # An external server has no pods in status: its phase says whether it serves.
        if status.phase != "Ready" or not status.openai_base_url:
            return []
        return [(Upstream(namespace, name, "external", status.openai_base_url, api_key, external=True), None)]
    port = serving_port(spec)
    found: list[tuple[Upstream, list[str] | None]] = []
    for pod in status.pods or []:
        if not (pod.ready and pod.phase == "Serving" and pod.ip) or pod.draining:
            continue
        host = f"[{pod.ip}]" if ":" in pod.ip else pod.ip
        # Status lists at most MAX_POD_MODELS per pod: a full list may leave out what it serves.
        listed = None if len(pod.models) >= MAX_POD_MODELS else list(pod.models)
        url = f"http://{host}:{port}/v1"
        found.append((Upstream(namespace, name, pod.name, url, api_key, autoscaled=autoscaled), listed))
    return found


def _capabilities(status: LLMBackendStatus, observed: ObservedModel | None) -> frozenset[str] | None:
    if observed is None:
        # Only in the spec, on its way: the backend's flags describe the models it serves now
        # (an Ollama server with none yet says it chats with nothing), not this one.
        return None
    if observed.capabilities and status.runtime not in _UNKNOWN_PER_MODEL:
        return frozenset(observed.capabilities)
    if status.capabilities is None:
        return None
    flags = status.capabilities.model_dump()
    return frozenset(capability for capability, flag in _BACKEND_FLAG.items() if flags.get(flag))

"""LLMBackend: run a runtime with its models on GPUs (or observe an external server)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field

from llmop.models.base import (
    CONDITIONS_LIST,
    ApiModel,
    Condition,
    EnvVar,
    KubeObject,
    SecretKeyReference,
    Toleration,
    bounded_duration_field,
    cel,
    duration_field,
    non_negative_field,
    validations,
)
from llmop.models.security import ContainerSecurity, PodSecurity

ManagedRuntime = Literal["ollama", "vllm", "llamacpp"]
ExternalKind = Literal["openai", "vllm", "ollama", "llamacpp", "tgi", "sglang", "localai", "lmstudio"]
BackendPhase = Literal["Pending", "Deploying", "Loading", "Ready", "Degraded", "Failed"]
#: startup.probeInterval's bounds: the CRD rejects others, and the operator holds a backend stored
#: before the rule to them (a zero interval would spin its observer).
PROBE_INTERVAL_BOUNDS = ("100ms", "10m")
#: warmup.timeout's bounds, held by the operator too: one warmup request must not hold a serving
#: pod's observer for hours.
WARMUP_TIMEOUT_BOUNDS = ("1s", "10m")
#: The llmop agent's port in every pod that has one (vllm, llamacpp): the runtime cannot take it.
AGENT_PORT = 8090
AGENT_RUNTIMES = ("vllm", "llamacpp")
#: Bounds that keep the CEL rules on each model name within the API server's cost budget.
MAX_SPEC_MODELS = 64
MAX_MODEL_NAME_CHARS = 4096
#: Status stays far below the API server's object limit (1.5 MiB) whatever a runtime lists.
MAX_STATUS_MODELS = 100
MAX_POD_MODELS = 10
#: The node labels GPU feature discovery publishes: the product name and each GPU's memory in MiB.
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
GPU_MEMORY_LABEL = "nvidia.com/gpu.memory"
MAX_GPU_PRODUCTS = 16
#: A non-empty label value (what a product is compared with), and the sizes gpu.minMemory takes.
LABEL_VALUE_PATTERN = "^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
GPU_MEMORY_PATTERN = "^[0-9]+(Ki|Mi|Gi|Ti|k|M|G|T)?$"
MAX_GPU_MEMORY = "64Ti"
#: A port in a URL: `url(self).getPort()` is '' when the URL names none.
URL_PORT_RULE = (
    "url(self).getPort() == '' || (int(url(self).getPort()) >= 1 && int(url(self).getPort()) <= 65535)"
)
URL_PORT_MESSAGE = "the port in the URL must be between 1 and 65535"


class ExternalEndpoint(ApiModel):
    """A server llmop does not deploy; it only probes and observes it."""

    url: str = Field(
        max_length=2048,
        description="Base URL of the server, e.g. http://10.0.0.5:8000 (a trailing /v1 is accepted).",
        json_schema_extra=validations(
            cel(
                "isURL(self) && url(self).getScheme() in ['http', 'https'] && url(self).getHost() != ''",
                "url must be an absolute http:// or https:// URL, e.g. http://10.0.0.5:8000",
            ),
            # llmop appends the API paths itself: a query or fragment would swallow them and make
            # llmop fetch a page of the tenant's choosing; a password in the URL leaks everywhere.
            cel(
                "!self.matches('^[^:/?#]+://[^/?#]*@')",
                "url must not carry user info (user:password@); put the API key in a Secret and "
                "name it in spec.apiKeySecretRef",
            ),
            cel(
                "!self.contains('?')",
                "url must not carry a query (?...): give the server's base URL, e.g. "
                "http://10.0.0.5:8000; llmop adds the API paths itself",
            ),
            cel(
                "!self.contains('#')",
                "url must not carry a fragment (#...): give the server's base URL, e.g. http://10.0.0.5:8000",
            ),
            # isURL() and url() accept any number as a port.
            cel(f"!isURL(self) || {URL_PORT_RULE}", URL_PORT_MESSAGE),
        ),
    )
    kind: ExternalKind = Field(
        default="openai",
        description="Which API the server speaks: openai, vllm, ollama, llamacpp, tgi, sglang, localai "
        "or lmstudio. Defaults to openai.",
    )


class ModelSpec(ApiModel):
    """A model the backend must serve."""

    name: str = Field(
        description="Model name as the runtime lists it: an Ollama tag (qwen3:0.6b), a Hugging Face id "
        "for vLLM (hf://org/repo[@revision]), or a GGUF for llama.cpp (hf://org/repo/file.gguf or "
        "https://host/path/file.gguf).",
        # maxLength in the schema only (it bounds the cost of these rules): the operator still
        # reads a backend stored before it.
        json_schema_extra={
            "maxLength": MAX_MODEL_NAME_CHARS,
            **validations(
                cel("self.trim().size() > 0", "model name must not be empty or only spaces"),
                cel(
                    "!self.matches('^https?://') || !isURL(self) || " + URL_PORT_RULE,
                    "model " + URL_PORT_MESSAGE,
                ),
            ),
        },
    )
    sha256: str | None = Field(
        default=None,
        description="Expected sha256 of the downloaded file, where the source publishes no digest.",
        pattern=r"^[a-f0-9]{64}$",
    )
    insecure: bool | None = Field(
        default=None,
        description="Pull from a plain-HTTP registry (Ollama), e.g. a registry inside the cluster.",
    )


class GPUSpec(ApiModel):
    """GPUs each replica gets."""

    count: int = non_negative_field(0, "GPUs per replica; 0 runs on CPU only.")
    resource_name: str = Field(
        default="nvidia.com/gpu",
        description="Extended resource that counts GPUs on nodes. Defaults to nvidia.com/gpu.",
    )
    product: list[Annotated[str, Field(max_length=63)]] | None = Field(
        default=None,
        description="GPU products the pods may run on, e.g. [NVIDIA-H100-80GB-HBM3]: nodes whose "
        f"{GPU_PRODUCT_LABEL} label (published by GPU feature discovery) is one of them. At most "
        f"{MAX_GPU_PRODUCTS}.",
        json_schema_extra={
            "maxItems": MAX_GPU_PRODUCTS,
            **validations(
                cel("self.size() > 0", "gpu.product must list at least one product, or be left out"),
                cel(
                    f"self.all(p, p.matches('{LABEL_VALUE_PATTERN}'))",
                    "each gpu.product must be a node label value, e.g. NVIDIA-H100-80GB-HBM3 "
                    "(letters, digits, '-', '_', '.'; at most 63 characters)",
                ),
            ),
        },
    )
    min_memory: str | None = Field(
        default=None,
        description="Least memory of each GPU, e.g. 40Gi: nodes whose "
        f"{GPU_MEMORY_LABEL} label (MiB, published by GPU feature discovery) is at least this much.",
        json_schema_extra={
            "maxLength": 16,
            **validations(
                cel(
                    f"self.matches('{GPU_MEMORY_PATTERN}') && quantity(self).isGreaterThan(quantity('0')) "
                    f"&& quantity(self).isLessThan(quantity('{MAX_GPU_MEMORY}'))",
                    f"gpu.minMemory must be a size above 0 and below {MAX_GPU_MEMORY}, such as 40Gi or 80G",
                ),
            ),
        },
    )


GPUSpec.model_config["json_schema_extra"] = validations(
    cel(
        "(!has(self.product) && !has(self.minMemory)) || (has(self.count) && self.count > 0)",
        "gpu.product and gpu.minMemory choose GPUs: set gpu.count to 1 or more as well",
    ),
)


class ResourceRequirements(ApiModel):
    """CPU and memory, as in a container spec."""

    requests: dict[str, str] | None = Field(default=None, description="Minimum resources, e.g. memory: 8Gi.")
    limits: dict[str, str] | None = Field(default=None, description="Maximum resources, merged with gpu.")


class StorageSpec(ApiModel):
    """The model volume: a PersistentVolumeClaim that survives pod restarts."""

    size: str = Field(default="50Gi", description="Size of the claim llmop creates. Defaults to 50Gi.")
    storage_class_name: str | None = Field(
        default=None, description="StorageClass of the claim; the cluster default when empty."
    )
    existing_claim: str | None = Field(
        default=None, description="Use this existing claim instead of creating one."
    )


class StartupSpec(ApiModel):
    """How llmop waits out a cold start."""

    timeout: str = duration_field(
        "30m",
        "Cold-start budget: how long the runtime may refuse connections or answer 503 while it loads "
        "weights before the backend is Stalled.",
    )
    probe_interval: str = bounded_duration_field(
        "1s",
        "How often llmop probes the runtime's API while the backend is not Ready (starting, loading, "
        "failing), so Ready shows within one interval of the runtime answering. Once Ready and unchanged, "
        "probes slow down to every 8s (longer when one operator observes more than 200 "
        "backends: 25 probes per second in all); any change brings back this pace.",
        *PROBE_INTERVAL_BOUNDS,
    )


class WarmupSpec(ApiModel):
    """Loading models into memory once the runtime serves."""

    enabled: bool = Field(default=True, description="Load the models into memory once the runtime serves.")
    timeout: str = bounded_duration_field(
        "2m", "How long one warmup request may take.", *WARMUP_TIMEOUT_BOUNDS
    )


class LLMBackendSpec(ApiModel):
    """What to run: a managed runtime or an external server, with its models and placement."""

    runtime: ManagedRuntime | None = Field(
        default=None, description="The runtime llmop deploys: ollama, vllm or llamacpp."
    )
    external: ExternalEndpoint | None = Field(
        default=None, description="Observe an existing server instead of deploying one."
    )
    image: str | None = Field(
        default=None, description="Container image; the operator's default for the runtime when empty."
    )
    replicas: int = non_negative_field(1, "Number of runtime pods.")
    models: list[ModelSpec] = Field(
        default_factory=list,
        # In the schema only: the operator still reads a backend stored before the bound.
        json_schema_extra={"maxItems": MAX_SPEC_MODELS},
        description=f"Models this backend must serve, at most {MAX_SPEC_MODELS}; llmop pulls each one "
        "that is missing.",
    )
    gpu: GPUSpec = Field(default_factory=GPUSpec, description="GPUs per replica.")
    resources: ResourceRequirements | None = Field(
        default=None, description="Extra CPU/memory requests and limits, merged with gpu."
    )
    node_selector: dict[str, str] | None = Field(default=None, description="Node labels pods must match.")
    tolerations: list[Toleration] | None = Field(
        default=None,
        description="Pod tolerations; a GPU backend tolerates the GPU resource's NoSchedule taint by default.",
    )
    affinity: KubeObject | None = Field(default=None, description="Pod affinity, as in a pod spec.")
    pod_security_context: PodSecurity | None = Field(
        default=None,
        description="Pod securityContext, merged key by key over llmop's (fsGroup 65532, seccompProfile "
        "RuntimeDefault): runAsUser, runAsGroup, runAsNonRoot, fsGroup, supplementalGroups, "
        "seccompProfile, e.g. runAsNonRoot and runAsUser for a namespace that enforces Pod Security "
        "'restricted'. No other field: none that grants a privilege.",
    )
    security_context: ContainerSecurity | None = Field(
        default=None,
        description="securityContext of the runtime container, merged key by key over llmop's "
        "(allowPrivilegeEscalation false, every capability dropped, seccompProfile RuntimeDefault): "
        "runAsUser, runAsGroup, runAsNonRoot, readOnlyRootFilesystem, seccompProfile. No other "
        "field: none that grants a privilege.",
    )
    runtime_class_name: str | None = Field(default=None, description="RuntimeClass of the pods, e.g. nvidia.")
    priority_class_name: str | None = Field(default=None, description="PriorityClass of the pods.")
    storage: StorageSpec | None = Field(
        default=None, description="A persistent model volume; an emptyDir when unset."
    )
    args: list[str] | None = Field(default=None, description="Extra arguments for the runtime.")
    env: list[EnvVar] | None = Field(
        default=None,
        description="Extra environment of the runtime container, as in a container. An HF_TOKEN entry "
        "(a Hugging Face token, best from a Secret with valueFrom.secretKeyRef) is given to the llmop "
        "agent too, which downloads vLLM's and llama.cpp's models from gated or private repos with it. "
        'A Secret named in a secretKeyRef must carry the label llmop.dev/use: "true".',
    )
    port: int = Field(
        default=0,
        description="Port the runtime listens on; 0 means the runtime's default "
        "(ollama 11434, vllm 8000, llamacpp 8080).",
        json_schema_extra=validations(cel("self >= 0 && self <= 65535", "port must be between 0 and 65535")),
    )
    api_key_secret_ref: SecretKeyReference | None = Field(
        default=None,
        description="Secret key holding an API key, sent as a bearer token; never copied into status. "
        'The Secret must carry the label llmop.dev/use: "true" (llmop uses no other Secret).',
    )
    startup: StartupSpec = Field(default_factory=StartupSpec, description="Cold-start behaviour.")
    warmup: WarmupSpec = Field(default_factory=WarmupSpec, description="Loading models into memory.")

    @property
    def runtime_kind(self) -> str:
        """The adapter kind that speaks to this backend's server."""
        if self.external is not None:
            return self.external.kind
        assert self.runtime is not None
        return self.runtime


LLMBackendSpec.model_config["json_schema_extra"] = validations(
    cel(
        "has(self.runtime) != has(self.external)",
        "set exactly one of spec.runtime (llmop deploys ollama, vllm or llamacpp) or spec.external "
        "(llmop observes an existing server)",
    ),
    cel(
        f"!has(self.runtime) || !(self.runtime in {list(AGENT_RUNTIMES)}) || !has(self.port) "
        f"|| self.port != {AGENT_PORT}",
        f"spec.port {AGENT_PORT} is the llmop agent's port in vllm and llamacpp pods: choose another "
        "port, or 0 for the runtime's default",
    ),
)


class ReplicaCounts(ApiModel):
    """Replica counts."""

    desired: int = Field(default=0, description="Replicas asked for.")
    ready: int = Field(default=0, description="Replicas whose runtime API answers.")
    summary: str = Field(default="0/0", description="ready/desired, as kubectl prints it.")


class ObservedModel(ApiModel):
    """A model as the runtime itself reports it; a figure the runtime does not report is absent."""

    name: str = Field(description="Name the runtime lists: what a client sends as `model`.")
    digest: str | None = Field(default=None, description="Content digest, where the runtime reports one.")
    size_bytes: int | None = Field(default=None, description="Size on disk in bytes.")
    modified_at: datetime | None = Field(default=None, description="When the runtime's copy last changed.")
    context_length: int | None = Field(
        default=None,
        description="Context the server runs the model with, in tokens (Ollama: /api/ps once loaded, "
        "else the Modelfile's num_ctx; llama.cpp: n_ctx; vLLM: max_model_len).",
    )
    trained_context_length: int | None = Field(
        default=None, description="Longest context the model was trained for, from its metadata."
    )
    capabilities: list[str] = Field(
        default_factory=list, description="chat, completion, embeddings, tools, vision, thinking, insert."
    )
    loaded: bool | None = Field(
        default=None,
        description="Whether the model is loaded in memory; absent where the runtime cannot tell.",
    )
    family: str | None = Field(default=None, description="Architecture family (Ollama's details).")
    parameter_size: str | None = Field(default=None, description="Parameter count as the runtime words it.")
    quantization: str | None = Field(default=None, description="Quantization level, e.g. Q4_K_M.")


class BackendCapabilities(ApiModel):
    """What the backend can serve, from the runtime and its models."""

    chat: bool = Field(default=False, description="Serves chat completions.")
    completions: bool = Field(default=False, description="Serves text completions.")
    embeddings: bool = Field(default=False, description="Serves embeddings.")
    streaming: bool = Field(default=False, description="Streams tokens.")
    tools: bool = Field(default=False, description="Supports tool calls.")


class PodState(ApiModel):
    """One replica's runtime state."""

    name: str = Field(description="Pod name.")
    ready: bool = Field(default=False, description="Whether its runtime API answers.")
    ip: str | None = Field(default=None, description="Pod IP llmop probes.")
    phase: str | None = Field(
        default=None, description="Runtime state: Pending, Starting, Loading, Serving, Failing, Refused."
    )
    models: list[str] = Field(
        default_factory=list,
        description=f"Models this pod's runtime lists, at most {MAX_POD_MODELS} (status.models has more).",
    )
    message: str | None = Field(default=None, description="Why the pod is not serving, if it is not.")
    last_probe: datetime | None = Field(
        default=None, description="When llmop last saw this pod's state change."
    )


class LLMBackendStatus(ApiModel):
    """State observed from the Kubernetes objects and the runtime's own API."""

    observed_generation: int | None = Field(default=None, description="The generation this status describes.")
    phase: BackendPhase | None = Field(
        default=None, description="Pending, Deploying, Loading, Ready, Degraded or Failed."
    )
    runtime: str | None = Field(default=None, description="Runtime kind being served.")
    endpoint: str | None = Field(default=None, description="Base URL of the runtime's API.")
    openai_base_url: str | None = Field(
        default=None, alias="openaiBaseURL", description="OpenAI-compatible base URL (ends in /v1)."
    )
    replicas: ReplicaCounts | None = Field(default=None, description="Desired and serving replicas.")
    models: list[ObservedModel] | None = Field(
        default=None,
        description=f"Models observed from the runtime: those of spec.models first, at most {MAX_STATUS_MODELS}.",
    )
    models_omitted: int | None = Field(
        default=None,
        description=f"How many more models the runtime lists, left out of models (beyond {MAX_STATUS_MODELS}).",
    )
    models_summary: str | None = Field(default=None, description="Observed model names, for kubectl get.")
    capabilities: BackendCapabilities | None = Field(default=None, description="What the backend can serve.")
    pods: list[PodState] | None = Field(default=None, description="Runtime state of each replica.")
    last_error: str | None = Field(default=None, description="The most recent error, in the runtime's words.")
    conditions: list[Condition] | None = Field(
        default=None,
        description="Ready, Reconciling, Stalled (kstatus) and Scheduled.",
        json_schema_extra=CONDITIONS_LIST,
    )

"""LLMBackend: run a runtime with its models on GPUs (or observe an external server)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, ValidationError, field_validator

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
from llmop.models.startup import StartupStatus

ManagedRuntime = Literal["ollama", "vllm", "llamacpp"]
ExternalKind = Literal["openai", "vllm", "ollama", "llamacpp", "tgi", "sglang", "localai", "lmstudio"]
BackendPhase = Literal["Pending", "Deploying", "Loading", "Ready", "Idle", "Degraded", "Failed"]
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


#: Labels llmop puts on every pod of a backend (manifests/labels.py): the Service and the
#: Deployment select pods by them, so a pod label of the user's may not set one (a backend could
#: pull pods into another backend's Service, or leave its own).
RESERVED_POD_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/managed-by",
    "llmop.dev/backend",
    "llmop.dev/runtime",
)
#: Pod annotations that loosen a container's confinement (AppArmor, seccomp): a tenant who may not
#: create pods must not get a pod that a namespace's own policy would not allow.
RESERVED_POD_ANNOTATION_PREFIXES = (
    "container.apparmor.security.beta.kubernetes.io/",
    "seccomp.security.alpha.kubernetes.io/",
    "container.seccomp.security.alpha.kubernetes.io/",
)
MAX_POD_METADATA_ENTRIES = 64
MAX_POD_LABEL_KEY_CHARS = 317
MAX_IMAGE_PULL_SECRETS = 16
MAX_SPREAD_CONSTRAINTS = 8
#: A Kubernetes object name (a DNS subdomain), as a ServiceAccount's or a Secret's.
OBJECT_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"


def reserved_pod_label(key: str) -> bool:
    return key in RESERVED_POD_LABELS or key.startswith("llmop.dev/")


def reserved_pod_annotation(key: str) -> bool:
    return key.startswith(RESERVED_POD_ANNOTATION_PREFIXES)


_POD_LABELS_RULE = cel(
    f"self.all(k, !(k in {list(RESERVED_POD_LABELS)}) && !k.startsWith('llmop.dev/'))",
    "podLabels must not set llmop's own labels (" + ", ".join(RESERVED_POD_LABELS) + ", or any "
    "llmop.dev/ key): llmop selects the backend's pods by them",
)
_POD_ANNOTATIONS_RULE = cel(
    "self.all(k, " + " && ".join(f"!k.startsWith('{p}')" for p in RESERVED_POD_ANNOTATION_PREFIXES) + ")",
    "podAnnotations must not set AppArmor or seccomp annotations ("
    + ", ".join(p + "*" for p in RESERVED_POD_ANNOTATION_PREFIXES)
    + "): use spec.podSecurityContext and spec.securityContext",
)


class LocalObjectReference(ApiModel):
    """An object of the backend's namespace, by name."""

    name: str = Field(
        max_length=253,
        pattern=OBJECT_NAME_PATTERN,
        description="Name of the object in the backend's namespace.",
    )


class LabelSelectorRequirement(ApiModel):
    """One expression of a label selector."""

    key: str = Field(max_length=317, description="The label key.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(
        description="In, NotIn, Exists or DoesNotExist."
    )
    values: list[str] | None = Field(
        default=None,
        json_schema_extra={"maxItems": 64},
        description="Values for In and NotIn; empty for Exists and DoesNotExist.",
    )


class LabelSelector(ApiModel):
    """Which pods a constraint counts, as in a pod spec."""

    match_labels: dict[str, str] | None = Field(
        default=None, json_schema_extra={"maxProperties": 64}, description="Labels the pods carry."
    )
    match_expressions: list[LabelSelectorRequirement] | None = Field(
        default=None, json_schema_extra={"maxItems": 16}, description="Expressions the pods' labels match."
    )


class TopologySpreadConstraint(ApiModel):
    """How the backend's pods spread over a topology (zones, nodes), as in a pod spec."""

    max_skew: int = Field(
        description="How unevenly the pods may be spread: at most this many more in one domain than in "
        "another; 1 or more.",
        json_schema_extra=validations(cel("self >= 1", "maxSkew must be 1 or more")),
    )
    topology_key: str = Field(
        max_length=317,
        description="The node label whose values are the domains, e.g. topology.kubernetes.io/zone.",
        json_schema_extra=validations(cel("self.size() > 0", "topologyKey must not be empty")),
    )
    when_unsatisfiable: Literal["DoNotSchedule", "ScheduleAnyway"] = Field(
        default="DoNotSchedule",
        description="DoNotSchedule (the pod waits) or ScheduleAnyway (the scheduler prefers, no more). "
        "Defaults to DoNotSchedule.",
    )
    label_selector: LabelSelector | None = Field(
        default=None,
        description="The pods counted; this backend's pods (its selector labels) when unset or empty.",
    )
    min_domains: int | None = Field(
        default=None,
        description="Fewest domains to count, with DoNotSchedule only; 1 or more.",
        json_schema_extra=validations(cel("self >= 1", "minDomains must be 1 or more")),
    )


TopologySpreadConstraint.model_config["json_schema_extra"] = validations(
    cel(
        "!has(self.minDomains) || !has(self.whenUnsatisfiable) || self.whenUnsatisfiable == 'DoNotSchedule'",
        "minDomains needs whenUnsatisfiable DoNotSchedule",
    )
)


class DisruptionBudgetSpec(ApiModel):
    """The PodDisruptionBudget of a backend with more than one replica."""

    enabled: bool = Field(
        default=True,
        description="Create the PodDisruptionBudget when replicas > 1. Defaults to true.",
    )
    max_unavailable: int | None = Field(
        default=None,
        description="Pods a voluntary disruption (a node drain) may take down at once; 1 unless "
        "minAvailable is set.",
        json_schema_extra=validations(cel("self >= 0", "maxUnavailable must be 0 or more")),
    )
    min_available: int | None = Field(
        default=None,
        description="Pods that must stay up through a voluntary disruption, instead of maxUnavailable.",
        json_schema_extra=validations(cel("self >= 0", "minAvailable must be 0 or more")),
    )


DisruptionBudgetSpec.model_config["json_schema_extra"] = validations(
    cel(
        "!(has(self.maxUnavailable) && has(self.minAvailable))",
        "set at most one of disruptionBudget.maxUnavailable and disruptionBudget.minAvailable",
    )
)


#: Volumes and mount paths of llmop's own in a backend's pods (manifests/): a user's volume may
#: not take their names, nor a user's mount hide the models or the shared memory.
RESERVED_VOLUMES = ("models", "dshm", "agent-token", "agent-tmp")
RESERVED_MOUNT_PATHS = ("/models", "/dev/shm")
MAX_USER_VOLUMES = 16
#: A DNS label, as a volume's name.
VOLUME_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$"


class ConfigMapVolume(ApiModel):
    """A ConfigMap of the namespace as files; it must carry llmop.dev/use: "true"."""

    name: str = Field(max_length=253, pattern=OBJECT_NAME_PATTERN, description="Name of the ConfigMap.")


class SecretVolume(ApiModel):
    """A Secret of the namespace as files; it must carry llmop.dev/use: "true"."""

    secret_name: str = Field(max_length=253, pattern=OBJECT_NAME_PATTERN, description="Name of the Secret.")


class EmptyDirVolume(ApiModel):
    """Scratch space that lives as long as the pod."""

    medium: Literal["", "Memory"] | None = Field(
        default=None,
        description="'' (the node's disk, the default) or Memory (counts against the memory limit).",
    )
    size_limit: str = Field(
        max_length=32,
        pattern=QUANTITY_PATTERN,
        description="Most it may hold, e.g. 1Gi: required, so that a pod cannot fill its node's disk.",
    )


class ClaimVolume(ApiModel):
    """A PersistentVolumeClaim of the namespace; it must carry llmop.dev/use: "true"."""

    claim_name: str = Field(max_length=253, pattern=OBJECT_NAME_PATTERN, description="Name of the claim.")
    read_only: bool | None = Field(default=None, description="Mount it read-only.")


class UserVolume(ApiModel):
    """An extra volume of the pods: exactly one of configMap, secret, emptyDir or persistentVolumeClaim."""

    name: str = Field(
        max_length=63,
        pattern=VOLUME_NAME_PATTERN,
        description="Volume name, named by a volumeMount. Not llmop's own: "
        + ", ".join(RESERVED_VOLUMES)
        + ".",
        json_schema_extra=validations(
            cel(
                f"!(self in {list(RESERVED_VOLUMES)})",
                "volume name is llmop's own (" + ", ".join(RESERVED_VOLUMES) + "): choose another",
            )
        ),
    )
    config_map: ConfigMapVolume | None = Field(default=None, description="A ConfigMap as files.")
    secret: SecretVolume | None = Field(default=None, description="A Secret as files.")
    empty_dir: EmptyDirVolume | None = Field(default=None, description="Scratch space with a size limit.")
    persistent_volume_claim: ClaimVolume | None = Field(default=None, description="A claim of the namespace.")


UserVolume.model_config["json_schema_extra"] = validations(
    cel(
        "[has(self.configMap), has(self.secret), has(self.emptyDir), has(self.persistentVolumeClaim)]"
        ".filter(x, x).size() == 1",
        "a volume takes exactly one of configMap, secret, emptyDir or persistentVolumeClaim "
        "(no other volume type)",
    )
)


class UserVolumeMount(ApiModel):
    """Where the runtime container mounts one of spec.volumes."""

    name: str = Field(max_length=63, description="Name of a volume in spec.volumes.")
    mount_path: str = Field(
        max_length=1024,
        description="Absolute path in the runtime container; not /models or /dev/shm, nor under them.",
        json_schema_extra=validations(
            cel(
                "self.startsWith('/') && !self.contains('..')",
                "mountPath must be an absolute path without '..'",
            ),
            cel(
                "!("
                + " || ".join(f"self == '{p}' || self.startsWith('{p}/')" for p in RESERVED_MOUNT_PATHS)
                + ")",
                "mountPath must not be /models or /dev/shm, nor under them: llmop mounts the models and "
                "the shared memory there",
            ),
        ),
    )
    read_only: bool | None = Field(default=None, description="Mount it read-only.")


#: Bounds of spec.autoscaling's durations: a zero delay scales down on the first quiet round, a
#: day is already longer than anyone waits for a GPU back.
SCALE_DOWN_DELAY_BOUNDS = ("0s", "24h")
DRAIN_TIMEOUT_BOUNDS = ("0s", "1h")


class AutoscalingSpec(ApiModel):
    """Replicas decided by llmop from the requests the gateway relays (docs/scaling.md)."""

    min_replicas: int = Field(
        default=1,
        description="Fewest replicas; 0 lets the backend scale to zero after scaleDownDelay without "
        "a request (the gateway holds the next request while a replica starts). Defaults to 1.",
        json_schema_extra=validations(cel("self >= 0", "autoscaling.minReplicas must be 0 or more")),
    )
    max_replicas: int = Field(
        description="Most replicas, 1 or more.",
        json_schema_extra=validations(cel("self >= 1", "autoscaling.maxReplicas must be 1 or more")),
    )
    target_in_flight: int = Field(
        default=4,
        description="Concurrent requests per replica llmop aims at: replicas = requests in flight and "
        "waiting at the gateways / targetInFlight, rounded up. Defaults to 4.",
        json_schema_extra=validations(cel("self >= 1", "autoscaling.targetInFlight must be 1 or more")),
    )
    scale_down_delay: str = bounded_duration_field(
        "5m",
        "How long demand must stay lower before replicas go down (also the idle time before scaling "
        "to zero); replicas go up at once.",
        *SCALE_DOWN_DELAY_BOUNDS,
    )
    drain_timeout: str = bounded_duration_field(
        "2m",
        "The longest a leaving pod waits for its requests in flight: the gateway sends it no new "
        "request meanwhile.",
        *DRAIN_TIMEOUT_BOUNDS,
    )


AutoscalingSpec.model_config["json_schema_extra"] = validations(
    cel(
        "!has(self.minReplicas) || self.minReplicas <= self.maxReplicas",
        "autoscaling.minReplicas must not be above autoscaling.maxReplicas",
    )
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
        default=None,
        description="Container image; when empty, the operator's default for the runtime as it was when "
        "the spec last changed (an operator upgrade alone does not change it; see status.images).",
    )
    replicas: int = non_negative_field(
        1,
        "Number of runtime pods; kubectl scale, a HorizontalPodAutoscaler or KEDA may set it through "
        "the scale subresource (docs/scaling.md). Not with spec.external: llmop runs no pods for it. "
        "Not with spec.autoscaling: then llmop decides the replicas.",
    )
    autoscaling: AutoscalingSpec | None = Field(
        default=None,
        description="Let llmop decide the replicas from the requests the gateway relays, between "
        "minReplicas (0 allowed) and maxReplicas; status.replicas and status.autoscaling show what it "
        "decided and why. Not with spec.replicas (one owner decides) nor spec.external.",
    )
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
    image_pull_secrets: list[LocalObjectReference] | None = Field(
        default=None,
        json_schema_extra={"maxItems": MAX_IMAGE_PULL_SECRETS},
        description="Secrets with registry credentials for the pods' images, as in a pod spec "
        '(- name: regcred). Each must carry the label llmop.dev/use: "true".',
    )
    service_account_name: str | None = Field(
        default=None,
        max_length=253,
        pattern=OBJECT_NAME_PATTERN,
        description="ServiceAccount the pods run as, e.g. one bound to a cloud identity (EKS IRSA or "
        "Pod Identity, GKE Workload Identity) to read models from a bucket. It must carry the label "
        'llmop.dev/use: "true". The namespace\'s default when unset.',
    )
    automount_service_account_token: bool = Field(
        default=False,
        description="Mount the ServiceAccount's Kubernetes API token into the pods. Defaults to false: "
        "nothing in the pod talks to the API server, and workload identity (EKS, GKE) works without it.",
    )
    pod_labels: dict[str, str] | None = Field(
        default=None,
        description="Extra labels of the pods. Not llmop's own: " + ", ".join(RESERVED_POD_LABELS) + " or "
        "any llmop.dev/ key.",
        json_schema_extra={"maxProperties": MAX_POD_METADATA_ENTRIES, **validations(_POD_LABELS_RULE)},
    )
    pod_annotations: dict[str, str] | None = Field(
        default=None,
        description="Extra annotations of the pods, e.g. for a metrics scraper or a service mesh. Not "
        "AppArmor or seccomp annotations: spec.podSecurityContext and spec.securityContext set those.",
        json_schema_extra={"maxProperties": MAX_POD_METADATA_ENTRIES, **validations(_POD_ANNOTATIONS_RULE)},
    )
    topology_spread_constraints: list[TopologySpreadConstraint] | None = Field(
        default=None,
        json_schema_extra={"maxItems": MAX_SPREAD_CONSTRAINTS},
        description="How the pods spread over zones or nodes, as in a pod spec; a constraint without a "
        "labelSelector counts this backend's pods.",
    )
    disruption_budget: DisruptionBudgetSpec | None = Field(
        default=None,
        description="The PodDisruptionBudget named like the backend that llmop creates when replicas > 1 "
        "(maxUnavailable 1 unless set here); removed when replicas drop to 1 or enabled is false.",
    )
    volumes: list[UserVolume] | None = Field(
        default=None,
        json_schema_extra={"maxItems": MAX_USER_VOLUMES},
        description="Extra volumes of the pods: configMap, secret, emptyDir (with a sizeLimit) or "
        'persistentVolumeClaim only. A ConfigMap, Secret or claim must carry the label llmop.dev/use: "true".',
    )
    volume_mounts: list[UserVolumeMount] | None = Field(
        default=None,
        json_schema_extra={"maxItems": MAX_USER_VOLUMES},
        description="Where the runtime container mounts spec.volumes.",
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
    # A transition rule: it judges a change of replicas (kubectl scale, an HPA), never an object
    # stored before it, whose finalizer kopf must still be able to remove where the API server
    # does not ratchet (1.29). 1 is what llmop does for an external server: observe one.
    cel(
        "!has(self.external) || !has(self.replicas) || self.replicas == 1 "
        "|| (has(oldSelf.replicas) && oldSelf.replicas == self.replicas)",
        "spec.replicas applies to spec.runtime only: llmop runs no pods for spec.external, so "
        "kubectl scale, an HPA or KEDA cannot scale it (leave spec.replicas unset)",
    ),
    cel(
        "!has(self.autoscaling) || has(self.runtime)",
        "spec.autoscaling applies to spec.runtime only: llmop runs no pods for spec.external",
    ),
    # One owner decides the replicas: the user (or kubectl scale, an HPA) or llmop. A write through
    # the scale subresource sets spec.replicas, so this rule refuses it too.
    cel(
        "!has(self.autoscaling) || !has(self.replicas)",
        "set spec.replicas or spec.autoscaling, not both: with spec.autoscaling llmop decides the "
        "replicas (remove spec.replicas; kubectl scale and an HPA cannot scale an autoscaled backend)",
    ),
    cel(
        "!has(self.volumeMounts) || self.volumeMounts.all(m, has(self.volumes) && "
        "self.volumes.exists(v, v.name == m.name))",
        "each volumeMounts[].name must name a volume in spec.volumes",
    ),
    cel(
        "!has(self.volumes) || self.volumes.all(v, self.volumes.exists_one(w, w.name == v.name))",
        "volume names must be unique in spec.volumes",
    ),
)


class ReplicaCounts(ApiModel):
    """Replica counts."""

    desired: int = Field(default=0, description="Replicas asked for.")
    ready: int = Field(default=0, description="Replicas whose runtime API answers.")
    summary: str = Field(default="0/0", description="ready/desired, as kubectl prints it.")


class BackendImages(ApiModel):
    """The default images a backend's pods were built with (docs/upgrades.md)."""

    runtime: str | None = Field(
        default=None, description="The runtime container's image, where llmop chose it (spec.image empty)."
    )
    agent: str | None = Field(
        default=None, description="The llmop agent sidecar's image (vLLM and llama.cpp)."
    )


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
    draining: bool | None = Field(
        default=None,
        description="Leaving (spec.autoscaling scales down): the gateway sends it no new request, and "
        "llmop removes it once its requests in flight are done or autoscaling.drainTimeout passed.",
    )


#: Bounds of what a gateway writes in status.demand (the API server refuses more; llmop reads no
#: more of an object stored otherwise).
MAX_DEMAND_GATEWAYS = 1000
MAX_DEMAND_PODS = 1000
MAX_DEMAND_COUNT = 1_000_000


def _utc(value: datetime) -> datetime:
    """A time without an offset (which the API server's date-time format accepts) read as UTC:
    compared with llmop's own, aware times, it would raise."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


#: A time in status that someone else may have written (a gateway, anyone with status rights).
WrittenTime = Annotated[datetime, AfterValidator(_utc)]


class GatewayDemand(ApiModel):
    """What one gateway relays to the backend now; written by that gateway only."""

    in_flight: int = Field(
        default=0,
        ge=0,
        le=MAX_DEMAND_COUNT,
        description="Requests this gateway is relaying to the backend's pods now.",
    )
    waiting: int = Field(
        default=0,
        ge=0,
        le=MAX_DEMAND_COUNT,
        description="Requests this gateway holds because no pod serves the model.",
    )
    pods: dict[str, Annotated[int, Field(ge=0, le=MAX_DEMAND_COUNT)]] | None = Field(
        default=None,
        description="Requests in flight per pod, by pod name (what a draining pod waits for).",
        json_schema_extra={"maxProperties": MAX_DEMAND_PODS},
    )
    time: WrittenTime | None = Field(
        default=None,
        description="When the gateway wrote this (RFC 3339, UTC); llmop ignores an entry older than 60s.",
    )


def readable_demand(value: object) -> dict[str, GatewayDemand]:
    """The entries of status.demand llmop can read, at most MAX_DEMAND_GATEWAYS (the most recent):
    an entry a gateway (or anyone with status rights) wrote wrong is left out, never an error."""
    if not isinstance(value, dict):
        return {}
    entries: dict[str, GatewayDemand] = {}
    for gateway, entry in value.items():
        try:
            entries[str(gateway)[:253]] = GatewayDemand.model_validate(entry)
        except (ValidationError, TypeError, ValueError):
            continue
    if len(entries) <= MAX_DEMAND_GATEWAYS:
        return entries
    ordered = sorted(entries.items(), key=lambda item: item[1].time.timestamp() if item[1].time else 0.0)
    return dict(ordered[-MAX_DEMAND_GATEWAYS:])


class AutoscalingStatus(ApiModel):
    """What llmop decided for spec.autoscaling, and why."""

    replicas: int = Field(default=0, description="The replicas llmop decided (status.replicas.desired).")
    in_flight: int = Field(default=0, description="Requests in flight at the gateways (fresh entries).")
    waiting: int = Field(default=0, description="Requests the gateways hold for a pod that serves.")
    last_request_time: WrittenTime | None = Field(
        default=None, description="When a gateway last reported a request in flight or waiting."
    )
    message: str = Field(default="", description="Why this many replicas, in words.")
    scale_down_since: WrittenTime | None = Field(
        default=None,
        description="Since when demand asks for fewer replicas than run: they go down once it has "
        "stayed lower for scaleDownDelay.",
    )
    scale_down_to: int | None = Field(
        default=None, description="The most replicas demand asked for since scaleDownSince: where they go."
    )
    drain_started: WrittenTime | None = Field(
        default=None, description="When the pods marked draining in status.pods began to drain."
    )


class LLMBackendStatus(ApiModel):
    """State observed from the Kubernetes objects and the runtime's own API."""

    observed_generation: int | None = Field(default=None, description="The generation this status describes.")
    phase: BackendPhase | None = Field(
        default=None,
        description="Pending, Deploying, Loading, Ready, Idle (spec.autoscaling scaled it to zero: "
        "the next request wakes it), Degraded or Failed.",
    )
    runtime: str | None = Field(default=None, description="Runtime kind being served.")
    endpoint: str | None = Field(default=None, description="Base URL of the runtime's API.")
    openai_base_url: str | None = Field(
        default=None, alias="openaiBaseURL", description="OpenAI-compatible base URL (ends in /v1)."
    )
    replicas: ReplicaCounts | None = Field(default=None, description="Desired and serving replicas.")
    selector: str | None = Field(
        default=None,
        description="The label selector of the backend's pods, as a string (app.kubernetes.io/instance=NAME,"
        "llmop.dev/backend=NAME): what the scale subresource gives a HorizontalPodAutoscaler or KEDA to "
        "find the pods and their metrics. Absent for spec.external, which has no pods.",
    )
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
    images: BackendImages | None = Field(
        default=None,
        description="The default images the pods run: chosen when the spec last changed and kept across "
        "operator upgrades; condition DefaultsCurrent says when llmop's defaults are newer.",
    )
    autoscaling: AutoscalingStatus | None = Field(
        default=None, description="What llmop decided for spec.autoscaling, and why."
    )
    demand: dict[str, GatewayDemand] | None = Field(
        default=None,
        description="The requests each gateway relays to this backend, by gateway pod; written by the "
        "gateways (only for spec.autoscaling). The operator only removes an entry no gateway rewrote "
        "for an hour (a gateway pod that is gone).",
        json_schema_extra={"maxProperties": MAX_DEMAND_GATEWAYS},
    )
    startup: StartupStatus | None = Field(
        default=None,
        description="The cold start of the current rollout: each replica's stages (scheduled, image "
        "pulled, models downloaded, started, loaded, warmed) with their times and durations.",
    )
    last_error: str | None = Field(default=None, description="The most recent error, in the runtime's words.")
    conditions: list[Condition] | None = Field(
        default=None,
        description="Ready, Reconciling, Stalled (kstatus), Scheduled and DefaultsCurrent.",
        json_schema_extra=CONDITIONS_LIST,
    )

    @field_validator("demand", mode="before")
    @classmethod
    def _readable_demand(cls, value: object) -> dict[str, GatewayDemand] | None:
        return readable_demand(value) if value is not None else None

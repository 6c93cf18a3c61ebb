"""The runtime Deployment: one pod template per backend spec."""

from __future__ import annotations

import json
import math
from copy import deepcopy
from typing import Any

from llmop.config import OperatorConfig
from llmop.manifests.agent_access import (
    AGENT_TOKEN_DIR,
    AGENT_TOKEN_KEY,
    AGENT_TOKEN_VOLUME,
    agent_token_secret_name,
)
from llmop.manifests.gpu_placement import pod_affinity
from llmop.manifests.labels import (
    backend_labels,
    backend_selector,
    owned_metadata,
)
from llmop.manifests.runtime_pods import managed_runtime, runtime_pod
from llmop.manifests.storage import EMPTY_DIR_LIMIT, MODELS_VOLUME, models_claim, models_volume
from llmop.models.backend import AGENT_PORT, LLMBackendSpec
from llmop.models.duration import parse_duration
from llmop.runtimes.descriptor import PodRecipe, served_model_path
from llmop.runtimes.registry import serving_port
from llmop.sources import MODELS_DIR

RUNTIME_CONTAINER = "runtime"
RUNTIME_PORT_NAME = "http"
AGENT_CONTAINER = "agent"
AGENT_PORT_NAME = "agent"
#: The user of llmop's image (the Dockerfile's USER): the agent runs as it and writes the models.
AGENT_USER = 65532
AGENT_TMP_VOLUME = "agent-tmp"
#: The agent's only writable place besides the models: a little scratch room.
AGENT_TMP_LIMIT = "64Mi"

#: Every container, runtime included, unless spec.securityContext says otherwise: no way to gain
#: privileges, no capabilities, the runtime's default seccomp filter (what Pod Security
#: "restricted" asks, short of a non-root user, which the runtime images do not have).
CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
#: The agent is llmop's own image: it runs as its non-root user and writes only its volumes.
AGENT_SECURITY = {
    **CONTAINER_SECURITY,
    "runAsNonRoot": True,
    "runAsUser": AGENT_USER,
    "runAsGroup": AGENT_USER,
    "readOnlyRootFilesystem": True,
}

RUNTIME_STARTUP_PERIOD = 10
AGENT_STARTUP_PERIOD = 5
TERMINATION_GRACE_SECONDS = 30


def startup_failure_threshold(spec: LLMBackendSpec, period_seconds: int) -> int:
    """Failures a startup probe may see so that `period * threshold` covers `startup.timeout`."""
    return max(1, math.ceil(parse_duration(spec.startup.timeout) / period_seconds))


def merged_resources(spec: LLMBackendSpec) -> dict[str, dict[str, str]]:
    """The user's requests and limits with the GPUs added.

    Extended resources such as GPUs cannot be overcommitted: the API server rejects a request that
    differs from the limit, so both are set.
    """
    requests = dict(spec.resources.requests or {}) if spec.resources else {}
    limits = dict(spec.resources.limits or {}) if spec.resources else {}
    if spec.gpu.count > 0:
        requests[spec.gpu.resource_name] = str(spec.gpu.count)
        limits[spec.gpu.resource_name] = str(spec.gpu.count)
    resources: dict[str, dict[str, str]] = {}
    if requests:
        resources["requests"] = requests
    if limits:
        resources["limits"] = limits
    return resources


def _tolerates(toleration: dict[str, Any], key: str) -> bool:
    # A toleration without a key and with operator Exists tolerates every taint.
    if toleration.get("key") in (None, ""):
        return toleration.get("operator") == "Exists"
    return toleration.get("key") == key


def pod_tolerations(spec: LLMBackendSpec) -> list[dict[str, Any]]:
    """The user's tolerations, plus the GPU taint's unless the user already tolerates that key."""
    tolerations = deepcopy(spec.tolerations or [])
    key = spec.gpu.resource_name
    if spec.gpu.count > 0 and not any(_tolerates(toleration, key) for toleration in tolerations):
        tolerations.append({"key": key, "operator": "Exists", "effect": "NoSchedule"})
    return tolerations


def _merge_env(ours: list[dict[str, Any]], users: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # env is a list keyed by name under server-side apply, which rejects duplicate names, so a
    # variable the user sets replaces llmop's (the user's last entry wins, as in a plain pod).
    last_by_name: dict[Any, dict[str, Any]] = {}
    for variable in users:
        last_by_name[variable.get("name")] = variable
    merged = [variable for variable in ours if variable["name"] not in last_by_name]
    seen: set[Any] = set()
    for variable in users:
        name = variable.get("name")
        if name not in seen:
            seen.add(name)
            merged.append(last_by_name[name])
    return merged


def runtime_env(spec: LLMBackendSpec, pod: PodRecipe) -> list[dict[str, Any]]:
    ours = pod.env(spec, serving_port(spec))
    secret = spec.api_key_secret_ref
    if secret is not None and pod.api_key_env is not None:
        # Always a reference: the key never appears in the Deployment or in the operator's memory.
        ours.append(
            {"name": pod.api_key_env, "valueFrom": {"secretKeyRef": {"name": secret.name, "key": secret.key}}}
        )
    return _merge_env(ours, deepcopy(spec.env or []))


def _models_mount() -> dict[str, Any]:
    return {"name": MODELS_VOLUME, "mountPath": MODELS_DIR}


def runtime_container(spec: LLMBackendSpec, config: OperatorConfig, pod: PodRecipe) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": RUNTIME_CONTAINER,
        "image": spec.image or config.images[managed_runtime(spec)],
        "args": [*pod.args(spec, serving_port(spec)), *(spec.args or [])],
        "ports": [{"name": RUNTIME_PORT_NAME, "containerPort": serving_port(spec), "protocol": "TCP"}],
    }
    env = runtime_env(spec, pod)
    if env:
        container["env"] = env
    resources = merged_resources(spec)
    if resources:
        container["resources"] = resources
    mounts = [_models_mount()]
    if pod.needs_shm:
        mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
    container["volumeMounts"] = mounts + [mount.to_api() for mount in spec.volume_mounts or []]
    # The user's keys replace llmop's one by one (e.g. runAsUser for a "restricted" namespace).
    users = spec.security_context.to_api() if spec.security_context else {}
    container["securityContext"] = {**deepcopy(CONTAINER_SECURITY), **users}
    # Loading weights can take many minutes: only the startup probe runs until the port opens,
    # and it allows the whole cold-start budget, so a loading pod is never killed.
    container["startupProbe"] = {
        "tcpSocket": {"port": RUNTIME_PORT_NAME},
        "periodSeconds": RUNTIME_STARTUP_PERIOD,
        "failureThreshold": startup_failure_threshold(spec, RUNTIME_STARTUP_PERIOD),
    }
    container["readinessProbe"] = {
        "httpGet": {"path": pod.health_path, "port": RUNTIME_PORT_NAME},
        "periodSeconds": 10,
        "timeoutSeconds": 5,
        "failureThreshold": 3,
    }
    # TCP, not HTTP: a server busy with long generations may answer its health path slowly, and
    # restarting it would cost a full cold start.
    container["livenessProbe"] = {
        "tcpSocket": {"port": RUNTIME_PORT_NAME},
        "periodSeconds": 20,
        "timeoutSeconds": 5,
        "failureThreshold": 6,
    }
    return container


#: Variables of `spec.env` the agent gets too: the Hugging Face token the runtime would download
#: with is the one the agent downloads with for it (gated and private repos).
AGENT_SHARED_ENV = ("HF_TOKEN",)


def agent_container(spec: LLMBackendSpec, config: OperatorConfig) -> dict[str, Any]:
    """The llmop agent as a native sidecar: it downloads models, and its startup probe holds the
    runtime back until every model the runtime serves is complete on disk."""
    path = served_model_path(spec)
    required = [path.removeprefix(f"{MODELS_DIR}/")] if path else []
    # The last entry of a name, as in the runtime's env: the API server refuses a name twice.
    shared = _merge_env([], [deepcopy(var) for var in spec.env or [] if var.get("name") in AGENT_SHARED_ENV])
    token_file = f"{AGENT_TOKEN_DIR}/{AGENT_TOKEN_KEY}"
    return {
        "name": AGENT_CONTAINER,
        "image": config.agent_image,
        "args": ["agent", "--models-dir", MODELS_DIR, "--port", str(AGENT_PORT), "--token-file", token_file],
        "env": [
            # JSON, as a URL's path may hold a comma.
            {"name": "LLMOP_REQUIRED_MODELS", "value": json.dumps(required)},
            # The only sources it may pull: what the backend declares.
            {"name": "LLMOP_DECLARED_MODELS", "value": json.dumps([model.name for model in spec.models])},
            # statvfs sees the node's disk, not an emptyDir's sizeLimit: the agent is told the limit.
            *(
                [{"name": "LLMOP_MODELS_VOLUME_LIMIT", "value": EMPTY_DIR_LIMIT}]
                if spec.storage is None
                else []
            ),
            # A Hugging Face mirror for clusters that cannot reach the Hub (HF_ENDPOINT convention).
            *([{"name": "HF_ENDPOINT", "value": config.hf_endpoint}] if config.hf_endpoint else []),
            # As the user wrote it: a secretKeyRef stays a reference, never a value.
            *shared,
        ],
        "ports": [{"name": AGENT_PORT_NAME, "containerPort": AGENT_PORT, "protocol": "TCP"}],
        "volumeMounts": [
            _models_mount(),
            {"name": AGENT_TOKEN_VOLUME, "mountPath": AGENT_TOKEN_DIR, "readOnly": True},
            {"name": AGENT_TMP_VOLUME, "mountPath": "/tmp"},
        ],
        "securityContext": deepcopy(AGENT_SECURITY),
        "startupProbe": {
            "httpGet": {"path": "/startup", "port": AGENT_PORT_NAME},
            "periodSeconds": AGENT_STARTUP_PERIOD,
            "failureThreshold": startup_failure_threshold(spec, AGENT_STARTUP_PERIOD),
        },
        "restartPolicy": "Always",
    }


def deployment_strategy(spec: LLMBackendSpec, name: str) -> dict[str, Any]:
    """Recreate when a new pod cannot start beside the old one.

    With GPUs a surge pod would need a second set of GPUs; with a claim (ReadWriteOnce for the one
    llmop creates) a surge pod on another node could not attach it. Either way the rollout would
    hang. rollingUpdate is written out in full so that server-side apply owns it and removes it
    when the strategy becomes Recreate (the API server rejects rollingUpdate with Recreate).
    """
    if spec.gpu.count > 0 or models_claim(name, spec) is not None:
        return {"type": "Recreate"}
    return {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}


def pod_security_context(spec: LLMBackendSpec, needs_agent: bool) -> dict[str, Any]:
    """llmop's pod securityContext with the user's keys over it, one by one."""
    ours: dict[str, Any] = {"seccompProfile": {"type": "RuntimeDefault"}}
    if needs_agent:
        # The agent is not root: the volumes' group becomes its group, so it can write the models
        # and read its token (the runtime images run as root and read them either way).
        ours["fsGroup"] = AGENT_USER
    users = spec.pod_security_context.to_api() if spec.pod_security_context else {}
    return {**ours, **users}


def agent_volumes(name: str) -> list[dict[str, Any]]:
    return [
        {
            "name": AGENT_TOKEN_VOLUME,
            # Readable by the agent's group alone (fsGroup), never written.
            "secret": {"secretName": agent_token_secret_name(name), "defaultMode": 0o440},
        },
        {"name": AGENT_TMP_VOLUME, "emptyDir": {"sizeLimit": AGENT_TMP_LIMIT}},
    ]


def pod_spec(name: str, spec: LLMBackendSpec, config: OperatorConfig) -> dict[str, Any]:
    pod = runtime_pod(spec)
    result: dict[str, Any] = {}
    if pod.needs_agent:
        result["initContainers"] = [agent_container(spec, config)]
    result["securityContext"] = pod_security_context(spec, pod.needs_agent)
    if spec.service_account_name:
        result["serviceAccountName"] = spec.service_account_name
    # Nothing in the pod talks to the API server: no credentials for it to leak. Workload identity
    # (EKS IRSA and Pod Identity, GKE) projects or serves its own credentials without this token.
    result["automountServiceAccountToken"] = spec.automount_service_account_token
    if spec.image_pull_secrets:
        result["imagePullSecrets"] = [{"name": ref.name} for ref in spec.image_pull_secrets]
    result["containers"] = [runtime_container(spec, config, pod)]
    volumes = [models_volume(name, spec)]
    if pod.needs_agent:
        volumes += agent_volumes(name)
    if pod.needs_shm:
        volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory"}})
    result["volumes"] = volumes + [volume.to_api() for volume in spec.volumes or []]
    # Service links would put `<SERVICE>_PORT=tcp://...` variables in the pod; a Service named
    # `ollama` yields OLLAMA_HOST-style names that the runtime misreads as its own settings.
    result["enableServiceLinks"] = False
    result["terminationGracePeriodSeconds"] = TERMINATION_GRACE_SECONDS
    if spec.node_selector:
        result["nodeSelector"] = dict(spec.node_selector)
    tolerations = pod_tolerations(spec)
    if tolerations:
        result["tolerations"] = tolerations
    affinity = pod_affinity(spec)
    if affinity:
        result["affinity"] = affinity
    if spec.runtime_class_name:
        result["runtimeClassName"] = spec.runtime_class_name
    if spec.priority_class_name:
        result["priorityClassName"] = spec.priority_class_name
    if spec.topology_spread_constraints:
        result["topologySpreadConstraints"] = topology_spread(name, spec)
    return result


def topology_spread(name: str, spec: LLMBackendSpec) -> list[dict[str, Any]]:
    """The user's constraints; one that names no pods counts this backend's (its selector labels,
    which a change of runtime leaves alone)."""
    constraints = []
    for constraint in spec.topology_spread_constraints or []:
        entry = constraint.to_api()
        selector = entry.get("labelSelector") or {}
        if not selector.get("matchLabels") and not selector.get("matchExpressions"):
            entry["labelSelector"] = {"matchLabels": backend_selector(name)}
        constraints.append(entry)
    return constraints


def pod_template_metadata(spec: LLMBackendSpec, labels: dict[str, str]) -> dict[str, Any]:
    """llmop's labels over the user's (the CRD and the operator refuse a user's that would clash)."""
    metadata: dict[str, Any] = {"labels": {**(spec.pod_labels or {}), **labels}}
    if spec.pod_annotations:
        metadata["annotations"] = dict(spec.pod_annotations)
    return metadata


def build_deployment(
    name: str,
    namespace: str,
    uid: str,
    spec: LLMBackendSpec,
    config: OperatorConfig,
    replicas: int | None = None,
) -> dict[str, Any]:
    """The Deployment `name` that runs the backend's runtime (docs/architecture.md, "The runtime pod").

    Builders do not second-guess input the CRD schema accepted: a vLLM or llama.cpp backend with
    no models gets a runtime without --model, and the status says it serves nothing. Raises
    ValueError for an external backend (llmop deploys nothing for it) and `InvalidModelSource`
    for a model name llmop cannot read. `replicas`: what spec.autoscaling decided, where it decides.
    """
    labels = backend_labels(name, managed_runtime(spec))
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": owned_metadata(name, name, namespace, uid, managed_runtime(spec)),
        "spec": {
            "replicas": spec.replicas if replicas is None else replicas,
            "selector": {"matchLabels": backend_selector(name)},
            "strategy": deployment_strategy(spec, name),
            "template": {
                "metadata": pod_template_metadata(spec, labels),
                "spec": pod_spec(name, spec, config),
            },
        },
    }

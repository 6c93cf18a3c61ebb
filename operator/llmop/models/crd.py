"""CustomResourceDefinitions generated from the pydantic models: one source of truth for the schema.

The schema carries no `default`s: the API server would write them into the stored spec, and
GitOps tools would then see fields nobody wrote. Defaults live in the models (and in each
field's description, so `kubectl explain` shows them).
"""

from __future__ import annotations

from copy import deepcopy
from typing import Any

from pydantic import BaseModel

from llmop import API_GROUP, API_VERSION
from llmop.models.backend import LLMBackendSpec, LLMBackendStatus
from llmop.models.pull import ModelPullSpec, ModelPullStatus

_DROPPED_KEYS = {"title", "default", "$defs"}


def openapi_schema(model: type[BaseModel]) -> dict[str, Any]:
    """A structural OpenAPI v3 schema (what apiextensions.k8s.io/v1 accepts) for `model`."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return _structural(raw, raw.get("$defs", {}))


def _structural(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in node:
        target = _structural(defs[node["$ref"].rsplit("/", 1)[-1]], defs)
        # A field's own description and rules win over the referenced model's.
        extra = {k: v for k, v in node.items() if k != "$ref"}
        return {**target, **_structural(extra, defs)} if extra else target
    if "anyOf" in node:  # Optional[X]: unset fields are omitted, never null
        options = [option for option in node["anyOf"] if option.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"unions other than Optional[X] have no structural schema: {node}")
        merged = {**_structural(options[0], defs)}
        for key, value in node.items():
            if key != "anyOf" and key not in _DROPPED_KEYS:
                merged[key] = value
        return merged
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED_KEYS:
            continue
        if key == "properties":
            out[key] = {name: _structural(prop, defs) for name, prop in value.items()}
        elif key == "items" or (key == "additionalProperties" and isinstance(value, dict)):
            out[key] = _structural(value, defs)
        elif key == "const":
            out["enum"] = [value]
        else:
            # A copy: a model used twice would otherwise share lists, which YAML writes as aliases.
            out[key] = deepcopy(value)
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    if out.get("x-kubernetes-preserve-unknown-fields"):
        out.pop("additionalProperties", None)
    if out.get("type") == "object" and "properties" not in out and "additionalProperties" not in out:
        out["x-kubernetes-preserve-unknown-fields"] = True
    if out.get("format") == "date-time":
        out["type"] = "string"
    return out


#: The scale subresource (docs/scaling.md): kubectl scale, a HorizontalPodAutoscaler or KEDA write
#: spec.replicas through it as they do a Deployment's. Its status.replicas is the replicas whose
#: runtime answers (a Deployment's available ones); its selector finds the pods for pod metrics.
BACKEND_SCALE = {
    "specReplicasPath": ".spec.replicas",
    "statusReplicasPath": ".status.replicas.ready",
    "labelSelectorPath": ".status.selector",
}


def _condition_column(type_: str, name: str) -> dict[str, Any]:
    return {"name": name, "type": "string", "jsonPath": f'.status.conditions[?(@.type=="{type_}")].status'}


def _crd(
    *,
    kind: str,
    plural: str,
    short_names: list[str],
    description: str,
    spec: type[BaseModel],
    status: type[BaseModel],
    columns: list[dict[str, Any]],
    subresources: dict[str, Any],
) -> dict[str, Any]:
    schema = {
        "type": "object",
        "description": description,
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": "API version of this object."},
            "kind": {"type": "string", "description": "Kind of this object."},
            "metadata": {"type": "object"},
            "spec": {**openapi_schema(spec), "description": f"What the user wants from this {kind}."},
            "status": {**openapi_schema(status), "description": f"What llmop observed of this {kind}."},
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{API_GROUP}"},
        "spec": {
            "group": API_GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": short_names,
                "categories": ["llmop"],
            },
            "versions": [
                {
                    "name": API_VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": subresources,
                    "additionalPrinterColumns": [
                        *columns,
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


def llmbackend_crd() -> dict[str, Any]:
    return _crd(
        kind="LLMBackend",
        plural="llmbackends",
        short_names=["llmb"],
        description="An LLM inference runtime (vLLM, Ollama, llama.cpp) run by llmop, or an external "
        "server it observes, with the state observed from the runtime's own API.",
        spec=LLMBackendSpec,
        status=LLMBackendStatus,
        subresources={"status": {}, "scale": BACKEND_SCALE},
        columns=[
            {"name": "Runtime", "type": "string", "jsonPath": ".status.runtime"},
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            {"name": "Ready", "type": "string", "jsonPath": ".status.replicas.summary"},
            {"name": "Models", "type": "string", "jsonPath": ".status.modelsSummary"},
            {"name": "Endpoint", "type": "string", "jsonPath": ".status.endpoint"},
            {"name": "Stage", "type": "string", "jsonPath": ".status.startup.summary"},
            {**_condition_column("Ready", "Serving"), "priority": 1},
            # kubectl get -o wide: why spec.autoscaling chose these replicas.
            {"name": "Scaling", "type": "string", "jsonPath": ".status.autoscaling.message", "priority": 1},
        ],
    )


def modelpull_crd() -> dict[str, Any]:
    return _crd(
        kind="ModelPull",
        plural="modelpulls",
        short_names=["mpull"],
        description="A model pulled into an LLMBackend, with byte-level progress and retries.",
        spec=ModelPullSpec,
        status=ModelPullStatus,
        subresources={"status": {}},
        columns=[
            {"name": "Backend", "type": "string", "jsonPath": ".spec.backendRef.name"},
            {"name": "Model", "type": "string", "jsonPath": ".spec.model"},
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            {"name": "Progress", "type": "string", "jsonPath": ".status.progress.summary"},
            {"name": "Attempts", "type": "integer", "jsonPath": ".status.attempts", "priority": 1},
        ],
    )


def all_crds() -> dict[str, dict[str, Any]]:
    """File name under crds/ -> CRD object."""
    return {
        "llmop.dev_llmbackends.yaml": llmbackend_crd(),
        "llmop.dev_modelpulls.yaml": modelpull_crd(),
    }

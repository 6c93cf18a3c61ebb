"""LLMBackend objects as the API server returns them, for the gateway's tests."""

from __future__ import annotations

from typing import Any


def backend(
    name: str = "chat",
    namespace: str = "team-a",
    phase: str = "Ready",
    pods: list[dict[str, Any]] | None = None,
    models: list[dict[str, Any]] | None = None,
    spec: dict[str, Any] | None = None,
    **status: Any,
) -> dict[str, Any]:
    return {
        "apiVersion": "llmop.dev/v1alpha1",
        "kind": "LLMBackend",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec or {"runtime": "llamacpp", "port": 8080, "models": [{"name": "hf://org/repo/m.gguf"}]},
        "status": {
            "phase": phase,
            "runtime": "llamacpp",
            "pods": pods or [],
            "models": models or [],
            **status,
        },
    }


def pod(name: str, ip: str, models: list[str], phase: str = "Serving") -> dict[str, Any]:
    return {"name": name, "ip": ip, "ready": phase == "Serving", "phase": phase, "models": models}

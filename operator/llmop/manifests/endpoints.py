"""Where clients reach a backend."""

from __future__ import annotations

from llmop.models.backend import LLMBackendSpec
from llmop.runtimes.registry import serving_port


def endpoint_url(name: str, namespace: str, spec: LLMBackendSpec, cluster_domain: str) -> str:
    """Base URL of the backend's API, without `/v1`.

    Managed: the Service's cluster DNS name. External: the user's URL, less a trailing `/v1`
    (accepted there because OpenAI clients are configured that way).
    """
    if spec.external is not None:
        url = spec.external.url.rstrip("/")
        return url.removesuffix("/v1").rstrip("/")
    return f"http://{name}.{namespace}.svc.{cluster_domain}:{serving_port(spec)}"


def openai_base_url(endpoint: str, runtime_kind: str) -> str:
    """The OpenAI-compatible base URL. Every supported kind serves it under `/v1`, Ollama and
    llama-server included; `runtime_kind` is where a kind that differs would be told apart."""
    return f"{endpoint.rstrip('/')}/v1"

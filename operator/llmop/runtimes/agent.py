"""The llmop agent beside vLLM and llama.cpp, as the operator talks to it: it serves Ollama's pull
API (`POST /api/pull`, `GET /api/tags`, `GET /api/version`), so the Ollama adapter drives it;
only the name in messages differs. It is not a runtime kind users name, so it is not registered.
"""

from __future__ import annotations

import httpx

from llmop.runtimes.ollama import OllamaAdapter
from llmop.runtimes.transport import DEFAULT_TIMEOUT_SECONDS, Endpoint


class AgentAdapter(OllamaAdapter):
    kind = "llmop-agent"
    display_name = "the llmop agent"

    async def cancel_pull(self, model: str) -> None:
        """Stop the agent's transfer of `model`; the partial file stays for a later pull. Ollama
        needs no such call: it stops a pull when its client leaves."""
        await self.http.send("DELETE", "/api/pull", json_body={"model": model})


def connect_agent(
    base_url: str,
    *,
    token: str | None,
    client: httpx.AsyncClient | None = None,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
) -> AgentAdapter:
    """The agent at `base_url`, sent `token` as its bearer token on every request (the agent
    answers 401 to any request without it but its probes)."""
    return AgentAdapter(Endpoint.parse(base_url, client=client, timeout=timeout, api_key=token))

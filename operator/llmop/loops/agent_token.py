"""The token that lets the operator, and nothing else, drive a backend's agent.

How the operator gets it without reading tenants' Secrets broadly: it reads one Secret per
backend, `<backend>-agent-token`, by name, and uses it only when it carries the
`llmop.dev/agent-token: <backend>` label and a controller reference to that very backend (UID):
the Secret llmop itself created. Any other Secret of that name is refused, never read into a
request. RBAC cannot narrow `get` to labelled Secrets, so this check is llmop's own; the chart
grants `create` (and the `get` llmop has for spec.apiKeySecretRef) on Secrets, nothing more.

The token is created once with a random value and never rotated: pods keep the one they mounted.
It is deleted with the backend (owner reference). The operator keeps it in memory per backend.
"""

from __future__ import annotations

import secrets

from llmop.k8s.client import SECRETS, KubeAPIError, KubeClient
from llmop.loops.context import OperatorContext
from llmop.loops.name_conflicts import NameConflict
from llmop.manifests.agent_access import agent_token_of, agent_token_secret_name, build_agent_token_secret
from llmop.manifests.ownership import name_conflict

TOKEN_BYTES = 32


class AgentTokenUnavailable(Exception):
    """The backend's token Secret is missing or not llmop's; the message says which."""


async def ensure_agent_token(
    context: OperatorContext, name: str, namespace: str, uid: str, runtime: str
) -> str:
    """The backend's token, creating its Secret the first time; NameConflict when a Secret of
    that name exists that this backend does not control (the rule of every object llmop writes)."""
    kube = context.kube
    existing = await kube.get(SECRETS, agent_token_secret_name(name), namespace)
    if existing is None:
        body = build_agent_token_secret(name, namespace, uid, runtime, secrets.token_urlsafe(TOKEN_BYTES))
        try:
            existing = await kube.create(SECRETS, body)
        except KubeAPIError as error:
            if error.status_code != 409:
                raise
            # Another writer was quicker: use what it stored (if it is ours).
            existing = await kube.get(SECRETS, agent_token_secret_name(name), namespace) or {}
    if taken := name_conflict(existing or None, "Secret", name, uid):
        raise NameConflict(taken)
    return _remember(context, namespace, name, uid, existing)


async def agent_token(context: OperatorContext, name: str, namespace: str, uid: str) -> str:
    """The backend's token, from memory or from its Secret; AgentTokenUnavailable if none."""
    known = context.agent_tokens.get((namespace, name))
    if known is not None and known[0] == uid:
        return known[1]
    secret = await _read(context.kube, name, namespace)
    return _remember(context, namespace, name, uid, secret)


def forget_agent_token(context: OperatorContext, namespace: str, name: str) -> None:
    context.agent_tokens.pop((namespace, name), None)


async def _read(kube: KubeClient, name: str, namespace: str) -> dict[str, object]:
    secret = await kube.get(SECRETS, agent_token_secret_name(name), namespace)
    if secret is None:
        raise AgentTokenUnavailable(
            f"the agent's token Secret {agent_token_secret_name(name)} does not exist yet "
            "(llmop creates it with the backend's objects)"
        )
    return secret


def _remember(
    context: OperatorContext, namespace: str, name: str, uid: str, secret: dict[str, object]
) -> str:
    token = agent_token_of(secret, name, uid)
    if token is None:
        raise AgentTokenUnavailable(
            f"Secret {agent_token_secret_name(name)} exists but is not the agent token llmop made for "
            f"this backend (label llmop.dev/agent-token={name} and an owner reference to it); "
            "llmop never uses another Secret: delete or rename it"
        )
    context.agent_tokens[(namespace, name)] = (uid, token)
    return token

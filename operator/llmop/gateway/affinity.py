"""Prefix affinity: requests that share a prefix (the turns of one conversation) go to the same pod,
the one likeliest to hold that prefix in its cache.

The key is a digest of what stays the same across a conversation's turns: for chat, the leading
system (or developer) messages and the first user message; for text completions, the start of the
prompt. Only these fields are read, each cut to a bounded length, so a long conversation or an
inline image costs no more than a short one. The key is a digest and is never logged.

A pod is chosen by rendezvous (highest-random-weight) hashing: each pod's weight is a hash of the
key and the pod, and the heaviest wins. A pod that joins takes only the conversations it now
outweighs; one that leaves hands on only its own.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from llmop.gateway.table import CHAT, COMPLETION, TOOLS, Upstream

#: Characters of each message (chat) or of the prompt (completions) that make the key: enough to
#: tell conversations apart, and a bound on what a request costs to key.
PREFIX_CHARS = 1024
#: Messages before the first user message that count (system, developer, or a client's
#: preamble); a conversation that opens without a user message is keyed by these.
LEADING_MESSAGES = 8
#: Roles that open a conversation before the first user message.
_PREAMBLE_ROLES = ("system", "developer")


def affinity_key(capability: str, body: dict[str, Any]) -> bytes | None:
    """The digest of the request's conversation prefix; None when it has none (embeddings, or a
    body without messages or prompt): such a request goes to the least-loaded pod."""
    if capability in (CHAT, TOOLS):
        text = _chat_prefix(body.get("messages"))
    elif capability == COMPLETION:
        text = _prompt_prefix(body.get("prompt"))
    else:
        return None
    if not text:
        return None
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def _chat_prefix(messages: Any) -> str:
    """The leading messages up to and including the first user message, each cut short."""
    if not isinstance(messages, list):
        return ""
    parts = []
    for message in messages[:LEADING_MESSAGES]:
        if not isinstance(message, dict):
            break
        role = message.get("role")
        role = role[:32] if isinstance(role, str) else ""
        parts.append(f"{role}\x00{_content_text(message.get('content'))}")
        if role not in _PREAMBLE_ROLES:
            break  # the first user message (or whatever opens the exchange) ends the prefix
    return "\x01".join(parts)


def _content_text(content: Any) -> str:
    """A message's text, at most PREFIX_CHARS: a string, or the parts of a multimodal message
    (text parts as they are; an image by the start of its URL, never the whole base64)."""
    if isinstance(content, str):
        return content[:PREFIX_CHARS]
    if not isinstance(content, list):
        return ""
    texts: list[str] = []
    budget = PREFIX_CHARS
    for part in content:
        if budget <= 0 or not isinstance(part, dict):
            break
        value = _part_text(part)
        texts.append(value[:budget])
        budget -= len(texts[-1])
    return "\x02".join(texts)


def _part_text(part: dict[str, Any]) -> str:
    """A text part's text; any other part by its type and the start of its URL (an image)."""
    text = part.get("text")
    if isinstance(text, str):
        return text
    kind, image = part.get("type"), part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    return f"{kind[:32] if isinstance(kind, str) else ''}:{url[:256] if isinstance(url, str) else ''}"


def _prompt_prefix(prompt: Any) -> str:
    """The start of a completion's prompt: a string, the first of a batch, or token ids."""
    if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int):
        prompt = prompt[0]  # a batch: its first prompt
    if isinstance(prompt, str):
        return prompt[:PREFIX_CHARS]
    if isinstance(prompt, list):
        return ",".join(str(token) for token in prompt[: PREFIX_CHARS // 4] if isinstance(token, int))
    return ""


def rendezvous(key: bytes, upstreams: Sequence[Upstream]) -> Upstream:
    """The pod with the highest weight for `key`: the same pod for the same key while it serves,
    whatever the other pods do."""
    return max(upstreams, key=lambda u: hashlib.blake2b(u.key.encode(), key=key, digest_size=8).digest())

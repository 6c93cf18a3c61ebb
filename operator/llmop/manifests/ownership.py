"""Which existing objects llmop may write for a backend: only those the backend controls.

llmop writes a backend's objects by name, with server-side apply and `force`, which takes over any
object of that name: a backend named like a Service it does not own would point that Service at
its own pods and, through the owner reference, have it deleted with the backend. So an object
that already exists is written only when it carries a controller reference to this very backend
(its UID), which only llmop, or someone who may write that object anyway, has put there. A name
or a label proves nothing: anyone who may create the backend chooses its name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from llmop.manifests.labels import API_GROUP, BACKEND_KIND


def controlled_by(obj: Mapping[str, Any], uid: str) -> bool:
    """Whether `obj` names the object with this UID as its controller."""
    owners = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(
        isinstance(ref, dict) and ref.get("uid") == uid and ref.get("controller") is True for ref in owners
    )


@dataclass(frozen=True)
class NameTaken:
    """An object the backend would write exists and is not the backend's: what to tell the user."""

    message: str
    #: It is a deleted backend's of the same name, which the garbage collector removes shortly.
    leftover: bool = False


def name_conflict(existing: Mapping[str, Any] | None, kind: str, backend: str, uid: str) -> NameTaken | None:
    """Why llmop must not write `existing` for backend `backend` (UID `uid`), or None when it may:
    it does not exist yet, or this backend controls it."""
    if existing is None or controlled_by(existing, uid):
        return None
    name = (existing.get("metadata") or {}).get("name", "")
    if _left_by_earlier_backend(existing, backend):
        message = (
            f"{kind} {name!r} still belongs to an earlier LLMBackend {backend!r} that was deleted: "
            "llmop waits for the garbage collector to remove it, which takes seconds, and tries again"
        )
        return NameTaken(message, leftover=True)
    return NameTaken(
        f"{kind} {name!r} already exists and does not belong to this backend: llmop leaves it "
        f"untouched and deploys nothing of the backend; rename the backend, or delete the {kind} "
        "if nothing uses it"
    )


def _left_by_earlier_backend(existing: Mapping[str, Any], backend: str) -> bool:
    """Controlled by an LLMBackend of this name with another UID: two cannot exist at once, so
    it is a deleted one whose objects the garbage collector has not removed yet."""
    owners = (existing.get("metadata") or {}).get("ownerReferences") or []
    return any(
        isinstance(ref, dict)
        and ref.get("controller") is True
        and ref.get("kind") == BACKEND_KIND
        and str(ref.get("apiVersion", "")).startswith(f"{API_GROUP}/")
        and ref.get("name") == backend
        for ref in owners
    )

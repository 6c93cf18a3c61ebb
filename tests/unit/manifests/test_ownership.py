"""The one rule for every object llmop writes for a backend: an existing object is written only
when the backend controls it (a controller reference to its UID); a name or a label proves
nothing, as anyone who may create a backend chooses its name."""

from __future__ import annotations

from typing import Any

import pytest

from llmop.manifests import build_service, owner_reference
from llmop.manifests.agent_access import agent_token_of, build_agent_token_secret
from llmop.manifests.ownership import NameTaken, controlled_by, name_conflict
from llmop.models.backend import LLMBackendSpec

SPEC = LLMBackendSpec.model_validate({"runtime": "ollama"})


def service(name: str, *owners: dict[str, Any], labels: dict[str, str] | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": "ns", "labels": labels or {}}
    if owners:
        metadata["ownerReferences"] = list(owners)
    return {"kind": "Service", "metadata": metadata, "spec": {"selector": {"app": "postgresql"}}}


def test_a_free_name_or_the_backends_own_object_may_be_written() -> None:
    assert name_conflict(None, "Service", "chat", "uid-1") is None
    ours = build_service("chat", "ns", "uid-1", SPEC)  # as stored: llmop's controller reference
    assert controlled_by(ours, "uid-1")
    assert name_conflict(ours, "Service", "chat", "uid-1") is None


def test_someone_elses_service_is_refused_with_its_kind_its_name_and_what_to_do() -> None:
    victim = service("postgresql", labels={"app.kubernetes.io/name": "postgresql"})
    taken = name_conflict(victim, "Service", "postgresql", "uid-1")
    assert taken is not None and not taken.leftover
    assert taken.message.startswith("Service 'postgresql' already exists and does not belong to this backend")
    assert "rename the backend, or delete the Service" in taken.message


@pytest.mark.parametrize(
    "owner",
    [
        # A StatefulSet's (or any other controller's) object.
        {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db", "uid": "uid-db", "controller": True},
        # This backend named, but not as controller: anyone allowed to edit the object can add that.
        {**owner_reference("LLMBackend", "chat", "uid-1"), "controller": False},
        {
            key: value
            for key, value in owner_reference("LLMBackend", "chat", "uid-1").items()
            if key != "controller"
        },
        # Another backend's.
        owner_reference("LLMBackend", "other", "uid-2"),
    ],
)
def test_only_a_controller_reference_to_this_very_backend_counts(owner: dict[str, Any]) -> None:
    taken = name_conflict(service("chat", owner), "Service", "chat", "uid-1")
    assert taken is not None and not taken.leftover


def test_an_earlier_backend_of_the_same_name_leaves_objects_the_garbage_collector_removes() -> None:
    earlier = service("chat", owner_reference("LLMBackend", "chat", "uid-deleted"))
    taken = name_conflict(earlier, "Service", "chat", "uid-new")
    assert taken == NameTaken(
        "Service 'chat' still belongs to an earlier LLMBackend 'chat' that was deleted: llmop waits for "
        "the garbage collector to remove it, which takes seconds, and tries again",
        leftover=True,
    )
    # Only an LLMBackend of llmop's group counts as one.
    foreign = {**owner_reference("LLMBackend", "chat", "uid-x"), "apiVersion": "example.com/v1"}
    taken = name_conflict(service("chat", foreign), "Service", "chat", "uid-new")
    assert taken is not None and not taken.leftover


@pytest.mark.parametrize(
    "metadata",
    [{}, {"ownerReferences": None}, {"ownerReferences": ["uid-1"]}, {"ownerReferences": [None, 3]}],
)
def test_odd_metadata_is_someone_elses_and_never_raises(metadata: dict[str, Any]) -> None:
    assert not controlled_by({"metadata": metadata}, "uid-1")
    assert name_conflict({"metadata": metadata}, "Service", "chat", "uid-1") is not None
    assert not controlled_by({"metadata": None}, "uid-1")


def test_the_agent_token_follows_the_same_rule() -> None:
    secret = build_agent_token_secret("chat", "ns", "uid-1", "vllm", "tok")
    assert name_conflict(secret, "Secret", "chat", "uid-1") is None and agent_token_of(
        secret, "chat", "uid-1"
    )
    not_controller = {
        **secret,
        "metadata": {
            **secret["metadata"],
            "ownerReferences": [{**owner_reference("LLMBackend", "chat", "uid-1"), "controller": False}],
        },
    }
    assert name_conflict(not_controller, "Secret", "chat", "uid-1") is not None
    assert agent_token_of(not_controller, "chat", "uid-1") is None

"""Check a complete model's bytes against the sha256 the agent recorded when it stored them, and
remove the model when they differ, so that the next pull replaces it.

A shared cache is read by many pods for a long time: bytes changed on disk (a bad disk, a
misbehaving client of the share, a hand edit) must be found before a pod loads them. Reading
every byte again costs about as long as hashing them took on arrival, so the operator asks for it
when a filler starts (its first look at a volume it did not fill itself) and when a file's stamp
changed (`ModelStore.changed_files`: a write changes a file's ctime), not on every look.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

from llmop.agent.errors import UnsafeVolumePath
from llmop.agent.store import ModelStore, open_no_follow, refuse_links

_CHUNK = 4 * 1024 * 1024


@dataclass(frozen=True)
class Verification:
    """found: the model was complete on disk; corrupt: its files whose bytes differ (it was removed)."""

    found: bool
    corrupt: list[str] = field(default_factory=list)

    @property
    def verified(self) -> bool:
        return self.found and not self.corrupt


def file_sha256(store: ModelStore, path: os.PathLike[str] | str) -> str | None:
    """The sha256 of a regular file under the models dir, never through a link; None if absent."""
    target = store.models_dir / path
    refuse_links(store.models_dir, target)
    try:
        descriptor = open_no_follow(target, os.O_RDONLY)
    except FileNotFoundError:
        return None
    digest = hashlib.sha256()
    with open(descriptor, "rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_model(store: ModelStore, local_path: str) -> Verification:
    """Hash every file of the model at `local_path` and compare with its record; a model whose
    bytes differ is deleted (with its record), so it is no longer listed as complete."""
    record = store.read_record(local_path)
    if record is None or not store.is_complete(local_path):
        return Verification(found=False)
    sha256s = [entry.sha256 for entry in record.files] or [record.digest.removeprefix("sha256:")]
    expected = dict(zip(record.file_paths(), sha256s, strict=True))
    # Taken before reading: a write during the check leaves a stamp that differs, checked again.
    stamps = store.stamps_of(record)
    corrupt = []
    for path, sha256 in expected.items():
        try:
            actual = file_sha256(store, path)
        except UnsafeVolumePath:
            actual = None
        if actual != sha256:
            corrupt.append(path)
    if corrupt:
        store.delete(local_path)
    else:
        store.write_record(record, stamps)  # the recorded bytes: their stamps as they were read
    return Verification(found=True, corrupt=corrupt)

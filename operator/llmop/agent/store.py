"""The models dir on disk: where a model lands, what counts as complete, and what is recorded.

A model is complete at one moment, by one atomic step, and never before:

- a single file is downloaded to `<file>.partial` and renamed to `<file>` only after its sha256
  was verified, so the file existing means it is complete;
- a repo is a directory whose files land the same way one by one; it is complete once the
  marker `.llmop-complete` is written inside it, after the last file.

Beside each completed model, `<local path>.llmop.json` records its source name, size and digest
for `GET /api/tags`; it is written before the completing step, so it never describes a model
that is not there. Everything here is plain blocking file I/O: async code calls it through
`asyncio.to_thread`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from pydantic import BaseModel, ConfigDict, ValidationError

COMPLETE_MARKER = ".llmop-complete"
METADATA_SUFFIX = ".llmop.json"
PARTIAL_SUFFIX = ".partial"
#: Beside a partial file: the source's ETag or Last-Modified when the transfer began, sent back
#: as If-Range on resume so a changed source restarts the file instead of splicing two versions.
VALIDATOR_SUFFIX = ".partial.validator"


class UnsafeLocalPath(ValueError):
    """A path that would leave the models dir."""


class FileRecord(BaseModel):
    model_config = ConfigDict(extra="ignore")

    path: str
    size: int
    sha256: str


class ModelRecord(BaseModel):
    """What the agent knows about a model it completed (the `.llmop.json` sidecar)."""

    model_config = ConfigDict(extra="ignore")

    name: str
    local_path: str
    size: int
    digest: str  # sha256:<hex> of the file, or of the repo's file list
    modified_at: datetime
    revision: str | None = None  # the commit a Hugging Face revision pointed at
    files: list[FileRecord] = []


def check_relative_path(path: str) -> PurePosixPath:
    """A relative path with no `..`, no absolute start and no empty segment, or UnsafeLocalPath."""
    pure = PurePosixPath(path)
    if not path or pure.is_absolute() or any(part in ("", ".", "..") for part in path.split("/")):
        raise UnsafeLocalPath(f"{path!r} is not a plain relative path")
    return pure


def partial_path(destination: Path) -> Path:
    return destination.with_name(destination.name + PARTIAL_SUFFIX)


def validator_path(destination: Path) -> Path:
    return destination.with_name(destination.name + VALIDATOR_SUFFIX)


def now() -> datetime:
    return datetime.now(UTC)


def write_atomically(path: Path, data: bytes) -> None:
    """Write to a temporary sibling, flush it to disk, then rename over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)


class ModelStore:
    def __init__(self, models_dir: Path) -> None:
        self.models_dir = models_dir

    def path_of(self, local_path: str) -> Path:
        return self.models_dir / check_relative_path(local_path)

    def metadata_path(self, local_path: str) -> Path:
        target = self.path_of(local_path)
        return target.with_name(target.name + METADATA_SUFFIX)

    def is_complete(self, local_path: str) -> bool:
        target = self.path_of(local_path)
        if target.is_dir():
            return (target / COMPLETE_MARKER).is_file()
        return target.is_file()

    def missing(self, required: tuple[str, ...]) -> list[str]:
        """The required local paths that are not complete (an unsafe path is never complete)."""
        missing = []
        for local_path in required:
            try:
                complete = self.is_complete(local_path)
            except UnsafeLocalPath:
                complete = False
            if not complete:
                missing.append(local_path)
        return missing

    def read_record(self, local_path: str) -> ModelRecord | None:
        try:
            return ModelRecord.model_validate_json(self.metadata_path(local_path).read_bytes())
        except (OSError, ValidationError):
            return None

    def write_record(self, record: ModelRecord) -> None:
        write_atomically(self.metadata_path(record.local_path), record.model_dump_json(indent=2).encode())

    def mark_repo_complete(self, local_path: str, digest: str) -> None:
        write_atomically(self.path_of(local_path) / COMPLETE_MARKER, f"{digest}\n".encode())

    def completed_records(self) -> list[ModelRecord]:
        """Every model with a record whose completing step happened, by local path."""
        records = []
        for metadata in sorted(self.models_dir.rglob(f"*{METADATA_SUFFIX}")):
            relative = metadata.relative_to(self.models_dir).as_posix()
            local_path = relative.removesuffix(METADATA_SUFFIX)
            record = self.read_record(local_path)
            if record is not None and record.local_path == local_path and self.is_complete(local_path):
                records.append(record)
        return records

    def delete(self, local_path: str) -> bool:
        """Remove a model, its partials and its record; False when nothing was there.

        The completing step is undone first, so a model being deleted never looks complete.
        """
        target = self.path_of(local_path)
        found = False
        if target.is_dir():
            with contextlib.suppress(FileNotFoundError):
                (target / COMPLETE_MARKER).unlink()
            shutil.rmtree(target)
            found = True
        for path in (target, partial_path(target), validator_path(target), self.metadata_path(local_path)):
            with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                path.unlink()
                found = True
        return found

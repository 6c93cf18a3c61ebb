"""The models dir on disk: where a model lands, what counts as complete, and what is recorded.

Models land at their local path (`hf/...`, `hf-file/...`, `url/...`), and nothing else does:
the agent's own files live under `.llmop/`, a name no local path can take, each named by a
digest of the model's local path (and of the file's path in the model), so no file a repo or a
URL brings can be mistaken for one of them:

    .llmop/records/<model>.json       what /api/tags reports of a completed model
    .llmop/complete/<model>           a repo's completion marker
    .llmop/pins/<model>.json          the commit an unfinished Hugging Face pull is pinned to
    .llmop/partial/<model>/<file>     bytes still arriving (and `<file>.validator`)

A model is complete at one moment, by one atomic step, and never before:

- a single file is downloaded to its partial and renamed to its local path only after its
  sha256 was verified, so the file existing means it is complete;
- a repo is a directory whose files land the same way one by one; it is complete once its
  marker is written, after the last file.

Nothing is read or written through a symbolic link: every component under the models dir is
checked with lstat before use and files are opened with O_NOFOLLOW, so a link placed in the
volume (by a runtime sharing it) cannot send a write elsewhere. Everything here is plain
blocking file I/O: async code calls it through `asyncio.to_thread`.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from pydantic import BaseModel, ConfigDict, ValidationError

from llmop.agent.errors import NoRoom, UnsafeVolumePath

#: The agent's own directory in the models dir; local paths start with hf/, hf-file/ or url/.
AGENT_DIR = ".llmop"
#: Hex digits of the digests that name the agent's files.
KEY_CHARS = 32
_NO_FOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafeLocalPath(ValueError):
    """A path that would leave the models dir."""


class FileRecord(BaseModel):
    model_config = ConfigDict(extra="ignore")

    path: str
    size: int
    sha256: str


class FileStamp(BaseModel):
    """What `lstat` said of a file when its bytes were last known to match their sha256. A write
    to the file changes its ctime (which no process can set back), so a stamp that differs means
    the bytes must be hashed again before anyone trusts them."""

    model_config = ConfigDict(extra="ignore")

    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int

    @classmethod
    def of(cls, found: os.stat_result) -> FileStamp:
        return cls(
            size=found.st_size, mtime_ns=found.st_mtime_ns, ctime_ns=found.st_ctime_ns, inode=found.st_ino
        )


class ModelRecord(BaseModel):
    """What the agent knows about a model it completed."""

    model_config = ConfigDict(extra="ignore")

    name: str
    local_path: str
    size: int
    digest: str  # sha256:<hex> of the file, or of the repo's file list
    modified_at: datetime
    revision: str | None = None  # the commit a Hugging Face revision pointed at
    files: list[FileRecord] = []
    #: The stamp of each file (by its path under the models dir) when it was verified.
    stamps: dict[str, FileStamp] = {}

    def file_paths(self) -> list[str]:
        """The model's files, by their paths under the models dir."""
        if not self.files:
            return [self.local_path]
        return [f"{self.local_path}/{entry.path}" for entry in self.files]


class Pin(BaseModel):
    """The commit an unfinished Hugging Face pull fetches every file from."""

    model_config = ConfigDict(extra="ignore")

    local_path: str
    commit: str


def check_relative_path(path: str) -> PurePosixPath:
    """A relative path with no `..`, no absolute start and no empty segment, or UnsafeLocalPath."""
    pure = PurePosixPath(path)
    if (
        not path
        or "\0" in path
        or pure.is_absolute()
        or any(part in ("", ".", "..") for part in path.split("/"))
    ):
        raise UnsafeLocalPath(f"{path!r} is not a plain relative path")
    return pure


def key_of(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:KEY_CHARS]


def now() -> datetime:
    return datetime.now(UTC)


def refuse_links(models_dir: Path, path: Path) -> None:
    """UnsafeVolumePath when a component of `path` under `models_dir` is a symbolic link (or a
    parent is not a directory); components that do not exist yet are fine."""
    relative = path.relative_to(models_dir)
    current = models_dir
    for index, part in enumerate(relative.parts):
        current = current / part
        try:
            found = os.lstat(current)
        except FileNotFoundError:
            return
        shown = relative.parts[: index + 1]
        if stat.S_ISLNK(found.st_mode):
            raise UnsafeVolumePath(
                f"{'/'.join(shown)} in the model volume is a symbolic link; llmop never reads or writes "
                "through links there: remove it (or delete the model) and pull again"
            )
        if index < len(relative.parts) - 1 and not stat.S_ISDIR(found.st_mode):
            raise UnsafeVolumePath(
                f"{'/'.join(shown)} in the model volume is a file where a directory belongs"
            )


def make_dirs(models_dir: Path, directory: Path) -> None:
    """Create `directory` and its parents under `models_dir`, never through a link."""
    refuse_links(models_dir, directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UnsafeVolumePath(
            f"{directory.relative_to(models_dir)} in the model volume is a file where a directory belongs "
            "(another model's file?): delete that model, then pull again"
        ) from None
    refuse_links(models_dir, directory)  # nothing swapped in while creating


def open_no_follow(path: Path, flags: int) -> int:
    """os.open that refuses a link as the last component (the parents are checked by callers)."""
    try:
        return os.open(path, flags | _NO_FOLLOW, 0o644)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise UnsafeVolumePath(
                f"{path.name} in the model volume is a symbolic link; llmop never reads or writes through "
                "links there: remove it and pull again"
            ) from error
        raise


def write_atomically(models_dir: Path, path: Path, data: bytes) -> None:
    """Write to a temporary sibling, flush it to disk, then rename over `path`."""
    make_dirs(models_dir, path.parent)
    temporary = path.with_name(f".{path.name}.tmp")
    descriptor = open_no_follow(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    with open(descriptor, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)


def read_no_follow(models_dir: Path, path: Path) -> bytes:
    refuse_links(models_dir, path)
    with open(open_no_follow(path, os.O_RDONLY), "rb") as file:
        return file.read()


def remove(models_dir: Path, path: Path) -> bool:
    """Remove a file, a link (not what it points at) or a whole directory (links inside are
    removed, never followed); a link among the parents is refused."""
    refuse_links(models_dir, path.parent)
    try:
        found = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    if stat.S_ISDIR(found.st_mode):
        shutil.rmtree(path)
    else:
        path.unlink()
    return True


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.1f} {unit}" if unit != "bytes" else f"{size} bytes"
        value /= 1024
    return f"{value:.1f} TiB"


@dataclass(frozen=True)
class VolumeRoom:
    """The room left on the model volume: the disk's free bytes and, under a size limit (an
    emptyDir's sizeLimit, which statvfs cannot see: it reports the node's disk), what the limit
    leaves after the bytes already stored. The kubelet evicts a pod past its limit; the agent
    refuses the download instead."""

    models_dir: Path
    size_limit: int | None = None

    def free(self) -> int:
        stats = os.statvfs(self.models_dir)
        free = stats.f_bavail * stats.f_frsize
        if self.size_limit is None:
            return free
        return max(0, min(free, self.size_limit - bytes_stored(self.models_dir)))

    def check(self, needed: int, what: str) -> None:
        """NoRoom, naming both figures, when the volume has less room than `needed`."""
        free = self.free()
        if needed > free:
            raise NoRoom(
                f"{what} needs {needed} bytes ({human_size(needed)}) but the model volume has only {free} "
                f"bytes ({human_size(free)}) free: give the volume more room or delete models it no "
                "longer needs"
            )


def bytes_stored(directory: Path) -> int:
    """Bytes the files under `directory` take on disk, the way the kubelet counts them; links are
    not followed."""
    total = 0
    for root, _, names in os.walk(directory):
        for name in names:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                continue  # removed meanwhile
    return total


class ModelStore:
    def __init__(self, models_dir: Path, size_limit: int | None = None) -> None:
        self.models_dir = models_dir
        self.agent_dir = models_dir / AGENT_DIR
        self.room = VolumeRoom(models_dir, size_limit)

    def path_of(self, local_path: str) -> Path:
        relative = check_relative_path(local_path)
        if relative.parts[0] == AGENT_DIR:
            raise UnsafeLocalPath(f"{local_path!r} is inside the agent's own directory")
        return self.models_dir / relative

    def record_path(self, local_path: str) -> Path:
        return self.agent_dir / "records" / f"{key_of(local_path)}.json"

    def marker_path(self, local_path: str) -> Path:
        return self.agent_dir / "complete" / key_of(local_path)

    def pin_path(self, local_path: str) -> Path:
        return self.agent_dir / "pins" / f"{key_of(local_path)}.json"

    def partial_dir(self, local_path: str) -> Path:
        return self.agent_dir / "partial" / key_of(local_path)

    def partial_of(self, local_path: str, path_in_model: str) -> Path:
        """Where the bytes of one file of a model gather until they are verified."""
        return self.partial_dir(local_path) / key_of(path_in_model)

    def is_complete(self, local_path: str) -> bool:
        """A single file in place, or a repo directory with its marker; a link is never complete."""
        target = self.path_of(local_path)
        refuse_links(self.models_dir, target)
        try:
            found = os.lstat(target)
        except FileNotFoundError:
            return False
        if stat.S_ISREG(found.st_mode):
            return True
        return stat.S_ISDIR(found.st_mode) and self._has_file(self.marker_path(local_path))

    def _has_file(self, path: Path) -> bool:
        refuse_links(self.models_dir, path)
        try:
            return stat.S_ISREG(os.lstat(path).st_mode)
        except FileNotFoundError:
            return False

    def missing(self, required: tuple[str, ...]) -> list[str]:
        """The required local paths that are not complete (an unsafe path is never complete)."""
        missing = []
        for local_path in required:
            try:
                complete = self.is_complete(local_path)
            except (UnsafeLocalPath, UnsafeVolumePath):
                complete = False
            if not complete:
                missing.append(local_path)
        return missing

    def read_record(self, local_path: str) -> ModelRecord | None:
        try:
            record = ModelRecord.model_validate_json(
                read_no_follow(self.models_dir, self.record_path(local_path))
            )
        except (OSError, ValidationError, UnsafeVolumePath):
            return None
        return record if record.local_path == local_path else None

    def write_record(self, record: ModelRecord, stamps: dict[str, FileStamp] | None = None) -> None:
        """Record a model whose files were just verified, with each file's stamp as it is now (or
        as it was when the check began)."""
        stamps = self.stamps_of(record) if stamps is None else stamps
        data = record.model_copy(update={"stamps": stamps}).model_dump_json(indent=2).encode()
        write_atomically(self.models_dir, self.record_path(record.local_path), data)

    def stamps_of(self, record: ModelRecord) -> dict[str, FileStamp]:
        """Each file's stamp as it is now; a file that is gone has none."""
        stamps = {}
        for path in record.file_paths():
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                stamps[path] = FileStamp.of(os.lstat(self.models_dir / path))
        return stamps

    def changed_files(self, record: ModelRecord) -> list[str]:
        """The files of a complete model whose stamp differs from the one recorded when they were
        verified (written, replaced or gone since). A record without stamps (written by an
        agent before stamps) says nothing: the check at the filler's start covers it."""
        now = self.stamps_of(record)
        return [path for path, stamp in record.stamps.items() if now.get(path) != stamp]

    def forget_record(self, local_path: str) -> None:
        remove(self.models_dir, self.record_path(local_path))

    def pinned_commit(self, local_path: str) -> str | None:
        try:
            pin = Pin.model_validate_json(read_no_follow(self.models_dir, self.pin_path(local_path)))
        except (OSError, ValidationError, UnsafeVolumePath):
            return None
        return pin.commit if pin.local_path == local_path else None

    def pin(self, local_path: str, commit: str) -> None:
        data = Pin(local_path=local_path, commit=commit).model_dump_json().encode()
        write_atomically(self.models_dir, self.pin_path(local_path), data)

    def unpin(self, local_path: str) -> None:
        remove(self.models_dir, self.pin_path(local_path))

    def mark_repo_complete(self, local_path: str, digest: str) -> None:
        write_atomically(self.models_dir, self.marker_path(local_path), f"{digest}\n".encode())
        self.unpin(local_path)

    def completed_records(self) -> list[ModelRecord]:
        """Every model with a record whose completing step happened, by local path."""
        records = []
        directory = self.agent_dir / "records"
        with contextlib.suppress(FileNotFoundError, NotADirectoryError, UnsafeVolumePath):
            refuse_links(self.models_dir, directory)
            for path in sorted(directory.glob("*.json")):
                record = self._completed_record(path)
                if record is not None:
                    records.append(record)
        return sorted(records, key=lambda record: record.local_path)

    def _completed_record(self, path: Path) -> ModelRecord | None:
        try:
            record = ModelRecord.model_validate_json(read_no_follow(self.models_dir, path))
            named_right = path.name == f"{key_of(record.local_path)}.json"
            return record if named_right and self.is_complete(record.local_path) else None
        except (OSError, ValidationError, UnsafeLocalPath, UnsafeVolumePath):
            return None

    def start_over(self, local_path: str) -> None:
        """Drop an unfinished pull: its partials, its pin, and a repo directory not yet complete
        (whatever commit its files came from). A complete single file stays until replaced."""
        remove(self.models_dir, self.marker_path(local_path))
        target = self.path_of(local_path)
        refuse_links(self.models_dir, target)
        if target.is_dir():
            remove(self.models_dir, target)
            remove(self.models_dir, self.record_path(local_path))
        remove(self.models_dir, self.partial_dir(local_path))
        self.unpin(local_path)

    def delete(self, local_path: str) -> bool:
        """Remove a model, its partials and its record; False when nothing was there.

        The completing step is undone first, so a model being deleted never looks complete.
        """
        found = remove(self.models_dir, self.marker_path(local_path))
        found = remove(self.models_dir, self.path_of(local_path)) or found
        for path in (self.partial_dir(local_path), self.record_path(local_path), self.pin_path(local_path)):
            found = remove(self.models_dir, path) or found
        return found

"""A whole pull: plan the files, fetch them (a few at once, keeping those already in place),
record the model, and make it complete in one step. Lines go out in Ollama's shape:

    {"status": "pulling manifest"}
    {"status": "pulling <file>", "digest": "sha256:<hex> or <file>", "total": N, "completed": M}
    {"status": "verifying sha256 digest"}
    {"status": "writing manifest"}
and the registry adds {"status": "success"} or {"error": "..."} at the end.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import os
import stat
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import aiohttp

from llmop.agent.download import (
    FileClient,
    PartialFile,
    hash_file,
    land_partial,
    transfer_file,
    verify_partial,
)
from llmop.agent.plan import FileToFetch, ListingNotFound, PullPlan, plan_pull
from llmop.agent.settings import AgentSettings
from llmop.agent.store import (
    FileRecord,
    ModelRecord,
    ModelStore,
    make_dirs,
    now,
    refuse_links,
)
from llmop.agent.transfers import Line, Publish
from llmop.sources import ModelSource

logger = logging.getLogger("llmop.agent")


def progress_line(label: str, sha256: str | None, completed: int, total: int | None) -> Line:
    line: Line = {"status": f"pulling {label}", "digest": f"sha256:{sha256}" if sha256 else label}
    if total is not None:
        line["total"] = total
    line["completed"] = completed
    return line


def progress_key(label: str) -> str:
    return f"file:{label}"


def manifest_digest(files: Sequence[FileRecord]) -> str:
    """One sha256 for a repo: of its sorted file list with each file's size and sha256."""
    listing = sorted((file.path, file.size, file.sha256) for file in files)
    return hashlib.sha256(json.dumps(listing, separators=(",", ":")).encode()).hexdigest()


def landed_digest(models_dir: Path, file: FileToFetch) -> str | None:
    """The sha256 of the file already at its destination when it can be kept, else None.

    It is hashed, never taken on trust from the listing: only the bytes on disk decide what a
    record says of them (a resumed pull rereads what landed before it).
    """
    found = _regular_file(models_dir, file.destination)
    if found is None or (file.size is not None and found.st_size != file.size):
        return None
    digest = hash_file(file.destination)
    if file.sha256 is not None and digest != file.sha256:
        return None
    return digest


def _regular_file(models_dir: Path, path: Path) -> os.stat_result | None:
    """lstat of a plain file at `path` (no link on the way), else None."""
    refuse_links(models_dir, path)
    try:
        found = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return found if stat.S_ISREG(found.st_mode) else None


def bytes_present(models_dir: Path, file: FileToFetch) -> int:
    """What a follower sees as already done: the landed file, else the partial, else nothing."""
    landed = _regular_file(models_dir, file.destination)
    if landed is not None and (file.size is None or landed.st_size == file.size):
        return landed.st_size
    partial = _regular_file(models_dir, file.partial)
    return partial.st_size if partial is not None else 0


def present_single_file(
    models_dir: Path, destination: Path, recorded_sha256: str | None
) -> tuple[int, str] | None:
    """(size, sha256) of a single-file model already in place, or None."""
    found = _regular_file(models_dir, destination)
    if found is None:
        return None
    return found.st_size, recorded_sha256 or hash_file(destination)


def needed_room(plan: PullPlan, present: list[int]) -> int:
    """Bytes still to arrive for the files whose size the source announced."""
    return sum(max(file.size - done, 0) for file, done in zip(plan.files, present, strict=True) if file.size)


async def fetch_bounded(
    files: Sequence[FileToFetch], limit: int, fetch: Callable[[FileToFetch], Awaitable[FileRecord]]
) -> list[FileRecord]:
    """Fetch the files, at most `limit` at once, in the plan's order; their records in that order.

    The first failure is the pull's: the other files stop at once rather than finish (the error
    reaches the operator without waiting for gigabytes it will not use), each keeping its partial
    for the next pull to resume, as a cancelled pull does.
    """
    slots = asyncio.Semaphore(limit)

    async def one(file: FileToFetch) -> FileRecord:
        async with slots:
            return await fetch(file)

    tasks = [asyncio.create_task(one(file), name=f"fetch {file.label}") for file in files]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)  # every partial closed before the pull reports its end


class ModelPuller:
    def __init__(
        self, settings: AgentSettings, client: aiohttp.ClientSession, files: FileClient, store: ModelStore
    ) -> None:
        self._settings = settings
        self._client = client
        self._files = files
        self._store = store

    def hf_headers(self) -> dict[str, str]:
        token = self._settings.hf_token
        return {"Authorization": f"Bearer {token}"} if token else {}

    async def pull(self, source: ModelSource, expected_sha256: str | None, publish: Publish) -> None:
        publish({"status": "pulling manifest"})
        if await self._already_complete(source, expected_sha256, publish):
            return
        plan = await self._plan(source, expected_sha256)
        models_dir = self._store.models_dir
        present = await asyncio.to_thread(lambda: [bytes_present(models_dir, file) for file in plan.files])
        # The sizes go out before the room is checked: the operator learns how large the model
        # is (its Fits condition) even from a pull the volume has no room for.
        for file, completed in zip(plan.files, present, strict=True):
            publish(progress_line(file.label, file.sha256, completed, file.size), progress_key(file.label))
        await asyncio.to_thread(self._check_room, source, needed_room(plan, present))
        landed = await fetch_bounded(
            plan.files, self._settings.parallel_downloads, lambda file: self._fetch(file, plan, publish)
        )
        if plan.is_repo:
            publish({"status": "writing manifest"})
            digest = manifest_digest(landed)
            record = ModelRecord(
                name=source.name,
                local_path=source.local_path,
                size=sum(file.size for file in landed),
                digest=f"sha256:{digest}",
                modified_at=now(),
                revision=plan.revision,
                files=landed,
            )
            await asyncio.to_thread(self._store.write_record, record)
            await asyncio.to_thread(self._store.mark_repo_complete, source.local_path, record.digest)

    async def _plan(self, source: ModelSource, expected_sha256: str | None) -> PullPlan:
        """The files to fetch. A Hugging Face pull is pinned to the commit its revision pointed at
        when it began, so files of two commits never mix: a resumed pull finishes that commit
        (the revision meant it when the pull was asked for, and no landed byte is lost); if the
        endpoint no longer has it, the pull starts over, cleanly, at the revision's new commit."""
        plan = functools.partial(
            plan_pull, self._client, source, expected_sha256, self._settings, self.hf_headers(), self._store
        )
        if source.kind != "huggingface":
            return await plan()
        pinned = await asyncio.to_thread(self._store.pinned_commit, source.local_path)
        if pinned is not None:
            try:
                return await plan(pinned)
            except ListingNotFound:
                logger.info("%s: commit %s is gone from the endpoint; starting over", source.name, pinned)
        await asyncio.to_thread(self._store.start_over, source.local_path)
        fresh = await plan()
        assert fresh.revision is not None
        await asyncio.to_thread(self._store.pin, source.local_path, fresh.revision)
        return fresh

    def _check_room(self, source: ModelSource, needed: int) -> None:
        if needed:
            make_dirs(self._store.models_dir, self._store.agent_dir)
            self._store.room.check(needed, source.name)

    async def _already_complete(
        self, source: ModelSource, expected_sha256: str | None, publish: Publish
    ) -> bool:
        """True when the model is complete on disk (and has the requested digest): a pull then
        needs no network, so a pod restarting on a filled volume starts while the source is down."""
        record = await asyncio.to_thread(self._store.read_record, source.local_path)
        if not source.is_single_file:
            if not await asyncio.to_thread(self._store.is_complete, source.local_path):
                return False
            for file in record.files if record else ():
                publish(progress_line(file.path, file.sha256, file.size, file.size), progress_key(file.path))
            return True
        recorded = record.digest.removeprefix("sha256:") if record else None
        destination = self._store.path_of(source.local_path)
        present = await asyncio.to_thread(present_single_file, self._store.models_dir, destination, recorded)
        if present is None:
            return False
        size, sha256 = present
        if expected_sha256 is not None and sha256 != expected_sha256:
            return False  # fetched again; the verified new file replaces this one in one step
        if record is None:
            await asyncio.to_thread(self._store.write_record, self._single_record(source, size, sha256, None))
        label = destination.name
        publish(progress_line(label, sha256, size, size), progress_key(label))
        return True

    async def _fetch(self, file: FileToFetch, plan: PullPlan, publish: Publish) -> FileRecord:
        def report(completed: int, total: int | None) -> None:
            publish(progress_line(file.label, file.sha256, completed, total), progress_key(file.label))

        digest = await asyncio.to_thread(landed_digest, self._store.models_dir, file)
        if digest is not None:
            size = file.size if file.size is not None else await asyncio.to_thread(_size_of, file.destination)
            report(size, size)
            return FileRecord(path=file.label, size=size, sha256=digest)
        partial = await transfer_file(
            self._files,
            file,
            models_dir=self._store.models_dir,
            room=self._store.room,
            headers=self.hf_headers() if file.send_token else {},
            on_progress=report,
            progress_interval=self._settings.progress_interval,
        )
        if file.sha256 is not None:
            publish({"status": "verifying sha256 digest"})
        digest = await verify_partial(partial, file.label, file.sha256)
        if plan.is_repo:
            await land_partial(partial)
        else:
            publish({"status": "writing manifest"})
            await self._land_single(plan, partial, digest)
        return FileRecord(path=file.label, size=partial.size, sha256=digest)

    async def _land_single(self, plan: PullPlan, partial: PartialFile, digest: str) -> None:
        """Land a single-file model and record it; the old record goes first, so a record never
        speaks of bytes other than those on disk."""
        local_path = plan.source.local_path
        await asyncio.to_thread(self._store.forget_record, local_path)
        await land_partial(partial)
        record = self._single_record(plan.source, partial.size, digest, plan.revision)
        await asyncio.to_thread(self._store.write_record, record)
        await asyncio.to_thread(self._store.unpin, local_path)

    @staticmethod
    def _single_record(source: ModelSource, size: int, sha256: str, revision: str | None) -> ModelRecord:
        return ModelRecord(
            name=source.name,
            local_path=source.local_path,
            size=size,
            digest=f"sha256:{sha256}",
            modified_at=now(),
            revision=revision,
        )


def _size_of(path: Path) -> int:
    return path.stat().st_size

"""One file: a resumable transfer into its partial, its sha256 verified, then an atomic rename.

A transfer resumes (a Range request) only when what is already there is known to be a prefix of
what comes: the source gave a validator (a strong ETag or Last-Modified) that goes back as
If-Range, or the file has a sha256 that will reject a splice of two versions. Otherwise the
partial starts over from zero.

The sha256 is computed while the bytes arrive (after re-reading what a partial already holds),
so a verified file costs no second pass over tens of gigabytes. Received bytes are gathered into
batches of WRITE_BATCH_BYTES (or whatever arrived in WRITE_BATCH_SECONDS); one worker thread
per file writes (unbuffered), hashes and now and then syncs each batch while the event loop
receives the next. Memory stays bounded (a few batches), a killed process loses at most the
batches not yet written (fetched again on resume), and a cancelled or failed transfer writes
what it received before the partial is closed.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import itertools
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any, Literal, TypeVar

import aiohttp

from llmop.agent.errors import (
    DigestMismatch,
    NoRoom,
    PullError,
    SourceError,
    UnsafeVolumePath,
    describe_http_failure,
    digest_mismatch_message,
    transport_reason,
)
from llmop.agent.plan import FileToFetch
from llmop.agent.store import (
    VolumeRoom,
    human_size,
    make_dirs,
    open_no_follow,
    read_no_follow,
    refuse_links,
    remove,
    write_atomically,
)

#: Bytes handed to the file's worker thread at once: large enough that the hop to the thread is
#: rare (one per MiB, not one per 64 KiB network read), small enough to lose little on a kill.
WRITE_BATCH_BYTES = 1 << 20
#: ...or sooner, once the first bytes of a batch have waited this long: on a slow link the file
#: (and so progress, and what a resume keeps) still grows several times a second.
WRITE_BATCH_SECONDS = 0.2
#: Batches queued for the disk thread at most; the receiving loop waits beyond that. Room for a
#: few lets the network keep going while the thread syncs.
BATCHES_IN_FLIGHT = 4
#: The disk thread syncs the partial after every this many bytes, so the sync before the rename
#: finds little left to write: on a link slower than the disk, the file is on disk when the last
#: byte arrives instead of a gigabyte later.
SYNC_EVERY_BYTES = 64 << 20
_HASH_READ_BYTES = 8 << 20
#: Buffers one writev takes at most (Linux's IOV_MAX).
_IOV_MAX = 1024
_ERROR_BODY_BYTES = 4096
_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(?:(?P<start>\d+)-(?P<end>\d+)|\*)/(?P<total>\d+|\*)\s*$")

#: Called with (bytes completed, total bytes if known).
ProgressReport = Callable[[int, int | None], None]
_Outcome = Literal["received", "restart"]
_Result = TypeVar("_Result")


class ProgressThrottle:
    """Says when another progress line is due: at most once per interval."""

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval = interval
        self._clock = clock
        self._last: float | None = None

    def due(self) -> bool:
        now = self._clock()
        if self._last is not None and now - self._last < self._interval:
            return False
        self._last = now
        return True


def parse_content_range(header: str | None) -> tuple[int | None, int | None]:
    """`bytes 100-199/1000` -> (100, 1000); `bytes */1000` -> (None, 1000); unknown parts None."""
    match = _CONTENT_RANGE.match(header or "")
    if not match:
        return None, None
    start = int(match["start"]) if match["start"] is not None else None
    total = int(match["total"]) if match["total"] != "*" else None
    return start, total


def range_validator(headers: Mapping[str, str]) -> str | None:
    """A strong ETag, else Last-Modified: what If-Range may carry (weak ETags may not)."""
    etag = headers.get("etag")
    if etag and not etag.startswith("W/"):
        return etag
    return headers.get("last-modified")


def hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(open_no_follow(path, os.O_RDONLY), "rb") as file:
        while block := file.read(_HASH_READ_BYTES):
            digest.update(block)
    return digest.hexdigest()


class PartialFile:
    """The partial file of one download and the running sha256 of the bytes in it; the source's
    validator when the transfer began lies beside it (`<partial>.validator`).

    Its methods block; async code calls them through the file's DiskQueue.
    """

    def __init__(self, models_dir: Path, destination: Path, partial: Path) -> None:
        self.models_dir = models_dir
        self.destination = destination
        self.path = partial
        self.validator_path = partial.with_name(partial.name + ".validator")
        self.size = 0
        self.hasher = hashlib.sha256()
        self._file: IO[bytes] | None = None
        self._unsynced = 0
        #: The validator the resuming request sent as If-Range.
        self.sent_validator: str | None = None

    def open_for_resume(self, expected_size: int | None) -> None:
        """Open for appending after hashing what is already there; a partial longer than the
        file can be is not a prefix of it and is discarded."""
        make_dirs(self.models_dir, self.path.parent)
        self.hasher = hashlib.sha256()
        descriptor = open_no_follow(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND)
        self._file = open(descriptor, "ab", buffering=0)  # unbuffered: a kill loses no received byte
        self.size = os.fstat(descriptor).st_size
        if expected_size is not None and self.size > expected_size:
            self.restart(None)
        offset = 0
        while offset < self.size:
            block = os.pread(descriptor, min(_HASH_READ_BYTES, self.size - offset), offset)
            if not block:
                break
            self.hasher.update(block)
            offset += len(block)

    def restart(self, validator: str | None) -> None:
        """The source sent the whole file: start over from byte zero."""
        assert self._file is not None
        self._file.truncate(0)
        self.size = 0
        self.hasher = hashlib.sha256()
        self.remember_validator(validator)

    def remember_validator(self, validator: str | None) -> None:
        if validator:
            write_atomically(self.models_dir, self.validator_path, validator.encode())
        else:
            remove(self.models_dir, self.validator_path)

    def remembered_validator(self) -> str | None:
        try:
            text = read_no_follow(self.models_dir, self.validator_path)
        except FileNotFoundError:
            return None
        return text.decode(errors="replace").strip() or None

    def append(self, chunks: Sequence[bytes]) -> None:
        """Write the chunks as they came (no copy into one buffer) and hash them."""
        assert self._file is not None
        _write_all(self._file.fileno(), chunks)
        for chunk in chunks:
            self.hasher.update(chunk)  # releases the GIL for all but tiny chunks
            self.size += len(chunk)
            self._unsynced += len(chunk)
        if self._unsynced >= SYNC_EVERY_BYTES:
            os.fdatasync(self._file.fileno())
            self._unsynced = 0

    def close(self) -> None:
        if self._file is not None:
            file, self._file = self._file, None
            file.close()

    def discard(self) -> None:
        self.close()
        for path in (self.path, self.validator_path):
            remove(self.models_dir, path)
        self.size = 0
        self.hasher = hashlib.sha256()

    def land(self) -> None:
        """Make the verified file appear at its destination in one step, its bytes on disk first;
        never through a link, never over a directory."""
        self.close()
        descriptor = open_no_follow(self.path, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        make_dirs(self.models_dir, self.destination.parent)
        refuse_links(self.models_dir, self.destination)
        if self.destination.is_dir():
            raise UnsafeVolumePath(
                f"{self.destination.relative_to(self.models_dir)} in the model volume is a directory "
                "where the model's file belongs: delete the model and pull again"
            )
        os.replace(self.path, self.destination)
        remove(self.models_dir, self.validator_path)


def _write_all(descriptor: int, chunks: Sequence[bytes]) -> None:
    """Every byte of the chunks, in order, with as few system calls as writev allows."""
    views = collections.deque(memoryview(chunk) for chunk in chunks if chunk)
    while views:
        written = os.writev(descriptor, list(itertools.islice(views, _IOV_MAX)))
        while written:
            if written >= len(views[0]):
                written -= len(views.popleft())
            else:
                views[0] = views[0][written:]
                written = 0


class DiskQueue:
    """One worker thread for one file's disk work: the event loop never blocks on it, and the
    calls run in the order they were queued, even when the task that queued them is cancelled
    while one runs (a close queued after an append never overtakes it)."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llmop-disk")

    def submit(self, call: Callable[..., _Result], *args: Any) -> asyncio.Future[_Result]:
        return asyncio.get_running_loop().run_in_executor(self._executor, call, *args)

    async def run(self, call: Callable[..., _Result], *args: Any) -> _Result:
        return await self.submit(call, *args)

    def shutdown(self) -> None:
        """Let the queued calls finish in the thread, then end it; returns at once."""
        self._executor.shutdown(wait=False)


async def transfer_file(
    client: aiohttp.ClientSession,
    file: FileToFetch,
    *,
    models_dir: Path,
    room: VolumeRoom,
    headers: dict[str, str],
    on_progress: ProgressReport,
    progress_interval: float,
) -> PartialFile:
    """Bring every byte of `file` into its partial (resuming what is there) and return it
    closed and hashed, not yet verified or landed. On failure the partial stays for a resume."""
    partial = PartialFile(models_dir, file.destination, file.partial)
    throttle = ProgressThrottle(progress_interval)
    disk = DiskQueue()
    try:
        # A 416 for a partial that is not the whole file means the source changed under it;
        # the second attempt starts from zero.
        for _attempt in range(2):
            await disk.run(partial.open_for_resume, file.size)
            try:
                on_progress(partial.size, file.size)
                if file.size is not None and partial.size == file.size:
                    break  # every byte is here already; only the rename was missing
                outcome = await _receive(client, file, partial, room, disk, headers, on_progress, throttle)
            finally:
                await disk.run(partial.close)
            if outcome == "received":
                break
            await disk.run(partial.discard)
    finally:
        disk.shutdown()
    on_progress(partial.size, file.size if file.size is not None else partial.size)
    return partial


class _Batches:
    """Bytes on their way to the disk: gathered into batches of WRITE_BATCH_BYTES (or
    WRITE_BATCH_SECONDS), at most BATCHES_IN_FLIGHT queued, so a slow disk slows the source."""

    def __init__(self, partial: PartialFile, disk: DiskQueue) -> None:
        self.partial, self.disk = partial, disk
        #: The chunks as received: handed to the disk thread without being copied into one buffer.
        self.batch: list[bytes] = []
        self.batch_bytes = 0
        self.started = 0.0
        self.writing: collections.deque[asyncio.Future[None]] = collections.deque()

    async def add(self, chunk: bytes) -> bool:
        """Queue `chunk`; True when a batch went to the disk."""
        if not self.batch:
            self.started = time.monotonic()
        self.batch.append(chunk)
        self.batch_bytes += len(chunk)
        if self.batch_bytes < WRITE_BATCH_BYTES and time.monotonic() - self.started < WRITE_BATCH_SECONDS:
            return False
        if len(self.writing) >= BATCHES_IN_FLIGHT:
            await self.writing.popleft()  # the disk is behind: let the source wait
        self.writing.append(self.disk.submit(self.partial.append, self._take()))
        return True

    def _take(self) -> list[bytes]:
        batch, self.batch, self.batch_bytes = self.batch, [], 0
        return batch

    async def flush(self) -> None:
        if self.batch:
            self.writing.append(self.disk.submit(self.partial.append, self._take()))
        while self.writing:
            await self.writing.popleft()

    async def discard(self) -> None:
        self._take()
        while self.writing:
            await self.writing.popleft()
        await self.disk.run(self.partial.discard)

    def keep_the_rest(self) -> None:
        """Failed or cancelled midway: keep what arrived, for the resume."""
        if self.batch:
            self.disk.submit(self.partial.append, self._take())


async def _receive(
    client: aiohttp.ClientSession,
    file: FileToFetch,
    partial: PartialFile,
    room: VolumeRoom,
    disk: DiskQueue,
    headers: dict[str, str],
    on_progress: ProgressReport,
    throttle: ProgressThrottle,
) -> _Outcome:
    request_headers = await _request_headers(file, partial, disk, headers)
    total = file.size
    received = partial.size  # on disk, or queued for the disk thread
    batches = _Batches(partial, disk)
    answered = False
    try:
        async with client.get(file.url, headers=request_headers) as response:
            answered = True
            outcome = await _answer_outcome(response, file, partial)
            if outcome is not None:
                return outcome
            if response.status != 206:
                # The whole file, from its first byte: a fresh start, or the source ignoring
                # (or, through If-Range, refusing) the range because the file changed.
                await disk.run(partial.restart, range_validator(response.headers))
                received = 0
            total = _expected_total(file, partial, response)
            if total is not None:
                await asyncio.to_thread(room.check, total - partial.size, file.label)
            # Without a size the room is the bound: the kubelet would evict the pod past it.
            free = 0 if total is not None else await asyncio.to_thread(room.free)
            bound = total if total is not None else received + free
            on_progress(partial.size, total)
            async for chunk in response.content.iter_any():
                if received + len(chunk) > bound:
                    await batches.discard()
                    raise _past_bound(file, total, free)
                received += len(chunk)
                if await batches.add(chunk) and throttle.due():
                    on_progress(partial.size, total)
            await batches.flush()
    except (aiohttp.ClientError, TimeoutError) as error:
        raise _transfer_error(error, client, file, answered, received, total) from error
    finally:
        batches.keep_the_rest()
    if total is not None and partial.size != total:
        raise SourceError(f"GET {file.url}: the source ended after {_bytes_of(partial.size, total)}; {_KEPT}")
    return "received"


def _past_bound(file: FileToFetch, total: int | None, room: int) -> PullError:
    if total is not None:
        return SourceError(f"GET {file.url}: the source sent more than the {total} bytes expected")
    return NoRoom(
        f"{file.label} announced no size and grew past the {room} bytes ({human_size(room)}) the model "
        "volume had free: give the volume more room or delete models it no longer needs"
    )


async def _request_headers(
    file: FileToFetch, partial: PartialFile, disk: DiskQueue, headers: dict[str, str]
) -> dict[str, str]:
    """The GET's headers: a Range only when a splice of two versions cannot go unnoticed (the
    source's validator goes back as If-Range, or a sha256 verifies the whole file); otherwise
    the partial starts over."""
    # identity: the bytes on disk must be the file's bytes, and ranges count those bytes.
    request_headers = {**headers, "Accept-Encoding": "identity"}
    if not partial.size:
        return request_headers
    validator = await disk.run(partial.remembered_validator)
    if validator is None and file.sha256 is None:
        await disk.run(partial.restart, None)
        return request_headers
    request_headers["Range"] = f"bytes={partial.size}-"
    partial.sent_validator = validator
    if validator is not None:
        request_headers["If-Range"] = validator
    return request_headers


async def _answer_outcome(
    response: aiohttp.ClientResponse, file: FileToFetch, partial: PartialFile
) -> _Outcome | None:
    """What the source's status alone decides (the file is whole already, or it changed); None
    when its body is to be received. A refusal raises, with the source's words."""
    status = response.status
    if status == 416 and partial.size:
        _, source_size = parse_content_range(response.headers.get("content-range"))
        known_size = source_size if source_size is not None else file.size
        return "received" if known_size == partial.size else "restart"
    if status >= 400:
        body = await _read_excerpt(response)
        raise SourceError(describe_http_failure("GET", file.url, status, response.reason or "", body))
    if status == 206:
        start, _ = parse_content_range(response.headers.get("content-range"))
        if start != partial.size:
            raise SourceError(
                f"GET {file.url}: asked for the bytes from {partial.size} on, the source "
                f"answered {response.headers.get('content-range')!r}"
            )
        if _validator_changed(partial.sent_validator, range_validator(response.headers)):
            return "restart"  # the source ignored If-Range: these bytes belong to another version
    return None


def _validator_changed(sent: str | None, answered: str | None) -> bool:
    return sent is not None and answered is not None and sent != answered


def _transfer_error(
    error: BaseException,
    client: aiohttp.ClientSession,
    file: FileToFetch,
    answered: bool,
    received: int,
    total: int | None,
) -> SourceError:
    if isinstance(error, aiohttp.ConnectionTimeoutError):
        return SourceError(f"GET {file.url}: could not connect within {client.timeout.sock_connect:g}s")
    if isinstance(error, TimeoutError):
        return SourceError(
            f"GET {file.url}: the source sent nothing for {client.timeout.sock_read:g}s after "
            f"{_bytes_of(received, total)}; {_KEPT}"
        )
    assert isinstance(error, aiohttp.ClientError)
    reason = transport_reason(error)
    if not answered:
        return SourceError(f"GET {file.url}: {reason}")
    return SourceError(f"GET {file.url}: {reason} after {_bytes_of(received, total)}; {_KEPT}")


_KEPT = "the partial file is kept and the next pull resumes from it"


def _bytes_of(completed: int, total: int | None) -> str:
    return f"{completed} of {total} bytes" if total is not None else f"{completed} bytes"


def _expected_total(file: FileToFetch, partial: PartialFile, response: aiohttp.ClientResponse) -> int | None:
    if file.size is not None:
        return file.size
    if response.status == 206:
        _, total = parse_content_range(response.headers.get("content-range"))
        if total is not None:
            return total
    length = response.headers.get("content-length", "")
    return partial.size + int(length) if length.isdigit() else None


async def _read_excerpt(response: aiohttp.ClientResponse) -> bytes:
    body = bytearray()
    async for chunk in response.content.iter_any():
        body += chunk
        if len(body) >= _ERROR_BODY_BYTES:
            break
    return bytes(body[:_ERROR_BODY_BYTES])


async def verify_partial(partial: PartialFile, label: str, expected_sha256: str | None) -> str:
    """The partial's sha256; a mismatch with the expected digest discards it."""
    actual = partial.hasher.hexdigest()
    if expected_sha256 is not None and actual != expected_sha256:
        await asyncio.to_thread(partial.discard)
        raise DigestMismatch(digest_mismatch_message(label, expected_sha256, actual))
    return actual


async def land_partial(partial: PartialFile) -> None:
    await asyncio.to_thread(partial.land)

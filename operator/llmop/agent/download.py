"""One file: a resumable transfer into its partial, its sha256 verified, then an atomic rename.

A transfer resumes (a Range request) only when what is already there is known to be a prefix of
what comes: the source gave a validator (a strong ETag or Last-Modified) that goes back as
If-Range, or the file has a sha256 that will reject a splice of two versions. Otherwise the
partial starts over from zero.

The sha256 is computed while the bytes arrive (after re-reading what a partial already holds),
so a verified file costs no second pass over tens of gigabytes. Each file's transfer runs in a
thread of its own, in blocking calls that release the GIL (receive, hash, write): the bytes of
one read are hashed and written while they are still in the CPU's cache, and files of a repo
use both cores. That costs about two thirds of the CPU of receiving them in the event loop and
handing batches to a disk thread (docs/benchmarks.md, section 6). Every read is written at
once (unbuffered), so a killed process loses nothing it received; a cancelled transfer shuts its
connection down and ends with its partial closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Literal

import urllib3

from llmop.agent.errors import (
    DigestMismatch,
    NoRoom,
    PullError,
    SourceError,
    UnsafeVolumePath,
    describe_http_failure,
    digest_mismatch_message,
    wire_reason,
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

#: Bytes one read takes from the connection at most: one call per MiB at most, and small enough
#: to be hashed and written while still in the CPU's cache (a core's L2 is 1 to 2 MiB). 256 KiB
#: cost 15% more CPU on a 2 GiB repo (more calls); 4 MiB, 20% more (out of cache).
READ_BYTES = 1 << 20
#: The transfer syncs the partial after every this many bytes: the disk writes while the network
#: receives, so the sync before the rename finds little left and the file is on disk when its
#: last byte arrives; smaller steps also keep the page cache from holding a burst of dirty pages.
SYNC_EVERY_BYTES = 16 << 20
#: How long a cancelled transfer is waited for: its read returns at once once shut down.
CANCEL_WAIT_SECONDS = 5.0
_HASH_READ_BYTES = 8 << 20
_ERROR_BODY_BYTES = 4096
_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(?:(?P<start>\d+)-(?P<end>\d+)|\*)/(?P<total>\d+|\*)\s*$")

#: Called with (bytes completed, total bytes if known).
ProgressReport = Callable[[int, int | None], None]
_Outcome = Literal["received", "restart"]


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

    Its methods block; they run in the file's transfer thread (verify and land: `to_thread`).
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

    def append(self, chunk: bytes) -> None:
        """Write the chunk and hash it (both release the GIL for all but tiny chunks)."""
        assert self._file is not None
        _write_all(self._file.fileno(), chunk)
        self.hasher.update(chunk)
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


def _write_all(descriptor: int, chunk: bytes) -> None:
    """Every byte of the chunk (a write may take fewer than it was given)."""
    view = memoryview(chunk)
    while view:
        view = view[os.write(descriptor, view) :]


class FileClient:
    """Blocking HTTP for the bytes of model files, used from their transfer threads: urllib3's
    pool (connections kept per host, redirects followed, credentials dropped on a redirect to
    another host). No retries of its own: a failed transfer fails the pull, which resumes."""

    def __init__(
        self, *, connect_timeout: float, read_timeout: float, user_agent: str, connections: int
    ) -> None:
        self.connect_timeout, self.read_timeout = connect_timeout, read_timeout
        self._pool = urllib3.PoolManager(
            maxsize=connections,
            timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
            retries=urllib3.Retry(total=None, connect=0, read=0, status=0, other=0, redirect=10),
            headers={"User-Agent": user_agent},
        )

    def get(self, url: str, headers: Mapping[str, str]) -> urllib3.BaseHTTPResponse:
        """The answer's status and headers; its body is read as it comes (never decoded: the bytes
        on disk are the file's bytes)."""
        return self._pool.request(
            "GET", url, headers=dict(headers), preload_content=False, decode_content=False
        )

    def close(self) -> None:
        self._pool.clear()


class _Cancel:
    """Ends a transfer from the event loop: the thread stops at its next read, and a read that
    waits on the network returns at once (its connection shut down)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._set = False
        self._response: urllib3.BaseHTTPResponse | None = None

    def __call__(self) -> None:
        with self._lock:
            self._set = True
            if self._response is not None:
                self._response.shutdown()

    @property
    def is_set(self) -> bool:
        return self._set

    @contextlib.contextmanager
    def watching(self, response: urllib3.BaseHTTPResponse) -> Iterator[urllib3.BaseHTTPResponse]:
        """The response, shut down by a cancel; a cancel that came while the source had not
        answered ends the transfer here, before the partial is touched."""
        with self._lock:
            if self._set:
                response.close()
                raise _Cancelled
            self._response = response
        try:
            yield response
        finally:
            with self._lock:
                self._response = None
            if response.tell() == _content_length(response):
                response.release_conn()  # read to its end: the connection serves the next file
            else:
                response.close()


class _Cancelled(Exception):
    """The transfer was cancelled: the awaiting task raises CancelledError itself."""


def _content_length(response: urllib3.BaseHTTPResponse) -> int | None:
    length = response.headers.get("content-length", "")
    return int(length) if length.isdigit() else None


async def transfer_file(
    client: FileClient,
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
    loop = asyncio.get_running_loop()

    def report(completed: int, total: int | None) -> None:
        loop.call_soon_threadsafe(on_progress, completed, total)

    transfer = _Transfer(client, file, PartialFile(models_dir, file.destination, file.partial), room, headers)
    thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llmop-transfer")
    done = loop.run_in_executor(thread, transfer.run, report, ProgressThrottle(progress_interval))
    done.add_done_callback(lambda finished: finished.cancelled() or finished.exception())  # retrieved
    try:
        return await asyncio.shield(done)
    except asyncio.CancelledError:
        transfer.cancel()
        # A read ends at once: the partial is closed, with every byte received, before the pull
        # ends. A source that has not answered holds the thread until it does (or times out);
        # the thread then stops before touching the partial, so it is not waited for longer.
        await _stopped(done, CANCEL_WAIT_SECONDS)
        raise
    finally:
        thread.shutdown(wait=False)


async def _stopped(done: asyncio.Future[PartialFile], seconds: float) -> None:
    """Wait up to `seconds` for a cancelled transfer's thread to end. A second cancel (a pull
    stopping its other files as it is itself cancelled) does not cut the wait short: the thread
    could still write a read that was under way into a partial the next pull resumes."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not done.done() and (left := deadline - loop.time()) > 0:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait([done], timeout=left)


class _Transfer:
    """One file's transfer, run in its own thread."""

    def __init__(
        self,
        client: FileClient,
        file: FileToFetch,
        partial: PartialFile,
        room: VolumeRoom,
        headers: dict[str, str],
    ) -> None:
        self.client, self.file, self.partial, self.room, self.headers = client, file, partial, room, headers
        self.cancel = _Cancel()

    def run(self, report: ProgressReport, throttle: ProgressThrottle) -> PartialFile:
        file, partial = self.file, self.partial
        # A 416 for a partial that is not the whole file means the source changed under it;
        # the second attempt starts from zero.
        for _attempt in range(2):
            partial.open_for_resume(file.size)
            try:
                report(partial.size, file.size)
                if file.size is not None and partial.size == file.size:
                    break  # every byte is here already; only the rename was missing
                outcome = self.receive(report, throttle)
            finally:
                partial.close()
            if outcome == "received":
                break
            partial.discard()
        report(partial.size, file.size if file.size is not None else partial.size)
        return partial

    def receive(self, report: ProgressReport, throttle: ProgressThrottle) -> _Outcome:
        file, partial = self.file, self.partial
        total = file.size
        answered = False
        try:
            response = self.client.get(file.url, _request_headers(file, partial, self.headers))
            answered = True
            with self.cancel.watching(response):
                if (outcome := _answer_outcome(response, file, partial)) is not None:
                    return outcome
                if response.status != 206:
                    # The whole file, from its first byte: a fresh start, or the source ignoring
                    # (or, through If-Range, refusing) the range because the file changed.
                    partial.restart(range_validator(response.headers))
                total = _expected_total(file, partial, response)
                self.receive_body(response, total, report, throttle)
        except urllib3.exceptions.HTTPError as error:
            if self.cancel.is_set:
                raise _Cancelled from error
            raise _transfer_error(error, self.client, file, answered, partial.size, total) from error
        if self.cancel.is_set:
            raise _Cancelled
        if total is not None and partial.size != total:
            raise SourceError(
                f"GET {file.url}: the source ended after {_bytes_of(partial.size, total)}; {_KEPT}"
            )
        return "received"

    def receive_body(
        self,
        response: urllib3.BaseHTTPResponse,
        total: int | None,
        report: ProgressReport,
        throttle: ProgressThrottle,
    ) -> None:
        """The body into the partial, each read hashed and written as it comes."""
        file, partial = self.file, self.partial
        if total is not None:
            self.room.check(total - partial.size, file.label)
        # Without a size the room is the bound: the kubelet would evict the pod past it.
        free = 0 if total is not None else self.room.free()
        bound = total if total is not None else partial.size + free
        report(partial.size, total)
        while not self.cancel.is_set and (chunk := response.read1(READ_BYTES)):
            if self.cancel.is_set:
                break  # bytes that came after the cancel stay out: the partial is what was there
            if partial.size + len(chunk) > bound:
                partial.discard()
                raise _past_bound(file, total, free)
            partial.append(chunk)
            if throttle.due():
                report(partial.size, total)


def _past_bound(file: FileToFetch, total: int | None, room: int) -> PullError:
    if total is not None:
        return SourceError(f"GET {file.url}: the source sent more than the {total} bytes expected")
    return NoRoom(
        f"{file.label} announced no size and grew past the {room} bytes ({human_size(room)}) the model "
        "volume had free: give the volume more room or delete models it no longer needs"
    )


def _request_headers(file: FileToFetch, partial: PartialFile, headers: dict[str, str]) -> dict[str, str]:
    """The GET's headers: a Range only when a splice of two versions cannot go unnoticed (the
    source's validator goes back as If-Range, or a sha256 verifies the whole file); otherwise
    the partial starts over."""
    # identity: the bytes on disk must be the file's bytes, and ranges count those bytes.
    request_headers = {**headers, "Accept-Encoding": "identity"}
    if not partial.size:
        return request_headers
    validator = partial.remembered_validator()
    if validator is None and file.sha256 is None:
        partial.restart(None)
        return request_headers
    request_headers["Range"] = f"bytes={partial.size}-"
    partial.sent_validator = validator
    if validator is not None:
        request_headers["If-Range"] = validator
    return request_headers


def _answer_outcome(
    response: urllib3.BaseHTTPResponse, file: FileToFetch, partial: PartialFile
) -> _Outcome | None:
    """What the source's status alone decides (the file is whole already, or it changed); None
    when its body is to be received. A refusal raises, with the source's words."""
    status = response.status
    if status == 416 and partial.size:
        _, source_size = parse_content_range(response.headers.get("content-range"))
        known_size = source_size if source_size is not None else file.size
        return "received" if known_size == partial.size else "restart"
    if status >= 400:
        body = response.read(_ERROR_BODY_BYTES)
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
    error: urllib3.exceptions.HTTPError,
    client: FileClient,
    file: FileToFetch,
    answered: bool,
    received: int,
    total: int | None,
) -> SourceError:
    cause = error.reason if isinstance(error, urllib3.exceptions.MaxRetryError) else error
    # A refused connection is a NewConnectionError, which urllib3 derives from ConnectTimeoutError.
    connect_timeout = urllib3.exceptions.ConnectTimeoutError
    if isinstance(cause, connect_timeout) and not isinstance(cause, urllib3.exceptions.NewConnectionError):
        return SourceError(f"GET {file.url}: could not connect within {client.connect_timeout:g}s")
    if isinstance(cause, urllib3.exceptions.ReadTimeoutError):
        return SourceError(
            f"GET {file.url}: the source sent nothing for {client.read_timeout:g}s after "
            f"{_bytes_of(received, total)}; {_KEPT}"
        )
    reason = wire_reason(cause or error)
    if not answered:
        return SourceError(f"GET {file.url}: {reason}")
    return SourceError(f"GET {file.url}: {reason} after {_bytes_of(received, total)}; {_KEPT}")


_KEPT = "the partial file is kept and the next pull resumes from it"


def _bytes_of(completed: int, total: int | None) -> str:
    return f"{completed} of {total} bytes" if total is not None else f"{completed} bytes"


def _expected_total(
    file: FileToFetch, partial: PartialFile, response: urllib3.BaseHTTPResponse
) -> int | None:
    if file.size is not None:
        return file.size
    if response.status == 206:
        _, total = parse_content_range(response.headers.get("content-range"))
        if total is not None:
            return total
    length = response.headers.get("content-length", "")
    return partial.size + int(length) if length.isdigit() else None


async def verify_partial(partial: PartialFile, label: str, expected_sha256: str | None) -> str:
    """The partial's sha256; a mismatch with the expected digest discards it."""
    actual = partial.hasher.hexdigest()
    if expected_sha256 is not None and actual != expected_sha256:
        await asyncio.to_thread(partial.discard)
        raise DigestMismatch(digest_mismatch_message(label, expected_sha256, actual))
    return actual


async def land_partial(partial: PartialFile) -> None:
    await asyncio.to_thread(partial.land)

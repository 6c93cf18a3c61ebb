"""Which files a model source means: URLs, where each lands, and its size and sha256 when the
source publishes them (Hugging Face lists both for files kept in LFS)."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from urllib.parse import quote

import aiohttp
from pydantic import BaseModel, ConfigDict, ValidationError

from llmop.agent.errors import (
    BadPullRequest,
    DigestMismatch,
    SourceError,
    describe_http_failure,
    digest_mismatch_message,
    transport_reason,
)
from llmop.agent.settings import AgentSettings
from llmop.agent.store import ModelStore, UnsafeLocalPath, check_relative_path
from llmop.sources import ModelSource

_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
#: The longest file name a Linux file system takes, in bytes.
NAME_MAX = 255


@dataclass(frozen=True)
class FileToFetch:
    url: str
    #: What progress lines call the file: its path in the repo, or the URL's file name.
    label: str
    destination: Path
    #: Where its bytes gather until verified (in the agent's own directory).
    partial: Path
    size: int | None = None
    #: The digest the bytes must have: the request's, else the one the source lists.
    sha256: str | None = None
    #: Hugging Face requests carry the token; other servers never see it.
    send_token: bool = False


@dataclass(frozen=True)
class PullPlan:
    source: ModelSource
    files: tuple[FileToFetch, ...]
    is_repo: bool
    #: The commit a Hugging Face revision resolved to; every file comes from it.
    revision: str | None = None

    def known_size(self) -> int:
        return sum(file.size or 0 for file in self.files)


class ListingNotFound(SourceError):
    """The endpoint has no such repo or revision (404), e.g. a pinned commit it dropped."""


class _HfLfs(BaseModel):
    model_config = ConfigDict(extra="ignore")
    sha256: str | None = None
    size: int | None = None


class _HfSibling(BaseModel):
    model_config = ConfigDict(extra="ignore")
    rfilename: str
    size: int | None = None
    lfs: _HfLfs | None = None


class HfRepoListing(BaseModel):
    """`GET /api/models/{repo}/revision/{rev}?blobs=true`, the parts the agent uses."""

    model_config = ConfigDict(extra="ignore")
    sha: str | None = None
    siblings: list[_HfSibling] = []


def normalize_sha256(text: str | None) -> str | None:
    """`sha256:AB..` or `ab..` -> `ab..`; None stays None; anything else is a BadPullRequest."""
    if text is None or not text.strip():
        return None
    digest = text.strip().lower().removeprefix("sha256:")
    if not _SHA256_HEX.match(digest):
        raise BadPullRequest(f"sha256 {text!r} is not 64 hexadecimal digits")
    return digest


def hf_listing_url(endpoint: str, repo_id: str, revision: str) -> str:
    return f"{endpoint}/api/models/{repo_id}/revision/{quote(revision, safe='')}?blobs=true"


def hf_file_url(endpoint: str, repo_id: str, revision: str, path_in_repo: str) -> str:
    return f"{endpoint}/{repo_id}/resolve/{quote(revision, safe='')}/{quote(path_in_repo)}"


def repo_paths(listing: HfRepoListing, source: ModelSource) -> list[PurePosixPath]:
    """The repo's file paths; one that would leave the repo's directory, or that collides with
    another (listed twice, or both a file and a directory), fails the plan."""
    files: set[str] = set()
    directories: set[str] = set()
    paths = []
    for sibling in listing.siblings:
        name = sibling.rfilename
        try:
            relative = check_relative_path(name)
        except UnsafeLocalPath as error:
            raise SourceError(f"{source.name}: the repo lists an unsafe file name: {error}") from error
        if any(len(part.encode()) > NAME_MAX for part in relative.parts):
            raise SourceError(
                f"{source.name}: the repo lists a name longer than {NAME_MAX} bytes: {name[:80]!r}..."
            )
        parents = {parent.as_posix() for parent in relative.parents if parent.as_posix() != "."}
        if name in files:
            raise SourceError(f"{source.name}: the repo lists {name!r} twice")
        if name in directories or parents & files:
            raise SourceError(f"{source.name}: the repo lists {name!r} both as a file and inside one")
        files.add(name)
        directories |= parents
        paths.append(relative)
    return paths


def hf_repo_files(
    listing: HfRepoListing, source: ModelSource, endpoint: str, commit: str, store: ModelStore
) -> tuple[FileToFetch, ...]:
    """Every file of the repo at `commit`, landing under the repo's local path."""
    base = store.path_of(source.local_path)
    return tuple(
        _hf_file(sibling, source, endpoint, commit, base / relative, store)
        for sibling, relative in zip(listing.siblings, repo_paths(listing, source), strict=True)
    )


def hf_single_file(
    listing: HfRepoListing,
    source: ModelSource,
    endpoint: str,
    commit: str,
    store: ModelStore,
    expected_sha256: str | None,
) -> FileToFetch:
    """The one file a `hf://org/repo/path` source names; the request's sha256 must agree with
    the digest the repo lists, so a wrong one fails before gigabytes move."""
    assert source.path_in_repo is not None
    sibling = next((s for s in listing.siblings if s.rfilename == source.path_in_repo), None)
    if sibling is None:
        raise SourceError(
            f"{source.repo_id}@{source.revision} has no file {source.path_in_repo!r} "
            f"({len(listing.siblings)} files listed by {endpoint})"
        )
    file = _hf_file(sibling, source, endpoint, commit, store.path_of(source.local_path), store)
    if expected_sha256 is None:
        return file
    if file.sha256 is not None and file.sha256 != expected_sha256:
        listed = digest_mismatch_message(file.label, expected_sha256, file.sha256)
        raise DigestMismatch(f"{listed} (the digest {endpoint} lists for it)")
    return replace(file, sha256=expected_sha256)


def _hf_file(
    sibling: _HfSibling, source: ModelSource, endpoint: str, commit: str, destination: Path, store: ModelStore
) -> FileToFetch:
    assert source.repo_id is not None
    lfs = sibling.lfs
    sha256 = lfs.sha256.lower() if lfs and lfs.sha256 and _SHA256_HEX.match(lfs.sha256.lower()) else None
    size = sibling.size if sibling.size is not None else (lfs.size if lfs else None)
    return FileToFetch(
        url=hf_file_url(endpoint, source.repo_id, commit, sibling.rfilename),
        label=sibling.rfilename,
        destination=destination,
        partial=store.partial_of(source.local_path, sibling.rfilename),
        size=size if size is None or size >= 0 else None,
        sha256=sha256,
        send_token=True,
    )


def url_file(source: ModelSource, store: ModelStore, expected_sha256: str | None) -> FileToFetch:
    assert source.url is not None
    return FileToFetch(
        url=source.url,
        label=PurePosixPath(source.local_path).name,
        destination=store.path_of(source.local_path),
        partial=store.partial_of(source.local_path, ""),
        sha256=expected_sha256,
    )


async def fetch_hf_listing(
    client: aiohttp.ClientSession,
    source: ModelSource,
    revision: str,
    settings: AgentSettings,
    headers: dict[str, str],
) -> HfRepoListing:
    assert source.repo_id is not None
    url = hf_listing_url(settings.hf_endpoint, source.repo_id, revision)
    shown = url.removesuffix("?blobs=true")
    try:
        async with client.get(url, headers=headers) as response:
            status, reason = response.status, response.reason or ""
            body = await _read_capped(response, shown)
    except (aiohttp.ClientError, TimeoutError) as error:
        raise SourceError(f"GET {shown}: {transport_reason(error)}") from error
    if status == 404:
        raise ListingNotFound(describe_http_failure("GET", shown, status, reason, body))
    if status >= 400:
        raise SourceError(describe_http_failure("GET", shown, status, reason, body))
    try:
        return HfRepoListing.model_validate_json(body)
    except ValidationError as error:
        raise SourceError(
            f"GET {shown}: the answer is not a Hugging Face model listing: {error.errors()[0]['msg']}"
        ) from error


#: A repo listing larger than this is refused: the largest Hub repos list well under it.
LISTING_MAX_BYTES = 32 << 20


async def _read_capped(response: aiohttp.ClientResponse, shown: str) -> bytes:
    body = bytearray()
    async for chunk in response.content.iter_any():
        body += chunk
        if len(body) > LISTING_MAX_BYTES:
            raise SourceError(f"GET {shown}: the listing is larger than {LISTING_MAX_BYTES} bytes")
    return bytes(body)


def listing_commit(listing: HfRepoListing, source: ModelSource, endpoint: str, asked: str | None) -> str:
    """The commit the listing describes: every file is fetched from it, never from a branch that
    may move while the files arrive."""
    commit = (listing.sha or "").lower()
    if not _COMMIT.match(commit):
        raise SourceError(
            f"{endpoint} lists {source.repo_id}@{source.revision} without its commit (sha); llmop fetches a "
            "repo's files from one commit and cannot pin this one"
        )
    if asked is not None and commit != asked:
        raise SourceError(f"{endpoint} answered commit {commit} for {source.repo_id}@{asked}")
    return commit


async def plan_pull(
    client: aiohttp.ClientSession,
    source: ModelSource,
    expected_sha256: str | None,
    settings: AgentSettings,
    hf_headers: dict[str, str],
    store: ModelStore,
    commit: str | None = None,
) -> PullPlan:
    """The files to fetch; a Hugging Face source at `commit` when given (a pull being resumed),
    else at the commit its revision points to now."""
    if source.kind == "url":
        return PullPlan(source, (url_file(source, store, expected_sha256),), is_repo=False)
    listing = await fetch_hf_listing(client, source, commit or source.revision, settings, hf_headers)
    endpoint = settings.hf_endpoint
    pinned = listing_commit(listing, source, endpoint, commit)
    if source.is_single_file:
        file = hf_single_file(listing, source, endpoint, pinned, store, expected_sha256)
        return PullPlan(source, (file,), is_repo=False, revision=pinned)
    files = hf_repo_files(listing, source, endpoint, pinned, store)
    if not files:
        raise SourceError(f"{source.repo_id}@{source.revision} lists no files at {endpoint}")
    return PullPlan(source, files, is_repo=True, revision=pinned)

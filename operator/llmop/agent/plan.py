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
from llmop.agent.store import UnsafeLocalPath, check_relative_path
from llmop.sources import ModelSource

_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class FileToFetch:
    url: str
    #: What progress lines call the file: its path in the repo, or the URL's file name.
    label: str
    destination: Path
    size: int | None = None
    #: The digest the bytes must have: the request's, else the one the source lists.
    sha256: str | None = None
    #: The digest the source itself lists (Hugging Face LFS files); a file already in place
    #: with the listed size is trusted to have it, as it was verified when it landed.
    listed_sha256: str | None = None
    #: Hugging Face requests carry the token; other servers never see it.
    send_token: bool = False


@dataclass(frozen=True)
class PullPlan:
    source: ModelSource
    files: tuple[FileToFetch, ...]
    is_repo: bool
    revision: str | None = None  # the commit a Hugging Face revision resolved to


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


def hf_repo_files(
    listing: HfRepoListing, source: ModelSource, endpoint: str, models_dir: Path
) -> tuple[FileToFetch, ...]:
    """Every file of the repo, landing under the repo's local path."""
    assert source.repo_id is not None
    base = models_dir / source.local_path
    files = []
    for sibling in listing.siblings:
        try:
            relative = check_relative_path(sibling.rfilename)
        except UnsafeLocalPath as error:
            raise SourceError(f"{source.name}: the repo lists an unsafe file name: {error}") from error
        files.append(_hf_file(sibling, source, endpoint, base / relative))
    return tuple(files)


def hf_single_file(
    listing: HfRepoListing, source: ModelSource, endpoint: str, models_dir: Path, expected_sha256: str | None
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
    file = _hf_file(sibling, source, endpoint, models_dir / source.local_path)
    if expected_sha256 is None:
        return file
    if file.sha256 is not None and file.sha256 != expected_sha256:
        listed = digest_mismatch_message(file.label, expected_sha256, file.sha256)
        raise DigestMismatch(f"{listed} (the digest {endpoint} lists for it)")
    return replace(file, sha256=expected_sha256)


def _hf_file(sibling: _HfSibling, source: ModelSource, endpoint: str, destination: Path) -> FileToFetch:
    assert source.repo_id is not None
    lfs = sibling.lfs
    sha256 = lfs.sha256.lower() if lfs and lfs.sha256 and _SHA256_HEX.match(lfs.sha256.lower()) else None
    size = sibling.size if sibling.size is not None else (lfs.size if lfs else None)
    return FileToFetch(
        url=hf_file_url(endpoint, source.repo_id, source.revision, sibling.rfilename),
        label=sibling.rfilename,
        destination=destination,
        size=size,
        sha256=sha256,
        listed_sha256=sha256,
        send_token=True,
    )


def url_file(source: ModelSource, models_dir: Path, expected_sha256: str | None) -> FileToFetch:
    assert source.url is not None
    return FileToFetch(
        url=source.url,
        label=PurePosixPath(source.local_path).name,
        destination=models_dir / source.local_path,
        sha256=expected_sha256,
    )


async def fetch_hf_listing(
    client: aiohttp.ClientSession, source: ModelSource, settings: AgentSettings, headers: dict[str, str]
) -> HfRepoListing:
    assert source.repo_id is not None
    url = hf_listing_url(settings.hf_endpoint, source.repo_id, source.revision)
    shown = url.removesuffix("?blobs=true")
    try:
        async with client.get(url, headers=headers) as response:
            status, reason, body = response.status, response.reason or "", await response.read()
    except (aiohttp.ClientError, TimeoutError) as error:
        raise SourceError(f"GET {shown}: {transport_reason(error)}") from error
    if status >= 400:
        raise SourceError(describe_http_failure("GET", shown, status, reason, body))
    try:
        return HfRepoListing.model_validate_json(body)
    except ValidationError as error:
        raise SourceError(
            f"GET {shown}: the answer is not a Hugging Face model listing: {error.errors()[0]['msg']}"
        ) from error


async def plan_pull(
    client: aiohttp.ClientSession,
    source: ModelSource,
    expected_sha256: str | None,
    settings: AgentSettings,
    hf_headers: dict[str, str],
) -> PullPlan:
    if source.kind == "url":
        return PullPlan(source, (url_file(source, settings.models_dir, expected_sha256),), is_repo=False)
    listing = await fetch_hf_listing(client, source, settings, hf_headers)
    if source.is_single_file:
        file = hf_single_file(listing, source, settings.hf_endpoint, settings.models_dir, expected_sha256)
        return PullPlan(source, (file,), is_repo=False, revision=listing.sha)
    files = hf_repo_files(listing, source, settings.hf_endpoint, settings.models_dir)
    if not files:
        raise SourceError(f"{source.repo_id}@{source.revision} lists no files at {settings.hf_endpoint}")
    return PullPlan(source, files, is_repo=True, revision=listing.sha)

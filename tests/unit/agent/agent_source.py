"""A real model source for the agent's tests, and the agent as the tests drive it.

The source is an aiohttp server that serves bytes with Range and If-Range, a Hugging Face
compatible API (`/api/models/...`, `/{repo}/resolve/...` redirecting LFS files to a CDN path)
whose listings name a commit that stays readable after the branch moves, and misbehaves on request: 404s, connections dropped in the middle of a body, bodies held
halfway until the test lets them go.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web

CHUNK = 64 * 1024


def random_bytes(size: int) -> bytes:
    return os.urandom(size)


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class SourceFile:
    body: bytes
    #: The ETag sent; by default a strong one made of the bytes' sha256, as the Hub sends.
    etag: str | None = None
    #: False: neither ETag nor Last-Modified, as some plain HTTP servers answer.
    validators: bool = True
    #: Close the connection once this many bytes of the file were sent, for the next `drops` GETs.
    drop_at: int | None = None
    drops: int = 1
    #: Stop after this many bytes until `release` is set.
    hold_at: int | None = None
    release: asyncio.Event = field(default_factory=asyncio.Event)
    #: Pause between chunks, so a transfer takes a while.
    delay: float = 0.0
    honours_range: bool = True
    #: False: a Range is answered with 206 whatever If-Range says (a broken cache or server).
    honours_if_range: bool = True
    #: Hugging Face keeps large files in LFS, lists their sha256 and redirects them to a CDN.
    lfs: bool = False
    #: The sha256 Hugging Face lists, when it should differ from the bytes' own.
    listed_sha256: str | None = None
    #: False: no Content-Length (a chunked answer), as a streaming server sends.
    announces_size: bool = True


@dataclass
class SeenRequest:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class SourceServer:
    url: str = ""
    files: dict[str, SourceFile] = field(default_factory=dict)  # URL path -> file
    #: repo id -> revision -> path in repo -> file
    repos: dict[str, dict[str, dict[str, SourceFile]]] = field(default_factory=dict)
    #: When set, the Hugging Face routes answer 401 without `Authorization: Bearer <token>`.
    token: str | None = None
    #: commit -> path in repo -> file: every commit a listing named, still served by its id.
    commits: dict[str, dict[str, SourceFile]] = field(default_factory=dict)
    seen: list[SeenRequest] = field(default_factory=list)
    #: Bodies being sent now, and the most at once. A body stops counting before its last bytes
    #: go out, so a client cannot have finished it (and started another) while it still counts.
    sending: int = 0
    most_sending: int = 0

    def all_files(self) -> list[SourceFile]:
        in_repos = [
            file
            for revisions in self.repos.values()
            for files in revisions.values()
            for file in files.values()
        ]
        return [*self.files.values(), *in_repos]

    def file_url(self, name: str) -> str:
        return f"{self.url}/files/{name}"

    def gets_of(self, path_part: str) -> list[SeenRequest]:
        return [seen for seen in self.seen if seen.method == "GET" and path_part in seen.path]

    def ranges_asked(self, path_part: str) -> list[str | None]:
        return [seen.headers.get("Range") for seen in self.gets_of(path_part)]

    def commit_of(self, repo_id: str, revision: str) -> str:
        """The commit a listing of `repo_id@revision` names now."""
        return commit_of(repo_id, self.repos[repo_id][revision])


def commit_of(repo_id: str, files: dict[str, SourceFile]) -> str:
    digest = hashlib.sha1(repo_id.encode())
    for path, file in sorted(files.items()):
        digest.update(f"\0{path}\0{sha256_of(file.body)}".encode())
    return digest.hexdigest()


def etag_of(file: SourceFile) -> str | None:
    if not file.validators:
        return None
    return file.etag or f'"{sha256_of(file.body)}"'


async def _send_file(request: web.Request, file: SourceFile, source: SourceServer) -> web.StreamResponse:
    size = len(file.body)
    start, status = 0, 200
    asked = request.headers.get("Range")
    if_range = request.headers.get("If-Range")
    etag = etag_of(file)
    if_range_holds = if_range is None or if_range == etag or not file.honours_if_range
    if asked and file.honours_range and if_range_holds:
        match = re.fullmatch(r"bytes=(\d+)-", asked)
        assert match, asked
        start = int(match[1])
        if start >= size:
            return web.Response(status=416, headers={"Content-Range": f"bytes */{size}"})
        status = 206
    headers = {"Content-Type": "application/octet-stream"}
    if file.announces_size:
        headers["Content-Length"] = str(size - start)
    if file.honours_range:
        headers["Accept-Ranges"] = "bytes"
    if etag:
        headers["ETag"] = etag
    if status == 206:
        headers["Content-Range"] = f"bytes {start}-{size - 1}/{size}"
    response = web.StreamResponse(status=status, headers=headers)
    await response.prepare(request)
    sending = _Sending(source)
    try:
        await _write_body(request, response, file, start, sending)
    except ConnectionError:
        pass  # the agent hung up (a cancelled or stopped pull)
    finally:
        sending.done()
    return response


class _Sending:
    """One body in SourceServer.sending, from its first byte until its last bytes go out."""

    def __init__(self, source: SourceServer) -> None:
        self._source: SourceServer | None = source
        source.sending += 1
        source.most_sending = max(source.most_sending, source.sending)

    def done(self) -> None:
        if self._source is not None:
            self._source.sending -= 1
            self._source = None


async def _write_body(
    request: web.Request, response: web.StreamResponse, file: SourceFile, start: int, sending: _Sending
) -> None:
    size = len(file.body)
    drop_at = file.drop_at if file.drops > 0 else None
    position = start
    while position < size:
        end = min(position + CHUNK, size)
        for limit in (drop_at, file.hold_at):
            if limit is not None and position < limit < end:
                end = limit
        if end == size:
            sending.done()
        await response.write(file.body[position:end])
        position = end
        if drop_at is not None and position >= drop_at:
            file.drops -= 1
            assert request.transport is not None
            request.transport.close()  # the rest of the body never comes
            return
        if file.hold_at is not None and position == file.hold_at:
            await file.release.wait()
        if file.delay:
            await asyncio.sleep(file.delay)
    await response.write_eof()


def build_source(source: SourceServer) -> web.Application:
    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        source.seen.append(SeenRequest(request.method, request.path_qs, dict(request.headers)))
        response: web.StreamResponse = await handler(request)
        return response

    def authorized(request: web.Request) -> bool:
        return source.token is None or request.headers.get("Authorization") == f"Bearer {source.token}"

    def repo_files(request: web.Request) -> dict[str, SourceFile] | None:
        repo_id = f"{request.match_info['org']}/{request.match_info['repo']}"
        revision = request.match_info["rev"]
        files = source.repos.get(repo_id, {}).get(revision)
        return files if files is not None else source.commits.get(revision)

    async def plain_file(request: web.Request) -> web.StreamResponse:
        file = source.files.get(request.match_info["name"])
        if file is None:
            return web.Response(status=404, text=f"no such file: {request.match_info['name']}")
        return await _send_file(request, file, source)

    async def listing(request: web.Request) -> web.StreamResponse:
        if not authorized(request):
            return web.json_response({"error": "Invalid credentials in Authorization header"}, status=401)
        files = repo_files(request)
        if files is None:
            return web.json_response({"error": "Repository not found"}, status=404)
        siblings = []
        for path, file in files.items():
            sibling: dict[str, Any] = {"rfilename": path, "size": len(file.body)}
            if file.lfs:
                digest = file.listed_sha256 or sha256_of(file.body)
                sibling["lfs"] = {"sha256": digest, "size": len(file.body), "pointerSize": 134}
            siblings.append(sibling)
        repo_id = f"{request.match_info['org']}/{request.match_info['repo']}"
        commit = commit_of(repo_id, files)
        source.commits[commit] = dict(files)
        return web.json_response({"id": repo_id, "sha": commit, "siblings": siblings})

    async def resolve(request: web.Request) -> web.StreamResponse:
        if not authorized(request):
            return web.Response(status=401, text="Invalid credentials in Authorization header")
        files = repo_files(request) or {}
        path = request.match_info["path"]
        if path not in files:
            return web.Response(status=404, text="Entry not found")
        if files[path].lfs:
            info = request.match_info
            raise web.HTTPFound(f"/cdn/{info['org']}/{info['repo']}/{info['rev']}/{path}")
        return await _send_file(request, files[path], source)

    async def cdn(request: web.Request) -> web.StreamResponse:
        files = repo_files(request) or {}
        return await _send_file(request, files[request.match_info["path"]], source)

    app = web.Application(middlewares=[record])
    app.router.add_get("/files/{name:.+}", plain_file)
    app.router.add_get("/api/models/{org}/{repo}/revision/{rev}", listing)
    app.router.add_get("/cdn/{org}/{repo}/{rev}/{path:.+}", cdn)
    app.router.add_get("/{org}/{repo}/resolve/{rev}/{path:.+}", resolve)
    return app


async def serve(app: web.Application, runners: list[web.AppRunner]) -> str:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    runners.append(runner)
    host, port = runner.addresses[0][:2]
    return f"http://{host}:{port}"


@dataclass
class RunningAgent:
    url: str
    models_dir: Path
    http: httpx.AsyncClient
    #: Stop the agent as SIGTERM does: transfers cancelled, followers answered, server closed.
    stop: Callable[[], Awaitable[None]]

    async def pull(self, model: str, **extra: Any) -> list[dict[str, Any]]:
        """POST /api/pull with streaming; every NDJSON line, parsed."""
        async with self.http.stream("POST", f"{self.url}/api/pull", json={"model": model, **extra}) as answer:
            assert answer.status_code == 200, await answer.aread()
            assert answer.headers["content-type"].startswith("application/x-ndjson")
            return [json.loads(line) async for line in answer.aiter_lines() if line.strip()]

    async def pull_without_stream(self, model: str, **extra: Any) -> httpx.Response:
        """POST /api/pull with `stream: false`: one JSON answer when the pull ends."""
        return await self.http.post(f"{self.url}/api/pull", json={"model": model, "stream": False, **extra})

    async def startup(self) -> httpx.Response:
        return await self.http.get(f"{self.url}/startup")

    async def tags(self) -> list[dict[str, Any]]:
        answer = await self.http.get(f"{self.url}/api/tags")
        assert answer.status_code == 200
        models: list[dict[str, Any]] = answer.json()["models"]
        return models


StartAgent = Callable[..., Awaitable[RunningAgent]]


async def eventually(check: Callable[[], bool], message: str, within: float = 10.0) -> None:
    """Wait until `check()` holds (a file on disk, a count), polling briskly."""
    for _ in range(int(within / 0.01)):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"not within {within}s: {message}")

#!/usr/bin/env python3
"""A local model source: real bytes over HTTP on 127.0.0.1, for tests and `make dev`.

The machines that test llmop cannot reach huggingface.co or any other model host, so every pull
in the tests moves real data from this server instead. It serves, from `--root DIR`:

- `/files/<path>`: the files under `DIR/files/`, with GET and HEAD, HTTP Range (206 and
  `Content-Range`, 416 when unsatisfiable, `If-Range`), a strong `ETag` (the file's sha256) and
  `Content-Length`;
- a Hugging Face Hub-compatible endpoint (what `HF_ENDPOINT` points at) over the repos in
  `DIR/hf/<org>/<repo>/`, each one revision, `main`, whose commit id is a sha1 of its contents:
    GET /api/models/<org>/<repo>[/revision/<rev>][?blobs=true]
        {"id", "modelId", "sha", "siblings": [{"rfilename"}]}; with blobs=true each sibling
        also has "blobId", "size" and, for files the Hub keeps in LFS (*.gguf, *.safetensors,
        ... or >= 10 MB), "lfs": {"sha256", "size", "pointerSize"}
    GET /api/models/<org>/<repo>/tree/<rev>[/<dir>][?recursive=true]
    GET|HEAD /<org>/<repo>/resolve/<rev>/<path>
        the file, with Range, `ETag`, `X-Repo-Commit`, and for LFS files `X-Linked-Size` and
        `X-Linked-Etag`, as the Hub sends them. (The Hub redirects LFS downloads to its CDN;
        this server answers them directly, which clients following redirects cannot tell.)
  A file `<path>.declared-size` in a repo, holding a byte count, is listed as `<path>` of that
  size (an LFS file whose sha256 is a digest of the count): a model far larger than this machine
  could hold, for tests of what llmop does with a size. Its bytes do not exist: downloading it
  answers 404 `EntryNotFound`.
  A repo with a file `DIR/hf/<org>/<repo>.token` beside its folder is gated, as on the Hub: its
  listing is public (with "gated": "manual"), its files answer 401 `GatedRepo` unless the request
  carries `Authorization: Bearer <the file's content>`.
  Errors carry the Hub's `X-Error-Code` and `X-Error-Message` headers and JSON body:
  404 `{"error": "Repository not found"}` (RepoNotFound), 404 `{"error": "Entry not found"}`
  (EntryNotFound), 404 `{"error": "Invalid rev id: <rev>"}` (RevisionNotFound). (The Hub
  answers a missing repo with 401 when the request carries no token, 404 with one.)
- `GET /_stats`: per URL path, `requests`, `head_requests`, `range_requests` (answered 206) with
  `range_starts` (the first byte of each), `bytes_sent`, `completed` and `aborted` bodies, so
  tests can assert a download resumed mid-file; `DELETE /_stats` clears them.
- throttling: `--throttle-bytes-per-second N` for every response body, `?throttle=N` for one
  request, `POST /_throttle {"bytes_per_second": N}` to change the global rate while running
  (0: unthrottled), so a pull of the tiny model lasts long enough to interrupt.
- validators: `--no-validators`, or `POST /_validators {"enabled": false}` while running, answers
  without `ETag` (or `X-Linked-Etag`), as plain servers may; Range still works, and `If-Range`
  then never matches (the whole file comes back), as RFC 9110 says. A file changed between two
  requests (rewrite it under the root) is served anew: hashes follow size and mtime.
- faults: `POST /_faults {"path": "/files/tiny.gguf", "abort_after_bytes": 100000}` cuts the next
  matching download after that many body bytes (or `"status": 503` answers it with that
  status); `"times": N` for more than one request; `DELETE /_faults` clears them.

`--populate` writes the default catalogue (files already present are kept):

- `hf/ggml-org/models/tinyllamas/stories260K.gguf` and `files/tiny.gguf`: llmop's tiny
  random-weight test model, written by hack/tiny-gguf. The hub cannot be reached here, so the
  local source serves this model under the name examples/llamacpp.yaml uses; it is a local
  mirror of the name, not of the real stories260K weights.
- `hf/Qwen/Qwen3-0.6B/`: config.json, tokenizer.json, tokenizer_config.json,
  generation_config.json and a small model.safetensors (random bf16 weights in Qwen3's tensor
  layout, a few hundred KB), under the name examples/vllm.yaml uses: again a local mirror of
  the name, not Qwen's weights. The real vLLM loads and serves it (head size 32, the smallest
  its CPU attention takes); its answers are noise.

    python hack/modelsource.py --root DIR [--port P] [--populate] [--throttle-bytes-per-second N]
    python hack/modelsource.py --write-tiny-repo DIR    # the Qwen3-layout repo alone, then exit

It prints its base URL (http://127.0.0.1:PORT) as the first line of standard output.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    from aiohttp import web
except ImportError:  # run with a python that lacks aiohttp: use the project's venv
    _venv = Path(__file__).resolve().parent.parent / ".venv"
    if (_venv / "bin" / "python").exists() and Path(sys.prefix).resolve() != _venv.resolve():
        os.execv(_venv / "bin" / "python", [str(_venv / "bin" / "python"), __file__, *sys.argv[1:]])
    raise

HACK_DIR = Path(__file__).resolve().parent
CHUNK = 64 * 1024
#: Suffixes the Hub's default .gitattributes stores in LFS; larger files go to LFS anyway.
LFS_SUFFIXES = (
    ".gguf",
    ".safetensors",
    ".bin",
    ".pt",
    ".pth",
    ".ckpt",
    ".onnx",
    ".h5",
    ".msgpack",
    ".model",
    ".tflite",
    ".npz",
    ".pkl",
    ".zip",
    ".tar",
    ".gz",
    ".zst",
)
LFS_MIN_SIZE = 10 * 1024 * 1024
TINY_GGUF_REPO = ("ggml-org", "models", "tinyllamas/stories260K.gguf")
TINY_SAFETENSORS_REPO = ("Qwen", "Qwen3-0.6B")


# --- what a file is, as the Hub describes it ---------------------------------------------------


@dataclass(frozen=True)
class FileInfo:
    path: Path
    size: int
    sha256: str
    git_sha1: str  # the blob id git gives the file's bytes
    lfs: bool

    @property
    def pointer(self) -> bytes:
        return f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\nsize {self.size}\n".encode()

    @property
    def blob_id(self) -> str:
        """The Hub's blobId: git's id of what git stores, the LFS pointer for LFS files."""
        return _git_blob_sha1(self.pointer) if self.lfs else self.git_sha1

    @property
    def etag(self) -> str:
        return f'"{self.sha256 if self.lfs else self.git_sha1}"'


#: `<path>.declared-size`: a file listed with the size it holds, whose bytes do not exist.
DECLARED_SIZE = ".declared-size"


def declared_file(path: Path) -> FileInfo:
    size = int(path.read_text().strip())
    digest = hashlib.sha256(f"declared {size}".encode()).hexdigest()
    return FileInfo(path, size, digest, hashlib.sha1(digest.encode()).hexdigest(), lfs=True)


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class Catalogue:
    """Hashes of the files under root, computed once per (size, mtime)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self._cache: dict[Path, tuple[tuple[int, int], FileInfo]] = {}

    def info(self, path: Path) -> FileInfo:
        stat = path.stat()
        key = (stat.st_size, stat.st_mtime_ns)
        cached = self._cache.get(path)
        if cached and cached[0] == key:
            return cached[1]
        sha256, git = hashlib.sha256(), hashlib.sha1(b"blob %d\0" % stat.st_size)
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                sha256.update(chunk)
                git.update(chunk)
        info = FileInfo(
            path,
            stat.st_size,
            sha256.hexdigest(),
            git.hexdigest(),
            path.name.endswith(LFS_SUFFIXES) or stat.st_size >= LFS_MIN_SIZE,
        )
        self._cache[path] = (key, info)
        return info

    def safe(self, base: Path, relative: str) -> Path | None:
        """base/relative when it is a file inside base, else None."""
        if not relative or relative.startswith("/") or any(p in ("..", "") for p in relative.split("/")):
            return None
        path = (base / relative).resolve()
        return path if path.is_relative_to(base.resolve()) and path.is_file() else None

    def repo_dir(self, org: str, repo: str) -> Path | None:
        path = self.root / "hf" / org / repo
        if ".." in (org, repo) or not path.is_dir():
            return None
        return path

    def repo_files(self, repo_dir: Path) -> list[tuple[str, FileInfo]]:
        files = []
        for dirpath, dirnames, filenames in os.walk(repo_dir):
            dirnames[:] = sorted(d for d in dirnames if d != ".git")
            for name in sorted(filenames):
                path = Path(dirpath) / name
                if name.endswith(DECLARED_SIZE):
                    listed = path.relative_to(repo_dir).as_posix().removesuffix(DECLARED_SIZE)
                    files.append((listed, declared_file(path)))
                else:
                    files.append((path.relative_to(repo_dir).as_posix(), self.info(path)))
        return sorted(files)

    @staticmethod
    def commit(files: list[tuple[str, FileInfo]]) -> str:
        """The repo's one revision: a sha1 over its file list, so it changes when a file does."""
        digest = hashlib.sha1()
        for name, info in files:
            digest.update(f"{name}\0{info.blob_id}\n".encode())
        return digest.hexdigest()


# --- the server --------------------------------------------------------------------------------


@dataclass
class Fault:
    path: str
    abort_after_bytes: int | None = None
    status: int | None = None
    times: int = 1


@dataclass
class PathStats:
    requests: int = 0
    head_requests: int = 0
    range_requests: int = 0
    range_starts: list[int] = field(default_factory=list)
    bytes_sent: int = 0
    completed: int = 0
    aborted: int = 0


class ModelSource:
    def __init__(self, root: Path, throttle: int = 0, validators: bool = True) -> None:
        self.catalogue = Catalogue(root)
        self.throttle = throttle
        self.validators = validators
        self.stats: dict[str, PathStats] = defaultdict(PathStats)
        self.faults: list[Fault] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/_stats", self.h_stats)
        app.router.add_delete("/_stats", self.h_clear_stats)
        app.router.add_post("/_throttle", self.h_throttle)
        app.router.add_post("/_validators", self.h_validators)
        app.router.add_post("/_faults", self.h_add_fault)
        app.router.add_delete("/_faults", self.h_clear_faults)
        app.router.add_get("/healthz", self.h_health)
        app.router.add_get("/files/{path:.+}", self.h_file)
        app.router.add_get("/api/models/{org}/{repo}", self.h_model_info)
        app.router.add_get("/api/models/{org}/{repo}/revision/{rev}", self.h_model_info)
        app.router.add_get("/api/models/{org}/{repo}/tree/{rev}", self.h_tree)
        app.router.add_get("/api/models/{org}/{repo}/tree/{rev}/{path:.+}", self.h_tree)
        app.router.add_get("/{org}/{repo}/resolve/{rev}/{path:.+}", self.h_resolve)
        return app

    # control
    async def h_health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def h_stats(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "throttle_bytes_per_second": self.throttle,
                "paths": {path: vars(s) for path, s in self.stats.items()},
            }
        )

    async def h_clear_stats(self, request: web.Request) -> web.Response:
        self.stats.clear()
        return web.json_response({"paths": {}})

    async def h_throttle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.throttle = int(body.get("bytes_per_second") or 0)
        return web.json_response({"throttle_bytes_per_second": self.throttle})

    async def h_validators(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.validators = bool(body.get("enabled", True))
        return web.json_response({"validators": self.validators})

    async def h_add_fault(self, request: web.Request) -> web.Response:
        body = await request.json()
        fault = Fault(
            path=str(body["path"]),
            abort_after_bytes=body.get("abort_after_bytes"),
            status=body.get("status"),
            times=int(body.get("times", 1)),
        )
        self.faults.append(fault)
        return web.json_response({"faults": [vars(f) for f in self.faults]})

    async def h_clear_faults(self, request: web.Request) -> web.Response:
        self.faults.clear()
        return web.json_response({"faults": []})

    # plain files
    async def h_file(self, request: web.Request) -> web.StreamResponse:
        path = await asyncio.to_thread(
            self.catalogue.safe, self.catalogue.root / "files", request.match_info["path"]
        )
        if path is None:
            return web.json_response({"error": "not found"}, status=404)
        info = await asyncio.to_thread(self.catalogue.info, path)
        return await self.send_file(request, info, {"ETag": f'"{info.sha256}"'})

    # the Hub's API
    def _repo(self, request: web.Request) -> tuple[Path, list[tuple[str, FileInfo]], str]:
        org, repo, rev = request.match_info["org"], request.match_info["repo"], request.match_info.get("rev")
        repo_dir = self.catalogue.repo_dir(org, repo)
        if repo_dir is None:
            raise hub_error(404, "RepoNotFound", "Repository not found")
        files = self.catalogue.repo_files(repo_dir)
        sha = self.catalogue.commit(files)
        if rev is not None and rev not in ("main", sha, "refs/heads/main"):
            raise hub_error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        return repo_dir, files, sha

    @staticmethod
    def _gate_token(repo_dir: Path) -> str | None:
        token_file = repo_dir.with_name(f"{repo_dir.name}.token")
        return token_file.read_text().strip() if token_file.is_file() else None

    def _check_gate(self, request: web.Request, repo_dir: Path) -> None:
        token = self._gate_token(repo_dir)
        if token is not None and request.headers.get("Authorization") != f"Bearer {token}":
            org, repo = request.match_info["org"], request.match_info["repo"]
            raise hub_error(
                401,
                "GatedRepo",
                f"Access to model {org}/{repo} is restricted. You must have access to it and be "
                "authenticated to access it. Please log in.",
            )

    async def h_model_info(self, request: web.Request) -> web.Response:
        self._count(request)
        repo_dir, files, sha = await asyncio.to_thread(self._repo, request)
        org, repo = request.match_info["org"], request.match_info["repo"]
        blobs = request.query.get("blobs", "").lower() in ("1", "true")
        siblings = []
        for name, info in files:
            sibling: dict[str, Any] = {"rfilename": name}
            if blobs:
                sibling |= {"blobId": info.blob_id, "size": info.size}
                if info.lfs:
                    sibling["lfs"] = {
                        "sha256": info.sha256,
                        "size": info.size,
                        "pointerSize": len(info.pointer),
                    }
            siblings.append(sibling)
        modified = max((info.path.stat().st_mtime for _, info in files), default=time.time())
        return web.json_response(
            {
                "_id": hashlib.sha1(f"{org}/{repo}".encode()).hexdigest()[:24],
                "id": f"{org}/{repo}",
                "modelId": f"{org}/{repo}",
                "author": org,
                "sha": sha,
                "lastModified": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(modified)),
                "private": False,
                "gated": "manual" if self._gate_token(repo_dir) is not None else False,
                "disabled": False,
                "downloads": 0,
                "likes": 0,
                "tags": [],
                "siblings": siblings,
                "usedStorage": sum(info.size for _, info in files),
            },
            headers={"X-Repo-Commit": sha},
        )

    async def h_tree(self, request: web.Request) -> web.Response:
        self._count(request)
        _, files, sha = await asyncio.to_thread(self._repo, request)
        prefix = request.match_info.get("path", "").strip("/")
        recursive = request.query.get("recursive", "").lower() in ("1", "true")
        entries: list[dict[str, Any]] = []
        dirs: set[str] = set()
        for name, info in files:
            if prefix and not name.startswith(prefix + "/"):
                continue
            rest = name[len(prefix) + 1 :] if prefix else name
            if "/" in rest and not recursive:
                dirs.add((f"{prefix}/" if prefix else "") + rest.split("/", 1)[0])
                continue
            entry: dict[str, Any] = {"type": "file", "oid": info.blob_id, "size": info.size, "path": name}
            if info.lfs:
                entry["lfs"] = {"oid": info.sha256, "size": info.size, "pointerSize": len(info.pointer)}
            entries.append(entry)
        if prefix and not entries and not dirs:
            raise hub_error(404, "EntryNotFound", "Entry not found")
        entries = [
            {"type": "directory", "oid": hashlib.sha1(d.encode()).hexdigest(), "size": 0, "path": d}
            for d in sorted(dirs)
        ] + entries
        return web.json_response(entries, headers={"X-Repo-Commit": sha})

    async def h_resolve(self, request: web.Request) -> web.StreamResponse:
        repo_dir, _, sha = await asyncio.to_thread(self._repo, request)
        self._check_gate(request, repo_dir)
        path = await asyncio.to_thread(self.catalogue.safe, repo_dir, request.match_info["path"])
        if path is None:
            self._count(request)
            raise hub_error(404, "EntryNotFound", "Entry not found")
        info = await asyncio.to_thread(self.catalogue.info, path)
        headers = {"ETag": info.etag, "X-Repo-Commit": sha}
        if info.lfs:
            headers |= {"X-Linked-Size": str(info.size), "X-Linked-Etag": f'"{info.sha256}"'}
        return await self.send_file(request, info, headers)

    # sending bytes
    def _count(self, request: web.Request) -> PathStats:
        stats = self.stats[request.path]
        stats.requests += 1
        if request.method == "HEAD":
            stats.head_requests += 1
        return stats

    def _fault(self, path: str) -> Fault | None:
        for fault in self.faults:
            if fault.times > 0 and (path == fault.path or path.endswith(fault.path)):
                fault.times -= 1
                if fault.times <= 0:
                    self.faults.remove(fault)
                return fault
        return None

    async def send_file(
        self, request: web.Request, info: FileInfo, headers: dict[str, str]
    ) -> web.StreamResponse:
        stats = self._count(request)
        size = info.size
        start, end = 0, size - 1
        status = 200
        validator = headers.get("ETag") if self.validators else None
        if not self.validators:
            headers = {k: v for k, v in headers.items() if k not in ("ETag", "X-Linked-Etag")}
        wanted = request.headers.get("Range")
        if_range = request.headers.get("If-Range")
        if wanted and (if_range is None or (validator is not None and if_range == validator)):
            parsed = parse_range(wanted, size)
            if isinstance(parsed, str):  # unsatisfiable
                return web.Response(status=416, headers={"Content-Range": f"bytes */{size}", **headers})
            if parsed is not None:
                start, end = parsed
                status = 206
                stats.range_requests += 1
                stats.range_starts.append(start)
        fault = self._fault(request.path) if request.method == "GET" else None
        if fault and fault.status:
            return web.json_response({"error": f"injected fault: {fault.status}"}, status=fault.status)
        response = web.StreamResponse(
            status=status,
            headers={
                **headers,
                "Accept-Ranges": "bytes",
                "Content-Type": "application/octet-stream",
                "Content-Disposition": f'inline; filename="{info.path.name}"',
            },
        )
        response.content_length = end - start + 1 if size else 0
        if status == 206:
            response.headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        await response.prepare(request)
        if request.method == "HEAD" or not size:
            return response
        rate = int(request.query.get("throttle") or self.throttle or 0)
        limit = fault.abort_after_bytes if fault else None
        sent = 0
        began = time.monotonic()
        chunk_size = CHUNK if not rate else max(1024, min(CHUNK, rate // 10))
        with open(info.path, "rb") as f:  # noqa: ASYNC230 (small reads from the page cache)
            f.seek(start)
            remaining = end - start + 1
            while remaining > 0:
                n = min(chunk_size, remaining)
                if limit is not None:
                    n = min(n, limit - sent)
                    if n <= 0:
                        stats.aborted += 1
                        assert request.transport is not None
                        request.transport.abort()  # the connection drops mid-body
                        return response
                data = f.read(n)
                if not data:
                    break
                await response.write(data)
                sent += len(data)
                stats.bytes_sent += len(data)
                remaining -= len(data)
                if rate:
                    ahead = sent / rate - (time.monotonic() - began)
                    if ahead > 0:
                        await asyncio.sleep(ahead)
        await response.write_eof()
        stats.completed += 1
        return response


def parse_range(header: str, size: int) -> tuple[int, int] | str | None:
    """`bytes=a-b`, `bytes=a-`, `bytes=-n` -> (first, last); "unsatisfiable"; None to ignore."""
    unit, _, spec = header.partition("=")
    if unit.strip() != "bytes" or "," in spec:
        return None  # other units and multiple ranges: send the whole file, as servers may
    first, sep, last = spec.strip().partition("-")
    if not sep:
        return None
    try:
        if not first:
            suffix = int(last)
            if suffix <= 0:
                return "unsatisfiable"
            return max(0, size - suffix), size - 1
        start = int(first)
        stop = int(last) if last else size - 1
    except ValueError:
        return None
    if start >= size or stop < start:
        return "unsatisfiable"
    return start, min(stop, size - 1)


def hub_error(status: int, code: str, message: str) -> web.HTTPException:
    """The Hub's error: JSON `{"error": message}` with X-Error-Code and X-Error-Message headers."""
    kind = {401: web.HTTPUnauthorized, 404: web.HTTPNotFound}[status]
    return kind(
        text=json.dumps({"error": message}),
        content_type="application/json",
        headers={"X-Error-Code": code, "X-Error-Message": message},
    )


# --- the default catalogue ----------------------------------------------------------------------


def populate(root: Path) -> list[Path]:
    """Write the default catalogue under root (files already there are kept); the paths written."""
    written: list[Path] = []
    org, repo, gguf_path = TINY_GGUF_REPO
    gguf_file = root / "hf" / org / repo / gguf_path
    if not gguf_file.exists():
        gguf_file.parent.mkdir(parents=True, exist_ok=True)
        partial = gguf_file.with_name(gguf_file.name + ".tmp")
        subprocess.run([str(HACK_DIR / "tiny-gguf"), str(partial)], check=True, capture_output=True)
        partial.rename(gguf_file)
        written.append(gguf_file)
    gitattributes = root / "hf" / org / repo / ".gitattributes"
    if not gitattributes.exists():
        gitattributes.write_text(GITATTRIBUTES)
        written.append(gitattributes)
    plain = root / "files" / "tiny.gguf"
    if not plain.exists():
        plain.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(gguf_file, plain)
        written.append(plain)
    qwen = root / "hf" / TINY_SAFETENSORS_REPO[0] / TINY_SAFETENSORS_REPO[1]
    for name, data in tiny_safetensors_repo().items():
        path = qwen / name
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            written.append(path)
    return written


GITATTRIBUTES = (
    "*.gguf filter=lfs diff=lfs merge=lfs -text\n*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
)

# Qwen3's layout at toy size; the names and shapes follow transformers' Qwen3ForCausalLM.
QWEN_HIDDEN, QWEN_HEADS, QWEN_KV_HEADS, QWEN_HEAD_DIM, QWEN_FF, QWEN_LAYERS = 64, 2, 1, 32, 128, 2
QWEN_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
QWEN_VOCAB = 320  # 256 byte tokens, the special tokens, padding (the Hub's configs pad too)
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] "
    "+ '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{% endif %}"
)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte-level alphabet, which byte-level BPE tokenizers (Qwen's too) use."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {byte: chr(char) for byte, char in zip(printable, chars, strict=True)}


def tiny_safetensors_repo() -> dict[str, bytes]:
    """The files of the tiny Qwen3-layout repo, deterministic to the byte."""
    alphabet = _bytes_to_unicode()
    vocab = {alphabet[b]: b for b in range(256)}
    special = {token: 256 + i for i, token in enumerate(QWEN_SPECIAL)}
    eos, im_end = special["<|endoftext|>"], special["<|im_end|>"]
    tokenizer: dict[str, Any] = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {
                "id": i,
                "content": t,
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": True,
            }
            for t, i in special.items()
        ],
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {
            "type": "ByteLevel",
            "add_prefix_space": False,
            "trim_offsets": False,
            "use_regex": True,
        },
        "post_processor": {
            "type": "ByteLevel",
            "add_prefix_space": False,
            "trim_offsets": False,
            "use_regex": True,
        },
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": True},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": "",
            "end_of_word_suffix": "",
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": vocab,
            "merges": [],
        },
    }
    config = {
        "architectures": ["Qwen3ForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": eos,
        "eos_token_id": im_end,
        "head_dim": QWEN_HEAD_DIM,
        "hidden_act": "silu",
        "hidden_size": QWEN_HIDDEN,
        "initializer_range": 0.02,
        "intermediate_size": QWEN_FF,
        "max_position_embeddings": 40960,
        "max_window_layers": QWEN_LAYERS,
        "model_type": "qwen3",
        "num_attention_heads": QWEN_HEADS,
        "num_hidden_layers": QWEN_LAYERS,
        "num_key_value_heads": QWEN_KV_HEADS,
        "rms_norm_eps": 1e-06,
        "rope_scaling": None,
        "rope_theta": 1000000,
        "sliding_window": None,
        "tie_word_embeddings": True,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.51.0",
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": QWEN_VOCAB,
    }
    tokenizer_config = {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": {
            str(i): {
                "content": t,
                "lstrip": False,
                "normalized": False,
                "rstrip": False,
                "single_word": False,
                "special": True,
            }
            for t, i in special.items()
        },
        "bos_token": None,
        "chat_template": CHATML,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": 40960,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }
    generation_config = {
        "bos_token_id": eos,
        "do_sample": True,
        "eos_token_id": [im_end, eos],
        "pad_token_id": eos,
        "temperature": 0.6,
        "top_k": 20,
        "top_p": 0.95,
        "transformers_version": "4.51.0",
    }
    readme = (
        "---\nlicense: apache-2.0\nlibrary_name: transformers\n---\n"
        "# A tiny random-weight model in Qwen3's layout, served by llmop's local model source\n\n"
        "This is not Qwen3-0.6B. The test machines cannot reach the Hugging Face Hub, so\n"
        "hack/modelsource.py serves this repo under the name examples/vllm.yaml uses.\n"
    )

    def dumps(value: Any) -> bytes:
        return (json.dumps(value, indent=2, ensure_ascii=False) + "\n").encode()

    return {
        ".gitattributes": GITATTRIBUTES.encode(),
        "README.md": readme.encode(),
        "config.json": dumps(config),
        "generation_config.json": dumps(generation_config),
        "tokenizer.json": dumps(tokenizer),
        "tokenizer_config.json": dumps(tokenizer_config),
        "model.safetensors": tiny_safetensors(),
    }


def tiny_safetensors() -> bytes:
    """model.safetensors in Qwen3's tensor layout with random bf16 weights (seeded)."""
    h, q, kv, ff = QWEN_HIDDEN, QWEN_HEADS * QWEN_HEAD_DIM, QWEN_KV_HEADS * QWEN_HEAD_DIM, QWEN_FF
    shapes: dict[str, list[int]] = {"model.embed_tokens.weight": [QWEN_VOCAB, h], "model.norm.weight": [h]}
    for i in range(QWEN_LAYERS):
        p = f"model.layers.{i}."
        shapes |= {
            p + "input_layernorm.weight": [h],
            p + "post_attention_layernorm.weight": [h],
            p + "self_attn.q_proj.weight": [q, h],
            p + "self_attn.k_proj.weight": [kv, h],
            p + "self_attn.v_proj.weight": [kv, h],
            p + "self_attn.o_proj.weight": [h, q],
            p + "self_attn.q_norm.weight": [QWEN_HEAD_DIM],
            p + "self_attn.k_norm.weight": [QWEN_HEAD_DIM],
            p + "mlp.gate_proj.weight": [ff, h],
            p + "mlp.up_proj.weight": [ff, h],
            p + "mlp.down_proj.weight": [h, ff],
        }
    rng = random.Random(0)
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    blobs = []
    offset = 0
    for name in sorted(shapes):
        shape = shapes[name]
        count = 1
        for dim in shape:
            count *= dim
        norm = name.endswith("norm.weight")
        values = [1.0] * count if norm else [rng.gauss(0.0, 0.02) for _ in range(count)]
        # bf16 is the top half of an IEEE float32.
        data = b"".join(struct.pack("<f", v)[2:] for v in values)
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


# --- CLI -----------------------------------------------------------------------------------------


async def serve(root: Path, host: str, port: int, throttle: int, validators: bool = True) -> None:
    source = ModelSource(root, throttle, validators)
    runner = web.AppRunner(source.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1] if runner.addresses else port
    print(f"http://{host}:{bound}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", type=Path, help="files/ and hf/<org>/<repo>/ live here")
    parser.add_argument(
        "--write-tiny-repo",
        type=Path,
        metavar="DIR",
        help="write the tiny Qwen3-layout repo into DIR and exit",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port (default)")
    parser.add_argument("--populate", action="store_true", help="write the default catalogue first")
    parser.add_argument(
        "--no-validators", action="store_true", help="answer without ETag (as plain servers may)"
    )
    parser.add_argument(
        "--throttle-bytes-per-second",
        type=int,
        default=0,
        metavar="N",
        help="send every body at most this fast (0: unthrottled)",
    )
    args = parser.parse_args(argv)
    if args.write_tiny_repo:
        args.write_tiny_repo.mkdir(parents=True, exist_ok=True)
        for name, data in tiny_safetensors_repo().items():
            (args.write_tiny_repo / name).write_bytes(data)
        return 0
    if args.root is None:
        parser.error("--root is required")
    args.root.mkdir(parents=True, exist_ok=True)
    if args.populate:
        for path in populate(args.root):
            print(f"wrote {path}", file=sys.stderr)
    asyncio.run(
        serve(args.root, args.host, args.port, args.throttle_bytes_per_second, not args.no_validators)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

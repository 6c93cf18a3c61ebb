#!/usr/bin/env python3
"""A local model registry that real Ollama pulls from, the way it pulls from registry.ollama.ai.

    python hack/standins/ollama_registry.py --port 5000 \\
        --model library/tiny:latest=/tmp/tiny.gguf [--throttle 200000]
    ollama pull --insecure 127.0.0.1:5000/library/tiny:latest

It speaks the part of the OCI distribution API that `ollama pull` uses (read from
Ollama's server/images.go and server/download.go):

- GET  /v2/<namespace>/<model>/manifests/<tag>: a Docker v2 manifest whose layers are
  the GGUF (application/vnd.ollama.image.model), a template and params layer like the
  library models carry, and a config blob with the model family, parameter size and
  quantization that `ollama show` reports. Unknown names answer 404, which Ollama turns
  into "pull model manifest: file does not exist".
- HEAD /v2/<namespace>/<model>/blobs/<digest>: Content-Length, from which Ollama plans
  its ranged part downloads.
- GET  /v2/<namespace>/<model>/blobs/<digest>: 307 to a "direct" URL on another host
  name (Ollama only downloads from the Location of that redirect; registry.ollama.ai
  redirects to its CDN). 127.0.0.1 and localhost are both this server, so the redirect
  swaps one for the other; --direct-host names another for a registry bound elsewhere.
- GET  /direct/<digest>: the bytes, honouring `Range: bytes=a-b` (206), optionally
  throttled to --throttle bytes per second so a pull lasts long enough to watch or
  interrupt.

Needs the venv (aiohttp, gguf): run it with .venv/bin/python.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

log = logging.getLogger("ollama-registry")

MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
CHUNK = 64 * 1024

# ChatML in Ollama's Go template syntax, matching the tiny GGUF's chat template.
CHATML_TEMPLATE = (
    "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
    "<|im_start|>assistant\n"
)
CHATML_PARAMS = {"stop": ["<|im_start|>", "<|im_end|>"]}


@dataclass
class Blob:
    digest: str
    size: int
    path: Path | None = None  # a file on disk, or ...
    data: bytes | None = None  # ... small bytes held in memory


def blob_from_bytes(data: bytes) -> Blob:
    return Blob(digest="sha256:" + hashlib.sha256(data).hexdigest(), size=len(data), data=data)


def blob_from_file(path: Path) -> Blob:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return Blob(digest="sha256:" + h.hexdigest(), size=path.stat().st_size, path=path)


def human_number(n: int) -> str:
    """Ollama's format.HumanNumber, which `ollama show` prints as the parameter size."""
    for unit, scale, decimals in (("B", 10**9, 1), ("M", 10**6, 2)):
        if n >= scale:
            value = n / scale
            return f"{value:.{0 if value.is_integer() else decimals}f}{unit}"
    if n >= 1000:
        return f"{n / 1000:.0f}K"
    return str(n)


def gguf_facts(path: Path) -> tuple[str, int, str]:
    """(architecture, parameter count, file type name) read from a GGUF file."""
    import gguf  # the venv's; imported here so --help works without it

    reader = gguf.GGUFReader(str(path))
    field = reader.get_field("general.architecture")
    arch = field.contents() if field is not None else "llama"
    params = sum(int(t.n_elements) for t in reader.tensors)
    ftype_field = reader.get_field("general.file_type")
    ftype = gguf.LlamaFileType(ftype_field.contents()).name if ftype_field is not None else "F32"
    # Ollama names file types like "F32", "Q4_K_M"; gguf's enum says "ALL_F32", "MOSTLY_Q4_K_M".
    return arch, params, ftype.removeprefix("ALL_").removeprefix("MOSTLY_")


class Registry:
    def __init__(self) -> None:
        self.manifests: dict[str, bytes] = {}  # "library/tiny:latest" -> manifest JSON
        self.blobs: dict[str, Blob] = {}

    def add_model(self, name: str, gguf_path: Path) -> str:
        model = blob_from_file(gguf_path)
        template = blob_from_bytes(CHATML_TEMPLATE.encode())
        params = blob_from_bytes(json.dumps(CHATML_PARAMS).encode())
        layers = [
            (model, "application/vnd.ollama.image.model"),
            (template, "application/vnd.ollama.image.template"),
            (params, "application/vnd.ollama.image.params"),
        ]
        arch, n_params, file_type = gguf_facts(gguf_path)
        config = blob_from_bytes(
            json.dumps(
                {
                    "model_format": "gguf",
                    "model_family": arch,
                    "model_families": [arch],
                    "model_type": human_number(n_params),
                    "file_type": file_type,
                    "architecture": "amd64",
                    "os": "linux",
                    "rootfs": {"type": "layers", "diff_ids": [b.digest for b, _ in layers]},
                }
            ).encode()
        )
        manifest = {
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "digest": config.digest,
                "size": config.size,
            },
            "layers": [{"mediaType": t, "digest": b.digest, "size": b.size} for b, t in layers],
        }
        for b in (config, *(b for b, _ in layers)):
            self.blobs[b.digest] = b
        self.manifests[name] = json.dumps(manifest, indent=2).encode()
        return model.digest


def parse_model_name(spec: str) -> str:
    """'tiny' -> 'library/tiny:latest', 'me/tiny:v1' unchanged."""
    name, _, tag = spec.partition(":")
    if "/" not in name:
        name = "library/" + name
    return f"{name}:{tag or 'latest'}"


def oci_error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"errors": [{"code": code, "message": message, "detail": None}]}, status=status)


REGISTRY = web.AppKey("registry", Registry)
THROTTLE = web.AppKey("throttle", int)
DIRECT_HOST = web.AppKey("direct_host", str)


async def base(request: web.Request) -> web.Response:
    return web.json_response({})


async def manifest(request: web.Request) -> web.Response:
    name = f"{request.match_info['repo']}:{request.match_info['ref']}"
    body = request.app[REGISTRY].manifests.get(name)
    if body is None:
        return oci_error(404, "MANIFEST_UNKNOWN", f"manifest unknown: {name}")
    headers = {
        "Content-Type": MANIFEST_TYPE,
        "Docker-Content-Digest": "sha256:" + hashlib.sha256(body).hexdigest(),
    }
    if request.method == "HEAD":
        return web.Response(headers={**headers, "Content-Length": str(len(body))})
    return web.Response(body=body, headers=headers)


def other_host(request: web.Request) -> str:
    host, _, port = request.host.rpartition(":")
    if not host:  # no port in Host
        host, port = request.host, ""
    swapped = request.app[DIRECT_HOST] or ("localhost" if host != "localhost" else "127.0.0.1")
    return f"{swapped}:{port}" if port else swapped


async def blob(request: web.Request) -> web.StreamResponse:
    b = request.app[REGISTRY].blobs.get(request.match_info["digest"])
    if b is None:
        return oci_error(404, "BLOB_UNKNOWN", "blob unknown to registry")
    if request.method == "HEAD":
        return web.Response(headers={"Content-Length": str(b.size), "Docker-Content-Digest": b.digest})
    location = f"http://{other_host(request)}/direct/{b.digest}"
    raise web.HTTPTemporaryRedirect(location)


async def direct(request: web.Request) -> web.StreamResponse:
    b = request.app[REGISTRY].blobs.get(request.match_info["digest"])
    if b is None:
        return oci_error(404, "BLOB_UNKNOWN", "blob unknown to registry")
    start, end = 0, b.size - 1
    status = 200
    if m := re.fullmatch(r"bytes=(\d*)-(\d*)", request.headers.get("Range", "")):
        if m[1]:
            start, end = int(m[1]), min(int(m[2]) if m[2] else b.size - 1, b.size - 1)
        elif m[2]:  # suffix range: the last N bytes
            start = max(0, b.size - int(m[2]))
        if start > end:
            return web.Response(status=416, headers={"Content-Range": f"bytes */{b.size}"})
        status = 206
    length = end - start + 1
    headers = {
        "Content-Length": str(length),
        "Accept-Ranges": "bytes",
        "Content-Type": "application/octet-stream",
    }
    if status == 206:
        headers["Content-Range"] = f"bytes {start}-{end}/{b.size}"
    response = web.StreamResponse(status=status, headers=headers)
    await response.prepare(request)
    throttle = request.app[THROTTLE]
    began = time.monotonic()
    sent = 0
    with b.path.open("rb") if b.path else contextlib.nullcontext() as f:
        while sent < length:
            n = min(CHUNK, length - sent, throttle or CHUNK)
            if b.data is not None:
                chunk = b.data[start + sent : start + sent + n]
            else:
                f.seek(start + sent)
                chunk = f.read(n)
            await response.write(chunk)
            sent += len(chunk)
            if throttle:  # sleep until the average rate is back under the limit
                await asyncio.sleep(max(0.0, sent / throttle - (time.monotonic() - began)))
    await response.write_eof()
    return response


def build_app(registry: Registry, throttle: int, direct_host: str = "") -> web.Application:
    app = web.Application()
    app[REGISTRY] = registry
    app[THROTTLE] = throttle
    app[DIRECT_HOST] = direct_host
    repo = r"{repo:[a-z0-9._-]+(?:/[a-z0-9._-]+)*}"
    app.router.add_get("/v2/", base)
    # add_get routes HEAD to the same handlers, which check request.method.
    app.router.add_get(f"/v2/{repo}/manifests/{{ref}}", manifest)
    app.router.add_get(f"/v2/{repo}/blobs/{{digest}}", blob)
    app.router.add_get("/direct/{digest}", direct)
    return app


def main() -> None:
    p = argparse.ArgumentParser(
        description="Local registry that `ollama pull --insecure` pulls GGUF models from."
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME=GGUF",
        help="serve GGUF as NAME (e.g. library/tiny:latest, or just tiny); repeatable",
    )
    p.add_argument(
        "--throttle", type=int, default=0, metavar="BYTES_PER_SEC", help="limit each blob download"
    )
    p.add_argument(
        "--direct-host",
        default="",
        help="host name blob redirects point to (default: localhost, or 127.0.0.1 when asked as localhost); "
        "it must reach this server under a different name than the one Ollama pulls from",
    )
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)

    registry = Registry()
    for spec in args.model:
        name, sep, path = spec.partition("=")
        if not sep:
            p.error(f"--model wants NAME=GGUF, got {spec!r}")
        digest = registry.add_model(parse_model_name(name), Path(path))
        log.info("serving %s as %s (%s)", path, parse_model_name(name), digest)
    log.info("listening on http://%s:%d", args.host, args.port)
    web.run_app(
        build_app(registry, args.throttle, args.direct_host),
        host=args.host,
        port=args.port,
        print=None,
        access_log=None,
    )


if __name__ == "__main__":
    main()

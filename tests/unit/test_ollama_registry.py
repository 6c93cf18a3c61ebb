"""hack/standins/ollama_registry.py serves models the way `ollama pull` expects registry.ollama.ai to."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from standins import ollama_registry  # hack/ is on pytest's pythonpath

TINY_GGUF = Path(__file__).resolve().parents[2] / "hack" / "tiny-gguf"


@pytest.fixture(scope="module")
def gguf_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("registry") / "tiny.gguf"
    subprocess.run([sys.executable, str(TINY_GGUF), str(out)], check=True, timeout=120)
    return out


@pytest.fixture(scope="module")
def gguf_bytes(gguf_file: Path) -> bytes:
    return gguf_file.read_bytes()


@pytest.fixture
async def registry(gguf_file: Path) -> AsyncIterator[TestClient]:
    reg = ollama_registry.Registry()
    reg.add_model(ollama_registry.parse_model_name("tiny"), gguf_file)
    client = TestClient(TestServer(ollama_registry.build_app(reg, throttle=0)))
    await client.start_server()
    yield client
    await client.close()


async def test_manifest_carries_the_gguf_as_the_model_layer(registry: TestClient, gguf_bytes: bytes) -> None:
    response = await registry.get("/v2/library/tiny/manifests/latest")
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/vnd.docker.distribution.manifest.v2+json"
    manifest = await response.json(content_type=None)
    model = next(layer for layer in manifest["layers"] if layer["mediaType"].endswith(".model"))
    data = gguf_bytes
    assert model["digest"] == "sha256:" + hashlib.sha256(data).hexdigest()
    assert model["size"] == len(data)


async def test_unknown_model_is_404_so_ollama_says_file_does_not_exist(registry: TestClient) -> None:
    response = await registry.get("/v2/library/nope/manifests/latest")
    assert response.status == 404
    assert (await response.json())["errors"][0]["code"] == "MANIFEST_UNKNOWN"


async def test_blob_redirects_to_another_host_that_serves_ranges(
    registry: TestClient, gguf_bytes: bytes
) -> None:
    data = gguf_bytes
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    head = await registry.head(f"/v2/library/tiny/blobs/{digest}")
    assert int(head.headers["Content-Length"]) == len(data)

    redirect = await registry.get(f"/v2/library/tiny/blobs/{digest}", allow_redirects=False)
    assert redirect.status == 307
    location = redirect.headers["Location"]
    assert location.startswith("http://localhost:") or location.startswith("http://127.0.0.1:")
    assert registry.host not in location  # Ollama only follows a redirect to another host name

    part = await registry.get(f"/direct/{digest}", headers={"Range": "bytes=100-199"})
    assert part.status == 206
    assert part.headers["Content-Range"] == f"bytes 100-199/{len(data)}"
    assert await part.read() == data[100:200]

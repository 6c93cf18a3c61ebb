"""What lands on the model volume is what the source named, whole, from one version, and only
inside the volume: pinned commits, the agent's own names, resumes, local paths, links, room."""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from agent_source import SourceFile, SourceServer, StartAgent, random_bytes, serve, sha256_of
from aiohttp import web

from llmop.agent.settings import InvalidAgentSetting, parse_volume_limit
from llmop.agent.store import ModelStore
from llmop.sources import parse_model_source

MiB = 1024 * 1024
HACK = Path(__file__).resolve().parents[3] / "hack"


def load_modelsource() -> ModuleType:
    """hack/modelsource.py, the stand-in model server the other test tiers run, in-process."""
    spec = importlib.util.spec_from_file_location("llmop_hack_modelsource", HACK / "modelsource.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture
async def modelsource(tmp_path: Path) -> AsyncIterator[tuple[Any, str, ModuleType]]:
    """(the server's state, its base URL, the module) over a root in tmp_path/source."""
    module = load_modelsource()
    server = module.ModelSource(tmp_path / "source")
    runners: list[web.AppRunner] = []
    url = await serve(server.app(), runners)
    yield server, url, module
    for runner in runners:
        await runner.cleanup()


def write(path: Path, data: bytes, mtime: int) -> None:
    """Rewrite a file the model server serves; a new mtime makes it hash the bytes again."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (mtime, mtime))


def assert_records_match_disk(models_dir: Path, local_path: str) -> None:
    record = ModelStore(models_dir).read_record(local_path)
    assert record is not None
    for file in record.files:
        assert sha256_of((models_dir / local_path / file.path).read_bytes()) == file.sha256, file.path


# --- a repo is pinned to one commit ----------------------------------------------------------


async def test_a_repo_pull_resumed_after_the_branch_moved_finishes_the_commit_it_began(
    source: SourceServer, start_agent: StartAgent
) -> None:
    old_config, old_weights = b'{"version": 1}', random_bytes(2 * MiB)
    source.repos["org/tiny"] = {
        "main": {
            "config.json": SourceFile(old_config),
            "model.safetensors": SourceFile(old_weights, lfs=True, drop_at=MiB),
        }
    }
    agent = await start_agent(hf_endpoint=source.url)
    assert "error" in (await agent.pull("hf://org/tiny"))[-1]
    began = source.commit_of("org/tiny", "main")
    # The branch moves on: every file changes, none changes size.
    source.repos["org/tiny"]["main"] = {
        "config.json": SourceFile(b'{"version": 2}'),
        "model.safetensors": SourceFile(random_bytes(2 * MiB), lfs=True),
    }

    assert (await agent.pull("hf://org/tiny"))[-1] == {"status": "success"}

    repo = agent.models_dir / "hf/org/tiny/main"
    assert (repo / "config.json").read_bytes() == old_config
    assert (repo / "model.safetensors").read_bytes() == old_weights
    fetched = source.gets_of("/resolve/") + source.gets_of("/cdn/")
    assert fetched and all(f"/{began}/" in seen.path for seen in fetched)
    record = ModelStore(agent.models_dir).read_record("hf/org/tiny/main")
    assert record is not None and record.revision == began
    assert_records_match_disk(agent.models_dir, "hf/org/tiny/main")


async def test_a_pinned_commit_the_endpoint_no_longer_has_starts_the_pull_over_cleanly(
    modelsource: tuple[Any, str, ModuleType], start_agent: StartAgent
) -> None:
    server, url, module = modelsource
    repo_root = server.catalogue.root / "hf" / "org" / "tiny"
    write(repo_root / "config.json", b'{"version": 1}', 1_000_000)
    write(repo_root / "model.safetensors", random_bytes(2 * MiB), 1_000_000)
    server.faults.append(module.Fault(path="/model.safetensors", abort_after_bytes=MiB))
    agent = await start_agent(hf_endpoint=url)
    assert "error" in (await agent.pull("hf://org/tiny"))[-1]
    # A new commit; this server answers only the newest, as after a history rewrite on the Hub.
    new_config, new_weights = b'{"version": 2}', random_bytes(2 * MiB)
    write(repo_root / "config.json", new_config, 2_000_000)
    write(repo_root / "model.safetensors", new_weights, 2_000_000)

    assert (await agent.pull("hf://org/tiny"))[-1] == {"status": "success"}

    repo = agent.models_dir / "hf/org/tiny/main"
    assert (repo / "config.json").read_bytes() == new_config
    assert (repo / "model.safetensors").read_bytes() == new_weights
    assert_records_match_disk(agent.models_dir, "hf/org/tiny/main")


async def test_a_file_of_a_repo_pulled_on_its_own_never_replaces_the_repos_copy(
    source: SourceServer, start_agent: StartAgent
) -> None:
    old_config = b'{"version": 1}'
    source.repos["org/tiny"] = {"main": {"config.json": SourceFile(old_config)}}
    agent = await start_agent(hf_endpoint=source.url)
    assert (await agent.pull("hf://org/tiny"))[-1] == {"status": "success"}
    new_config = b'{"version": 2}'
    source.repos["org/tiny"]["main"] = {"config.json": SourceFile(new_config)}

    lines = await agent.pull("hf://org/tiny/config.json", sha256=sha256_of(new_config))

    assert lines[-1] == {"status": "success"}
    assert (agent.models_dir / "hf-file/org/tiny/main/config.json").read_bytes() == new_config
    assert (agent.models_dir / "hf/org/tiny/main/config.json").read_bytes() == old_config
    assert_records_match_disk(agent.models_dir, "hf/org/tiny/main")


# --- the agent's own names ----------------------------------------------------------------------


async def test_repo_files_named_like_the_agents_own_neither_complete_nor_corrupt_the_repo(
    source: SourceServer, start_agent: StartAgent
) -> None:
    weights = random_bytes(2 * MiB)
    look_alikes = {
        ".llmop-complete": SourceFile(b"not a marker"),
        "config.json.partial": SourceFile(b"not a partial"),
        "config.json": SourceFile(b'{"hidden_size": 64}'),
        "main.llmop.json": SourceFile(b"{}"),
    }
    source.repos["org/tiny"] = {
        "main": {**look_alikes, "model.safetensors": SourceFile(weights, lfs=True, drop_at=MiB)}
    }
    agent = await start_agent(hf_endpoint=source.url, required_models=("hf/org/tiny/main",))

    assert "error" in (await agent.pull("hf://org/tiny"))[-1]
    assert (await agent.startup()).status_code == 503
    assert await agent.tags() == []

    assert (await agent.pull("hf://org/tiny"))[-1] == {"status": "success"}
    repo = agent.models_dir / "hf/org/tiny/main"
    for name, file in look_alikes.items():
        assert (repo / name).read_bytes() == file.body, name
    assert (repo / "model.safetensors").read_bytes() == weights
    assert (await agent.startup()).status_code == 200


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (["a.json", "a.json"], "the repo lists 'a.json' twice"),
        (["sub", "sub/b.json"], "the repo lists 'sub/b.json' both as a file and inside one"),
        (["sub/b.json", "sub"], "the repo lists 'sub' both as a file and inside one"),
        (["../escape.json"], "the repo lists an unsafe file name"),
        ([f"{'x' * 300}.json"], "the repo lists a name longer than 255 bytes"),
    ],
)
async def test_a_listing_whose_paths_collide_or_escape_is_refused_before_any_file_moves(
    start_agent: StartAgent, names: list[str], message: str
) -> None:
    asked: list[str] = []

    async def listing(request: web.Request) -> web.Response:
        # A hostile endpoint's JSON may name a file twice, which no real repo can.
        return web.json_response({"sha": "ab" * 20, "siblings": [{"rfilename": n, "size": 2} for n in names]})

    async def anything_else(request: web.Request) -> web.Response:
        asked.append(request.path)
        return web.Response(body=b"{}")

    app = web.Application()
    app.router.add_get("/api/models/{org}/{repo}/revision/{rev}", listing)
    app.router.add_get("/{tail:.*}", anything_else)
    runners: list[web.AppRunner] = []
    agent = await start_agent(hf_endpoint=await serve(app, runners))
    try:
        lines = await agent.pull("hf://org/odd")
    finally:
        for runner in runners:
            await runner.cleanup()

    assert message in lines[-1]["error"]
    assert asked == []
    assert not (agent.models_dir / "hf/org/odd/main").exists()
    assert not (agent.models_dir / "hf/org/odd/escape.json").exists()


async def test_a_url_whose_path_runs_through_another_models_file_is_refused_with_a_reason(
    source: SourceServer, start_agent: StartAgent
) -> None:
    source.files["a"] = SourceFile(b"a model")
    source.files["a/b.gguf"] = SourceFile(b"another")
    agent = await start_agent()
    assert (await agent.pull(source.file_url("a")))[-1] == {"status": "success"}

    lines = await agent.pull(source.file_url("a/b.gguf"))

    assert "is a file where a directory belongs" in lines[-1]["error"]
    assert (agent.models_dir / parse_model_source(source.file_url("a")).local_path).read_bytes() == b"a model"


def test_no_local_path_reaches_into_the_agents_own_directory(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    store.mark_repo_complete("hf/org/tiny/main", "sha256:00")
    marker = store.marker_path("hf/org/tiny/main").relative_to(tmp_path).as_posix()

    assert store.missing((marker,)) == [marker]


# --- resuming a URL -----------------------------------------------------------------------------


async def test_a_resume_without_a_validator_restarts_the_file_instead_of_splicing_two_versions(
    modelsource: tuple[Any, str, ModuleType], start_agent: StartAgent
) -> None:
    server, url, module = modelsource
    server.validators = False
    served = server.catalogue.root / "files" / "m.gguf"
    write(served, random_bytes(2 * MiB), 1_000_000)
    server.faults.append(module.Fault(path="/files/m.gguf", abort_after_bytes=MiB))
    agent = await start_agent()
    model = f"{url}/files/m.gguf"
    assert "error" in (await agent.pull(model))[-1]
    new = random_bytes(2 * MiB)
    write(served, new, 2_000_000)

    assert (await agent.pull(model))[-1] == {"status": "success"}

    assert (agent.models_dir / parse_model_source(model).local_path).read_bytes() == new
    assert server.stats["/files/m.gguf"].range_requests == 0


async def test_a_resume_without_a_validator_keeps_the_partial_when_a_sha256_verifies_it(
    modelsource: tuple[Any, str, ModuleType], start_agent: StartAgent
) -> None:
    server, url, module = modelsource
    server.validators = False
    body = random_bytes(2 * MiB)
    write(server.catalogue.root / "files" / "m.gguf", body, 1_000_000)
    server.faults.append(module.Fault(path="/files/m.gguf", abort_after_bytes=MiB))
    agent = await start_agent()
    model = f"{url}/files/m.gguf"
    assert "error" in (await agent.pull(model, sha256=sha256_of(body)))[-1]

    assert (await agent.pull(model, sha256=sha256_of(body)))[-1] == {"status": "success"}

    assert server.stats["/files/m.gguf"].range_starts == [MiB]
    assert (agent.models_dir / parse_model_source(model).local_path).read_bytes() == body


async def test_a_source_answering_a_range_for_another_version_despite_if_range_restarts_the_file(
    source: SourceServer, start_agent: StartAgent
) -> None:
    source.files["m.gguf"] = SourceFile(random_bytes(2 * MiB), etag='"v1"', drop_at=MiB)
    model = source.file_url("m.gguf")
    agent = await start_agent()
    assert "error" in (await agent.pull(model))[-1]
    new = random_bytes(2 * MiB)
    source.files["m.gguf"] = SourceFile(new, etag='"v2"', honours_if_range=False)

    assert (await agent.pull(model))[-1] == {"status": "success"}

    assert (agent.models_dir / parse_model_source(model).local_path).read_bytes() == new
    assert source.ranges_asked("/files/m.gguf")[1:] == [f"bytes={MiB}-", None]


# --- where a URL lands --------------------------------------------------------------------------


def test_scheme_query_and_credentials_keep_urls_apart_and_never_reach_the_path() -> None:
    urls = [
        "https://example.com/m.gguf",
        "http://example.com/m.gguf",
        "https://example.com/m.gguf?X-Amz-Signature=s3cr3t",
        "https://example.com/m.gguf?X-Amz-Signature=other",
        "https://alice:pa55@example.com/m.gguf",
        "https://example.com:8443/m.gguf",
    ]
    paths = [parse_model_source(url).local_path for url in urls]

    assert len(set(paths)) == len(urls)
    assert paths[:2] == ["url/https/example.com/m.gguf", "url/http/example.com/m.gguf"]
    assert all(path.endswith("/m.gguf") for path in paths)
    for secret in ("s3cr3t", "other", "Signature", "alice", "pa55"):
        assert not any(secret in path for path in paths)


# --- links in the volume --------------------------------------------------------------------------


def volume_with_link(tmp_path: Path, name: str) -> tuple[Path, Path]:
    """(a models directory whose `name` is a link, the empty directory outside it points to)."""
    outside = tmp_path / "outside"
    outside.mkdir()
    models_dir = tmp_path / "models"
    models_dir.mkdir()
    (models_dir / name).symlink_to(outside)
    return models_dir, outside


async def test_a_link_among_the_models_directories_is_refused_and_nothing_is_written_through_it(
    source: SourceServer, start_agent: StartAgent, tmp_path: Path
) -> None:
    source.files["m.gguf"] = SourceFile(random_bytes(1000))
    models_dir, outside = volume_with_link(tmp_path, "url")
    agent = await start_agent(models_dir=models_dir)

    lines = await agent.pull(source.file_url("m.gguf"))

    assert "url in the model volume is a symbolic link" in lines[-1]["error"]
    assert list(outside.iterdir()) == []


async def test_a_link_in_place_of_a_models_file_is_neither_complete_nor_followed(
    source: SourceServer, start_agent: StartAgent, tmp_path: Path
) -> None:
    source.files["m.gguf"] = SourceFile(random_bytes(1000))
    model = source.file_url("m.gguf")
    secret = tmp_path / "secret"
    secret.write_bytes(b"the node's secret")
    agent = await start_agent(required_models=(parse_model_source(model).local_path,))
    landed = agent.models_dir / parse_model_source(model).local_path
    landed.parent.mkdir(parents=True)
    landed.symlink_to(secret)

    lines = await agent.pull(model)

    assert "m.gguf in the model volume is a symbolic link" in lines[-1]["error"]
    assert secret.read_bytes() == b"the node's secret"
    assert (await agent.startup()).status_code == 503
    assert await agent.tags() == []


async def test_a_link_in_place_of_the_agents_own_directory_is_refused(
    source: SourceServer, start_agent: StartAgent, tmp_path: Path
) -> None:
    source.files["m.gguf"] = SourceFile(random_bytes(1000))
    models_dir, outside = volume_with_link(tmp_path, ".llmop")
    agent = await start_agent(models_dir=models_dir)

    lines = await agent.pull(source.file_url("m.gguf"))

    assert ".llmop in the model volume is a symbolic link" in lines[-1]["error"]
    assert list(outside.iterdir()) == []


# --- room on the volume ---------------------------------------------------------------------------


def volume_with_free_bytes(monkeypatch: pytest.MonkeyPatch, free: int) -> None:
    blocks = 4096
    fake = os.statvfs_result(
        (blocks, blocks, 10 * free // blocks, free // blocks, free // blocks, 0, 0, 0, 0, 255)
    )
    monkeypatch.setattr(os, "statvfs", lambda path: fake)


async def test_a_file_larger_than_the_volumes_free_room_is_refused_naming_both_figures(
    source: SourceServer, start_agent: StartAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    source.files["m.gguf"] = SourceFile(random_bytes(2 * MiB))
    model = source.file_url("m.gguf")
    agent = await start_agent()
    volume_with_free_bytes(monkeypatch, MiB)

    lines = await agent.pull(model)

    assert lines[-1] == {
        "error": f"m.gguf needs {2 * MiB} bytes (2.0 MiB) but the model volume has only {MiB} bytes "
        "(1.0 MiB) free: give the volume more room or delete models it no longer needs"
    }
    assert not (agent.models_dir / parse_model_source(model).local_path).exists()
    assert (
        ModelStore(agent.models_dir).partial_of(parse_model_source(model).local_path, "").stat().st_size == 0
    )


async def test_a_repo_larger_than_the_volumes_free_room_is_refused_before_any_file_moves(
    source: SourceServer, start_agent: StartAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    source.repos["org/big"] = {
        "main": {"a.safetensors": SourceFile(random_bytes(MiB), lfs=True), "b.json": SourceFile(b"{}")}
    }
    agent = await start_agent(hf_endpoint=source.url)
    volume_with_free_bytes(monkeypatch, MiB // 2)

    lines = await agent.pull("hf://org/big")

    assert lines[-1]["error"].startswith(
        f"hf://org/big needs {MiB + 2} bytes (1.0 MiB) but the model volume has only {MiB // 2} bytes"
    )
    assert source.gets_of("/resolve/") == []
    # The sizes still went out first: the operator learns how large the model is (Fits).
    announced = {line["status"]: line.get("total") for line in lines if "total" in line}
    assert announced == {"pulling a.safetensors": MiB, "pulling b.json": 2}


async def test_under_a_volume_limit_the_bytes_already_stored_count_against_the_room(
    source: SourceServer, start_agent: StartAgent
) -> None:
    """An emptyDir's sizeLimit is invisible to statvfs (the node's disk); past it the kubelet
    evicts the pod. The agent, told the limit, refuses the download that would cross it."""
    source.files["first.gguf"] = SourceFile(random_bytes(MiB))
    source.files["second.gguf"] = SourceFile(random_bytes(MiB))
    agent = await start_agent(volume_limit=MiB + MiB // 2)

    assert "error" not in (await agent.pull(source.file_url("first.gguf")))[-1]
    lines = await agent.pull(source.file_url("second.gguf"))

    assert "second.gguf needs 1048576 bytes (1.0 MiB) but the model volume has only" in lines[-1]["error"]
    assert not (agent.models_dir / parse_model_source(source.file_url("second.gguf")).local_path).exists()


def test_the_volume_limit_is_read_as_a_kubernetes_quantity() -> None:
    assert parse_volume_limit("50Gi") == 50 * 1024**3
    assert parse_volume_limit("500M") == 500 * 1000**2
    assert parse_volume_limit("1048576") == MiB
    assert parse_volume_limit(None) is None
    with pytest.raises(InvalidAgentSetting, match="not a size such as 50Gi"):
        parse_volume_limit("lots")


async def test_deleting_a_model_behind_a_link_is_refused_with_a_reason_not_a_crash(
    source: SourceServer, start_agent: StartAgent, tmp_path: Path
) -> None:
    model = source.file_url("m.gguf")
    outside = tmp_path / "outside"
    (outside / "m.gguf").parent.mkdir(parents=True)
    (outside / "m.gguf").write_bytes(b"keep me")
    models_dir = tmp_path / "models"
    models_dir.mkdir()
    (models_dir / "url").symlink_to(outside)
    agent = await start_agent(models_dir=models_dir)

    answer = await agent.http.request("DELETE", f"{agent.url}/api/delete", json={"model": model})

    assert answer.status_code == 409 and "symbolic link" in answer.json()["error"], answer.text
    assert (outside / "m.gguf").read_bytes() == b"keep me"


async def test_a_file_of_no_announced_size_stops_at_the_volumes_room(
    source: SourceServer, start_agent: StartAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without Content-Length no check can come first; the room bounds the transfer instead of
    the kubelet evicting the pod."""
    source.files["m.gguf"] = SourceFile(random_bytes(2 * MiB), announces_size=False)
    agent = await start_agent()
    volume_with_free_bytes(monkeypatch, MiB)

    lines = await agent.pull(source.file_url("m.gguf"))

    assert (
        "m.gguf announced no size and grew past the 1048576 bytes (1.0 MiB) the model volume had free"
        in (lines[-1]["error"])
    )
    assert not (agent.models_dir / parse_model_source(source.file_url("m.gguf")).local_path).exists()

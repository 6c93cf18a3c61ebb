"""Pulling from a Hugging Face compatible endpoint: whole repos, single files, tokens, digests."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from agent_source import SourceFile, SourceServer, StartAgent, eventually, random_bytes, sha256_of

from llmop.agent.store import ModelStore

MiB = 1024 * 1024


def tiny_repo(source: SourceServer) -> tuple[bytes, bytes]:
    config = json.dumps({"architectures": ["LlamaForCausalLM"], "hidden_size": 64}).encode()
    weights = random_bytes(2 * MiB)
    source.repos["org/tiny"] = {
        "main": {"config.json": SourceFile(config), "model.safetensors": SourceFile(weights, lfs=True)}
    }
    return config, weights


def finals(lines: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The last progress line of each file."""
    return {line["status"].removeprefix("pulling "): line for line in lines if "completed" in line}


async def test_a_repo_lands_file_by_file_and_is_complete_only_with_its_marker(
    source: SourceServer, start_agent: StartAgent
) -> None:
    config, weights = tiny_repo(source)
    agent = await start_agent(
        hf_endpoint=source.url, hf_token="hf_secret", required_models=("hf/org/tiny/main",)
    )
    source.token = "hf_secret"

    lines = await agent.pull("hf://org/tiny")

    assert lines[0] == {"status": "pulling manifest"} and lines[-1] == {"status": "success"}
    last = finals(lines)
    assert last["config.json"]["completed"] == last["config.json"]["total"] == len(config)
    assert last["model.safetensors"]["completed"] == last["model.safetensors"]["total"] == len(weights)
    assert last["model.safetensors"]["digest"] == f"sha256:{sha256_of(weights)}"  # the digest HF lists
    repo = agent.models_dir / "hf/org/tiny/main"
    assert (repo / "config.json").read_bytes() == config
    assert (repo / "model.safetensors").read_bytes() == weights
    # The repo's directory holds the repo's files and nothing of the agent's.
    assert sorted(path.name for path in repo.iterdir()) == ["config.json", "model.safetensors"]
    assert ModelStore(agent.models_dir).is_complete("hf/org/tiny/main")
    assert (await agent.startup()).status_code == 200
    [tag] = await agent.tags()
    assert tag["name"] == "hf://org/tiny"
    assert tag["size"] == len(config) + len(weights)
    assert tag["digest"].startswith("sha256:")


async def test_hf_endpoint_is_honoured_and_the_token_is_sent_as_a_bearer(
    source: SourceServer, start_agent: StartAgent
) -> None:
    tiny_repo(source)
    source.token = "hf_secret"
    agent = await start_agent(hf_endpoint=source.url, hf_token="hf_secret")

    await agent.pull("hf://org/tiny")

    listing, *files = [seen for seen in source.seen if "/cdn/" not in seen.path]
    assert listing.path == "/api/models/org/tiny/revision/main?blobs=true"
    commit = source.commit_of("org/tiny", "main")
    # Every file comes from the commit the listing named, never from the moving branch (the
    # files arrive a few at once, in no set order).
    assert sorted(seen.path for seen in files) == [
        f"/org/tiny/resolve/{commit}/config.json",
        f"/org/tiny/resolve/{commit}/model.safetensors",
    ]
    assert {seen.headers["Authorization"] for seen in [listing, *files]} == {"Bearer hf_secret"}
    # LFS files come from the CDN the resolve URL redirects to.
    assert len(source.gets_of(f"/cdn/org/tiny/{commit}/model.safetensors")) == 1


async def test_a_gated_repo_without_a_token_fails_with_the_endpoints_answer(
    source: SourceServer, start_agent: StartAgent
) -> None:
    tiny_repo(source)
    source.token = "hf_secret"
    agent = await start_agent(hf_endpoint=source.url)

    lines = await agent.pull("hf://org/tiny")

    assert lines[-1] == {
        "error": f"GET {source.url}/api/models/org/tiny/revision/main: 401 Unauthorized: "
        '{"error": "Invalid credentials in Authorization header"}'
    }


async def test_a_repo_whose_second_file_fails_is_not_complete_and_keeps_the_first(
    source: SourceServer, start_agent: StartAgent
) -> None:
    config, _ = tiny_repo(source)
    weights = source.repos["org/tiny"]["main"]["model.safetensors"]
    weights.drop_at = MiB
    # Held until the config landed: a file that fails stops the others, and this one is to fail
    # after the config is in place.
    weights.hold_at = MiB // 2
    agent = await start_agent(hf_endpoint=source.url, required_models=("hf/org/tiny/main",))
    repo = agent.models_dir / "hf/org/tiny/main"

    pulling = asyncio.create_task(agent.pull("hf://org/tiny"))
    await eventually(lambda: (repo / "config.json").exists(), "the config in place")
    weights.release.set()
    failed = await pulling

    assert "error" in failed[-1]
    assert (repo / "config.json").read_bytes() == config
    assert not ModelStore(agent.models_dir).is_complete("hf/org/tiny/main")
    assert not (repo / "model.safetensors").exists()
    assert (await agent.startup()).status_code == 503
    assert await agent.tags() == []

    assert (await agent.pull("hf://org/tiny"))[-1] == {"status": "success"}
    # The landed file was kept; only the interrupted one was asked for again, from its partial.
    assert len(source.gets_of("/config.json")) == 1
    assert source.ranges_asked("/cdn/org/tiny/")[-1] == f"bytes={MiB}-"
    assert ModelStore(agent.models_dir).is_complete("hf/org/tiny/main")


async def test_a_single_file_of_a_repo_at_a_revision(source: SourceServer, start_agent: StartAgent) -> None:
    gguf = random_bytes(MiB)
    source.repos["org/gguf"] = {
        "v1.0": {"tiny-q8.gguf": SourceFile(gguf, lfs=True), "README.md": SourceFile(b"hi")}
    }
    agent = await start_agent(hf_endpoint=source.url)

    lines = await agent.pull("hf://org/gguf@v1.0/tiny-q8.gguf", sha256=sha256_of(gguf))

    assert lines[-1] == {"status": "success"}
    assert (agent.models_dir / "hf-file/org/gguf/v1.0/tiny-q8.gguf").read_bytes() == gguf
    assert not (agent.models_dir / "hf-file/org/gguf/v1.0/README.md").exists()
    [tag] = await agent.tags()
    assert tag["name"] == "hf://org/gguf@v1.0/tiny-q8.gguf"
    assert tag["digest"] == f"sha256:{sha256_of(gguf)}"


async def test_bytes_that_do_not_match_the_listed_digest_fail_naming_both(
    source: SourceServer, start_agent: StartAgent
) -> None:
    gguf = random_bytes(MiB)
    listed = "cd" * 32
    source.repos["org/gguf"] = {"main": {"m.gguf": SourceFile(gguf, lfs=True, listed_sha256=listed)}}
    agent = await start_agent(hf_endpoint=source.url)

    lines = await agent.pull("hf://org/gguf/m.gguf")

    assert lines[-1] == {"error": f"sha256 mismatch for m.gguf: expected {listed}, got {sha256_of(gguf)}"}
    assert not (agent.models_dir / "hf-file/org/gguf/main/m.gguf").exists()


async def test_a_requested_sha256_that_differs_from_the_listed_one_fails_before_downloading(
    source: SourceServer, start_agent: StartAgent
) -> None:
    gguf = random_bytes(MiB)
    source.repos["org/gguf"] = {"main": {"m.gguf": SourceFile(gguf, lfs=True)}}
    agent = await start_agent(hf_endpoint=source.url)
    wanted = "ef" * 32

    lines = await agent.pull("hf://org/gguf/m.gguf", sha256=wanted)

    assert lines[-1]["error"].startswith(
        f"sha256 mismatch for m.gguf: expected {wanted}, got {sha256_of(gguf)}"
    )
    assert source.gets_of("/cdn/") == []


async def test_a_file_the_repo_does_not_have_is_named(source: SourceServer, start_agent: StartAgent) -> None:
    tiny_repo(source)
    agent = await start_agent(hf_endpoint=source.url)

    lines = await agent.pull("hf://org/tiny/nope.gguf")

    assert lines[-1]["error"].startswith("org/tiny@main has no file 'nope.gguf'")


async def test_a_missing_repo_surfaces_the_endpoints_404(
    source: SourceServer, start_agent: StartAgent
) -> None:
    agent = await start_agent(hf_endpoint=source.url)

    lines = await agent.pull("hf://org/absent@main")

    assert lines[-1] == {
        "error": f"GET {source.url}/api/models/org/absent/revision/main: 404 Not Found: "
        '{"error": "Repository not found"}'
    }

"""A repo's files download a few at once (LLMOP_PARALLEL_DOWNLOADS), each resuming on its own."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from agent_source import CHUNK, SourceFile, SourceServer, StartAgent, eventually, random_bytes

from llmop.agent.settings import (
    DEFAULT_PARALLEL_DOWNLOADS,
    InvalidAgentSetting,
    parse_parallel_downloads,
    settings_from_env,
)
from llmop.agent.store import ModelStore

MiB = 1024 * 1024
LOCAL_PATH = "hf/org/sharded/main"


def sharded_repo(source: SourceServer, count: int) -> dict[str, SourceFile]:
    """`count` shards of 2 MiB, each held after its first MiB until the test releases it."""
    shards = {
        f"model-{n:05d}-of-{count:05d}.safetensors": SourceFile(random_bytes(2 * MiB), lfs=True, hold_at=MiB)
        for n in range(1, count + 1)
    }
    source.repos["org/sharded"] = {"main": dict(shards)}
    return shards


def partials_at(models_dir: Path, names: list[str], size: int) -> bool:
    store = ModelStore(models_dir)
    partials = [store.partial_of(LOCAL_PATH, name) for name in names]
    return all(path.exists() and path.stat().st_size == size for path in partials)


def let_go(shards: dict[str, SourceFile]) -> None:
    for shard in shards.values():
        shard.hold_at = None
        shard.release.set()


def ranges_asked(source: SourceServer, name: str) -> list[str | None]:
    """The Range of each request for the shard's bytes (at the CDN the Hub redirects to)."""
    return [seen.headers.get("Range") for seen in source.gets_of("/cdn/") if seen.path.endswith(f"/{name}")]


def completed_by_file(lines: list[dict[str, Any]]) -> dict[str, list[tuple[int, int]]]:
    """(completed, total) of each progress line, per file, in the order they came."""
    seen: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for line in lines:
        if "completed" in line:
            seen[line["status"].removeprefix("pulling ")].append((line["completed"], line["total"]))
    return seen


async def test_a_repos_files_download_at_once_up_to_the_bound_with_each_files_progress(
    source: SourceServer, start_agent: StartAgent
) -> None:
    shards = sharded_repo(source, 5)
    agent = await start_agent(hf_endpoint=source.url, parallel_downloads=3)

    pulling = asyncio.create_task(agent.pull("hf://org/sharded"))
    await eventually(lambda: source.sending == 3, "three shards arriving at once")
    # The other two wait for a free slot: no request for them yet.
    assert len(source.gets_of("/cdn/")) == 3
    let_go(shards)
    lines = await pulling

    assert lines[-1] == {"status": "success"}
    assert source.most_sending == 3
    repo = agent.models_dir / LOCAL_PATH
    assert {name: (repo / name).read_bytes() for name in shards} == {n: s.body for n, s in shards.items()}
    # Every file's lines speak of that file alone: its size throughout, its bytes only growing,
    # ending complete; so the sum a follower makes is the repo's size, then all of it.
    progress = completed_by_file(lines)
    assert set(progress) == set(shards)
    for name, seen in progress.items():
        assert {total for _, total in seen} == {len(shards[name].body)}
        completed = [done for done, _ in seen]
        assert completed == sorted(completed) and completed[-1] == len(shards[name].body)


async def test_an_interrupted_repo_resumes_every_file_from_its_own_partial(
    source: SourceServer, start_agent: StartAgent
) -> None:
    shards = sharded_repo(source, 3)
    agent = await start_agent(hf_endpoint=source.url)
    pulling = asyncio.create_task(agent.pull("hf://org/sharded"))
    await eventually(lambda: partials_at(agent.models_dir, list(shards), MiB), "half of every shard on disk")

    await agent.stop()  # as a pod's SIGTERM does

    assert "cancelled" in (await pulling)[-1]["error"]
    let_go(shards)
    restarted = await start_agent(hf_endpoint=source.url, models_dir=agent.models_dir)
    assert (await restarted.pull("hf://org/sharded"))[-1] == {"status": "success"}
    for name, shard in shards.items():
        assert ranges_asked(source, name) == [None, f"bytes={MiB}-"]
        assert (agent.models_dir / LOCAL_PATH / name).read_bytes() == shard.body


async def test_one_failing_file_fails_the_pull_at_once_and_the_others_keep_their_partials(
    source: SourceServer, start_agent: StartAgent
) -> None:
    shards = sharded_repo(source, 3)
    names = list(shards)
    failing = shards[names[2]]
    failing.drop_at = MiB + 2 * CHUNK  # once let go, its connection drops a little further on
    agent = await start_agent(hf_endpoint=source.url)
    pulling = asyncio.create_task(agent.pull("hf://org/sharded"))
    await eventually(lambda: partials_at(agent.models_dir, names, MiB), "half of every shard on disk")

    failing.release.set()
    lines = await pulling  # while the other two are still held: they stopped, they did not finish

    assert names[2] in lines[-1]["error"] and "the partial file is kept" in lines[-1]["error"]
    assert partials_at(agent.models_dir, names[:2], MiB)
    assert not ModelStore(agent.models_dir).is_complete(LOCAL_PATH)
    let_go(shards)
    assert (await agent.pull("hf://org/sharded"))[-1] == {"status": "success"}
    for name in names[:2]:
        assert ranges_asked(source, name) == [None, f"bytes={MiB}-"]
    first, resumed = ranges_asked(source, names[2])
    assert first is None and resumed is not None and int(resumed.strip("bytes=-")) >= MiB
    assert ModelStore(agent.models_dir).is_complete(LOCAL_PATH)


def test_the_bound_comes_from_the_environment_and_a_bad_one_is_refused_by_name() -> None:
    assert settings_from_env(Path("/m"), {}).parallel_downloads == DEFAULT_PARALLEL_DOWNLOADS == 4
    assert settings_from_env(Path("/m"), {"LLMOP_PARALLEL_DOWNLOADS": " 8 "}).parallel_downloads == 8
    assert parse_parallel_downloads("1") == 1  # one file after another
    for bad in ("0", "33", "-2", "four", "1e3", "٣", "9" * 5000):
        with pytest.raises(InvalidAgentSetting, match=r"LLMOP_PARALLEL_DOWNLOADS .* is not a whole number"):
            parse_parallel_downloads(bad)

"""The rest of the agent's API: tags, delete, refusals, one-shot pulls, health, the command line."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from agent_source import SourceFile, SourceServer, StartAgent, random_bytes, sha256_of

from llmop.agent.cli import add_subcommand
from llmop.agent.store import ModelRecord, ModelStore, now


async def test_tags_list_completed_models_and_delete_removes_them(
    source: SourceServer, start_agent: StartAgent
) -> None:
    body = random_bytes(1000)
    source.files["a.gguf"] = SourceFile(body)
    source.repos["org/tiny"] = {"main": {"config.json": SourceFile(b"{}")}}
    agent = await start_agent(hf_endpoint=source.url)
    url_model = source.file_url("a.gguf")
    await agent.pull(url_model)
    await agent.pull("hf://org/tiny")

    tags = {tag["name"]: tag for tag in await agent.tags()}
    assert set(tags) == {url_model, "hf://org/tiny"}
    assert tags[url_model]["model"] == url_model
    assert tags[url_model]["size"] == 1000 and tags[url_model]["digest"] == f"sha256:{sha256_of(body)}"
    assert tags[url_model]["modified_at"]

    deleted = await agent.http.request("DELETE", f"{agent.url}/api/delete", json={"model": "hf://org/tiny"})
    assert deleted.status_code == 200
    assert not (agent.models_dir / "hf/org/tiny/main").exists()
    assert [tag["name"] for tag in await agent.tags()] == [url_model]

    again = await agent.http.request("DELETE", f"{agent.url}/api/delete", json={"name": "hf://org/tiny"})
    assert again.status_code == 404
    assert again.json() == {"error": "model 'hf://org/tiny' not found"}


async def test_tags_ignore_a_record_whose_model_is_not_complete(start_agent: StartAgent) -> None:
    agent = await start_agent()
    store = ModelStore(agent.models_dir)
    (agent.models_dir / "hf/org/tiny/main").mkdir(parents=True)
    store.write_record(
        ModelRecord(
            name="hf://org/tiny", local_path="hf/org/tiny/main", size=1, digest="sha256:00", modified_at=now()
        )
    )
    assert await agent.tags() == []

    store.mark_repo_complete("hf/org/tiny/main", "sha256:00")
    assert [tag["name"] for tag in await agent.tags()] == ["hf://org/tiny"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "the request names no model"),
        ({"model": "qwen3:0.6b"}, "'qwen3:0.6b' is an Ollama model"),
        ({"model": "ftp://host/x.gguf"}, "only hf://, https:// and http:// sources are supported"),
        ({"model": "http://host/x.gguf", "sha256": "xyz"}, "sha256 'xyz' is not 64 hexadecimal digits"),
        ({"model": "hf://org/repo", "sha256": "a" * 64}, "sha256 applies to one file"),
        ({"model": "hf://org/repo", "stream": "sometimes"}, "the request body is not valid"),
        ({"model": "https://host/dir/"}, "is not a file URL"),
        ({"model": "https://host/a/./b.gguf"}, "is not a file URL"),
        ({"model": "https://host:65536/b.gguf"}, "the port is not a number from 1 to 65535"),
    ],
)
async def test_pull_refuses_what_it_cannot_do_with_400_and_a_reason(
    start_agent: StartAgent, body: dict[str, object], message: str
) -> None:
    agent = await start_agent()

    answer = await agent.http.post(f"{agent.url}/api/pull", json=body)

    assert answer.status_code == 400
    assert message in answer.json()["error"]


async def test_pull_without_stream_answers_once_with_the_error(
    source: SourceServer, start_agent: StartAgent
) -> None:
    agent = await start_agent()
    model = source.file_url("missing.gguf")

    answer = await agent.pull_without_stream(model)

    assert answer.status_code == 500
    assert answer.json() == {"error": f"GET {model}: 404 Not Found: no such file: missing.gguf"}


async def test_a_second_pull_demanding_another_digest_is_refused_while_one_runs(
    source: SourceServer, start_agent: StartAgent
) -> None:
    held = SourceFile(random_bytes(2 * 1024 * 1024), hold_at=1024 * 1024)
    source.files["m.gguf"] = held
    agent = await start_agent()
    model = source.file_url("m.gguf")
    first = await agent.http.send(
        agent.http.build_request("POST", f"{agent.url}/api/pull", json={"model": model, "sha256": "a" * 64}),
        stream=True,
    )

    second = await agent.http.post(f"{agent.url}/api/pull", json={"model": model, "sha256": "b" * 64})

    assert second.status_code == 409
    assert "cancel it with DELETE /api/pull first" in second.json()["error"]
    await first.aclose()
    held.release.set()


async def test_startup_with_no_required_models_is_ready_and_health_answers(start_agent: StartAgent) -> None:
    agent = await start_agent()

    assert (await agent.startup()).status_code == 200
    assert (await agent.http.get(f"{agent.url}/healthz")).status_code == 200
    assert "version" in (await agent.http.get(f"{agent.url}/api/version")).json()


async def test_startup_never_counts_a_path_outside_the_models_dir(
    start_agent: StartAgent, tmp_path: Path
) -> None:
    (tmp_path / "outside.gguf").write_bytes(b"x")
    agent = await start_agent(required_models=("../outside.gguf",))

    answer = await agent.startup()

    assert answer.status_code == 503
    assert answer.json()["missing"] == ["../outside.gguf"]


def test_the_agent_subcommand_parses_the_sidecar_arguments() -> None:
    parser = argparse.ArgumentParser(prog="llmop")
    add_subcommand(parser.add_subparsers(dest="command"))

    args = parser.parse_args(["agent", "--models-dir", "/models", "--port", "8090"])

    assert args.command == "agent"
    assert args.models_dir == Path("/models") and args.port == 8090 and args.host == "0.0.0.0"
    assert callable(args.func)

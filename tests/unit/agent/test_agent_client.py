"""The operator's side of the agent: the Ollama adapter's pull, under the agent's own name."""

from __future__ import annotations

import httpx
import pytest
from agent_source import SourceFile, SourceServer, StartAgent, random_bytes, sha256_of

from llmop.runtimes import PullFailed, RuntimeAPIError
from llmop.runtimes.agent import connect_agent

TOKEN = "the-operators-token"


async def test_the_operator_pulls_through_the_agent_and_reads_its_progress(
    source: SourceServer, start_agent: StartAgent
) -> None:
    body = random_bytes(256 * 1024)
    source.files["m.gguf"] = SourceFile(body)
    agent = await start_agent(token=TOKEN)
    async with httpx.AsyncClient() as client:
        runtime = connect_agent(agent.url, token=TOKEN, client=client)
        probe = await runtime.probe()
        lines = [line async for line in runtime.pull(source.file_url("m.gguf"), sha256=sha256_of(body))]
    assert probe.serving and "the llmop agent at" in probe.reason
    assert lines[-1].done
    assert max(line.completed or 0 for line in lines) == len(body)


async def test_a_failed_pull_names_the_agent_and_quotes_the_source(
    source: SourceServer, start_agent: StartAgent
) -> None:
    agent = await start_agent(token=TOKEN)
    model = source.file_url("absent.gguf")
    async with httpx.AsyncClient() as client:
        runtime = connect_agent(agent.url, token=TOKEN, client=client)
        with pytest.raises(PullFailed) as failed:
            async for _ in runtime.pull(model):
                pass
    message = str(failed.value)
    assert message.startswith(f"the llmop agent at {agent.url} failed to pull {model!r}: ")
    assert "404 Not Found: no such file: absent.gguf" in message


async def test_a_client_without_the_token_is_refused_and_moves_no_byte(
    source: SourceServer, start_agent: StartAgent
) -> None:
    source.files["m.gguf"] = SourceFile(random_bytes(1024))
    agent = await start_agent(token=TOKEN)
    async with httpx.AsyncClient() as client:
        for token in (None, "a-guess"):
            runtime = connect_agent(agent.url, token=token, client=client)
            with pytest.raises(RuntimeAPIError) as refused:
                async for _ in runtime.pull(source.file_url("m.gguf")):
                    pass
            assert "401" in str(refused.value) and "operator only" in str(refused.value)
    assert source.seen == [] and not list(agent.models_dir.rglob("*.gguf*"))

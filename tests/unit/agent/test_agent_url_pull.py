"""Pulling one file from an HTTP server: progress, verification, resume, failures, cancellation."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from agent_source import CHUNK, SourceFile, SourceServer, StartAgent, eventually, random_bytes, sha256_of

from llmop.agent.store import ModelStore
from llmop.sources import parse_model_source

MiB = 1024 * 1024


def local_file(agent_models_dir: Any, model: str) -> Any:
    return agent_models_dir / parse_model_source(model).local_path


def partial_file(agent_models_dir: Any, model: str) -> Any:
    """Where the agent gathers the bytes of a URL's file until they are verified."""
    return ModelStore(agent_models_dir).partial_of(parse_model_source(model).local_path, "")


def progress_of(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in lines if "completed" in line]


async def test_pull_streams_rising_progress_then_success_and_lands_the_verified_file(
    source: SourceServer, start_agent: StartAgent
) -> None:
    body = random_bytes(3 * MiB)
    source.files["tiny.gguf"] = SourceFile(body, delay=0.01)  # 48 chunks over about half a second
    agent = await start_agent()
    model = source.file_url("tiny.gguf")

    lines = await agent.pull(model, sha256=sha256_of(body))

    assert lines[0] == {"status": "pulling manifest"}
    assert lines[-1] == {"status": "success"}
    progress = progress_of(lines)
    assert progress[0]["status"] == "pulling tiny.gguf"
    assert progress[0]["digest"] == f"sha256:{sha256_of(body)}"
    completed = [line["completed"] for line in progress]
    assert completed == sorted(completed) and completed[-1] == len(body)
    assert progress[-1]["total"] == len(body)
    # Bounded rate (one line per 0.25 s, plus the first and the last), never one line per chunk.
    assert len(progress) < (len(body) // CHUNK) / 2
    assert {"status": "verifying sha256 digest"} in lines
    assert lines.index({"status": "verifying sha256 digest"}) > lines.index(progress[-1])

    landed = local_file(agent.models_dir, model)
    assert landed.read_bytes() == body
    assert not partial_file(agent.models_dir, model).exists()
    [tag] = await agent.tags()
    assert tag["name"] == model and tag["size"] == len(body)
    assert tag["digest"] == f"sha256:{sha256_of(body)}"


async def test_a_dropped_connection_fails_the_pull_and_the_next_pull_resumes_with_a_range(
    source: SourceServer, start_agent: StartAgent
) -> None:
    body = random_bytes(3 * MiB)
    source.files["m.gguf"] = SourceFile(body, drop_at=2 * MiB + 12345)
    model = source.file_url("m.gguf")
    agent = await start_agent(required_models=(parse_model_source(model).local_path,))
    landed = local_file(agent.models_dir, model)
    partial = partial_file(agent.models_dir, model)

    failed = await agent.pull(model)

    error = failed[-1]["error"]
    assert error.startswith(f"GET {model}: ") and "the next pull resumes" in error
    assert not landed.exists()
    kept = partial.stat().st_size
    assert 0 < kept < len(body) and partial.read_bytes() == body[:kept]
    assert (await agent.startup()).status_code == 503

    resumed = await agent.pull(model)

    assert resumed[-1] == {"status": "success"}
    assert source.ranges_asked("/files/m.gguf") == [None, f"bytes={kept}-"]
    # The follower sees the resumed file start where the partial ended, not at zero.
    assert progress_of(resumed)[0]["completed"] == kept
    assert landed.read_bytes() == body
    assert not partial.exists()
    assert (await agent.startup()).status_code == 200


async def test_a_silent_source_fails_after_the_read_timeout_keeping_every_byte_it_sent(
    source: SourceServer, start_agent: StartAgent
) -> None:
    body = random_bytes(2 * MiB)
    # Less than a write batch: bytes still gathering for the disk when the source fell silent.
    sent = MiB // 2 + 12345
    held = SourceFile(body, hold_at=sent)
    source.files["m.gguf"] = held
    model = source.file_url("m.gguf")
    agent = await start_agent(read_timeout=1)
    partial = partial_file(agent.models_dir, model)

    failed = await agent.pull(model)

    assert failed[-1] == {
        "error": f"GET {model}: the source sent nothing for 1s after {sent} of {len(body)} bytes; "
        "the partial file is kept and the next pull resumes from it"
    }
    assert partial.read_bytes() == body[:sent]
    held.release.set()
    held.hold_at = None
    assert (await agent.pull(model))[-1] == {"status": "success"}
    assert source.ranges_asked("/files/m.gguf") == [None, f"bytes={sent}-"]
    assert local_file(agent.models_dir, model).read_bytes() == body


async def test_a_source_that_changed_since_the_partial_restarts_the_file(
    source: SourceServer, start_agent: StartAgent
) -> None:
    old, new = random_bytes(2 * MiB), random_bytes(2 * MiB)
    source.files["m.gguf"] = SourceFile(old, etag='"v1"', drop_at=MiB + 1)
    model = source.file_url("m.gguf")
    agent = await start_agent()
    assert "error" in (await agent.pull(model))[-1]

    source.files["m.gguf"] = SourceFile(new, etag='"v2"')
    assert (await agent.pull(model))[-1] == {"status": "success"}

    resume = source.gets_of("/files/m.gguf")[-1]
    assert resume.headers["If-Range"] == '"v1"'  # the source answered 200: a different file now
    assert local_file(agent.models_dir, model).read_bytes() == new


async def test_a_source_without_ranges_sends_the_whole_file_again(
    source: SourceServer, start_agent: StartAgent
) -> None:
    body = random_bytes(2 * MiB)
    source.files["m.gguf"] = SourceFile(body, drop_at=MiB + 1, honours_range=False)
    model = source.file_url("m.gguf")
    agent = await start_agent()
    await agent.pull(model)

    assert (await agent.pull(model))[-1] == {"status": "success"}
    assert local_file(agent.models_dir, model).read_bytes() == body


async def test_a_partial_holding_every_byte_is_verified_and_landed_after_a_416(
    source: SourceServer, start_agent: StartAgent
) -> None:
    """The agent stopped between the last byte and the rename."""
    body = random_bytes(MiB)
    source.files["m.gguf"] = SourceFile(body)
    model = source.file_url("m.gguf")
    agent = await start_agent()
    landed = local_file(agent.models_dir, model)
    partial = partial_file(agent.models_dir, model)
    partial.parent.mkdir(parents=True)
    partial.write_bytes(body)

    lines = await agent.pull(model, sha256=sha256_of(body))

    assert lines[-1] == {"status": "success"}
    assert source.ranges_asked("/files/m.gguf") == [f"bytes={len(body)}-"]
    assert landed.read_bytes() == body


async def test_a_wrong_sha256_fails_naming_both_digests_and_leaves_nothing_complete(
    source: SourceServer, start_agent: StartAgent
) -> None:
    body = random_bytes(MiB)
    source.files["m.gguf"] = SourceFile(body)
    model = source.file_url("m.gguf")
    agent = await start_agent(required_models=(parse_model_source(model).local_path,))
    wrong = "ab" * 32

    lines = await agent.pull(model, sha256=wrong)

    assert lines[-1] == {"error": f"sha256 mismatch for m.gguf: expected {wrong}, got {sha256_of(body)}"}
    landed = local_file(agent.models_dir, model)
    assert not landed.exists() and not partial_file(agent.models_dir, model).exists()
    assert await agent.tags() == []
    assert (await agent.startup()).status_code == 503


async def test_a_404_ends_the_pull_with_the_sources_own_words(
    source: SourceServer, start_agent: StartAgent
) -> None:
    agent = await start_agent()
    model = source.file_url("missing.gguf")

    lines = await agent.pull(model)

    assert lines == [
        {"status": "pulling manifest"},
        {"status": "pulling missing.gguf", "digest": "missing.gguf", "completed": 0},
        {"error": f"GET {model}: 404 Not Found: no such file: missing.gguf"},
    ]


async def test_an_unreachable_source_is_named_in_the_error(start_agent: StartAgent) -> None:
    agent = await start_agent()
    model = "http://127.0.0.1:9/nowhere.gguf"  # the discard port: nothing listens

    lines = await agent.pull(model)

    assert lines[-1] == {"error": f"GET {model}: cannot connect to 127.0.0.1:9: Connection refused"}


async def test_startup_answers_503_naming_what_is_missing_until_the_model_is_complete(
    source: SourceServer, start_agent: StartAgent
) -> None:
    body = random_bytes(2 * MiB)
    held = SourceFile(body, hold_at=MiB)
    source.files["m.gguf"] = held
    model = source.file_url("m.gguf")
    local_path = parse_model_source(model).local_path
    agent = await start_agent(required_models=(local_path,))
    partial = partial_file(agent.models_dir, model)

    before = await agent.startup()
    assert before.status_code == 503
    assert before.json() == {"ready": False, "missing": [local_path], "complete": []}

    pulling = asyncio.create_task(agent.pull(model))
    await eventually(lambda: partial.exists() and partial.stat().st_size == MiB, "half the file on disk")
    assert (await agent.startup()).status_code == 503

    held.release.set()
    assert (await pulling)[-1] == {"status": "success"}
    after = await agent.startup()
    assert after.status_code == 200
    assert after.json() == {"ready": True, "complete": [local_path]}


async def test_delete_cancels_the_transfer_and_keeps_the_partial_for_a_resume(
    source: SourceServer, start_agent: StartAgent
) -> None:
    body = random_bytes(2 * MiB)
    held = SourceFile(body, hold_at=MiB)
    source.files["m.gguf"] = held
    model = source.file_url("m.gguf")
    agent = await start_agent()
    partial = partial_file(agent.models_dir, model)

    pulling = asyncio.create_task(agent.pull(model))
    await eventually(lambda: partial.exists() and partial.stat().st_size == MiB, "half the file on disk")
    cancelled = await agent.http.delete(f"{agent.url}/api/pull", params={"model": model})

    assert cancelled.status_code == 200
    lines = await pulling
    assert "cancelled" in lines[-1]["error"]
    assert partial.stat().st_size == MiB
    again = await agent.http.request("DELETE", f"{agent.url}/api/pull", json={"model": model})
    assert again.status_code == 404
    assert again.json() == {"error": f"no pull of {model} is in progress"}

    held.release.set()
    held.hold_at = None
    assert (await agent.pull(model))[-1] == {"status": "success"}
    assert source.ranges_asked("/files/m.gguf") == [None, f"bytes={MiB}-"]
    assert local_file(agent.models_dir, model).read_bytes() == body


async def test_concurrent_pulls_share_one_transfer_and_a_leaving_client_cancels_nothing(
    source: SourceServer, start_agent: StartAgent
) -> None:
    body = random_bytes(2 * MiB)
    held = SourceFile(body, hold_at=MiB)
    source.files["m.gguf"] = held
    model = source.file_url("m.gguf")
    agent = await start_agent()
    partial = partial_file(agent.models_dir, model)

    # The first client reads one line and hangs up, as an operator restarting would.
    async with agent.http.stream("POST", f"{agent.url}/api/pull", json={"model": model}) as first:
        async for line in first.aiter_lines():
            assert json.loads(line) == {"status": "pulling manifest"}
            break
    await eventually(lambda: partial.exists() and partial.stat().st_size == MiB, "half the file on disk")

    second = asyncio.create_task(agent.pull(model))
    third = asyncio.create_task(agent.pull_without_stream(model))
    await asyncio.sleep(0.1)
    held.release.set()

    lines = await second
    assert lines[0] == {"status": "pulling manifest"}  # a late follower still sees the whole story
    assert lines[-1] == {"status": "success"}
    assert progress_of(lines)[-1]["completed"] == len(body)
    answered = await third
    assert answered.status_code == 200 and answered.json() == {"status": "success"}
    assert len(source.gets_of("/files/m.gguf")) == 1
    assert local_file(agent.models_dir, model).read_bytes() == body


async def test_a_complete_model_is_pulled_again_without_asking_the_source(
    source: SourceServer, start_agent: StartAgent
) -> None:
    body = random_bytes(MiB)
    source.files["m.gguf"] = SourceFile(body)
    model = source.file_url("m.gguf")
    agent = await start_agent()
    await agent.pull(model)
    asked = len(source.seen)

    lines = await agent.pull(model, sha256=sha256_of(body))

    assert lines[-1] == {"status": "success"}
    assert progress_of(lines) == [
        {
            "status": "pulling m.gguf",
            "digest": f"sha256:{sha256_of(body)}",
            "total": len(body),
            "completed": len(body),
        }
    ]
    assert len(source.seen) == asked


async def test_the_token_never_goes_to_a_plain_url_source(
    source: SourceServer, start_agent: StartAgent
) -> None:
    source.files["m.gguf"] = SourceFile(random_bytes(1000))
    agent = await start_agent(hf_token="hf_secret")

    await agent.pull(source.file_url("m.gguf"))

    assert "Authorization" not in source.gets_of("/files/m.gguf")[0].headers


async def test_stopping_the_agent_ends_its_followers_and_a_new_agent_resumes_the_partial(
    source: SourceServer, start_agent: StartAgent
) -> None:
    body = random_bytes(2 * MiB)
    held = SourceFile(body, hold_at=MiB)
    source.files["m.gguf"] = held
    model = source.file_url("m.gguf")
    agent = await start_agent()
    partial = partial_file(agent.models_dir, model)
    pulling = asyncio.create_task(agent.pull(model))
    await eventually(lambda: partial.exists() and partial.stat().st_size == MiB, "half the file on disk")

    async with asyncio.timeout(3):  # well within a pod's termination grace period
        await agent.stop()

    assert "cancelled" in (await pulling)[-1]["error"]
    assert partial.stat().st_size == MiB
    held.release.set()
    held.hold_at = None
    restarted = await start_agent(models_dir=agent.models_dir)
    assert (await restarted.pull(model))[-1] == {"status": "success"}
    assert source.ranges_asked("/files/m.gguf")[-1] == f"bytes={MiB}-"
    assert local_file(agent.models_dir, model).read_bytes() == body

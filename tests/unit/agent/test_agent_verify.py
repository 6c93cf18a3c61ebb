"""The agent checks a complete model's bytes again on request (a cache's filler, after it starts):
a model whose bytes changed on disk is removed, so the next pull replaces it."""

from __future__ import annotations

import os

from agent_source import SourceFile, SourceServer, StartAgent, random_bytes


async def test_an_unchanged_model_verifies_and_a_changed_one_is_removed_then_pulled_again(
    source: SourceServer, start_agent: StartAgent
) -> None:
    body = random_bytes(4000)
    source.files["a.gguf"] = SourceFile(body)
    source.repos["org/tiny"] = {
        "main": {"config.json": SourceFile(b"{}"), "w.bin": SourceFile(random_bytes(3000))}
    }
    agent = await start_agent(hf_endpoint=source.url)
    model = source.file_url("a.gguf")
    await agent.pull(model)
    await agent.pull("hf://org/tiny")

    for name in (model, "hf://org/tiny"):
        answer = await agent.http.post(f"{agent.url}/api/verify", json={"model": name})
        assert answer.json() == {"verified": True, "corrupt": []}, name

    (local,) = [tag["details"]["local_path"] for tag in await agent.tags() if tag["name"] == model]
    on_disk = agent.models_dir / local
    on_disk.write_bytes(b"X" + body[1:])  # one byte changed, size unchanged
    weights = agent.models_dir / "hf/org/tiny/main/w.bin"
    weights.write_bytes(weights.read_bytes()[:-1] + b"Y")

    answer = await agent.http.post(f"{agent.url}/api/verify", json={"model": model})
    assert answer.json() == {"verified": False, "corrupt": [local]}
    answer = await agent.http.post(f"{agent.url}/api/verify", json={"model": "hf://org/tiny"})
    assert answer.json() == {"verified": False, "corrupt": ["hf/org/tiny/main/w.bin"]}
    assert await agent.tags() == [], "a changed model is no longer listed as complete"
    assert not on_disk.exists()

    await agent.pull(model)
    assert on_disk.read_bytes() == body
    missing = await agent.http.post(f"{agent.url}/api/verify", json={"model": source.file_url("other.gguf")})
    assert missing.status_code == 404


async def test_tags_name_the_files_written_since_they_were_verified_until_a_check_clears_them(
    source: SourceServer, start_agent: StartAgent
) -> None:
    source.repos["org/tiny"] = {
        "main": {"config.json": SourceFile(b"{}"), "w.bin": SourceFile(random_bytes(3000))}
    }
    agent = await start_agent(hf_endpoint=source.url)
    await agent.pull("hf://org/tiny")
    (tag,) = await agent.tags()
    assert tag["details"]["changed"] == []

    weights = agent.models_dir / "hf/org/tiny/main/w.bin"
    original = weights.read_bytes()
    weights.write_bytes(b"Z" + original[1:])  # same size, and the old mtime put back by hand
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns - 10**9))
    (tag,) = await agent.tags()
    assert tag["details"]["changed"] == ["hf/org/tiny/main/w.bin"]

    # Written back to the very bytes it had: the check finds them right and clears the flag.
    weights.write_bytes(original)
    answer = await agent.http.post(f"{agent.url}/api/verify", json={"model": "hf://org/tiny"})
    assert answer.json() == {"verified": True, "corrupt": []}
    (tag,) = await agent.tags()
    assert tag["details"]["changed"] == []

    weights.unlink()
    assert [t["details"]["changed"] for t in await agent.tags()] == [["hf/org/tiny/main/w.bin"]]

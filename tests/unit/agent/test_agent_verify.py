"""The agent checks a complete model's bytes again on request (a cache's filler, after it starts):
a model whose bytes changed on disk is removed, so the next pull replaces it."""

from __future__ import annotations

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

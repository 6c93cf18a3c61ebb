"""Only the operator drives the agent: its token on every request but the kubelet's probes, and
only the models the backend declares."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from agent_source import SourceFile, SourceServer, StartAgent, random_bytes

from llmop.agent.cli import run_agent
from llmop.agent.server import UndeclaredModel, check_declared
from llmop.agent.settings import InvalidAgentSetting, parse_declared_models, read_token_file
from llmop.sources import parse_model_source

TOKEN = "s3cret-token"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
GUARDED = [
    ("POST", "/api/pull", {"model": "https://example.com/m.gguf"}),
    ("DELETE", "/api/pull", {"model": "https://example.com/m.gguf"}),
    ("GET", "/api/tags", None),
    ("DELETE", "/api/delete", {"model": "https://example.com/m.gguf"}),
    ("GET", "/api/version", None),
]


@pytest.mark.parametrize(("method", "path", "body"), GUARDED)
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": TOKEN},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": b"Bearer \xff\xfe"},
    ],
)
async def test_every_request_without_the_token_gets_401_in_json(
    start_agent: StartAgent, method: str, path: str, body: object, headers: dict[str, Any]
) -> None:
    agent = await start_agent(token=TOKEN)

    answer = await agent.http.request(method, f"{agent.url}{path}", json=body, headers=headers)

    assert answer.status_code == 401, answer.text
    assert "operator only" in answer.json()["error"]
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")


async def test_a_pull_without_the_token_starts_no_transfer(
    source: SourceServer, start_agent: StartAgent
) -> None:
    source.files["m.gguf"] = SourceFile(random_bytes(4096))
    agent = await start_agent(token=TOKEN)

    refused = await agent.http.post(f"{agent.url}/api/pull", json={"model": source.file_url("m.gguf")})

    assert refused.status_code == 401
    assert source.seen == []
    assert [path for path in agent.models_dir.rglob("*") if path.is_file()] == []
    tags = await agent.http.get(f"{agent.url}/api/tags", headers=BEARER)
    assert tags.json() == {"models": []}


async def test_the_kubelets_probes_need_no_token(start_agent: StartAgent) -> None:
    agent = await start_agent(token=TOKEN, required_models=("url/example.com/m.gguf",))

    startup = await agent.http.get(f"{agent.url}/startup")
    health = await agent.http.get(f"{agent.url}/healthz")

    assert startup.status_code == 503 and startup.json()["missing"] == ["url/example.com/m.gguf"]
    assert health.status_code == 200


async def test_with_the_token_a_pull_works_as_before(source: SourceServer, start_agent: StartAgent) -> None:
    body = random_bytes(8192)
    source.files["m.gguf"] = SourceFile(body)
    model = source.file_url("m.gguf")
    agent = await start_agent(token=TOKEN, declared_models=(model,))

    answer = await agent.http.post(
        f"{agent.url}/api/pull", json={"model": model, "stream": False}, headers=BEARER
    )

    assert answer.status_code == 200, answer.text
    tags = (await agent.http.get(f"{agent.url}/api/tags", headers=BEARER)).json()["models"]
    assert [tag["name"] for tag in tags] == [model] and tags[0]["size"] == len(body)


async def test_a_model_the_backend_does_not_declare_gets_403_and_no_transfer(
    source: SourceServer, start_agent: StartAgent
) -> None:
    source.files["other.gguf"] = SourceFile(random_bytes(4096))
    agent = await start_agent(token=TOKEN, declared_models=("hf://org/repo/m.gguf",))

    answer = await agent.http.post(
        f"{agent.url}/api/pull", json={"model": source.file_url("other.gguf")}, headers=BEARER
    )

    assert answer.status_code == 403
    assert "not among the models this backend declares" in answer.json()["error"]
    assert "spec.models" in answer.json()["error"]
    assert source.seen == []


@pytest.mark.parametrize(
    ("declared", "asked", "allowed"),
    [
        ("hf://org/repo@v1", "hf://org/repo@v1/a.gguf", True),
        ("hf://org/repo@v1", "hf://org/repo@v2/a.gguf", False),
        ("hf://org/repo", "hf://org/repo-evil/a.gguf", False),
        ("hf://org/repo/a.gguf", "hf://org/repo/a.gguf", True),
        ("hf://org/repo/a.gguf", "hf://org/repo/b.gguf", False),
        ("https://host/m.gguf", "https://host/m.gguf", True),
        ("not a source", "https://host/m.gguf", False),
    ],
)
def test_a_pull_may_name_a_declared_model_or_a_file_of_a_declared_repo(
    declared: str, asked: str, allowed: bool
) -> None:
    source = parse_model_source(asked)
    if allowed:
        check_declared(source, (declared,))
    else:
        with pytest.raises(UndeclaredModel):
            check_declared(source, (declared,))


def test_declared_models_are_a_json_list_and_anything_else_is_refused() -> None:
    assert parse_declared_models(None) is None
    assert parse_declared_models('["https://h/a,b.gguf"]') == ("https://h/a,b.gguf",)
    for bad in ("hf://org/repo", '{"a": 1}', "[1]"):
        with pytest.raises(InvalidAgentSetting, match="LLMOP_DECLARED_MODELS"):
            parse_declared_models(bad)


def test_the_token_file_must_hold_a_token(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text(f"{TOKEN}\n")
    assert read_token_file(token) == TOKEN
    token.write_text("  \n")
    with pytest.raises(InvalidAgentSetting, match="is empty"):
        read_token_file(token)
    with pytest.raises(InvalidAgentSetting, match="cannot read"):
        read_token_file(tmp_path / "absent")


def test_the_agent_does_not_start_with_a_missing_token_file(tmp_path: Path) -> None:
    import argparse

    args = argparse.Namespace(
        models_dir=tmp_path / "models", port=0, host="127.0.0.1", token_file=tmp_path / "absent"
    )
    assert run_agent(args) == 2

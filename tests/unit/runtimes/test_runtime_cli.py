"""`llmop probe`, `llmop models` and `llmop pull`: what a person at a terminal and a script see."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp import web
from fake_runtimes import json_reply

from llmop.runtimes.cli import main

LLAMACPP_ROUTES = {
    "GET /health": {"status": "ok"},
    "GET /v1/models": {"data": [{"id": "tiny.gguf", "meta": {"n_ctx_train": 2048, "size": 640000}}]},
    "GET /props": {"default_generation_settings": {"n_ctx": 512}, "chat_template": ""},
}


async def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    # The command runs its own event loop, as it does from a shell; keep it off the test's loop.
    code = await asyncio.to_thread(main, list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


async def test_probe_serving_prints_a_table_and_exits_0(fake_runtime, capsys) -> None:
    server = await fake_runtime(LLAMACPP_ROUTES)
    code, out, _ = await run_cli(capsys, "probe", "--url", server.url, "--runtime", "llamacpp")
    assert code == 0
    header, row = out.splitlines()
    assert header.split() == ["STATE", "HTTP", "LATENCY", "REASON"]
    assert row.split()[:2] == ["serving", "200"]


async def test_probe_not_serving_exits_1_with_the_reason(closed_port_url, capsys) -> None:
    code, out, _ = await run_cli(capsys, "probe", "--url", closed_port_url, "--runtime", "vllm", "--json")
    assert code == 1
    result = json.loads(out)
    assert result["state"] == "starting"
    assert result["serving"] is False
    assert "refused the connection" in result["reason"]


async def test_probe_wait_reports_each_state_change(fake_runtime, capsys) -> None:
    answers = iter([503, 503, 200])

    async def health(request: web.Request) -> web.Response:
        status = next(answers, 200)
        return json_reply(
            {"error": {"message": "Loading model"}} if status == 503 else {"status": "ok"}, status
        )

    server = await fake_runtime({"GET /health": health})
    code, out, err = await run_cli(
        capsys, "probe", "--url", server.url, "--runtime", "llamacpp", "--wait", "30s"
    )
    assert code == 0
    assert err.count("waiting: loading") == 1
    assert "serving" in out


async def test_api_key_comes_from_the_named_variable(fake_runtime, capsys, monkeypatch) -> None:
    server = await fake_runtime(LLAMACPP_ROUTES)
    monkeypatch.setenv("MY_RUNTIME_KEY", "s3cret")
    code, _, _ = await run_cli(
        capsys, "models", "--url", server.url, "--runtime", "llamacpp", "--api-key-env", "MY_RUNTIME_KEY"
    )
    assert code == 0
    assert server.requests[0].headers["Authorization"] == "Bearer s3cret"


async def test_unset_key_variable_is_a_usage_error(capsys, monkeypatch) -> None:
    monkeypatch.delenv("NO_SUCH_KEY", raising=False)
    code, _, err = await run_cli(
        capsys, "probe", "--url", "http://127.0.0.1:1", "--runtime", "vllm", "--api-key-env", "NO_SUCH_KEY"
    )
    assert code == 2
    assert "NO_SUCH_KEY is not set" in err


async def test_unknown_runtime_is_a_usage_error_listing_kinds(capsys) -> None:
    code, _, err = await run_cli(capsys, "probe", "--url", "http://127.0.0.1:1", "--runtime", "triton")
    assert code == 2
    assert "unknown runtime kind 'triton'" in err and "llamacpp" in err


async def test_bad_wait_duration_is_rejected_by_argparse(capsys) -> None:
    with pytest.raises(SystemExit) as caught:
        await run_cli(capsys, "probe", "--url", "http://127.0.0.1:1", "--runtime", "vllm", "--wait", "soon")
    assert caught.value.code == 2
    assert "not a duration" in capsys.readouterr().err


async def test_models_table(fake_runtime, capsys) -> None:
    server = await fake_runtime(LLAMACPP_ROUTES)
    code, out, _ = await run_cli(capsys, "models", "--url", server.url, "--runtime", "llamacpp")
    assert code == 0
    header, row = out.splitlines()
    assert header.split() == ["NAME", "SIZE", "CONTEXT", "CAPABILITIES", "DIGEST", "MODIFIED"]
    assert row.split() == ["tiny.gguf", "640.0", "KB", "512", "chat,completion", "-", "-"]


async def test_models_json(fake_runtime, capsys) -> None:
    server = await fake_runtime(LLAMACPP_ROUTES)
    code, out, _ = await run_cli(capsys, "models", "--url", server.url, "--runtime", "llamacpp", "--json")
    assert code == 0
    (model,) = json.loads(out)
    assert model["name"] == "tiny.gguf"
    assert model["context_length"] == 512
    assert model["trained_context_length"] == 2048
    assert model["capabilities"] == ["chat", "completion"]


async def test_models_running(fake_runtime, capsys) -> None:
    ps = {"models": [{"name": "qwen3:0.6b", "size": 2_000_000_000, "size_vram": 1_500_000_000}]}
    server = await fake_runtime({"GET /api/ps": ps})
    code, out, _ = await run_cli(capsys, "models", "--url", server.url, "--runtime", "ollama", "--running")
    assert code == 0
    assert out.splitlines()[1].split() == ["qwen3:0.6b", "2.0", "GB", "1.5", "GB", "-", "-"]


async def test_models_failure_exits_1_with_the_error(closed_port_url, capsys) -> None:
    code, out, err = await run_cli(capsys, "models", "--url", closed_port_url, "--runtime", "ollama")
    assert code == 1
    assert out == ""
    assert err.startswith("error: Ollama at") and "refused the connection" in err


async def pull_stream(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)
    model = (await request.json())["model"]
    lines = [{"status": "pulling manifest"}]
    lines += [
        {"status": "pulling aaaaaaaaaaaa", "digest": "sha256:" + "a" * 64, "total": 2000, "completed": done}
        for done in (0, 500, 1000, 1500, 2000)
    ]
    if model == "broken":
        lines.append({"error": "digest mismatch, file must be downloaded again"})
    else:
        lines += [
            {"status": "verifying sha256 digest"},
            {"status": "writing manifest"},
            {"status": "success"},
        ]
    for line in lines:
        await response.write(json.dumps(line).encode() + b"\n")
    return response


async def test_pull_prints_progress_lines(fake_runtime, capsys) -> None:
    server = await fake_runtime({"POST /api/pull": pull_stream})
    code, out, _ = await run_cli(capsys, "pull", "--url", server.url, "--runtime", "ollama", "tiny:latest")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "pulling manifest"
    assert "pulling aaaaaaaaaaaa  2.0 KB / 2.0 KB  100%" in lines
    assert lines[-1] == "success"
    assert len(lines) < 10  # progress is throttled, the layer's last line always shown


async def test_pull_json_is_one_object_per_line(fake_runtime, capsys) -> None:
    server = await fake_runtime({"POST /api/pull": pull_stream})
    code, out, _ = await run_cli(
        capsys, "pull", "--url", server.url, "--runtime", "ollama", "tiny:latest", "--json", "--insecure"
    )
    assert code == 0
    progress = [json.loads(line) for line in out.splitlines()]
    assert progress[2] == {
        "status": "pulling aaaaaaaaaaaa",
        "digest": "sha256:" + "a" * 64,
        "completed": 500,
        "total": 2000,
    }
    assert progress[-1]["status"] == "success"
    assert server.bodies("/api/pull") == [{"model": "tiny:latest", "insecure": True, "stream": True}]


async def test_pull_failure_exits_1_with_the_runtimes_text(fake_runtime, capsys) -> None:
    server = await fake_runtime({"POST /api/pull": pull_stream})
    code, _, err = await run_cli(capsys, "pull", "--url", server.url, "--runtime", "ollama", "broken")
    assert code == 1
    assert "digest mismatch, file must be downloaded again" in err


async def test_pull_on_a_runtime_that_cannot_says_so(capsys) -> None:
    code, _, err = await run_cli(capsys, "pull", "--url", "http://127.0.0.1:1", "--runtime", "vllm", "org/m")
    assert code == 1
    assert "vLLM does not support pulling models" in err

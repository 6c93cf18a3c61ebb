"""The OpenAI-compatible profiles (tgi, sglang, localai, lmstudio) against stand-ins of those servers
(hack/standins/openai_servers.py, written from each server's source or docs: none of them runs
here), and the stand-ins against the real `openai` client, so both sides keep to the protocol.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from runtime_processes import HACK, VENV_BIN, RuntimeProcess

from llmop.runtimes import AuthFailed, ModelNotFound, ProbeResult, ProbeState, RuntimeAPIError, connect
from support.runtimes import run_openai_standin

FLAVORS = ["tgi", "sglang", "localai", "lmstudio"]
#: What each serves: TGI and SGLang one model, LocalAI and LM Studio several (one of them for embeddings).
MODELS = {
    "tgi": ["Qwen/Qwen3-0.6B"],
    "sglang": ["Qwen/Qwen3-0.6B"],
    "localai": ["qwen3-0.6b", "nomic-embed-text-v1.5"],
    "lmstudio": ["qwen/qwen3-0.6b", "text-embedding-nomic-embed-text-v1.5"],
}
KEY = "sk-the-right-one"
CONTEXT = 2048

StandIn = Callable[..., RuntimeProcess]


@pytest.fixture
def openai_standin(runtime_processes: Callable[..., RuntimeProcess]) -> StandIn:
    """An unstarted stand-in of one flavor serving MODELS[flavor]; extra arguments are appended."""
    script = HACK / "standins" / "openai_servers.py"

    def make(flavor: str, *extra: str) -> RuntimeProcess:
        argv = [str(VENV_BIN / "python"), str(script), "--flavor", flavor, "--host", "127.0.0.1"]
        argv += ["--port", "{port}", "--max-model-len", str(CONTEXT)]
        for model in MODELS[flavor]:
            argv += ["--model", model]
        return runtime_processes(flavor, [*argv, *extra])

    return make


@pytest.mark.parametrize("flavor", FLAVORS)
async def test_probe_serves_and_lists_the_models(openai_standin: StandIn, flavor: str) -> None:
    server = openai_standin(flavor).start()
    async with connect(flavor, server.url + "/v1") as runtime:
        result = await runtime.wait_ready(30, max_interval=0.2)
        assert result.serving, server.log_tail()
        models = await runtime.list_models()
    assert [model.name for model in models] == MODELS[flavor]
    if flavor == "sglang":  # the only one of the four whose /v1/models carries the context length
        assert models[0].context_length == CONTEXT


@pytest.mark.parametrize(
    ("flavor", "options", "phases"),
    [
        # TGI's router binds its port only once the shards are warmed up.
        ("tgi", ("--bind-delay", "1"), [ProbeState.STARTING, ProbeState.SERVING]),
        # SGLang: port closed while weights load, then /health 503 while warming up.
        (
            "sglang",
            ("--bind-delay", "0.5", "--loading-seconds", "1"),
            [ProbeState.STARTING, ProbeState.LOADING, ProbeState.SERVING],
        ),
        # LocalAI: /readyz 503 {"status": "starting"} during the startup preload.
        (
            "localai",
            ("--bind-delay", "0.5", "--loading-seconds", "1"),
            [ProbeState.STARTING, ProbeState.LOADING, ProbeState.SERVING],
        ),
    ],
)
async def test_cold_start(
    openai_standin: StandIn, flavor: str, options: tuple[str, ...], phases: list[ProbeState]
) -> None:
    server = openai_standin(flavor, *options).start()
    seen: list[ProbeResult] = []
    async with connect(flavor, server.url) as runtime:
        result = await runtime.wait_ready(60, initial_interval=0.05, max_interval=0.1, on_probe=seen.append)
    assert result.serving, server.log_tail()
    states = [probe.state for probe in seen]
    assert [state for i, state in enumerate(states) if i == 0 or states[i - 1] is not state] == phases


async def test_lmstudio_loads_while_its_model_list_answers(openai_standin: StandIn) -> None:
    """LM Studio has no health endpoint and lists downloaded models whatever their state; only its
    own /api/v0/models tells a loading model from a loaded one."""
    server = openai_standin("lmstudio", "--loading-seconds", "1.5").start()
    async with connect("lmstudio", server.url) as runtime:
        assert (await runtime.wait_ready(30, max_interval=0.1)).serving, server.log_tail()
        async with httpx.AsyncClient(base_url=server.url) as client:
            states = {m["id"]: m["state"] for m in (await client.get("/api/v0/models")).json()["data"]}
            assert set(states.values()) == {"not-loaded"}
            await asyncio.sleep(1.6)
            data = (await client.get("/api/v0/models")).json()["data"]
    assert {m["state"] for m in data} == {"loaded"}
    assert {m["type"] for m in data} == {"llm", "embeddings"}
    assert {m["max_context_length"] for m in data} == {CONTEXT}


@pytest.mark.parametrize("flavor", FLAVORS)
async def test_api_key(openai_standin: StandIn, flavor: str) -> None:
    server = openai_standin(flavor, "--api-key", KEY).start()
    async with connect(flavor, server.url, api_key=KEY) as right:
        assert (await right.wait_ready(30, max_interval=0.2)).serving, server.log_tail()
        assert [model.name for model in await right.list_models()] == MODELS[flavor]
    async with connect(flavor, server.url, api_key="sk-wrong") as wrong:
        probe = await wrong.probe()
        if flavor == "lmstudio":
            # "Require Authentication" guards every route, the model list llmop probes included.
            assert probe.state is ProbeState.UNAUTHORIZED, probe
            assert probe.http_status == 401
            return
        # The others leave their health endpoint open (TGI: /health; SGLang: /health*; LocalAI:
        # /readyz), so a wrong key probes as serving and shows on the API.
        assert probe.state is ProbeState.SERVING, probe
        if flavor == "tgi":
            # TGI guards only generation: /v1/models answers any key, a completion does not.
            assert [model.name for model in await wrong.list_models()] == MODELS[flavor]
            with pytest.raises(AuthFailed):
                await wrong.warmup(MODELS[flavor][0], timeout=30)
        else:
            with pytest.raises(AuthFailed):
                await wrong.list_models()


@pytest.mark.parametrize("flavor", FLAVORS)
async def test_warmup_and_a_model_the_server_lacks(openai_standin: StandIn, flavor: str) -> None:
    server = openai_standin(flavor).start()
    async with connect(flavor, server.url) as runtime:
        assert (await runtime.wait_ready(30, max_interval=0.2)).serving, server.log_tail()
        assert (await runtime.warmup(MODELS[flavor][0], timeout=30)).model == MODELS[flavor][0]
        if flavor in ("tgi", "sglang"):
            # Neither checks `model` (TGI echoes it as a LoRA adapter id, SGLang echoes it).
            await runtime.warmup("other/model", timeout=30)
        elif flavor == "localai":
            with pytest.raises(ModelNotFound, match='model "other-model" not found'):
                await runtime.warmup("other-model", timeout=30)
        else:  # LM Studio refuses with 400, not 404
            with pytest.raises(RuntimeAPIError, match="Invalid model identifier"):
                await runtime.warmup("other/model", timeout=30)


@pytest.mark.parametrize("flavor", FLAVORS)
def test_openai_client(tmp_path: Path, flavor: str) -> None:
    models = MODELS[flavor]
    with run_openai_standin(tmp_path, flavor, models, api_key=KEY, max_model_len=CONTEXT) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0)
        assert [model.id for model in client.models.list()] == models

        messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hello to the cluster"}]
        answer = client.chat.completions.create(model=models[0], messages=messages, max_tokens=5)
        again = client.chat.completions.create(model=models[0], messages=messages, max_tokens=5)
        text = answer.choices[0].message.content
        assert text and len(text.split()) == 5 and text == again.choices[0].message.content
        assert answer.choices[0].finish_reason == "length"
        assert answer.usage is not None and answer.usage.completion_tokens == 5
        assert answer.model == models[0]

        chunks = list(
            client.chat.completions.create(
                model=models[0],
                messages=messages,
                max_tokens=5,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert streamed == text
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5

        completion = client.completions.create(model=models[0], prompt="Once upon a time", max_tokens=3)
        assert len(completion.choices[0].text.split()) == 3

        if flavor in ("localai", "lmstudio"):
            vectors = client.embeddings.create(model=models[1], input=["one", "two"]).data
            assert [v.index for v in vectors] == [0, 1] and vectors[0].embedding != vectors[1].embedding

        with pytest.raises(openai.APIStatusError):  # over the context: each server's own error
            client.completions.create(model=models[0], prompt="word " * CONTEXT, max_tokens=10)

        wrong = openai.OpenAI(base_url=url + "/v1", api_key="sk-wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            wrong.chat.completions.create(model=models[0], messages=messages, max_tokens=1)


def test_native_endpoints(tmp_path: Path) -> None:
    """What each server answers beside the OpenAI routes, as llmop might read it."""
    with run_openai_standin(tmp_path, "tgi", MODELS["tgi"], max_model_len=CONTEXT) as url:
        info = httpx.get(url + "/info").json()
        assert (info["model_id"], info["max_total_tokens"], info["max_input_tokens"]) == (
            MODELS["tgi"][0],
            CONTEXT,
            CONTEXT - 1,
        )
        assert httpx.post(
            url + "/generate", json={"inputs": "hi", "parameters": {"max_new_tokens": 2}}
        ).json()["generated_text"]
        assert httpx.post(url + "/v1/embeddings", json={"input": "x"}).status_code == 404
    with run_openai_standin(tmp_path, "sglang", MODELS["sglang"], max_model_len=CONTEXT) as url:
        assert httpx.get(url + "/health_generate").status_code == 200
        assert httpx.get(url + "/get_model_info").json()["model_path"] == MODELS["sglang"][0]
        missing = httpx.get(url + "/v1/models/other")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
    with run_openai_standin(tmp_path, "localai", MODELS["localai"]) as url:
        assert httpx.get(url + "/healthz").status_code == 200
        assert httpx.get(url + "/v1/models").json()["data"][0] == {
            "id": MODELS["localai"][0],
            "object": "model",
        }
    with run_openai_standin(tmp_path, "lmstudio", MODELS["lmstudio"], max_model_len=CONTEXT) as url:
        # No health endpoint, and an unknown path answers 200 with an error in the body.
        health = httpx.get(url + "/health")
        assert health.status_code == 200 and "Unexpected endpoint" in health.json()["error"]
        (llm, embedding) = httpx.get(url + "/api/v1/models").json()["models"]
        assert llm["loaded_instances"][0]["config"]["context_length"] == min(CONTEXT, 4096)
        assert (llm["type"], embedding["type"]) == ("llm", "embedding")

"""The gateway end to end: the official `openai` client through `llmop gateway`, run with the
environment and the ServiceAccount the chart gives it, to real runtimes at the pods' addresses.

The cluster runs no containers (kwok fakes the pods), so the chart's gateway pod never runs: the
test runs `llmop gateway` on this machine with the chart's environment and a token of the chart's
gateway ServiceAccount, so the API server's RBAC judges its requests as it would judge the pod's.

Two tenants: team A's llama-server backend (two replicas), its Ollama backend, and a real
llama-server started with `--embeddings` that team A declares as an external server; team B's
one backend. Each tenant has a gateway key of its own namespace.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml
from localcluster import binaries_cached

from support.gateway_process import run_gateway
from support.kube import REPO, Kube, eventually, wait_backend_ready
from support.operator import TEST_DENY_CIDRS, OperatorProcess
from support.runtimes import ModelSource, PodRunner, run_real_runtime, run_vllm_standin

pytestmark = pytest.mark.e2e

CHART = REPO / "charts" / "llmop"
RELEASE = "llmop"
GATEWAY = f"{RELEASE}-gateway"
KUBE_VERSION = "1.36.3"
KEYS = {"a": "team-a-gateway-key-0123456789", "b": "team-b-gateway-key-0123456789"}
CHAT_MODEL = "ggml-org/models/tinyllamas/stories260K.gguf"
EMBED_MODEL = "tiny-embed"
B_MODEL = "team-b-model"
HELLO = [{"role": "user", "content": "Once upon a time"}]


def chart_gateway(system: str, served: list[str]) -> list[dict[str, Any]]:
    """The chart's gateway objects, rendered as `helm install` would for these values."""
    rendered = subprocess.run(
        [
            str(binaries_cached()["helm"]),
            "template",
            RELEASE,
            str(CHART),
            "-n",
            system,
            "--kube-version",
            KUBE_VERSION,
            "--set-json",
            f"gateway.namespaces={json.dumps(served)}",
            "--set",
            "gateway.holdTimeout=4m",
            # The external server of these tests runs on this machine's loopback.
            "--set-json",
            f"externalDenyCIDRs={json.dumps(TEST_DENY_CIDRS.split(','))}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert rendered.returncode == 0, rendered.stderr
    docs = [doc for doc in yaml.safe_load_all(rendered.stdout) if doc]
    return [doc for doc in docs if doc["metadata"]["name"] == GATEWAY]


def token_kubeconfig(kube: Kube, account: str, namespace: str, path: Path) -> Path:
    token = kube.run("create", "token", account, "-n", namespace, "--duration=2h").stdout.strip()
    admin = yaml.safe_load(kube.kubeconfig.read_text())
    cluster = admin["clusters"][0]["name"]
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": admin["clusters"],
                "users": [{"name": account, "user": {"token": token}}],
                "contexts": [{"name": account, "context": {"cluster": cluster, "user": account}}],
                "current-context": account,
            }
        )
    )
    return path


def key_secret(key: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": "gateway-key",
            "labels": {"llmop.dev/use": "true", "llmop.dev/gateway-key": "true"},
        },
        "stringData": {"key": key},
    }


def llamacpp_backend(name: str, replicas: int) -> dict[str, Any]:
    manifest = dict(yaml.safe_load((REPO / "examples" / "llamacpp.yaml").read_text()))
    manifest["metadata"]["name"] = name
    manifest["spec"]["replicas"] = replicas
    return manifest


def external_backend(name: str, url: str, kind: str) -> dict[str, Any]:
    return {
        "apiVersion": "llmop.dev/v1alpha1",
        "kind": "LLMBackend",
        "metadata": {"name": name},
        "spec": {"external": {"url": url, "kind": kind}, "startup": {"timeout": "2m"}},
    }


@contextlib.contextmanager
def running_gateway(kube: Kube, system: str, served: list[str], work: Path) -> Iterator[str]:
    """`llmop gateway` as the chart's pod runs it; yields its base URL once it is ready."""
    objects = chart_gateway(system, served)
    for doc in objects:
        if doc["kind"] in ("ServiceAccount", "Role", "RoleBinding"):
            kube.apply(doc, doc["metadata"]["namespace"])
    deployment = next(doc for doc in objects if doc["kind"] == "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    assert container["args"][0] == "gateway" and env["LLMOP_GATEWAY_AUTH"] == "keys"
    kubeconfig = token_kubeconfig(kube, GATEWAY, system, work / "gateway.kubeconfig")
    log_path = work / "gateway.log"
    with run_gateway([], kubeconfig, log_path, {**env, "POD_NAMESPACE": system}) as base:
        yield base
    log_text = log_path.read_text()
    assert "forbidden" not in log_text.lower(), log_text
    assert all(key not in log_text for key in KEYS.values())


@pytest.fixture(scope="module")
def tenants(
    kube: Kube,
    operator_process: OperatorProcess,
    podrunner: PodRunner,
    modelsource: ModelSource,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Any]]:
    work = tmp_path_factory.mktemp("gateway-e2e")
    gguf = str(modelsource.root / "files" / "tiny.gguf")
    with contextlib.ExitStack() as stack:
        system = stack.enter_context(kube.namespace("gwsys"))
        team_a = stack.enter_context(kube.namespace("gwa"))
        team_b = stack.enter_context(kube.namespace("gwb"))
        embed_url = stack.enter_context(
            run_real_runtime(work, "llamacpp", gguf, EMBED_MODEL, "--embeddings", "--pooling", "mean")
        )
        b_url = stack.enter_context(run_vllm_standin(work, served_model_name=B_MODEL))
        kube.apply(key_secret(KEYS["a"]), team_a)
        kube.apply(key_secret(KEYS["b"]), team_b)
        kube.apply(llamacpp_backend("chat", replicas=2), team_a)
        kube.apply(external_backend("embed", embed_url, "openai"), team_a)
        kube.apply(external_backend("other", b_url, "vllm"), team_b)
        for name, namespace in (("chat", team_a), ("embed", team_a), ("other", team_b)):
            wait_backend_ready(kube, name, namespace, timeout="240s")
        base = stack.enter_context(running_gateway(kube, system, [team_a, team_b], work))
        yield {"base": base, "a": team_a, "b": team_b, "work": work}


def client_of(tenants: dict[str, Any], team: str = "a", timeout: float = 120) -> openai.OpenAI:
    return openai.OpenAI(base_url=tenants["base"] + "/v1", api_key=KEYS[team], timeout=timeout, max_retries=0)


@pytest.fixture(scope="module")
def ollama_held(kube: Kube, tenants: dict[str, Any], ollama_registry: str) -> dict[str, Any]:
    """Team A's Ollama backend, applied just before a chat request names its model: the request
    is sent while the backend still pulls and loads it, and waits in the gateway."""
    model = f"{ollama_registry}/library/tiny:latest"
    manifest = dict(yaml.safe_load((REPO / "examples" / "ollama.yaml").read_text()))
    manifest["metadata"]["name"] = "ollama"
    manifest["spec"]["models"] = [{"name": model, "insecure": True}]
    kube.apply(manifest, tenants["a"])
    eventually(lambda: model in _listed(tenants, "a"), timeout=60, message="the model listed while it loads")
    phase = kube.get("llmb", "ollama", tenants["a"]).get("status", {}).get("phase")
    answer = client_of(tenants, timeout=300).chat.completions.create(
        model=model, messages=HELLO, max_tokens=3
    )
    return {"model": model, "phase_when_sent": phase, "answer": answer}


def _listed(tenants: dict[str, Any], team: str) -> list[str]:
    return [model.id for model in client_of(tenants, team).models.list().data]


def test_a_request_sent_while_a_backend_loads_is_answered_once_ready(ollama_held: dict[str, Any]) -> None:
    assert ollama_held["phase_when_sent"] != "Ready", ollama_held
    assert ollama_held["answer"].choices[0].message.content is not None


@pytest.mark.parametrize("runtime", ["llamacpp", "ollama"])
def test_chat_streaming_chat_and_completions_through_the_gateway(
    tenants: dict[str, Any], ollama_held: dict[str, Any], runtime: str
) -> None:
    model = CHAT_MODEL if runtime == "llamacpp" else ollama_held["model"]
    client = client_of(tenants)
    # Greedy sampling: the stream must carry the very words of the whole answer (a tiny model
    # sampled at random sometimes says nothing but a stray byte, which no chunk can show).
    greedy: dict[str, Any] = {"model": model, "messages": HELLO, "max_tokens": 5, "temperature": 0, "seed": 7}
    answer = client.chat.completions.create(**greedy)
    assert answer.choices[0].message.content, answer
    chunks = list(client.chat.completions.create(**greedy, stream=True))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(chunks) >= 2 and streamed == answer.choices[0].message.content, chunks
    text = client.completions.create(model=model, prompt="Once upon a time", max_tokens=5)
    assert text.choices[0].text, text


def test_embeddings_where_served_and_501_where_not(tenants: dict[str, Any]) -> None:
    client = client_of(tenants)
    vectors = client.embeddings.create(model=EMBED_MODEL, input=["one", "two"]).data
    assert len(vectors) == 2 and len(vectors[0].embedding) > 0
    with pytest.raises(openai.APIStatusError) as unsupported:
        client.embeddings.create(model=CHAT_MODEL, input="one")
    assert unsupported.value.status_code == 501
    assert "embeddings" in unsupported.value.message and "chat" in unsupported.value.message


def test_an_unknown_model_is_404_listing_what_the_key_may_use(tenants: dict[str, Any]) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client_of(tenants).chat.completions.create(model="gpt-5", messages=HELLO)
    assert CHAT_MODEL in missing.value.message and B_MODEL not in missing.value.message


def test_a_tenants_key_cannot_reach_another_namespaces_backend(tenants: dict[str, Any]) -> None:
    with pytest.raises(openai.PermissionDeniedError) as denied:
        client_of(tenants, "a").chat.completions.create(model=B_MODEL, messages=HELLO, max_tokens=3)
    assert f"namespaces {tenants['a']}" in denied.value.message, denied.value.message
    assert f"{tenants['a']}/gateway-key" in denied.value.message
    assert B_MODEL not in _listed(tenants, "a") and _listed(tenants, "b") == [B_MODEL]
    answer = client_of(tenants, "b").chat.completions.create(model=B_MODEL, messages=HELLO, max_tokens=3)
    assert answer.choices
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=tenants["base"] + "/v1", api_key="not-a-key", max_retries=0).models.list()


def serving_pod(logs: dict[str, Path], sizes: dict[str, int]) -> str:
    """The pod of `chat` whose runtime began a task since `sizes` (each log's size) was taken:
    read from the logs alone, so the runtime is killed while it is still sending."""

    def started() -> str | None:
        for name, log in logs.items():
            with log.open("rb") as f:
                f.seek(sizes[name])
                if b"launch_slot" in f.read():
                    return name
        return None

    return str(eventually(started, timeout=30, interval=0.01, message="the pod serving the stream"))


def runtime_logs(kube: Kube, podrunner: PodRunner, namespace: str) -> dict[str, Path]:
    pods = [p["metadata"]["name"] for p in kube.list("pods", namespace, "llmop.dev/backend=chat")]
    return {
        name: Path(podrunner.wait_running(namespace, name=name)["containers"]["runtime"]["log"])
        for name in pods
    }


def test_a_runtime_killed_mid_stream_ends_the_stream_and_the_next_request_goes_to_the_other(
    kube: Kube, podrunner: PodRunner, tenants: dict[str, Any]
) -> None:
    namespace = tenants["a"]
    logs = runtime_logs(kube, podrunner, namespace)
    assert len(logs) == 2, logs
    sizes = {name: log.stat().st_size for name, log in logs.items()}
    # A long answer with every token's probabilities: far more than the sockets between here and
    # the runtime hold, so the runtime is still sending when it dies.
    stream = client_of(tenants).chat.completions.create(
        model=CHAT_MODEL,
        messages=HELLO,
        max_tokens=1500,
        stream=True,
        logprobs=True,
        top_logprobs=100,
        extra_body={"ignore_eos": True},
    )
    events = iter(stream)
    assert next(events).choices is not None
    victim = serving_pod(logs, sizes)
    podrunner.kill(namespace, victim, "runtime", restart_after=600)
    ended: list[BaseException] = []

    def drain() -> None:
        try:
            for _ in events:
                pass
        except BaseException as error:  # the error event, raised by the openai client
            ended.append(error)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    reader.join(timeout=60)
    assert not reader.is_alive(), "the stream did not end"
    (error,) = ended
    assert isinstance(error, openai.APIError) and victim in str(error) and "broke off" in str(error), error
    answer = client_of(tenants).chat.completions.create(model=CHAT_MODEL, messages=HELLO, max_tokens=3)
    assert answer.choices[0].message.content is not None

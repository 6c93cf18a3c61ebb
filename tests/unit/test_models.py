"""The typed API models: defaults, round trips and validation errors a user can read."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from llmop.models.backend import LLMBackendSpec, LLMBackendStatus
from llmop.models.duration import format_duration, parse_duration
from llmop.models.pull import ModelPullSpec
from llmop.runtimes.registry import serving_port


def test_backend_defaults_fill_what_the_user_left_out() -> None:
    spec = LLMBackendSpec.model_validate({"runtime": "ollama"})
    assert spec.replicas == 1
    assert spec.gpu.count == 0 and spec.gpu.resource_name == "nvidia.com/gpu"
    assert spec.startup.timeout == "30m" and spec.startup.probe_interval == "1s"
    assert spec.warmup.enabled is True
    assert serving_port(spec) == 11434
    assert spec.runtime_kind == "ollama"


def test_external_backend_speaks_its_kind() -> None:
    spec = LLMBackendSpec.model_validate({"external": {"url": "http://10.0.0.5:8000"}})
    assert spec.runtime_kind == "openai"
    assert spec.to_api()["external"] == {"url": "http://10.0.0.5:8000", "kind": "openai"}


def test_spec_round_trips_in_camel_case() -> None:
    raw = {
        "runtime": "vllm",
        "replicas": 2,
        "models": [{"name": "hf://Qwen/Qwen3-0.6B"}],
        "gpu": {"count": 1, "resourceName": "amd.com/gpu"},
        "nodeSelector": {"pool": "a100"},
        "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
        "runtimeClassName": "nvidia",
        "apiKeySecretRef": {"name": "keys", "key": "vllm"},
        "startup": {"timeout": "45m", "probeInterval": "1s"},
    }
    spec = LLMBackendSpec.model_validate(raw)
    dumped = spec.to_api()
    for key, value in raw.items():
        assert dumped[key] == value
    assert LLMBackendSpec.model_validate(dumped) == spec


def test_status_uses_the_api_spelling_of_openai_base_url() -> None:
    status = LLMBackendStatus(openai_base_url="http://chat.ai.svc:11434/v1")
    assert status.to_api() == {"openaiBaseURL": "http://chat.ai.svc:11434/v1"}


def test_unknown_runtime_is_rejected_with_the_allowed_values() -> None:
    with pytest.raises(ValidationError) as error:
        LLMBackendSpec.model_validate({"runtime": "tensorrt"})
    assert "'ollama', 'vllm' or 'llamacpp'" in str(error.value)


def test_model_pull_defaults_and_bad_digest() -> None:
    pull = ModelPullSpec.model_validate({"backendRef": {"name": "chat"}, "model": "qwen3:0.6b"})
    assert pull.retry.max_attempts == 5 and pull.retry.backoff == "10s"
    with pytest.raises(ValidationError, match="sha256"):
        ModelPullSpec.model_validate({"backendRef": {"name": "chat"}, "model": "m", "sha256": "abc"})


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("5m", 300), ("1h30m", 5400), ("500ms", 0.5), ("1.5s", 1.5), ("2h", 7200)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "30", "5 minutes", "-1s", "1d", "m5"])
def test_bad_durations_say_how_to_write_one(text: str) -> None:
    with pytest.raises(ValueError, match=r"e\.g\. 30s, 5m, 1h30m"):
        parse_duration(text)


def test_format_duration_is_the_inverse_for_whole_seconds() -> None:
    for seconds in (0, 45, 60, 3600, 5400, 3725):
        assert parse_duration(format_duration(seconds)) == seconds

"""Credentials inside model URLs (`user:password@`, presigned queries) never leave llmop: not in
status, Events, logs or a runtime's arguments."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import kopf
import pytest

from llmop.agent.errors import body_excerpt
from llmop.config import OperatorConfig
from llmop.loops import backend_observer
from llmop.manifests import build_deployment
from llmop.models.backend import LLMBackendSpec, LLMBackendStatus
from llmop.models.base import Condition
from llmop.runtimes.transport import _preview as runtime_body_preview
from llmop.sources import (
    InvalidModelSource,
    parse_model_source,
    redact_credentials,
    redact_log_records,
    served_model_name,
)

SECRETS = ("hunter2", "alice", "AKIAEXAMPLE", "0ddba11")
PRESIGNED = "https://models.example/m.gguf?X-Amz-Credential=AKIAEXAMPLE&X-Amz-Signature=0ddba11"
WITH_PASSWORD = "https://alice:hunter2@models.example/m.gguf"


def assert_no_secret(text: str) -> None:
    leaked = [secret for secret in SECRETS if secret in text]
    assert not leaked, f"{leaked} in {text!r}"


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        (WITH_PASSWORD, "https://<redacted>@models.example/m.gguf"),
        (f"GET {PRESIGNED}: 403", "GET https://models.example/m.gguf?<redacted>: 403"),
        (
            "https://a:p@ss@h:8/x?sig=1 and http://u@h2",
            "https://<redacted>@h:8/x?<redacted> and http://<redacted>@h2",
        ),
        (f"'{PRESIGNED}'", "'https://models.example/m.gguf?<redacted>'"),
        ("qwen3:0.6b and hf://org/repo@v1/f.gguf", "qwen3:0.6b and hf://org/repo@v1/f.gguf"),
        ("http://h/path/a@b.gguf", "http://h/path/a@b.gguf"),
        ("https://alice:it's-hunter2@h/m.gguf", "https://<redacted>@h/m.gguf"),
        ('see x_https://alice:"hunter2"@h/m.gguf', "see x_https://<redacted>@h/m.gguf"),
    ],
)
def test_user_info_and_queries_of_urls_in_text_are_redacted(text: str, redacted: str) -> None:
    assert redact_credentials(text) == redacted


def test_redaction_of_long_text_without_urls_takes_linear_time() -> None:
    text = "x-" * 1_000_000  # a scheme-like run at every position
    assert redact_credentials(text) == text


def test_a_name_no_source_form_reads_is_served_without_its_credentials() -> None:
    assert_no_secret(served_model_name("https://alice:hunter2@models.example/"))
    assert served_model_name(PRESIGNED) == "m.gguf"


@pytest.mark.parametrize("runtime", ["vllm", "llamacpp"])
@pytest.mark.parametrize("model", [PRESIGNED, WITH_PASSWORD])
def test_runtime_arguments_carry_no_credentials(runtime: str, model: str) -> None:
    name = model if runtime == "llamacpp" else model.replace("m.gguf", "org/repo")
    spec = LLMBackendSpec.model_validate({"runtime": runtime, "models": [{"name": name}]})
    deployment = build_deployment("b", "ns", "uid", spec, OperatorConfig())
    containers = deployment["spec"]["template"]["spec"]["containers"]
    for container in containers:
        assert_no_secret(" ".join(container.get("args", [])))


@pytest.fixture
def redacting_logs() -> Iterator[None]:
    factory = logging.getLogRecordFactory()
    redact_log_records()
    try:
        yield
    finally:
        logging.setLogRecordFactory(factory)


def test_log_lines_and_tracebacks_are_redacted(
    redacting_logs: None, caplog: pytest.LogCaptureFixture
) -> None:
    log = logging.getLogger("llmop.test")
    with caplog.at_level(logging.INFO):
        log.info("pulling %s", WITH_PASSWORD)
        try:
            raise ValueError(f"cannot fetch {PRESIGNED}")
        except ValueError:
            log.exception("pull failed")
    assert "https://<redacted>@models.example/m.gguf" in caplog.text
    assert_no_secret(caplog.text)


def test_phase_events_are_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    posted: list[dict[str, Any]] = []
    monkeypatch.setattr(kopf, "event", lambda body, **event: posted.append(event))
    ready = Condition(
        type="Ready", status="False", reason="PullFailed", message=f"pulling {PRESIGNED} failed"
    )
    backend_observer.post_phase_event(
        kopf.Body({}),
        LLMBackendStatus(phase="Loading"),
        LLMBackendStatus(phase="Degraded", conditions=[ready]),
    )
    (event,) = posted
    assert "https://models.example/m.gguf?<redacted>" in event["message"]
    assert_no_secret(event["message"])


@pytest.mark.parametrize(
    "name",
    [
        "https://alice:hun/ter2@h/m.gguf",
        "https://alice:hunter2?x@h:99999/m.gguf",
        "https://alice:hunter2@h:99999/m.gguf?sig=0ddba11",
        "ftp://alice:hunter2@h/m.gguf",
    ],
)
def test_a_url_that_cannot_be_parsed_is_refused_without_its_credentials(name: str) -> None:
    """A password holding `/` or `?` unencoded defeats any pattern for URLs in text; a name llmop
    cannot parse is shown with everything up to its last `@` hidden."""
    with pytest.raises(InvalidModelSource) as refused:
        parse_model_source(name)
    assert_no_secret(str(refused.value))


def test_a_body_is_redacted_before_it_is_cut_short() -> None:
    """Cut first, a body would lose the `@` that marks `alice:hunter2` as user info."""
    body = ("x" * 190 + " https://alice:hunter2hunter2hunter2@h/m.gguf").encode()
    assert_no_secret(runtime_body_preview(body))
    assert_no_secret(body_excerpt(b"y" * 290 + b" https://alice:hunter2hunter2@h/m.gguf"))

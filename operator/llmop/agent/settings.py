"""What the agent is told at start: flags for where it serves and stores, the environment for
the rest (the pod gets the Hugging Face token from a Secret and the required models from the
operator)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_HF_ENDPOINT = "https://huggingface.co"
#: Connecting should be quick; a source that accepts no connection in this time is down.
DEFAULT_CONNECT_TIMEOUT_SECONDS = 30.0
#: Silence between two reads of a download; CDNs pause briefly, never for minutes.
DEFAULT_READ_TIMEOUT_SECONDS = 120.0
#: A follower sees a file's progress at most this often (and always when the file ends).
DEFAULT_PROGRESS_INTERVAL_SECONDS = 0.25


@dataclass(frozen=True)
class AgentSettings:
    models_dir: Path
    hf_endpoint: str = DEFAULT_HF_ENDPOINT
    hf_token: str | None = None
    #: Local paths (relative to models_dir) that /startup waits for.
    required_models: tuple[str, ...] = ()
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_SECONDS
    read_timeout: float = DEFAULT_READ_TIMEOUT_SECONDS
    progress_interval: float = DEFAULT_PROGRESS_INTERVAL_SECONDS


def settings_from_env(models_dir: Path, env: Mapping[str, str]) -> AgentSettings:
    """Settings from the pod's environment: HF_ENDPOINT, HF_TOKEN, LLMOP_REQUIRED_MODELS."""
    return AgentSettings(
        models_dir=models_dir,
        hf_endpoint=(env.get("HF_ENDPOINT") or DEFAULT_HF_ENDPOINT).rstrip("/"),
        hf_token=env.get("HF_TOKEN") or None,
        required_models=parse_required_models(env.get("LLMOP_REQUIRED_MODELS", "")),
    )


def parse_required_models(text: str) -> tuple[str, ...]:
    """`a/b, c/d/` -> ("a/b", "c/d"): comma-separated local paths, blanks dropped."""
    return tuple(path for part in text.split(",") if (path := part.strip().strip("/")))

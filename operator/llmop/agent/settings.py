"""What the agent is told at start: flags for where it serves and stores, the environment for
the rest (the pod gets the Hugging Face token from a Secret and the required models from the
operator)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_HF_ENDPOINT = "https://huggingface.co"
#: Connecting should be quick; a source that accepts no connection in this time is down.
DEFAULT_CONNECT_TIMEOUT_SECONDS = 30.0
#: Silence between two reads of a download; CDNs pause briefly, never for minutes.
DEFAULT_READ_TIMEOUT_SECONDS = 120.0
#: A follower sees a file's progress at most this often (and always when the file ends).
DEFAULT_PROGRESS_INTERVAL_SECONDS = 0.25
#: Files of one repo fetched at once: a sharded model arrives about as fast as the link allows
#: even where one connection is capped (a CDN's per-connection rate), without opening one
#: connection per shard of a model with hundreds.
DEFAULT_PARALLEL_DOWNLOADS = 4
MAX_PARALLEL_DOWNLOADS = 32


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
    #: The bearer token every request but the kubelet's probes must carry; None: no check (an
    #: agent run by hand). Kept out of repr so that it never reaches a log line.
    token: str | None = field(default=None, repr=False)
    #: The model names the backend declares: the only sources a pull may name. None: any.
    declared_models: tuple[str, ...] | None = None
    #: Bytes the model volume may hold (an emptyDir's sizeLimit); None: what the disk has.
    volume_limit: int | None = None
    #: How many files of a repo download at once (LLMOP_PARALLEL_DOWNLOADS).
    parallel_downloads: int = DEFAULT_PARALLEL_DOWNLOADS


class InvalidAgentSetting(ValueError):
    """A setting the agent cannot start with, worded for the pod's log."""


def settings_from_env(models_dir: Path, env: Mapping[str, str], token: str | None = None) -> AgentSettings:
    """Settings from the pod's environment: HF_ENDPOINT, HF_TOKEN, LLMOP_REQUIRED_MODELS,
    LLMOP_DECLARED_MODELS, LLMOP_MODELS_VOLUME_LIMIT, LLMOP_PARALLEL_DOWNLOADS."""
    return AgentSettings(
        models_dir=models_dir,
        hf_endpoint=(env.get("HF_ENDPOINT") or DEFAULT_HF_ENDPOINT).rstrip("/"),
        hf_token=env.get("HF_TOKEN") or None,
        required_models=parse_required_models(env.get("LLMOP_REQUIRED_MODELS", "")),
        token=token,
        declared_models=parse_declared_models(env.get("LLMOP_DECLARED_MODELS")),
        volume_limit=parse_volume_limit(env.get("LLMOP_MODELS_VOLUME_LIMIT")),
        parallel_downloads=parse_parallel_downloads(env.get("LLMOP_PARALLEL_DOWNLOADS")),
    )


def parse_parallel_downloads(text: str | None) -> int:
    """A whole number from 1 (one file after another) to MAX_PARALLEL_DOWNLOADS; unset: the default."""
    if text is None or not text.strip():
        return DEFAULT_PARALLEL_DOWNLOADS
    value = text.strip()
    if not re.fullmatch(r"[0-9]{1,3}", value) or not 1 <= int(value) <= MAX_PARALLEL_DOWNLOADS:
        raise InvalidAgentSetting(
            f"LLMOP_PARALLEL_DOWNLOADS {text[:40]!r} is not a whole number from 1 to {MAX_PARALLEL_DOWNLOADS}"
        )
    return int(value)


_QUANTITY = re.compile(r"^([0-9]+)(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?$")
_QUANTITY_UNITS: dict[str | None, int] = {
    None: 1,
    **{suffix: 1024 ** (power + 1) for power, suffix in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi"))},
    **{suffix: 1000 ** (power + 1) for power, suffix in enumerate(("k", "M", "G", "T", "P"))},
}


def parse_volume_limit(text: str | None) -> int | None:
    """A Kubernetes quantity of bytes (`50Gi`, `500M`, `1073741824`); unset: no limit."""
    if not text:
        return None
    match = _QUANTITY.match(text.strip())
    if match is None:
        raise InvalidAgentSetting(f"LLMOP_MODELS_VOLUME_LIMIT {text!r} is not a size such as 50Gi")
    return int(match[1]) * _QUANTITY_UNITS[match[2]]


def parse_declared_models(text: str | None) -> tuple[str, ...] | None:
    """A JSON list of model names (names may hold commas); unset: no restriction."""
    if text is None:
        return None
    try:
        names = json.loads(text)
    except json.JSONDecodeError as error:
        raise InvalidAgentSetting(f"LLMOP_DECLARED_MODELS is not JSON: {error}") from error
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise InvalidAgentSetting(
            'LLMOP_DECLARED_MODELS must be a JSON list of names, e.g. ["hf://org/repo"]'
        )
    return tuple(names)


def read_token_file(path: Path) -> str:
    """The token in `path`, without surrounding white space; a clear error if there is none."""
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        raise InvalidAgentSetting(f"cannot read the token file {path}: {error}") from error
    if not token:
        raise InvalidAgentSetting(f"the token file {path} is empty")
    return token


def parse_required_models(text: str) -> tuple[str, ...]:
    """A JSON list of local paths (a URL's path may hold a comma); a value that is no JSON list is
    the comma-separated form an earlier operator wrote (`a/b, c/d/`). Blanks are dropped."""
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, list):
        parsed = text.split(",")
    if not all(isinstance(path, str) for path in parsed):
        raise InvalidAgentSetting(
            'LLMOP_REQUIRED_MODELS must be a JSON list of paths, e.g. ["hf/org/repo/main"]'
        )
    return tuple(path for part in parsed if (path := part.strip().strip("/")))

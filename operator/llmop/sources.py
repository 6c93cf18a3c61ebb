"""Model sources: what a model name means, where it is fetched from, and where it lands on disk.

hf://org/repo                 a whole Hugging Face repo at `main` (vLLM)
hf://org/repo@rev             ... at a branch, tag or commit
hf://org/repo/dir/file.gguf   one file of a repo (llama.cpp); `@rev` may follow the repo id
https://host/path/file.gguf   one file from any HTTP(S) server
qwen3:0.6b, host/ns/m:tag     an Ollama model, pulled by Ollama itself
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

SourceKind = Literal["huggingface", "url", "ollama"]
#: Where the model volume is mounted in every container of a runtime pod.
MODELS_DIR = "/models"

_HF = re.compile(r"^hf://(?P<org>[^/@\s]+)/(?P<repo>[^/@\s]+)(?:@(?P<rev>[^/\s]+))?(?:/(?P<path>\S+))?$")
_SAFE_SEGMENT = re.compile(r"^[A-Za-z0-9._-]+$")


@dataclass(frozen=True)
class ModelSource:
    kind: SourceKind
    name: str
    repo_id: str | None = None  # huggingface: org/repo
    revision: str = "main"  # huggingface
    path_in_repo: str | None = None  # huggingface: one file instead of the whole repo
    url: str | None = None  # url

    @property
    def local_path(self) -> str:
        """Path relative to the model volume where the model is complete once pulled."""
        if self.kind == "huggingface":
            assert self.repo_id is not None
            base = f"hf/{self.repo_id}/{self.revision}"
            return f"{base}/{self.path_in_repo}" if self.path_in_repo else base
        if self.kind == "url":
            assert self.url is not None
            parts = urlsplit(self.url)
            host = parts.hostname or "host"
            if parts.port:
                host = f"{host}_{parts.port}"
            return f"url/{host}{parts.path}"
        return f"ollama/{self.name}"

    @property
    def is_single_file(self) -> bool:
        return self.kind == "url" or (self.kind == "huggingface" and self.path_in_repo is not None)


class InvalidModelSource(ValueError):
    """A model name llmop cannot fetch; the message says what forms are accepted."""


def parse_model_source(name: str) -> ModelSource:
    text = name.strip()
    if text.startswith("hf://"):
        match = _HF.match(text)
        if not match:
            raise InvalidModelSource(
                f"{name!r} is not a Hugging Face model: write hf://org/repo, hf://org/repo@revision "
                "or hf://org/repo/path/file.gguf"
            )
        path = match["path"]
        if path and any(not _SAFE_SEGMENT.match(segment) or segment == ".." for segment in path.split("/")):
            raise InvalidModelSource(f"{name!r}: the file path inside the repo has unsafe characters")
        return ModelSource(
            kind="huggingface",
            name=text,
            repo_id=f"{match['org']}/{match['repo']}",
            revision=match["rev"] or "main",
            path_in_repo=path,
        )
    if text.startswith(("https://", "http://")):
        parts = urlsplit(text)
        segments = [segment for segment in parts.path.split("/") if segment]
        if not parts.hostname or not segments or ".." in segments:
            raise InvalidModelSource(f"{name!r} is not a file URL: write https://host/path/file.gguf")
        return ModelSource(kind="url", name=text, url=text)
    if "://" in text:
        raise InvalidModelSource(f"{name!r}: only hf://, https:// and http:// sources are supported")
    if not text:
        raise InvalidModelSource("the model name is empty")
    return ModelSource(kind="ollama", name=text)


def served_model_name(name: str) -> str:
    """The name a runtime serves `name` under, which is what clients send as `model`: the id the
    Hugging Face world uses (`org/repo`, or `org/repo/file.gguf` for one file of a repo, without
    the `hf://` scheme or a revision), a URL's file name, an Ollama name as written."""
    try:
        source = parse_model_source(name)
    except InvalidModelSource:
        return name.strip()
    if source.kind == "huggingface":
        assert source.repo_id is not None
        return f"{source.repo_id}/{source.path_in_repo}" if source.path_in_repo else source.repo_id
    if source.kind == "url":
        assert source.url is not None
        return urlsplit(source.url).path.rstrip("/").rsplit("/", 1)[-1]
    return source.name


def model_slug(name: str) -> str:
    """A DNS-label-safe fragment naming a model, for object names (`qwen3-0-6b`)."""
    tail = name.split("://", 1)[-1]
    slug = re.sub(r"[^a-z0-9]+", "-", tail.lower()).strip("-")[-32:].strip("-") or "model"
    # Different names can share a slug (`a:b` and `a-b`); a short digest keeps them apart.
    return f"{slug}-{hashlib.sha256(name.encode()).hexdigest()[:6]}"

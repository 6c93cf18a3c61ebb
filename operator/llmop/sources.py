"""Model sources: what a model name means, where it is fetched from, and where it lands on disk.

hf://org/repo                 a whole Hugging Face repo at `main` (vLLM)
hf://org/repo@rev             ... at a branch, tag or commit
hf://org/repo/dir/file.gguf   one file of a repo (llama.cpp); `@rev` may follow the repo id
https://host/path/file.gguf   one file from any HTTP(S) server
qwen3:0.6b, host/ns/m:tag     an Ollama model, pulled by Ollama itself

Where each lands in the model volume (its local path) keeps sources apart: a whole repo and a
single file of it never share a file (`hf/` and `hf-file/`), nor do http:// and https:// or two
URLs that differ in their query or credentials (a short digest of those, never their text).
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import re
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

SourceKind = Literal["huggingface", "url", "ollama"]
#: Where the model volume is mounted in every container of a runtime pod.
MODELS_DIR = "/models"

_HF = re.compile(r"^hf://(?P<org>[^/@\s]+)/(?P<repo>[^/@\s]+)(?:@(?P<rev>[^/\s]+))?(?:/(?P<path>\S+))?$")
_SAFE_SEGMENT = re.compile(r"^[A-Za-z0-9._-]+$")
_HOSTNAME = re.compile(r"^[a-z0-9_-]+(?:\.[a-z0-9_-]+)*\.?$")
#: Hex digits of the digest that stands for a URL's query and user info in its local path.
URL_SECRET_DIGEST_CHARS = 16


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
            if self.path_in_repo:
                return f"hf-file/{self.repo_id}/{self.revision}/{self.path_in_repo}"
            return f"hf/{self.repo_id}/{self.revision}"
        if self.kind == "url":
            assert self.url is not None
            return url_local_path(self.url)
        return f"ollama/{self.name}"

    def belongs_to(self, other: ModelSource) -> bool:
        """Whether this source is `other` itself, or one file of the repo `other` names."""
        if self.local_path == other.local_path:
            return True
        return (
            self.kind == other.kind == "huggingface"
            and other.path_in_repo is None
            and (self.repo_id, self.revision) == (other.repo_id, other.revision)
        )

    @property
    def is_single_file(self) -> bool:
        return self.kind == "url" or (self.kind == "huggingface" and self.path_in_repo is not None)


class InvalidModelSource(ValueError):
    """A model name llmop cannot fetch; the message says what forms are accepted."""


def url_local_path(url: str) -> str:
    """`url/<scheme>/<host>[:port][~<digest>]/<path>`: the scheme and any query or user info
    (as a digest: they may hold credentials) are part of where a URL's file lands."""
    parts = urlsplit(url)
    host = parts.hostname or "host"
    if ":" in host:  # IPv6
        host = f"[{host}]"
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    secret = parts.query
    if parts.username is not None or parts.password is not None:
        secret = f"{parts.netloc}?{parts.query}"
    if secret:
        host += "~" + hashlib.sha256(secret.encode()).hexdigest()[:URL_SECRET_DIGEST_CHARS]
    return f"url/{parts.scheme}/{host}{parts.path}"


def _check_url(name: str, text: str) -> None:
    """A file URL whose host, port and path segments can name a place on disk."""
    parts = urlsplit(text)
    segments = parts.path.split("/")[1:]
    try:
        port = parts.port
    except ValueError:
        raise InvalidModelSource(f"{shown_url(name)!r}: the port is not a number from 1 to 65535") from None
    if port == 0:
        raise InvalidModelSource(f"{shown_url(name)!r}: the port is not a number from 1 to 65535")
    if not parts.hostname or not _valid_host(parts.hostname):
        raise InvalidModelSource(f"{shown_url(name)!r}: the host is not a host name or an IP address")
    if not segments or any(segment in ("", ".", "..") for segment in segments):
        raise InvalidModelSource(f"{shown_url(name)!r} is not a file URL: write https://host/path/file.gguf")


def _valid_host(host: str) -> bool:
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return False
        return True
    return bool(_HOSTNAME.match(host)) and host.strip(".") != ""


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
        _check_url(name, text)
        return ModelSource(kind="url", name=text, url=text)
    if "://" in text:
        raise InvalidModelSource(
            f"{shown_url(name)!r}: only hf://, https:// and http:// sources are supported"
        )
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
        return redact_credentials(name.strip())
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


#: A URL in free text: scheme, optional user info (up to its last `@`), the rest, optional query.
#: The scheme's length is bounded so that text without URLs costs linear time, however long.
#: User info may hold quotes (legal there); no word boundary before the scheme, as `x_https://`
#: is still a URL to hide.
_URL_IN_TEXT = re.compile(
    r"(?i)(?P<scheme>[a-z][a-z0-9+.-]{0,31}://)(?P<user>[^\s/?#<>]*@)?(?P<rest>[^\s?#'\"<>]*)"
    r"(?P<query>\?[^\s#'\"<>]*)?"
)
REDACTED = "<redacted>"


def redact_credentials(text: str) -> str:
    """`text` with the credentials of every URL in it replaced: user info (`user:pass@`) and the
    whole query (presigned URLs carry their signature and key id there, under names that vary by
    vendor). The one function through which model names and messages leave llmop: status,
    Events, logs and runtime arguments."""

    def redact(url: re.Match[str]) -> str:
        user = f"{REDACTED}@" if url["user"] else ""
        query = url["query"] or ""
        # Punctuation that ends the sentence around the URL stays.
        after = query[len(query.rstrip(".,;:)]")) :] if len(query) > 1 else ""
        return f"{url['scheme']}{user}{url['rest']}{f'?{REDACTED}{after}' if query else ''}"

    return _URL_IN_TEXT.sub(redact, text)


def shown_url(name: str) -> str:
    """A model URL llmop could not parse, as a message may show it: everything up to its last `@`
    (a password holding `/` or `?` unencoded included) and its query replaced."""
    scheme, separator, rest = name.partition("://")
    if not separator:
        return redact_credentials(name)
    if "@" in rest:
        rest = f"{REDACTED}@{rest.rsplit('@', 1)[1]}"
    rest, query, _ = rest.partition("?")
    return f"{scheme}://{rest}{f'?{REDACTED}' if query else ''}"


def redact_log_records() -> None:
    """Every log record of this process, kopf's too (and the Events kopf posts from its warnings), passes through
    the redaction status and Events use: credentials in a model's URL never reach a log."""
    make_record = logging.getLogRecordFactory()

    def redacted(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        message = record.getMessage()
        if "://" in message:
            record.msg, record.args = redact_credentials(message), None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redact_credentials(logging.Formatter().formatException(record.exc_info))
        return record

    logging.setLogRecordFactory(redacted)

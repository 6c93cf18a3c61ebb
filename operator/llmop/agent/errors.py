"""Errors a pull ends with; each message is what the user reads in the ModelPull's status."""

from __future__ import annotations

import os
import re
import socket

import aiohttp
import urllib3

from llmop.sources import redact_credentials

#: How much of a failing source's answer is quoted: enough for "Repository not found" or an
#: nginx error page's title, not a whole HTML page.
BODY_EXCERPT_CHARS = 300


class PullError(Exception):
    """A pull failed for a reason the message states."""


class BadPullRequest(PullError):
    """The request itself is wrong (HTTP 400)."""


class SourceError(PullError):
    """The source refused, failed or went away."""


class DigestMismatch(PullError):
    """The bytes are not the ones the digest promised."""


def body_excerpt(body: bytes) -> str:
    """The start of a response body on one line, whitespace collapsed."""
    # Redacted before the cut: a cut inside `user:pass@` would hide the `@` that marks it.
    text = redact_credentials(re.sub(r"\s+", " ", body.decode("utf-8", errors="replace")).strip())
    if len(text) > BODY_EXCERPT_CHARS:
        return text[:BODY_EXCERPT_CHARS].rstrip() + "..."
    return text


def describe_http_failure(method: str, url: str, status: int, reason: str, body: bytes) -> str:
    """`GET https://host/x.gguf: 404 Not Found: <body excerpt>`."""
    described = f"{method} {url}: {status} {reason}".rstrip()
    excerpt = body_excerpt(body)
    return f"{described}: {excerpt}" if excerpt else described


def digest_mismatch_message(label: str, expected: str, actual: str) -> str:
    return f"sha256 mismatch for {label}: expected {expected}, got {actual}"


def transport_reason(error: BaseException) -> str:
    """What went wrong on the wire, in words: `cannot connect to host:port: Connection refused`
    rather than aiohttp's `Cannot connect to host ... ssl:default [Connect call failed ...]`."""
    if isinstance(error, aiohttp.ClientConnectorError):
        cause = error.os_error
        if isinstance(cause, socket.gaierror) or not cause.errno:
            why = cause.strerror or str(cause)
        else:
            why = os.strerror(cause.errno)
        return f"cannot connect to {error.host}:{error.port}: {why}"
    return str(error) or type(error).__name__


def wire_reason(error: BaseException) -> str:
    """The same words for urllib3's errors (a file's transfer): `cannot connect to
    host:port: Connection refused`, `Connection broken: IncompleteRead(...)`."""
    if isinstance(error, urllib3.exceptions.NewConnectionError):
        cause = error.__cause__
        if isinstance(cause, OSError) and cause.errno and not isinstance(cause, socket.gaierror):
            why = os.strerror(cause.errno)
        else:
            why = getattr(cause, "strerror", None) or str(cause or error)
        return f"cannot connect to {error.conn.host}:{error.conn.port}: {why}"
    first = error.args[0] if error.args else None
    return first if isinstance(first, str) and first else str(error) or type(error).__name__


class UnsafeVolumePath(PullError):
    """A link (or another non-directory) where the model volume should hold a plain directory or
    file: llmop never reads or writes through it."""


class NoRoom(PullError):
    """The model volume has less free room than the download needs."""

"""What can go wrong when talking to a runtime, as exceptions whose message a user can act on.

Every exception raised by an adapter derives from `RuntimeAPIError`, so a caller can catch one
type and still tell the cases apart. Messages name the runtime, the address and what to do.
"""

from __future__ import annotations

from llmop.runtimes.results import ProbeState


class RuntimeAPIError(Exception):
    """Base of every error an adapter raises; `str(error)` is a sentence for a user."""

    #: How `probe()` reports this error: anything that is not a known transient state is ERROR.
    probe_state: ProbeState = ProbeState.ERROR

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UnknownRuntimeKind(RuntimeAPIError, ValueError):
    """`connect()` was given a kind that no adapter is registered for."""

    def __init__(self, kind: str, known: tuple[str, ...]) -> None:
        super().__init__(f"unknown runtime kind {kind!r}; known kinds: {', '.join(known)}")
        self.kind = kind
        self.known = known


class Unsupported(RuntimeAPIError):
    """The runtime's API has no way to do this operation."""

    def __init__(self, runtime: str, operation: str, hint: str = "") -> None:
        message = f"{runtime} does not support {operation} through its API"
        super().__init__(f"{message}; {hint}" if hint else message)
        self.runtime = runtime
        self.operation = operation


class RuntimeUnavailable(RuntimeAPIError):
    """The runtime did not answer: not listening yet, connection dropped, or still loading."""

    def __init__(self, message: str, *, probe_state: ProbeState = ProbeState.ERROR) -> None:
        super().__init__(message)
        self.probe_state = probe_state


class RuntimeTimeout(RuntimeUnavailable):
    """The runtime did not answer within the time allowed."""

    def __init__(self, message: str) -> None:
        super().__init__(message, probe_state=ProbeState.TIMEOUT)


class AuthFailed(RuntimeAPIError):
    """The runtime refused the request for lack of a valid API key (HTTP 401 or 403)."""

    probe_state = ProbeState.UNAUTHORIZED

    def __init__(self, message: str, *, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


class RuntimeHTTPError(RuntimeAPIError):
    """The runtime answered with an HTTP error status that has no more specific meaning."""

    def __init__(self, message: str, *, status_code: int, runtime_message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        #: The runtime's own error text, unaltered (for status fields and events).
        self.runtime_message = runtime_message


class ModelNotFound(RuntimeHTTPError):
    """The runtime does not have the model the request named (HTTP 404)."""


class TargetRefused(RuntimeAPIError):
    """The address is one llmop never connects to for a tenant's URL (the operator's deny list);
    nothing was sent. Waiting does not fix it: the URL or the deny list must change."""

    probe_state = ProbeState.DENIED

    def __init__(self, message: str, *, address: str) -> None:
        super().__init__(message)
        self.address = address


class ResponseTooLarge(RuntimeAPIError):
    """The runtime sent more bytes than the adapter accepts for one response."""

    def __init__(self, message: str, *, limit_bytes: int) -> None:
        super().__init__(message)
        self.limit_bytes = limit_bytes


class MalformedResponse(RuntimeAPIError):
    """The runtime answered, but not with the JSON its API documents."""


class PullFailed(RuntimeAPIError):
    """A model pull ended with an error reported by the runtime."""

    def __init__(self, message: str, *, runtime_message: str) -> None:
        super().__init__(message)
        #: The runtime's own error text, unaltered (for example Ollama's "pull model manifest: file
        #: does not exist").
        self.runtime_message = runtime_message

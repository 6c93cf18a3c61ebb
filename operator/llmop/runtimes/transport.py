"""HTTP to one runtime: bounded bodies, timeouts on everything, errors mapped to `RuntimeAPIError`.

Adapters never touch httpx exceptions or raw status codes; they ask this layer for JSON and get
either parsed data or an exception whose message names the runtime, the request and the cause.
"""

from __future__ import annotations

import asyncio
import http
import json
import re
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import httpx
from pydantic import BaseModel, ValidationError

import llmop
from llmop.runtimes.errors import (
    AuthFailed,
    MalformedResponse,
    ResponseTooLarge,
    RuntimeAPIError,
    RuntimeHTTPError,
    RuntimeTimeout,
    RuntimeUnavailable,
)
from llmop.runtimes.results import ProbeState
from llmop.sources import redact_credentials

DEFAULT_TIMEOUT_SECONDS = 5.0
#: Model lists, /api/show and /props (which carries the chat template) stay well under this.
#: Parsed, a body costs the operator ten times its size or more, and up to PROBE_CONCURRENCY are
#: read at once: a tenant's runtime must not be able to exhaust the operator's memory.
DEFAULT_MAX_BODY_BYTES = 2 * 1024 * 1024
_PREVIEW_CHARS = 200
#: A content type as servers send it (`text/html; charset=utf-8` is described as `text/html`).
_MEDIA_TYPE = re.compile(r"[A-Za-z0-9.+-]{1,60}/[A-Za-z0-9.+-]{1,60}")
#: What web frameworks say for an unknown path: Go's net/http and gin, FastAPI, cpp-httplib, aiohttp.
_ROUTER_NOT_FOUND = {
    "",
    "not found",
    "404 page not found",
    "file not found",
    "404 not found",
    "404: not found",
}

WireModel = TypeVar("WireModel", bound=BaseModel)


@dataclass(frozen=True)
class Endpoint:
    """Where a runtime listens and how to talk to it."""

    base_url: str
    #: Sent as a bearer token; kept out of repr so it never reaches a log line.
    api_key: str | None = field(default=None, repr=False)
    #: A shared client reuses connections across many runtimes; None: the adapter owns one.
    client: httpx.AsyncClient | None = None
    timeout: float = DEFAULT_TIMEOUT_SECONDS
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES

    @classmethod
    def parse(cls, base_url: str, **settings: Any) -> Endpoint:
        """Accept `http://host:port` as well as the OpenAI-style `http://host:port/v1`."""
        url = base_url.strip().rstrip("/")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{base_url!r} is not an http(s) URL such as http://10.0.0.5:8000")
        if url.endswith("/v1"):
            url = url.removesuffix("/v1")
        return cls(base_url=url, **settings)


@dataclass(frozen=True)
class HTTPAnswer:
    status_code: int
    reason_phrase: str
    body: bytes
    latency_seconds: float
    content_type: str = ""

    def described(self) -> str:
        """What came back, without a word of the body: an unexpected answer may be any page
        (an internal admin page, a metadata endpoint), and status and Events are widely readable."""
        return describe_answer(self.status_code, self.content_type, len(self.body))


class RuntimeHTTP:
    """One runtime's address, credentials and limits, over a client that may be shared."""

    def __init__(self, runtime_name: str, endpoint: Endpoint) -> None:
        self.runtime_name = runtime_name
        self.endpoint = endpoint
        self.base_url = endpoint.base_url
        #: The address for messages and status: without any `user:password@` the URL carries.
        self.display_url = _without_credentials(endpoint.base_url)
        self._owns_client = endpoint.client is None
        # Created on first use: an adapter made only to normalize names costs no client.
        self._client = endpoint.client
        self._closed = False

    @property
    def where(self) -> str:
        return f"{self.runtime_name} at {self.display_url}"

    async def aclose(self) -> None:
        self._closed = True
        if self._owns_client and self._client is not None:
            await self._client.aclose()

    @property
    def client(self) -> httpx.AsyncClient:
        if self._closed:
            raise RuntimeError(f"the adapter for {self.where} is closed")
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.endpoint.timeout)
        return self._client

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": f"llmop/{llmop.__version__}"}
        if self.endpoint.api_key:
            headers["Authorization"] = f"Bearer {self.endpoint.api_key}"
        return headers

    async def exchange(
        self, method: str, path: str, *, json_body: Any = None, limit_seconds: float | None = None
    ) -> HTTPAnswer:
        """Send one request and read at most `max_body_bytes` of the answer, whatever its status.

        Raises only for transport trouble (refused, reset, timeout) and oversized bodies. The
        whole exchange is bounded by `limit_seconds` (default: the endpoint's timeout), so a
        server that trickles bytes cannot stall us.
        """
        seconds = self.endpoint.timeout if limit_seconds is None else limit_seconds
        started = time.monotonic()
        answered = False
        try:
            async with asyncio.timeout(seconds):
                async with self.client.stream(
                    method,
                    self.base_url + path,
                    json=json_body,
                    headers=self._headers(),
                    timeout=httpx.Timeout(seconds),
                ) as response:
                    answered = True
                    body = await self._read_bounded(response, method, path)
        except (httpx.TimeoutException, TimeoutError) as exc:
            raise RuntimeTimeout(f"{self.where} did not answer {method} {path} within {seconds:g}s") from exc
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, method, path, answered=answered) from exc
        return HTTPAnswer(
            response.status_code,
            response.reason_phrase,
            body,
            time.monotonic() - started,
            response.headers.get("content-type", ""),
        )

    async def send(
        self, method: str, path: str, *, json_body: Any = None, limit_seconds: float | None = None
    ) -> HTTPAnswer:
        """Send one request; raise for any error status."""
        answer = await self.exchange(method, path, json_body=json_body, limit_seconds=limit_seconds)
        if answer.status_code >= 400:
            raise self.status_error(answer, method, path)
        return answer

    async def call(
        self, method: str, path: str, *, json_body: Any = None, limit_seconds: float | None = None
    ) -> Any:
        """Send one request and return its JSON body; raise for any error status."""
        answer = await self.send(method, path, json_body=json_body, limit_seconds=limit_seconds)
        return self.decode_answer(answer, method, path)

    async def call_wire(
        self,
        wire_type: type[WireModel],
        method: str,
        path: str,
        *,
        json_body: Any = None,
        limit_seconds: float | None = None,
    ) -> WireModel:
        """`call`, then check the JSON against the shape the runtime's API documents."""
        answer = await self.send(method, path, json_body=json_body, limit_seconds=limit_seconds)
        data = self.decode_answer(answer, method, path)
        return self.parse_wire(wire_type, data, method, path, answer=answer)

    async def stream_ndjson(
        self, method: str, path: str, *, json_body: Any, idle_timeout: float
    ) -> AsyncGenerator[Any, None]:
        """Yield one parsed JSON value per line of a streaming answer.

        Long operations (a pull of many gigabytes) have no total deadline; `idle_timeout` bounds
        the silence between two reads instead. `max_body_bytes` bounds each line, not the stream.
        """
        timeout = httpx.Timeout(self.endpoint.timeout, read=idle_timeout)
        answered = False
        try:
            async with self.client.stream(
                method, self.base_url + path, json=json_body, headers=self._headers(), timeout=timeout
            ) as response:
                answered = True
                if response.status_code >= 400:
                    body = await self._read_bounded(response, method, path)
                    content_type = response.headers.get("content-type", "")
                    raise self.status_error(
                        HTTPAnswer(response.status_code, response.reason_phrase, body, 0.0, content_type),
                        method,
                        path,
                    )
                pending = bytearray()
                async for chunk in response.aiter_bytes():
                    pending += chunk
                    while (newline := pending.find(b"\n")) >= 0:
                        line = bytes(pending[:newline])
                        del pending[: newline + 1]
                        if len(line) > self.endpoint.max_body_bytes:
                            raise self._too_large(method, path, line=True)
                        if line.strip():
                            yield self.decode_json(line, method, path)
                    if len(pending) > self.endpoint.max_body_bytes:
                        raise self._too_large(method, path, line=True)
                if pending.strip():
                    yield self.decode_json(bytes(pending), method, path)
        except httpx.TimeoutException as exc:
            raise RuntimeTimeout(
                f"{self.where} went silent for {idle_timeout:g}s during {method} {path}"
            ) from exc
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, method, path, answered=answered) from exc

    async def _read_bounded(self, response: httpx.Response, method: str, path: str) -> bytes:
        limit = self.endpoint.max_body_bytes
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise self._too_large(method, path, declared=int(declared))
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > limit:
                raise self._too_large(method, path)
        return bytes(body)

    def _too_large(
        self, method: str, path: str, *, declared: int | None = None, line: bool = False
    ) -> ResponseTooLarge:
        limit = self.endpoint.max_body_bytes
        size = (
            f"{declared} bytes (its Content-Length)" if declared is not None else f"more than {limit} bytes"
        )
        where = " in one line of its stream" if line else ""
        return ResponseTooLarge(
            f"{self.where} answered {method} {path} with {size}{where}; the limit is {limit} bytes",
            limit_bytes=limit,
        )

    def _transport_error(
        self, exc: httpx.HTTPError, method: str, path: str, *, answered: bool
    ) -> RuntimeAPIError:
        if _caused_by(exc, ConnectionRefusedError):
            return RuntimeUnavailable(
                f"{self.where} refused the connection: nothing listens there yet (the runtime may "
                "still be starting)",
                probe_state=ProbeState.STARTING,
            )
        if isinstance(exc, httpx.ConnectError):
            return RuntimeUnavailable(f"cannot connect to {self.where}: {_describe(exc)}")
        if isinstance(exc, httpx.DecodingError):
            return MalformedResponse(
                f"{self.where} answered {method} {path} with a body that cannot be decoded: {exc}"
            )
        if isinstance(exc, httpx.LocalProtocolError):
            # Its message quotes the request, headers included: the API key would reach status.
            return RuntimeUnavailable(
                f"llmop could not send {method} {path} to {self.where}: a header (the API key?) is "
                "not valid in HTTP"
            )
        dropped = isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError)
        if dropped or _caused_by(exc, ConnectionResetError):
            if answered:
                return RuntimeUnavailable(
                    f"{self.where} closed the connection in the middle of its answer to {method} {path} "
                    "(did the runtime stop or crash?)"
                )
            # A server still starting often accepts and then drops connections.
            return RuntimeUnavailable(
                f"{self.where} closed the connection before answering {method} {path} "
                "(the runtime may be starting, restarting or crashing)",
                probe_state=ProbeState.STARTING,
            )
        return RuntimeUnavailable(f"{method} {path} to {self.where} failed: {_describe(exc)}")

    def status_error(self, answer: HTTPAnswer, method: str, path: str) -> RuntimeAPIError:
        """The exception that an error status means, with the runtime's own words in it (its JSON
        error message; any other body is described, never quoted)."""
        status = answer.status_code
        # The standard phrase, not the server's: a reason phrase is free text too.
        phrase = _standard_phrase(status)
        said = runtime_error_text(answer.body)
        heading = f"{self.where} answered {method} {path} with {status} {phrase}"
        if status == 404 and is_route_missing(said):
            # The web framework's own 404, not the runtime's: probably another kind of server.
            return RuntimeHTTPError(
                f"{heading}; is the server at {self.display_url} really {self.runtime_name}?",
                status_code=status,
                runtime_message=said,
            )
        if not said:
            said = f"{answer.described()}, not an error of its API" if answer.body.strip() else phrase
        if status in (401, 403):
            advice = (
                "check that the API key is the one the runtime expects"
                if self.endpoint.api_key
                else "the runtime wants an API key and none was given"
            )
            return AuthFailed(f"{heading}: {said}; {advice}", status_code=status)
        if status == 503:
            return RuntimeUnavailable(f"{heading}: {said}", probe_state=ProbeState.LOADING)
        return RuntimeHTTPError(f"{heading}: {said}", status_code=status, runtime_message=said)

    def decode_answer(self, answer: HTTPAnswer, method: str, path: str) -> Any:
        """The answer's JSON; what came back, described, when it is not JSON."""
        return self.decode_json(answer.body, method, path, described=answer.described())

    def decode_json(self, body: bytes, method: str, path: str, *, described: str = "") -> Any:
        try:
            return json.loads(body)
        except (ValueError, RecursionError):  # RecursionError: nested deeper than Python parses
            if not body.strip():
                problem = "an empty body"
            else:
                what = described or f"{len(body):,} bytes"
                problem = f"{what}, not the JSON {self.runtime_name}'s {path} answers"
            raise MalformedResponse(f"{self.where} answered {method} {path} with {problem}") from None

    def parse_wire(
        self,
        wire_type: type[WireModel],
        data: Any,
        method: str,
        path: str,
        *,
        answer: HTTPAnswer | None = None,
    ) -> WireModel:
        try:
            return wire_type.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(part) for part in first["loc"])[:_PREVIEW_CHARS] or "the top level"
            what = f"{answer.described()}, JSON" if answer is not None else "JSON"
            raise MalformedResponse(
                f"{self.where} answered {method} {path} with {what} its API does not document: "
                f"{field}: {first['msg']}"
            ) from None


def is_route_missing(runtime_message: str) -> bool:
    """Whether a 404's text is the web framework's (no such path) rather than the runtime's own
    (no such model)."""
    return runtime_message.strip().lower() in _ROUTER_NOT_FOUND


def runtime_error_text(body: bytes) -> str:
    """The error message of a runtime's JSON error body, in the shapes Ollama, OpenAI-style
    servers, llama.cpp and FastAPI document; a web framework's plain "not found"; else "".

    Nothing else of a body is ever quoted: whatever answers may be a page the tenant must not read.
    """
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        text = _preview(body)
        return text if is_route_missing(text) else ""
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, str) and error:
            return _preview(error.encode())
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return _preview(str(error["message"]).encode())
        for key in ("message", "detail", "status"):
            if isinstance(data.get(key), str) and data[key]:
                return _preview(str(data[key]).encode())
        if "detail" in data:
            return json.dumps(data["detail"])[:_PREVIEW_CHARS]
    return ""


def describe_answer(status_code: int, content_type: str, size: int) -> str:
    """`HTTP 200 text/html, 1,234 bytes`: what came back, in words that quote nothing of it."""
    media = content_type.split(";")[0].strip()
    if not media:
        media = "without a content type"
    elif not _MEDIA_TYPE.fullmatch(media):
        media = "of an unusual content type"
    return f"HTTP {status_code} {media}, {size:,} bytes"


def _standard_phrase(status_code: int) -> str:
    try:
        return http.HTTPStatus(status_code).phrase
    except ValueError:
        return "(a status without a standard name)"


def _preview(body: bytes) -> str:
    # Redacted before the cut: a cut inside `user:pass@` would hide the `@` that marks it.
    text = redact_credentials(" ".join(body.decode("utf-8", errors="replace").split()))
    return text if len(text) <= _PREVIEW_CHARS else text[:_PREVIEW_CHARS] + "…"


def _without_credentials(url: str) -> str:
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _describe(exc: BaseException) -> str:
    """The innermost useful message (httpx's own is often empty or generic)."""
    messages = []
    seen: BaseException | None = exc
    while seen is not None:
        if str(seen):
            messages.append(str(seen))
        seen = seen.__cause__ or seen.__context__
    return messages[-1] if messages else type(exc).__name__

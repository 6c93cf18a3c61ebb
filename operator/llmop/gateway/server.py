"""The gateway's HTTP server: OpenAI's API, each request forwarded to a pod serving its `model`.

Bodies are forwarded as they came (never re-encoded) and answers are relayed chunk by chunk as
they arrive, so a stream reaches the client token by token. The gateway adds the backend's
runtime API key; it never passes on the client's Authorization header (which carries the
gateway's own key, when keys are required).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from llmop.gateway import errors
from llmop.gateway.affinity import affinity_key
from llmop.gateway.balance import Balancer
from llmop.gateway.demand import DemandBook
from llmop.gateway.errors import GatewayError
from llmop.gateway.guard import GuardedResolver, literal_refusal
from llmop.gateway.keys import GatewayKey, Keyring
from llmop.gateway.metrics import Exchange, GatewayMetrics, exchange_of
from llmop.gateway.table import (
    CHAT,
    COMPLETION,
    EMBEDDINGS,
    TOOLS,
    BackendKey,
    ModelRoute,
    RoutingTable,
    Upstream,
)
from llmop.runtimes.address_guard import DeniedTargets

logger = logging.getLogger(__name__)

#: Each forwarded endpoint, the capability it needs and how a client would name it.
ENDPOINTS = {
    "/v1/chat/completions": (CHAT, "chat completions (/v1/chat/completions)"),
    "/v1/completions": (COMPLETION, "text completions (/v1/completions)"),
    "/v1/embeddings": (EMBEDDINGS, "embeddings (/v1/embeddings)"),
}
#: Answers that say "not this pod, not now": tried on another serving pod while one is left.
_RETRY_ELSEWHERE = {502, 503, 504}
#: Idle connections to pods are closed after this: below the 5 s after which llama-server
#: (cpp-httplib) and vLLM (uvicorn) close theirs. Kept longer, a request sent on a connection the
#: runtime closes at that very moment fails before the runtime reads it ("Can not write request
#: body"), with no other pod to retry on when the backend runs one.
UPSTREAM_KEEPALIVE_SECONDS = 4.0
#: Answer headers passed to the client; the rest (hop-by-hop, the runtime's server name) are not.
_RELAYED_HEADERS = ("Content-Type", "Content-Encoding", "Retry-After", "X-Request-Id")


@dataclass(frozen=True)
class GatewaySettings:
    #: How long a request for a model that is starting or loading waits for a serving pod.
    hold_seconds: float = 30.0
    #: Retry-After while the model is on its way: a retry is held again, so soon is fine.
    retry_after_seconds: int = 5
    #: Retry-After when no backend is on its way (Failed, or Ready without a serving pod): it
    #: will not serve before the operator or someone changes something.
    stalled_retry_after_seconds: int = 60
    connect_timeout_seconds: float = 10.0
    #: Largest request body (images travel inline, base64).
    max_body_bytes: int = 64 * 1024 * 1024
    #: Where external backends' servers may not be (the operator's deny list); None: no check.
    denied: DeniedTargets | None = None
    #: Every request but the probes needs one of the gateway's keys (Authorization: Bearer).
    require_keys: bool = False
    #: Port of /metrics (0: none); the API's port never serves them.
    metrics_port: int = 0
    #: Send the turns of a conversation (requests sharing a prefix) to the same pod, within bounds.
    prefix_affinity: bool = False


class Gateway:
    def __init__(self, settings: GatewaySettings | None = None, table: RoutingTable | None = None) -> None:
        self.settings = settings or GatewaySettings()
        self.table = table or RoutingTable()
        self.balancer = Balancer()
        self.metrics = GatewayMetrics(self.balancer)
        #: What autoscaled backends are asked for; a DemandWriter (with the API) reports it.
        self.demand = DemandBook(self.balancer.in_flight)
        self.demand.follow(self.table)
        self.changed = asyncio.Condition()
        self.synced = table is not None
        self.keyring = Keyring()
        self.keys_synced = not self.settings.require_keys
        self.session: aiohttp.ClientSession | None = None

    async def set_table(self, table: RoutingTable) -> None:
        """Route by `table` from now on, and wake requests waiting for a model to be served."""
        async with self.changed:
            self.table = table
            self.demand.follow(table)
            self.synced = True
            self.changed.notify_all()

    async def set_keyring(self, keyring: Keyring) -> None:
        self.keyring = keyring
        self.keys_synced = True

    def authenticate(self, request: web.Request) -> GatewayKey | None:
        """The caller's key; None when keys are not required. Raises 401 without a known key."""
        if not self.settings.require_keys:
            return None
        scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            raise errors.no_key()
        key = self.keyring.find(presented.strip())
        if key is None:
            raise errors.unknown_key()
        return key

    def app(self) -> web.Application:
        app = web.Application(
            client_max_size=self.settings.max_body_bytes, middlewares=[self.metrics.middleware]
        )
        for path in ENDPOINTS:
            app.router.add_post(path, self.handle_forward)
        app.router.add_get("/v1/models", self.handle_models)
        app.router.add_get("/healthz", self.handle_health)
        app.router.add_get("/readyz", self.handle_ready)
        app.router.add_route("*", "/{path:.*}", self.handle_elsewhere)
        app.on_startup.append(self._open_session)
        app.on_cleanup.append(self._close_session)
        return app

    async def _open_session(self, _: web.Application) -> None:
        timeout = aiohttp.ClientTimeout(total=None, connect=self.settings.connect_timeout_seconds)
        denied = self.settings.denied
        resolver = GuardedResolver(denied) if denied is not None else None
        connector = aiohttp.TCPConnector(
            limit=1000, limit_per_host=0, resolver=resolver, keepalive_timeout=UPSTREAM_KEEPALIVE_SECONDS
        )
        # auto_decompress off: bytes pass through as the runtime sent them.
        # No cookie jar: a cookie one runtime sets must never travel to another (nor cost a lookup).
        self.session = aiohttp.ClientSession(
            timeout=timeout, connector=connector, auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar()
        )

    async def _close_session(self, _: web.Application) -> None:
        if self.session is not None:
            await self.session.close()

    async def handle_health(self, _: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def handle_ready(self, _: web.Request) -> web.Response:
        """Ready once the first list of the backends arrived: before it, every model is unknown."""
        ready = self.synced and self.keys_synced
        return web.Response(text="ok\n") if ready else web.Response(status=503, text="syncing\n")

    async def handle_elsewhere(self, request: web.Request) -> web.Response:
        served = ", ".join(f"POST {path}" for path in ENDPOINTS) + ", GET /v1/models"
        error = GatewayError(
            404, f"{request.method} {request.path} is not served here: {served}", code="unknown_url"
        )
        return error_response(error)

    async def handle_models(self, request: web.Request) -> web.Response:
        try:
            key = self.authenticate(request)
        except GatewayError as error:
            return error_response(error)
        listed = ((name, reachable(self.table.lookup(name), key)) for name in self.table.model_names())
        data = [model_entry(name, routes) for name, routes in listed if routes]
        return web.json_response({"object": "list", "data": data})

    async def handle_forward(self, request: web.Request) -> web.StreamResponse:
        capability, wording = ENDPOINTS[request.path]
        try:
            key = self.authenticate(request)
            raw, model, body = await read_request(request)
            if self.table.lookup(model):
                exchange_of(request).model = model  # a known name: a label, never a client's whim
            if capability == CHAT and body.get("tools"):
                capability, wording = TOOLS, "tool calls (`tools` in /v1/chat/completions)"
            upstreams = await self.targets(model, capability, wording, key)
            # One pod has nothing to choose from: no key to compute.
            keyed = self.settings.prefix_affinity and len(upstreams) > 1
            affinity = affinity_key(capability, body) if keyed else None
            return await self.forward(request, raw, model, upstreams, affinity)
        except GatewayError as error:
            return error_response(error)

    async def targets(
        self, model: str, capability: str, wording: str, key: GatewayKey | None = None
    ) -> list[Upstream]:
        """The pods serving `model` with `capability` that `key` may reach; waits while the model
        is on its way. A request held for an autoscaled backend counts as waiting for it (which
        wakes a backend at zero) until it is answered or given up."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.hold_seconds
        held: list[BackendKey] = []
        try:
            while True:
                capable = self.capable_routes(model, capability, wording, key)
                serving = [upstream for route in capable for upstream in route.serving]
                if serving:
                    return serving
                remaining = deadline - loop.time()
                coming = any(route.coming for route in capable)
                if remaining <= 0 or not coming:
                    waited = self.settings.hold_seconds - max(remaining, 0.0)
                    retry = (
                        self.settings.retry_after_seconds
                        if coming
                        else self.settings.stalled_retry_after_seconds
                    )
                    raise errors.not_ready(model, round(waited, 1), retry, describe_phases(capable), coming)
                held = held or self.demand.hold(capable)
                await self.wait_for_change(remaining)
        finally:
            if held:
                self.demand.release(held)

    def capable_routes(
        self, model: str, capability: str, wording: str, key: GatewayKey | None
    ) -> list[ModelRoute]:
        """The routes of `model` that `key` may reach and that can serve `capability`; raises
        what the client must hear when there are none."""
        offered = self.table.lookup(model)
        routes = reachable(offered, key)
        if offered and not routes and key is not None:
            raise errors.not_permitted(model, key.source, key.describe_reach())
        if not routes:
            raise errors.unknown_model(model, self.reachable_names(key))
        capable = [route for route in routes if route.can(capability)]
        if not capable:
            raise errors.missing_capability(model, wording, describe_backends(routes))
        return capable

    def reachable_names(self, key: GatewayKey | None) -> list[str]:
        names = self.table.model_names()
        return names if key is None else [n for n in names if reachable(self.table.lookup(n), key)]

    async def wait_for_change(self, seconds: float) -> None:
        async with self.changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), seconds)

    async def forward(
        self,
        request: web.Request,
        raw: bytes,
        model: str,
        upstreams: list[Upstream],
        affinity: bytes | None = None,
    ) -> web.StreamResponse:
        """Send to the pod the balancer chooses (the least-loaded, or the conversation's own with
        `affinity`); one that fails before answering is replaced by another."""
        tried: set[str] = set()
        last = "nothing"
        while (upstream := self.balancer.choose(upstreams, tried, affinity)) is not None:
            tried.add(upstream.key)
            self.balancer.started(upstream)
            if upstream.autoscaled:
                self.demand.touched()
            exchange_of(request).routed(model, upstream)
            try:
                response, last = await self.open(request.path, raw, upstream, len(tried) < len(upstreams))
                if response is not None:
                    return await relay(request, response, model, upstream, self.balancer)
            finally:
                self.balancer.finished(upstream)
                if upstream.autoscaled:
                    self.demand.touched()
        raise errors.upstream_failed(model, len(tried), last)

    async def open(
        self, path: str, raw: bytes, upstream: Upstream, others_left: bool
    ) -> tuple[aiohttp.ClientResponse | None, str]:
        """The pod's answer, or None and why when another pod should be asked instead."""
        headers = {"Content-Type": "application/json"}
        if upstream.api_key:
            headers["Authorization"] = f"Bearer {upstream.api_key}"
        url = upstream.base_url + path.removeprefix("/v1")
        if refusal := await self.refusal(upstream):
            self.balancer.failed(upstream)
            logger.warning("gateway: %s refused: %s", upstream.key, refusal)
            return None, f"{upstream.pod} is at an address llmop refuses ({refusal})"
        try:
            response = await self.post(url, raw, headers)
        except (aiohttp.ClientError, TimeoutError) as error:
            self.balancer.failed(upstream)
            logger.warning("gateway: %s did not answer: %r", upstream.key, error)
            return None, f"{upstream.pod} did not answer ({why_unanswered(error)})"
        if response.status in _RETRY_ELSEWHERE and others_left:
            response.release()
            self.balancer.failed(upstream)
            return None, f"{upstream.pod} answered HTTP {response.status}"
        return response, ""

    async def post(self, url: str, raw: bytes, headers: dict[str, str]) -> aiohttp.ClientResponse:
        """The pod's answer. A kept-alive connection the pod closes as the request goes out fails
        before the pod answers (reset or closed, not refused): that request is sent once more,
        on another connection, as the `openai` client would on a connection error."""
        assert self.session is not None
        try:
            return await self.session.post(url, data=raw, headers=headers)
        except (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError) as error:
            if isinstance(error, aiohttp.ClientConnectorError):
                raise  # the pod refused or could not be reached: no connection to blame
            logger.info("gateway: %s closed the connection before answering (%r); sent again", url, error)
            return await self.session.post(url, data=raw, headers=headers)

    async def refusal(self, upstream: Upstream) -> str | None:
        if not upstream.external or self.settings.denied is None:
            return None
        return await literal_refusal(self.settings.denied, upstream.base_url)


async def read_request(request: web.Request) -> tuple[bytes, str, dict[str, Any]]:
    """The body as sent, the model it names, and the body parsed."""
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge as error:
        raise errors.GatewayError(
            413, f"request body too large: {error.text}", code="body_too_large"
        ) from None
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise errors.bad_request("the request body is not JSON") from None
    model = body.get("model") if isinstance(body, dict) else None
    if not isinstance(model, str) or not model:
        raise errors.bad_request("the request names no model: set `model` to one of GET /v1/models", "model")
    return raw, model, body


def reachable(routes: tuple[ModelRoute, ...], key: GatewayKey | None) -> tuple[ModelRoute, ...]:
    """The routes `key` may use (all of them when keys are not required)."""
    if key is None:
        return routes
    return tuple(route for route in routes if key.may_reach(route.namespace, route.backend))


async def relay(
    request: web.Request,
    response: aiohttp.ClientResponse,
    model: str,
    upstream: Upstream,
    balancer: Balancer,
) -> web.StreamResponse:
    """Pass the pod's answer on chunk by chunk. A pod that dies mid-stream ends an event stream
    with an error event (the client sees why); any other body is cut off, which the client
    notices as a broken response."""
    headers = {name: response.headers[name] for name in _RELAYED_HEADERS if name in response.headers}
    out = web.StreamResponse(status=response.status, headers=headers)
    streaming = response.headers.get("Content-Type", "").startswith("text/event-stream")
    exchange = exchange_of(request)
    exchange.streaming = streaming
    if response.content_length is not None and not streaming:
        out.content_length = response.content_length
    try:
        await out.prepare(request)
        broken = await pump(response, out, exchange)
    except ConnectionResetError:
        return out  # the client left: releasing the answer closes the pod's connection
    finally:
        response.release()
    if broken is not None:
        balancer.failed(upstream)
        logger.warning("gateway: %s broke off its answer: %r", upstream.key, broken)
        if not streaming:
            raise broken
        await out.write(errors.stream_broken(model, upstream.pod, type(broken).__name__).event())
    await out.write_eof()
    return out


async def pump(
    response: aiohttp.ClientResponse, out: web.StreamResponse, exchange: Exchange
) -> Exception | None:
    """Copy each chunk as it comes; the pod's failure is returned, the client's (it left) raised."""
    chunks = response.content.iter_any().__aiter__()
    while True:
        try:
            chunk = await chunks.__anext__()
        except StopAsyncIteration:
            return None
        except (aiohttp.ClientError, TimeoutError) as error:
            return error
        exchange.chunk(chunk)
        await out.write(chunk)


def why_unanswered(error: Exception) -> str:
    """The kind of failure; a refused name says why (it is llmop's own sentence, no runtime's)."""
    if isinstance(error, aiohttp.ClientConnectorError) and str(error.os_error).startswith("llmop refuses"):
        return str(error.os_error)[:300]
    return type(error).__name__


def error_response(error: GatewayError) -> web.Response:
    return web.json_response(error.body(), status=error.status, headers=dict(error.headers))


def describe_backends(routes: list[ModelRoute] | tuple[ModelRoute, ...]) -> str:
    names = [f"{r.namespace}/{r.backend}" + (f", {r.runtime}" if r.runtime else "") for r in routes]
    return "backend " + "; ".join(names)


def describe_phases(routes: list[ModelRoute]) -> str:
    return "; ".join(f"backend {r.namespace}/{r.backend} is {r.phase or 'new'}" for r in routes)


def model_entry(name: str, routes: tuple[ModelRoute, ...]) -> dict[str, Any]:
    """One model as OpenAI lists it, with what llmop knows of it beside."""
    backends = [
        {
            "namespace": route.namespace,
            "name": route.backend,
            "runtime": route.runtime,
            "contextLength": route.context_length,
            "capabilities": sorted(route.capabilities) if route.capabilities is not None else None,
            "loaded": route.loaded,
            "servingPods": len(route.serving),
        }
        for route in routes
    ]
    return {"id": name, "object": "model", "created": 0, "owned_by": "llmop", "llmop": {"backends": backends}}

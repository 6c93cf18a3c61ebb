"""The gateway's Prometheus metrics, served on a port of their own (as the operator's are).

Every forwarded request gets an `Exchange`: the server tells it which backend answered and hands
it each chunk it relays. Tokens come from the answer's `usage` (OpenAI's shape), found in the
last few KiB the gateway relayed: the end of a JSON answer, or a stream's final chunk when the
client asked for it (`stream_options.include_usage`). Nothing is buffered or re-parsed beyond
that tail, and only once, when the answer ended.

Labels carry only names the gateway routes (`model` is empty for a model it does not know), so a
client cannot grow the series by sending made-up names.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from llmop.gateway.balance import Balancer
from llmop.gateway.table import Upstream
from llmop.serving import serve_routes

logger = logging.getLogger(__name__)

#: The end of an answer kept to find its `usage`: a final stream chunk or a JSON answer's tail.
USAGE_TAIL_BYTES = 8192
#: More tokens than one answer has: a larger (or negative, or non-integer) count is not counted.
_MAX_TOKENS = 10**9
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_AFTER_USAGE_KEY = re.compile(rb"\s*:\s*")
_DECODER = json.JSONDecoder()
#: The Exchange of the request the current task serves (the middleware and handler share a task).
_EXCHANGE: ContextVar[Exchange | None] = ContextVar("llmop_gateway_exchange", default=None)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class GatewayMetrics:
    """The gateway's series, in a registry of its own (the operator's are not the gateway's)."""

    def __init__(self, balancer: Balancer) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "llmop_gateway_requests",
            "Requests to the OpenAI endpoints, by model, backend (namespace/name) and HTTP status.",
            ["model", "backend", "code"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "llmop_gateway_request_duration_seconds",
            "Seconds from a request's arrival to the end of its answer, by model and backend.",
            ["model", "backend"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.first_token = Histogram(
            "llmop_gateway_time_to_first_token_seconds",
            "Seconds from a streamed request's arrival to its first event relayed to the client.",
            ["model", "backend"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.tokens = Counter(
            "llmop_gateway_tokens",
            "Tokens in the answers' usage: direction=in (prompt_tokens), out (completion_tokens).",
            ["model", "backend", "direction"],
            registry=self.registry,
        )
        self.registry.register(InFlightCollector(balancer))
        self._routes: dict[tuple[str, str], RouteSeries] = {}

    def route(self, model: str, backend: str) -> RouteSeries:
        """The series of one (model, backend), their labels resolved once (labels() on every
        request costs more than the rest of the bookkeeping)."""
        found = self._routes.get((model, backend))
        if found is None:
            found = self._routes[(model, backend)] = RouteSeries(self, model, backend)
        return found

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Counts and times the forwarded endpoints; other paths pass untouched."""
        if not request.path.startswith("/v1/") or request.method != "POST":
            return await handler(request)
        exchange = Exchange(self)
        token = _EXCHANGE.set(exchange)
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as error:
            status = error.status
            raise
        finally:
            _EXCHANGE.reset(token)
            exchange.finish(status)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class RouteSeries:
    __slots__ = ("backend", "codes", "duration", "first_token", "metrics", "model", "tokens")

    def __init__(self, metrics: GatewayMetrics, model: str, backend: str) -> None:
        self.metrics, self.model, self.backend = metrics, model, backend
        self.codes: dict[int, Any] = {}
        # A request that reached no backend is only counted: no empty-labelled series of the rest.
        routed = bool(backend)
        self.duration: Any = metrics.duration.labels(model, backend) if routed else None
        self.first_token: Any = metrics.first_token.labels(model, backend) if routed else None
        self.tokens = {way: metrics.tokens.labels(model, backend, way) for way in ("in", "out") if routed}

    def answered(self, status: int) -> None:
        child = self.codes.get(status)
        if child is None:
            child = self.codes[status] = self.metrics.requests.labels(self.model, self.backend, str(status))
        child.inc()


class Exchange:
    """What the gateway saw of one forwarded request."""

    __slots__ = ("backend", "metrics", "model", "seen_first", "started", "streaming", "tail")

    def __init__(self, metrics: GatewayMetrics | None) -> None:
        self.metrics = metrics
        self.model = ""
        self.backend = ""
        self.started = time.monotonic()
        self.streaming = False
        self.seen_first = False
        self.tail = bytearray()

    def routed(self, model: str, upstream: Upstream) -> None:
        self.model = model
        self.backend = f"{upstream.namespace}/{upstream.backend}"

    def chunk(self, data: bytes) -> None:
        """A chunk relayed to the client."""
        if not self.seen_first:
            self.seen_first = True
            if self.streaming and self.metrics is not None:
                series = self.metrics.route(self.model, self.backend)
                series.first_token.observe(time.monotonic() - self.started)
        tail = self.tail
        tail += data
        if len(tail) > 2 * USAGE_TAIL_BYTES:
            del tail[:-USAGE_TAIL_BYTES]

    def finish(self, status: int) -> None:
        metrics = self.metrics
        if metrics is None:
            return
        series = metrics.route(self.model, self.backend)
        series.answered(status)
        if not self.backend:
            return
        series.duration.observe(time.monotonic() - self.started)
        if status == 200 and (usage := usage_in(bytes(self.tail[-USAGE_TAIL_BYTES:]))):
            for direction, count in usage.items():
                series.tokens[direction].inc(count)


def exchange_of(_: web.Request) -> Exchange:
    """The request's exchange; an unrecorded one where no metrics middleware runs."""
    found = _EXCHANGE.get()
    if found is None:
        found = Exchange(None)
        _EXCHANGE.set(found)
    return found


def usage_in(tail: bytes) -> dict[str, int]:
    """Prompt (in) and completion (out) tokens of the last `usage` object in `tail`; {} when
    there is none, it is cut off, or its counts are not plausible."""
    at = tail.rfind(b'"usage"')
    while at > 0 and tail[at - 1] == 0x5C:  # \"usage\": inside a string (a model's words)
        at = tail.rfind(b'"usage"', 0, at)
    if at < 0:
        return {}
    after = _AFTER_USAGE_KEY.match(tail, at + 7)
    if after is None:  # a key "usage" needs its colon; anything else is a word
        return {}
    text = tail[after.end() :].decode("utf-8", errors="replace")
    try:
        usage, _ = _DECODER.raw_decode(text)
    except ValueError:
        return {}
    if not isinstance(usage, dict):
        return {}
    counts = {"in": usage.get("prompt_tokens"), "out": usage.get("completion_tokens")}
    return {
        direction: count
        for direction, count in counts.items()
        if isinstance(count, int) and not isinstance(count, bool) and 0 < count < _MAX_TOKENS
    }


class InFlightCollector(Collector):
    """Requests outstanding per pod, read from the balancer at scrape time (nothing on the
    request path)."""

    def __init__(self, balancer: Balancer) -> None:
        self.balancer = balancer

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "llmop_gateway_in_flight_requests",
            "Requests this gateway pod is forwarding, per runtime pod (pods with none are left out).",
            labels=["backend", "pod"],
        )
        for key, count in list(self.balancer.in_flight.items()):
            namespace, backend, pod = key.split("/", 2)
            family.add_metric([f"{namespace}/{backend}", pod], count)
        yield family


async def start_metrics_server(host: str, port: int, metrics: GatewayMetrics) -> web.AppRunner | None:
    """Serve /metrics; None (and an error in the log) when the port is taken: metrics are an
    aid, and the gateway serves requests without them."""

    async def scrape(_: web.Request) -> web.Response:
        return web.Response(body=metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    return await serve_routes({"/metrics": scrape}, host, port)

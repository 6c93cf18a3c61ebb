"""`llmop gateway`: one OpenAI-compatible endpoint for the backends of the namespaces it serves."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
from dataclasses import replace
from typing import Any

from aiohttp import web

from llmop.gateway.demand import DemandWriter, gateway_id
from llmop.gateway.guard import denied_targets
from llmop.gateway.keywatch import KeyWatch
from llmop.gateway.metrics import start_metrics_server
from llmop.gateway.server import Gateway, GatewaySettings
from llmop.gateway.watch import BackendWatch
from llmop.models.duration import parse_duration
from llmop.sources import redact_log_records

logger = logging.getLogger("llmop.gateway")

DEFAULT_PORT = 8000
#: /metrics on a port of its own, as the operator's: clients of the API never reach it.
DEFAULT_METRICS_PORT = 8080


def add_subcommand(commands: Any) -> argparse.ArgumentParser:
    gateway = commands.add_parser(
        "gateway",
        help="serve one OpenAI-compatible API that routes each request by its model to a pod serving it",
        description="Serve /v1/chat/completions, /v1/completions, /v1/embeddings and /v1/models for "
        "the LLMBackends of the namespaces given, routing each request to a pod llmop observed serving "
        "its model. A request may only reach backends of these namespaces.",
    )
    gateway.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=None,
        help="serve this namespace's backends (repeatable); default: $LLMOP_GATEWAY_NAMESPACES "
        "(comma-separated), else the gateway pod's own namespace ($POD_NAMESPACE)",
    )
    gateway.add_argument("--host", default="0.0.0.0", help="address to listen on (default: 0.0.0.0)")
    gateway.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default: {DEFAULT_PORT})")
    gateway.add_argument(
        "--metrics-port",
        type=int,
        default=int(os.environ.get("LLMOP_METRICS_PORT", DEFAULT_METRICS_PORT)),
        help="serve /metrics on this port; 0 = no metrics server "
        f"(default: $LLMOP_METRICS_PORT or {DEFAULT_METRICS_PORT})",
    )
    gateway.add_argument(
        "--hold",
        default=os.environ.get("LLMOP_GATEWAY_HOLD", "30s"),
        metavar="DURATION",
        help="how long a request for a model that is starting or loading waits before a 503 "
        "(default: $LLMOP_GATEWAY_HOLD or 30s)",
    )
    gateway.add_argument(
        "--auth",
        choices=("keys", "none"),
        default=os.environ.get("LLMOP_GATEWAY_AUTH", "keys"),
        help="keys: every request needs one of the gateway's keys (Secrets labelled "
        "llmop.dev/gateway-key=true and llmop.dev/use=true), and reaches only what its key may; "
        "none: every client reaches every backend served (default: $LLMOP_GATEWAY_AUTH or keys)",
    )
    gateway.add_argument(
        "--prefix-affinity",
        choices=("on", "off"),
        default=os.environ.get("LLMOP_GATEWAY_PREFIX_AFFINITY", "off"),
        help="on: the turns of a conversation (requests sharing their leading messages or prompt "
        "start) go to the same pod, which has that prefix in cache, unless it is busier than the "
        "others by more than max(2, 25%% of their average); off: each request goes to the "
        "least-loaded pod (default: $LLMOP_GATEWAY_PREFIX_AFFINITY or off)",
    )
    gateway.add_argument(
        "--kubeconfig", default=None, help="kubeconfig outside a cluster (default: $KUBECONFIG)"
    )
    gateway.set_defaults(func=run_gateway_command)
    return gateway


def gateway_namespaces(given: list[str] | None, environ: dict[str, str] | os._Environ[str]) -> list[str]:
    """The namespaces served: given, else configured, else the pod's own; never every namespace."""
    if given:
        return sorted(set(given))
    configured = [n.strip() for n in environ.get("LLMOP_GATEWAY_NAMESPACES", "").split(",") if n.strip()]
    if configured:
        return sorted(set(configured))
    own = environ.get("POD_NAMESPACE", "").strip()
    return [own] if own else []


def run_gateway_command(args: argparse.Namespace) -> int:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpcore", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    redact_log_records()
    namespaces = gateway_namespaces(args.namespace, os.environ)
    if not namespaces:
        logger.error(
            "cannot start: name the namespaces to serve with --namespace or $LLMOP_GATEWAY_NAMESPACES"
        )
        return 2
    try:
        settings = gateway_settings(args)
    except ValueError as error:
        logger.error("cannot start: %s", error)
        return 2
    return asyncio.run(serve(namespaces, args.host, args.port, settings, args.kubeconfig))


def gateway_settings(args: argparse.Namespace) -> GatewaySettings:
    """The settings the options (or their environment defaults) say; ValueError names a bad one."""
    try:
        hold = parse_duration(args.hold)
    except ValueError as error:
        raise ValueError(f"--hold {args.hold!r}: {error}") from None
    if args.auth not in ("keys", "none"):
        raise ValueError(f"--auth {args.auth!r}: keys or none")
    if args.prefix_affinity not in ("on", "off"):
        raise ValueError(f"--prefix-affinity {args.prefix_affinity!r}: on or off")
    return GatewaySettings(
        hold_seconds=hold,
        require_keys=args.auth == "keys",
        metrics_port=args.metrics_port,
        prefix_affinity=args.prefix_affinity == "on",
    )


async def serve(
    namespaces: list[str], host: str, port: int, settings: GatewaySettings, kubeconfig: str | None
) -> int:
    from llmop.k8s.client import KubeClient

    kube = KubeClient.from_environment(kubeconfig)
    try:
        denied = denied_targets(os.environ, str(kube.http.base_url))
    except ValueError as error:
        logger.error("cannot start: %s", error)
        await kube.close()
        return 2
    gateway = Gateway(replace(settings, denied=denied))
    runner = web.AppRunner(gateway.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    scrapes = (
        await start_metrics_server(host, settings.metrics_port, gateway.metrics)
        if settings.metrics_port
        else None
    )
    logger.info(
        "serving on %s:%d the backends of %s, %s",
        host,
        port,
        ", ".join(namespaces),
        "to holders of its keys" if settings.require_keys else "to every client (--auth none)",
    )
    followed = [
        BackendWatch(kube, namespaces, gateway.set_table).run(),
        # The demand of autoscaled backends, written into their status off the requests' path.
        DemandWriter(kube, gateway.demand, gateway_id(os.environ)).run(),
    ]
    if settings.require_keys:
        own = os.environ.get("POD_NAMESPACE", "").strip() or None
        followed.append(KeyWatch(kube, namespaces, own, gateway.set_keyring).run())
    watching = asyncio.ensure_future(asyncio.gather(*followed))
    loop = asyncio.get_running_loop()
    for stop in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(stop, watching.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await watching
    await runner.cleanup()
    if scrapes is not None:
        await scrapes.cleanup()
    await kube.close()
    return 0

"""A small HTTP server for scrapes and probes, beside the real work: the operator's /metrics and
/healthz, the gateway's /metrics."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

logger = logging.getLogger(__name__)


async def serve_routes(
    routes: dict[str, Callable[[web.Request], Awaitable[web.Response]]], host: str, port: int
) -> web.AppRunner | None:
    """Serve these GET routes; None, and an error in the log, when the port is taken."""
    app = web.Application()
    for path, handler in routes.items():
        app.router.add_get(path, handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as error:
        logger.error("cannot serve metrics on %s:%s: %s", host, port, error)
        await runner.cleanup()
        return None
    logger.info("serving %s on %s:%s", " and ".join(routes), host, port)
    return runner

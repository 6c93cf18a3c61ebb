"""Starting the kopf operator: namespaces, logging, and the handlers llmop registers."""

from __future__ import annotations

import asyncio
import os

import kopf

from llmop.config import OperatorConfig


def run_operator(
    *,
    namespaces: list[str] | None,
    log_format: str | None,
    verbose: bool = False,
    liveness: str | None = None,
) -> int:
    config = OperatorConfig.from_env()
    if namespaces:
        config.namespaces = namespaces
    if log_format:
        config.log_format = log_format
    # The startup handler reads the configuration from here (kopf passes it as `memo`).
    os.environ["LLMOP_LOG_FORMAT"] = config.log_format
    kopf.configure(
        verbose=verbose,
        log_format=kopf.LogFormat.JSON if config.log_format == "json" else kopf.LogFormat.PLAIN,
    )
    import llmop.handlers  # noqa: F401  (registers the handlers with kopf)

    asyncio.run(
        kopf.operator(
            clusterwide=not config.namespaces,
            namespaces=config.namespaces,
            liveness_endpoint=liveness,
            memo=kopf.Memo(config=config),
            standalone=True,
        )
    )
    return 0

"""Operator-wide settings and shared clients, set once at startup."""

from __future__ import annotations

from typing import Any

import kopf

from llmop.loops.context import OperatorContext, apply_kopf_settings


@kopf.on.startup()
async def configure(
    settings: kopf.OperatorSettings, memo: OperatorContext, logger: kopf.Logger, **_: Any
) -> None:
    apply_kopf_settings(settings)
    memo.open_clients()
    logger.info("llmop started (namespaces: %s)", ", ".join(memo.config.namespaces) or "all")


@kopf.on.cleanup()
async def close_clients(memo: OperatorContext, **_: Any) -> None:
    await memo.close_clients()

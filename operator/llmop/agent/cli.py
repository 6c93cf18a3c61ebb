"""`llmop agent`: serve the model downloader until stopped."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any

from aiohttp import web

from llmop.agent.server import build_app
from llmop.agent.settings import InvalidAgentSetting, read_token_file, settings_from_env
from llmop.sources import redact_log_records

DEFAULT_PORT = 8090
#: On SIGTERM the agent cancels its transfers (partials stay) and followers end at once; this
#: only bounds a slow client.
_SHUTDOWN_TIMEOUT_SECONDS = 5.0


def add_subcommand(subparsers: Any) -> argparse.ArgumentParser:
    """Add `agent` to the `llmop` parser's subcommands."""
    agent = subparsers.add_parser(
        "agent",
        help="download models for vLLM and llama.cpp (the native sidecar beside them)",
        description="Serve Ollama's pull API for hf:// and https:// models, storing them under "
        "--models-dir. Environment: HF_ENDPOINT (default https://huggingface.co), HF_TOKEN, "
        "LLMOP_REQUIRED_MODELS (a JSON list of the local paths that GET /startup waits for), "
        "LLMOP_DECLARED_MODELS (a JSON list of the only model names a pull may name), "
        "LLMOP_PARALLEL_DOWNLOADS (files of a repo downloaded at once, 1 to 32, default 4).",
    )
    agent.add_argument("--models-dir", required=True, type=Path, help="where models are stored")
    agent.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default: {DEFAULT_PORT})")
    agent.add_argument("--host", default="0.0.0.0", help="address to listen on (default: 0.0.0.0)")
    agent.add_argument(
        "--token-file",
        type=Path,
        help="file holding the bearer token every request but GET /startup and /healthz must carry "
        "(the operator mounts one); without it anyone who reaches the port may drive the agent",
    )
    agent.set_defaults(func=run_agent)
    return agent


def run_agent(args: argparse.Namespace) -> int:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    redact_log_records()
    logger = logging.getLogger("llmop.agent")
    models_dir: Path = args.models_dir
    models_dir.mkdir(parents=True, exist_ok=True)
    try:
        token = read_token_file(args.token_file) if args.token_file else None
        settings = settings_from_env(models_dir, os.environ, token=token)
    except InvalidAgentSetting as error:
        logger.error("cannot start: %s", error)
        return 2
    if token is None:
        logger.warning("no --token-file: anyone who reaches port %d may drive this agent", args.port)
    logger.info(
        "serving %s on %s:%d (Hugging Face: %s, token %s, waiting for %s)",
        models_dir,
        args.host,
        args.port,
        settings.hf_endpoint,
        "set" if settings.hf_token else "unset",
        ", ".join(settings.required_models) or "no models",
    )
    web.run_app(
        build_app(settings),
        host=args.host,
        port=args.port,
        access_log=None,
        print=None,
        shutdown_timeout=_SHUTDOWN_TIMEOUT_SECONDS,
    )
    return 0

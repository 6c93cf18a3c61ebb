"""`llmop probe|models|pull|warmup`: ask a runtime what the operator would ask it.

Tables for people by default, `--json` for scripts. Exit status: 0 on success (for `probe`:
serving), 1 when the runtime is not serving or the operation failed, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from contextlib import aclosing
from typing import Any

from llmop.models.duration import parse_duration
from llmop.runtimes import (
    KNOWN_KINDS,
    ProbeResult,
    PullLine,
    RuntimeAdapter,
    RuntimeAPIError,
    UnknownRuntimeKind,
    connect,
)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
#: `probe --wait` starts probing briskly and backs off to this, so a cold start ending is seen
#: within a couple of seconds without hammering a loading server.
_WAIT_MAX_INTERVAL_SECONDS = 2.0
#: `pull` prints a layer's progress at most this often; Ollama sends many lines a second.
_PULL_PRINT_INTERVAL_SECONDS = 1.0
#: `warmup` may load gigabytes of weights: its request gets minutes, not the probes' seconds.
_WARMUP_TIMEOUT = "5m"


class UsageError(Exception):
    """A mistake in the command line that argparse cannot catch (a missing variable, ...)."""


def add_subcommands(subparsers: Any) -> None:
    """Add `probe`, `models`, `pull` and `warmup` to the `llmop` command's subparsers."""
    probe = subparsers.add_parser(
        "probe",
        help="ask a runtime whether it serves",
        description="Probe a runtime's health endpoint once, or with --wait until it serves. "
        "Exit 0 only if it serves.",
    )
    _add_connection_arguments(probe)
    probe.add_argument(
        "--wait",
        type=_duration,
        default=None,
        metavar="DURATION",
        help="keep probing with backoff for up to DURATION (e.g. 30s, 5m) while the runtime starts",
    )
    probe.set_defaults(func=_as_command(_probe))

    models = subparsers.add_parser(
        "models",
        help="list the models a runtime has (or has loaded, with --running)",
        description="List the models a runtime reports through its own API.",
    )
    _add_connection_arguments(models)
    models.add_argument("--running", action="store_true", help="list the models loaded in memory")
    models.set_defaults(func=_as_command(_models))

    pull = subparsers.add_parser(
        "pull",
        help="pull a model into a runtime, printing progress",
        description="Ask the runtime to download MODEL (Ollama's /api/pull) and print its progress.",
    )
    _add_connection_arguments(pull)
    pull.add_argument("model", metavar="MODEL", help="model to pull, e.g. qwen3:0.6b")
    pull.add_argument("--insecure", action="store_true", help="allow a plain-HTTP registry")
    pull.add_argument(
        "--sha256",
        default=None,
        metavar="HEX",
        help="digest the download must have (llmop's agent checks it)",
    )
    pull.set_defaults(func=_as_command(_pull))

    warmup = subparsers.add_parser(
        "warmup",
        help="load a model with the smallest real request",
        description="Load MODEL into memory as the operator's warmup does (one token; Ollama: an "
        "empty prompt) and print how long it took. Exit 0 once the model answered.",
    )
    _add_connection_arguments(warmup, timeout=_WARMUP_TIMEOUT)
    warmup.add_argument(
        "--model", required=True, help="model to load, as the backend names it (hf://org/repo, qwen3:0.6b)"
    )
    warmup.add_argument(
        "--unload-others", action="store_true", help="unload every other model first (Ollama)"
    )
    warmup.set_defaults(func=_as_command(_warmup))


def _add_connection_arguments(parser: argparse.ArgumentParser, timeout: str = "5s") -> None:
    parser.add_argument("--url", required=True, help="runtime base URL, e.g. http://127.0.0.1:11434")
    parser.add_argument(
        "--runtime", required=True, metavar="KIND", help=f"runtime kind: {', '.join(KNOWN_KINDS)}"
    )
    parser.add_argument(
        "--api-key-env",
        metavar="VAR",
        default=None,
        help="environment variable holding the API key, sent as a bearer token",
    )
    parser.add_argument(
        "--timeout",
        type=_duration,
        default=parse_duration(timeout),
        metavar="DURATION",
        help=f"limit for each request (default: {timeout})",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _as_command(command: Callable[[argparse.Namespace], Coroutine[Any, Any, int]]) -> Callable[..., int]:
    """Run an async command to completion, mapping runtime and usage errors to exit statuses."""

    def run(args: argparse.Namespace) -> int:
        try:
            return asyncio.run(command(args))
        except UsageError as error:
            print(f"llmop {args.command}: {error}", file=sys.stderr)
            return EXIT_USAGE
        except RuntimeAPIError as error:
            print(f"error: {error}", file=sys.stderr)
            return EXIT_FAILED

    return run


def _connect(args: argparse.Namespace) -> RuntimeAdapter:
    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            raise UsageError(f"environment variable {args.api_key_env} is not set or empty")
    try:
        return connect(args.runtime, args.url, api_key=api_key, timeout=args.timeout)
    except (UnknownRuntimeKind, ValueError) as error:
        raise UsageError(str(error)) from None


async def _probe(args: argparse.Namespace) -> int:
    async with _connect(args) as runtime:
        if args.wait is None:
            result = await runtime.probe()
        else:
            result = await runtime.wait_ready(
                args.wait, max_interval=_WAIT_MAX_INTERVAL_SECONDS, on_probe=_StateChangePrinter()
            )
    if args.json:
        print(json.dumps(result.model_dump(mode="json") | {"serving": result.serving}))
    else:
        _print_table(
            ["STATE", "HTTP", "LATENCY", "REASON"],
            [[result.state, result.http_status, f"{result.latency_seconds * 1000:.0f}ms", result.reason]],
        )
    return EXIT_OK if result.serving else EXIT_FAILED


class _StateChangePrinter:
    """While `--wait` waits, say on stderr each time the runtime's state changes."""

    def __init__(self) -> None:
        self.last_state: str | None = None

    def __call__(self, result: ProbeResult) -> None:
        if result.state != self.last_state and not result.serving:
            print(f"waiting: {result.state}: {result.reason}", file=sys.stderr)
        self.last_state = result.state


async def _models(args: argparse.Namespace) -> int:
    async with _connect(args) as runtime:
        if args.running:
            running = await runtime.list_running()
            if args.json:
                print(json.dumps([model.model_dump(mode="json") for model in running], indent=2))
                return EXIT_OK
            _print_table(
                ["NAME", "SIZE", "VRAM", "CONTEXT", "EXPIRES"],
                [
                    [m.name, _size(m.size_bytes), _size(m.size_vram), m.context_length, m.expires_at]
                    for m in running
                ],
            )
            return EXIT_OK
        models = await runtime.list_models()
    if args.json:
        print(json.dumps([model.model_dump(mode="json") for model in models], indent=2))
        return EXIT_OK
    _print_table(
        ["NAME", "SIZE", "CONTEXT", "CAPABILITIES", "DIGEST", "MODIFIED"],
        [
            [
                m.name,
                _size(m.size_bytes),
                m.context_length,
                ",".join(sorted(m.capabilities)) or None,
                _short_digest(m.digest),
                m.modified_at.strftime("%Y-%m-%d %H:%M") if m.modified_at else None,
            ]
            for m in models
        ],
    )
    return EXIT_OK


async def _pull(args: argparse.Namespace) -> int:
    show = _PullProgressPrinter()
    async with (
        _connect(args) as runtime,
        aclosing(runtime.pull(args.model, insecure=args.insecure, sha256=args.sha256)) as pull,
    ):
        async for progress in pull:
            if args.json:
                print(json.dumps(progress.model_dump(mode="json")), flush=True)
            else:
                show(progress)
    return EXIT_OK


async def _warmup(args: argparse.Namespace) -> int:
    async with _connect(args) as runtime:
        try:
            model = runtime.normalize_model_name(args.model)
        except ValueError as error:
            raise UsageError(str(error)) from None
        result = await runtime.warmup(model, timeout=args.timeout, unload_others=args.unload_others)
    if args.json:
        print(json.dumps(result.model_dump(mode="json")))
        return EXIT_OK
    load = f"{result.load_seconds:.2f}s" if result.load_seconds is not None else None
    _print_table(
        ["MODEL", "ELAPSED", "LOAD", "UNLOADED"],
        [[result.model, f"{result.elapsed_seconds:.2f}s", load, ",".join(result.unloaded) or None]],
    )
    return EXIT_OK


class _PullProgressPrinter:
    """Ollama repeats every layer's progress several times a second, finished layers included:
    print each new status, a layer's progress at most once a second, and its completion once."""

    def __init__(self) -> None:
        self.last_status = ""
        self.printed_at: dict[str | None, float] = {}
        self.finished: set[str | None] = set()

    def __call__(self, progress: PullLine) -> None:
        now = time.monotonic()
        new_status = progress.status != self.last_status
        self.last_status = progress.status
        if progress.total is not None and progress.completed == progress.total:
            if progress.digest in self.finished:
                return
            self.finished.add(progress.digest)
        elif (
            not new_status and now - self.printed_at.get(progress.digest, 0.0) < _PULL_PRINT_INTERVAL_SECONDS
        ):
            return
        print(_progress_line(progress), flush=True)
        self.printed_at[progress.digest] = now


def _progress_line(progress: PullLine) -> str:
    if progress.total:
        completed = progress.completed or 0
        percent = 100 * completed / progress.total
        return f"{progress.status}  {_size(completed)} / {_size(progress.total)}  {percent:.0f}%"
    return progress.status


def _print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[str(header) for header in headers]] + [
        ["-" if value is None else str(value) for value in row] for row in rows
    ]
    widths = [max(len(row[column]) for row in cells) for column in range(len(headers))]
    for row in cells:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def _size(size_bytes: int | None) -> str | None:
    """Decimal units, as Ollama prints them."""
    if size_bytes is None:
        return None
    size = float(size_bytes)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"


def _short_digest(digest: str | None) -> str | None:
    if digest is None:
        return None
    algorithm, _, hex_digits = digest.rpartition(":")
    return f"{algorithm}:{hex_digits[:12]}" if algorithm else hex_digits[:12]


def main(argv: list[str] | None = None) -> int:
    """Run these subcommands alone (`python -m llmop.runtimes.cli probe ...`)."""
    parser = argparse.ArgumentParser(prog="llmop")
    add_subcommands(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())

"""`llmop gateway` as its own process on this machine, for the e2e tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from support.kube import eventually

VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def run_gateway(args: list[str], kubeconfig: Path, log_path: Path, env: dict[str, str]) -> Iterator[str]:
    """`llmop gateway ARGS` on a free loopback port; yields its base URL once /readyz says ready.
    Stopped with SIGTERM, it must exit cleanly."""
    port = free_port()
    command = [str(VENV_BIN / "llmop"), "gateway", *args, "--host", "127.0.0.1", "--port", str(port)]
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [*command, "--kubeconfig", str(kubeconfig)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
        )
    base = f"http://127.0.0.1:{port}"
    try:
        eventually(lambda: _status(base + "/readyz") == 200, message="the gateway ready")
        yield base
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=30)
    assert code == 0, log_path.read_text()[-5000:]


def _status(url: str) -> int | None:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.TransportError:
        return None

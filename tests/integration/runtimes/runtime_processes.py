"""Real runtime processes on 127.0.0.1 for the adapter tests: start, pause, kill, read their logs."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
HACK = REPO / "hack"
#: The venv's python runs the stand-ins and `llmop`, whatever python runs pytest.
VENV_BIN = Path(sys.executable).parent
#: The tiny test model's trained context (hack/tiny-gguf --context-length), which runtimes report.
TINY_CONTEXT_LENGTH = 1024


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run_shell(command: str) -> subprocess.CompletedProcess[str]:
    """Run COMMAND with bash, as a user would, with the venv's `llmop` first on PATH."""
    return subprocess.run(
        ["bash", "-c", command],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": f"{VENV_BIN}:/usr/bin:/bin"},
        check=False,
    )


def start_shell(command: str) -> subprocess.Popen[str]:
    """Like run_shell, but running: the caller reads its output as it comes."""
    return subprocess.Popen(
        ["bash", "-c", command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={"PATH": f"{VENV_BIN}:/usr/bin:/bin"},
    )


async def wait_until_listening(port: int, within_seconds: float = 30) -> None:
    """Wait until something accepts TCP connections on 127.0.0.1:`port`."""
    deadline = time.monotonic() + within_seconds
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError(f"nothing listens on 127.0.0.1:{port} after {within_seconds}s") from None
            await asyncio.sleep(0.05)
            continue
        writer.close()
        await writer.wait_closed()
        return


@dataclass
class RuntimeProcess:
    """One runtime process; its output goes to a log file that failures quote."""

    name: str
    argv: list[str]
    port: int
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> RuntimeProcess:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env},
                # Its own process group, so stopping it stops what it spawned (Ollama's runners).
                start_new_session=True,
            )
        return self

    def signal(self, number: signal.Signals) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, number)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.signal(signal.SIGCONT)  # a paused process cannot act on SIGTERM
        self.signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return "(no log)"
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

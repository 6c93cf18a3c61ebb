"""vLLM servers for the integration tests: the real one (hack/build-runtimes.sh's CPU build) and
its stand-in (hack/standins/vllm_server.py), started alike from the same arguments.

A real vLLM takes about 3.7 GB and a minute to start here, so test files share them through
`VLLMServers`, a session-wide pool that keeps each configuration running once started and never
runs more than two real ones at a time.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from runtime_processes import HACK, VENV_BIN, RuntimeProcess, free_port

#: The name the tiny Qwen3-layout repo is served under, as a cluster would name it.
SERVED_NAME = "Qwen/Qwen3-0.6B"
SECOND_NAME = "tiny"
API_KEY = "sk-vllm-tests"
MAX_MODEL_LEN = 1024
#: `--served-model-name` and `--api-key` of each configuration the tests share.
CONFIGS: dict[str, tuple[list[str], str | None]] = {
    "plain": ([SERVED_NAME], None),
    "keyed": ([SERVED_NAME, SECOND_NAME], API_KEY),
    "unnamed": ([], None),
}
FLAVORS = ("real", "standin")
ENGINE_CORE = "VLLM::EngineCore"
#: vLLM's watchdog checks for a dead engine every 5 s from the moment it starts serving
#: (vllm/entrypoints/launchers/launcher.py, watchdog_loop) and then shuts the server down.
WATCHDOG_SECONDS = 5.0
#: A real cold start on 2 cores takes about a minute; a loaded machine, more.
REAL_START_SECONDS = 240
STANDIN_BIND_DELAY = "1"


def hack_version(variable: str) -> str:
    for line in (HACK / "versions.env").read_text().splitlines():
        if line.startswith(f"{variable}="):
            return line.split("=", 1)[1].strip()
    raise AssertionError(f"no {variable} in hack/versions.env")


@dataclass
class VLLMServer:
    flavor: str
    config: str
    process: RuntimeProcess
    model_path: str
    served_names: list[str]
    api_key: str | None
    #: Each GET /health from the start, 0.05 s apart, up to the first 200: "refused" for a refused
    #: connection, the status code for an answer, the exception's name for anything else.
    startup: list[str | int] = field(default_factory=list)
    #: time.monotonic() of the first 200 from /health.
    ready_at: float = 0.0

    @property
    def url(self) -> str:
        return self.process.url

    @property
    def names(self) -> list[str]:
        """What /v1/models lists: the served names, else the model path."""
        return self.served_names or [self.model_path]

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    @property
    def running(self) -> bool:
        return self.process.process is not None and self.process.process.poll() is None

    def start(self, within_seconds: float) -> VLLMServer:
        """Start it and poll /health every 0.05 s, recording each attempt, until it answers 200."""
        self.process.start()
        assert self.process.process is not None
        deadline = time.monotonic() + within_seconds
        with httpx.Client(timeout=2) as client:
            while True:
                try:
                    status = client.get(self.url + "/health").status_code
                except httpx.ConnectError as refused:
                    self.startup.append("refused" if "Connection refused" in str(refused) else repr(refused))
                except httpx.HTTPError as failed:
                    self.startup.append(type(failed).__name__)
                else:
                    self.startup.append(status)
                    if status == 200:
                        self.ready_at = time.monotonic()
                        return self
                if self.process.process.poll() is not None:
                    raise AssertionError(
                        f"{self.flavor} vLLM exited ({self.process.process.returncode}) while starting:\n"
                        + self.process.log_tail(60)
                    )
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"{self.flavor} vLLM not serving after {within_seconds}s:\n"
                        + self.process.log_tail(60)
                    )
                time.sleep(0.05)

    def engine_core_pid(self) -> int:
        """The child whose /proc cmdline's first element is `VLLM::EngineCore`."""
        assert self.process.process is not None
        parent = str(self.process.process.pid)
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                argv0 = (entry / "cmdline").read_bytes().split(b"\0", 1)[0]
                ppid = (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]
            except OSError:
                continue
            if argv0 == ENGINE_CORE.encode() and ppid == parent:
                return int(entry.name)
        raise AssertionError(f"no {ENGINE_CORE} child of {parent}:\n{self.process.log_tail()}")

    def kill_engine_core(self) -> float:
        """kill -9 the engine; returns when (time.monotonic()). Against the real server the kill is
        timed just after a tick of vLLM's watchdog, so the server stays up long enough (about 4.5 s)
        to be looked at before the watchdog shuts it down; a kill just before a tick would leave it a
        tenth of a second."""
        pid = self.engine_core_pid()
        if self.flavor == "real":
            phase = (time.monotonic() - self.ready_at) % WATCHDOG_SECONDS
            time.sleep((0.4 - phase) % WATCHDOG_SECONDS)
        os.kill(pid, signal.SIGKILL)
        return time.monotonic()

    def wait_exit(self, within_seconds: float) -> int:
        assert self.process.process is not None
        try:
            return self.process.process.wait(within_seconds)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.flavor} vLLM still running {within_seconds}s on:\n{self.process.log_tail()}"
            ) from None


class VLLMServers:
    """Real and stand-in vLLM servers, one per (flavor, configuration), kept running for the whole
    session once started; at most MAX_REAL real ones run at once (the least recently used is
    stopped to make room)."""

    MAX_REAL = 2

    def __init__(self, model_path: Path, workdir: Path) -> None:
        self.model_path = str(model_path)
        self.workdir = workdir
        self.shared: dict[tuple[str, str], VLLMServer] = {}
        self.owned: list[VLLMServer] = []  # handed out by `fresh`/`take`; stopped at the end
        self.last_used: dict[tuple[str, str], float] = {}
        self.starting: list[threading.Thread] = []

    def start_early(self, flavor: str, config: str, binary: Path) -> None:
        """Start a shared server on a thread of its own, while other tests run; the pool's next use
        waits for it (a start that failed is tried again, and fails, there)."""

        def start() -> None:
            with contextlib.suppress(AssertionError):
                self._get(flavor, config, binary)

        thread = threading.Thread(target=start, name=f"vllm-{flavor}-{config}-early", daemon=True)
        self.starting.append(thread)
        thread.start()

    def _settle(self) -> None:
        while self.starting:
            self.starting.pop().join()

    def get(self, flavor: str, config: str, binary: Path | None) -> VLLMServer:
        """The shared server of FLAVOR and CONFIG, started if it is not running."""
        self._settle()
        return self._get(flavor, config, binary)

    def _get(self, flavor: str, config: str, binary: Path | None) -> VLLMServer:
        key = (flavor, config)
        server = self.shared.get(key)
        if server is None or not server.running:
            if server is not None:
                server.process.stop()
            server = self._fresh(flavor, config, binary)
            self.owned.remove(server)
            self.shared[key] = server
            server.start(REAL_START_SECONDS if flavor == "real" else 30)
        self.last_used[key] = time.monotonic()
        return server

    def take(self, flavor: str, config: str, binary: Path | None) -> VLLMServer:
        """The shared server, no longer shared: for a test that ends it."""
        server = self.get(flavor, config, binary)
        del self.shared[(flavor, config)]
        self.owned.append(server)
        return server

    def fresh(self, flavor: str, config: str, binary: Path | None) -> VLLMServer:
        """A new, unstarted server of its own: for a test that watches it start."""
        self._settle()
        return self._fresh(flavor, config, binary)

    def _fresh(self, flavor: str, config: str, binary: Path | None) -> VLLMServer:
        if flavor == "real":
            self._make_room()
        names, api_key = CONFIGS[config]
        port = free_port()
        flags = [
            *(["--served-model-name", *names] if names else []),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]
        flags += ["--max-model-len", str(MAX_MODEL_LEN), *(["--api-key", api_key] if api_key else [])]
        env: dict[str, str] = {}
        if flavor == "real":
            scratch = self.workdir / f"vllm-{port}"
            (scratch / "tmp").mkdir(parents=True)
            env = {"TMPDIR": str(scratch / "tmp"), "VLLM_CACHE_ROOT": str(scratch / "cache")}
            assert binary is not None, "the real vLLM needs its binary (the vllm_binary fixture)"
            argv = [str(binary), "serve", self.model_path, *flags, "--enforce-eager"]
        else:
            script = HACK / "standins" / "vllm_server.py"
            argv = [str(VENV_BIN / "python"), str(script), "serve", self.model_path, *flags]
            argv += ["--enforce-eager", "--bind-delay", STANDIN_BIND_DELAY]
        process = RuntimeProcess(
            name=f"vllm-{flavor}-{config}",
            argv=argv,
            port=port,
            log_path=self.workdir / f"vllm-{flavor}-{config}-{port}.log",
            env=env,
        )
        server = VLLMServer(flavor, config, process, self.model_path, names, api_key)
        self.owned.append(server)
        return server

    def _make_room(self) -> None:
        """Stop shared real servers, least recently used first, until one more fits."""
        while True:
            live = [s for s in [*self.shared.values(), *self.owned] if s.flavor == "real" and s.running]
            if len(live) < self.MAX_REAL:
                return
            shared = [key for key, s in self.shared.items() if s.flavor == "real" and s.running]
            if not shared:
                raise AssertionError(f"{len(live)} real vLLM servers of tests' own already run")
            oldest = min(shared, key=lambda key: self.last_used.get(key, 0.0))
            self.shared.pop(oldest).process.stop()

    def close(self) -> None:
        self._settle()
        for server in [*self.shared.values(), *self.owned]:
            server.process.stop()
            # What outlived its server (an engine whose API server died) goes with its group.
            if server.process.process is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(server.process.process.pid, signal.SIGKILL)
        self.shared.clear()
        self.owned.clear()

#!/usr/bin/env python3
"""The kubelet's part for llmop runtime pods in the local (kwok) cluster: real processes at pod IPs.

kwok simulates nodes: it marks pods Running and gives them an IP, but runs no containers, and a
real kubelet with a container runtime cannot run on the machines that test llmop (there is no
Docker). This program stands in for the kubelet and the container runtime, and for nothing
else: for every Running pod labelled `llmop.dev/runtime` (or `llmop.dev/model-cache`, a cache's
filler) it starts the REAL runtime processes on
this machine, bound to the pod's IP (kwok hands out addresses in 127.0.0.0/8, which all route to
the loopback interface), so the operator and the tests talk to pods exactly as in a cluster.

What it does, as the kubelet would:

- volumes: a `persistentVolumeClaim` volume is the folder `<workdir>/volumes/<ns>/<claimName>`
  (shared by every pod using the claim and kept when pods go); an `emptyDir` is
  `<workdir>/pods/<ns>/<pod>/<volume>`, removed with the pod; a `secret` volume is such a folder
  with one file per key of the Secret (the pod waits for the Secret, as under a kubelet). Paths
  under each container's mount points (`/models`) in args and env are rewritten to those folders.
- native sidecars (init containers with `restartPolicy: Always`, llmop's `agent`) start first;
  the main containers start only once each sidecar's startup probe succeeded, polled exactly as
  the pod spec says (httpGet or tcpSocket, initialDelaySeconds, periodSeconds, timeoutSeconds,
  failureThreshold). Startup and liveness probe failures kill the container, like the kubelet.
- containers: `agent` runs `llmop agent` from the project's venv with `--host <podIP>`; the
  main container `runtime` runs the runtime named by the pod's `llmop.dev/runtime` label:
  llamacpp -> the real `llama-server`, vllm -> the real `vllm serve` (its CPU build), ollama ->
  the real `ollama`, each as hack/build-runtimes.sh reports it (or `--runtime` names it).
  Listen addresses (`0.0.0.0`, `--host X`, `OLLAMA_HOST`) become the pod IP; env is passed
  through (`value`, `fieldRef`, `configMapKeyRef`, `secretKeyRef`, `envFrom`), `$(VAR)` expanded.
- a process that exits is restarted with the kubelet's back-off (10 s doubling to 5 min, reset
  after 10 min of running), one log line per restart. A pod that is deleted or stops Running
  has its process groups terminated (main containers first, then sidecars).
- each container's output goes to `<workdir>/logs/<ns>_<pod>_<container>.log`, across restarts.
- pod status: kwok marks a pod Running with its IP once it is bound; from then on this runner
  writes the status as the kubelet would (phase, conditions, init and main container statuses with
  `started`, `ready`, `restartCount`): Pending while the agent sidecar has not passed its startup
  probe, Running once every container ran, Ready only when every readiness probe passes.

Pods are listed every 0.5 s with the Kubernetes Python client (a list, not a watch: nothing to
resume after the API server restarts, and processes keep running while it is down, as they do
under a kubelet). Every pod is handled by its own asyncio tasks; no pod can block another.

Control surface for tests (HTTP on 127.0.0.1, `--control-port`; or the `PodRunner` class here):

    GET  /pods                                       what runs where: pod IPs, pids, states, logs
    GET  /pods/<ns>/<name>
    POST /pods/<ns>/<name>/kill?container=runtime&restart_after=SECONDS
                                                     SIGKILL the container's processes; restarted
                                                     after restart_after (default: the back-off)
    POST /delays  {"namespace": ..., "backend": ..., "runtime_start_delay": 20}
                                                     start `runtime` containers of matching pods
                                                     that many seconds late (a slow cold start:
                                                     the port stays closed); 0 removes the rule
    GET  /delays, DELETE /delays
    GET  /healthz

    python hack/podrunner.py --kubeconfig K --workdir D [--control-port P] [--env KEY=VALUE]...
                             [--runtime llamacpp=/path/to/llama-server]... [--namespace NS]...

It prints the control URL as its first line of standard output and writes it, with its pid, to
`<workdir>/podrunner.json`. Children die with it (PR_SET_PDEATHSIG through `setpriv`).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

try:
    import aiohttp
    from aiohttp import web
except ImportError:  # run with a python that lacks the project's packages: use the venv's
    _venv = Path(__file__).resolve().parent.parent / ".venv"
    if (_venv / "bin" / "python").exists() and Path(sys.prefix).resolve() != _venv.resolve():
        os.execv(_venv / "bin" / "python", [str(_venv / "bin" / "python"), __file__, *sys.argv[1:]])
    raise

HACK_DIR = Path(__file__).resolve().parent
REPO = HACK_DIR.parent
VENV_BIN = REPO / ".venv" / "bin"

RUNTIME_LABEL = "llmop.dev/runtime"
#: The filler pod of a ModelCache: one `agent` container, no runtime.
MODEL_CACHE_LABEL = "llmop.dev/model-cache"
BACKEND_LABEL = "llmop.dev/backend"
POLL_INTERVAL = 0.5
BACKOFF_INITIAL = 10.0
BACKOFF_MAX = 300.0
BACKOFF_RESET_AFTER = 600.0
MAX_TERMINATION_GRACE = 10.0
#: build-runtimes.sh names runtimes by their program; pods name them by the label. It runs (at
#: most once) only for a runtime that --runtime does not provide.
RUNTIME_PROGRAMS = {"llama-server": "llamacpp", "vllm": "vllm", "ollama": "ollama"}
#: What the runtime's image runs before the pod's args: vllm/vllm-openai's entrypoint is
#: `vllm serve` (a stand-in given with --runtime takes the args alone).
ENTRYPOINT_ARGS = {"vllm": ["serve"]}

log = logging.getLogger("podrunner")


class ContainerError(Exception):
    """A container cannot be started (no program for its image, a missing binary or env source)."""


# --- translating a container spec into a local process ---------------------------------------


_ANY_ADDRESS = re.compile(r"(?<![\d.])0\.0\.0\.0(?![\d.])")
_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand_vars(text: str, env: dict[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion: defined names are replaced, others kept, `$$` is `$`."""

    def repl(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return _VAR_REF.sub(repl, text)


def map_path(value: str, mounts: dict[str, Path]) -> str:
    """A container path under a mount point -> the host folder backing it; anything else as is."""
    for mount_path in sorted(mounts, key=len, reverse=True):
        base = mount_path.rstrip("/") or "/"
        if value == base:
            return str(mounts[mount_path])
        if value.startswith(base + "/"):
            return str(mounts[mount_path]) + value[len(base) :]
    return value


def map_value(value: str, mounts: dict[str, Path], pod_ip: str) -> str:
    """One arg or env value: mount paths (also in `--flag=/path` and comma lists), 0.0.0.0 -> pod IP."""
    if value.startswith("-") and "=" in value:
        flag, _, rest = value.partition("=")
        return f"{flag}={map_value(rest, mounts, pod_ip)}"
    if "," in value:
        return ",".join(map_value(part, mounts, pod_ip) for part in value.split(","))
    if value in ("::", "[::]"):
        return pod_ip
    return _ANY_ADDRESS.sub(pod_ip, map_path(value, mounts))


def map_args(args: list[str], mounts: dict[str, Path], pod_ip: str) -> list[str]:
    """Container args for a process on this machine: `--host X` binds the pod IP, paths mapped."""
    out: list[str] = []
    for index, arg in enumerate(args):
        if index > 0 and args[index - 1] == "--host":
            out.append(pod_ip)
        elif arg.startswith("--host="):
            out.append(f"--host={pod_ip}")
        else:
            out.append(map_value(arg, mounts, pod_ip))
    return out


def set_flag(args: list[str], flag: str, value: str) -> list[str]:
    """`flag value` in args, replacing an existing `flag X` or `flag=X`."""
    out = list(args)
    for index, arg in enumerate(out):
        if arg == flag and index + 1 < len(out):
            out[index + 1] = value
            return out
        if arg.startswith(flag + "="):
            out[index] = f"{flag}={value}"
            return out
    return [*out, flag, value]


def ollama_host(value: str | None, pod_ip: str, default_port: int) -> str:
    """OLLAMA_HOST for the pod: whatever host it names becomes the pod IP, the port is kept."""
    port = default_port
    if value:
        rest = value.split("://", 1)[-1].rstrip("/")
        host_port = rest.rsplit(":", 1)
        if len(host_port) == 2 and host_port[1].isdigit():
            port = int(host_port[1])
        elif rest.isdigit():
            port = int(rest)
    return f"{pod_ip}:{port}"


@dataclass(frozen=True)
class Probe:
    """A container probe as the pod spec states it, with the kubelet's defaults."""

    kind: str  # http | tcp | exec | grpc
    port: int | None
    path: str = "/"
    scheme: str = "http"
    host: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    initial_delay: float = 0.0
    period: float = 10.0
    timeout: float = 1.0
    success_threshold: int = 1
    failure_threshold: int = 3

    @classmethod
    def from_spec(cls, spec: dict[str, Any] | None, ports: dict[str, int]) -> Probe | None:
        if not spec:
            return None
        timing: dict[str, Any] = {
            "initial_delay": float(spec.get("initialDelaySeconds", 0)),
            "period": float(spec.get("periodSeconds", 10)),
            "timeout": float(spec.get("timeoutSeconds", 1)),
            "success_threshold": int(spec.get("successThreshold", 1)),
            "failure_threshold": int(spec.get("failureThreshold", 3)),
        }

        def port_of(value: Any) -> int:
            if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
                return int(value)
            if value in ports:
                return ports[value]
            raise ContainerError(f"probe port {value!r} is not a port of the container")

        if "httpGet" in spec:
            get = spec["httpGet"]
            return cls(
                kind="http",
                port=port_of(get["port"]),
                path=get.get("path", "/"),
                scheme=get.get("scheme", "HTTP").lower(),
                host=get.get("host"),
                headers=tuple((h["name"], h["value"]) for h in get.get("httpHeaders", [])),
                **timing,
            )
        if "tcpSocket" in spec:
            tcp = spec["tcpSocket"]
            return cls(kind="tcp", port=port_of(tcp["port"]), host=tcp.get("host"), **timing)
        if "grpc" in spec:
            return cls(kind="grpc", port=int(spec["grpc"]["port"]), **timing)
        return cls(kind="exec", port=None, **timing)


# --- the pieces of a pod ----------------------------------------------------------------------


@dataclass
class DelayRule:
    namespace: str | None
    backend: str | None
    seconds: float

    def describe(self) -> dict[str, Any]:
        return {"namespace": self.namespace, "backend": self.backend, "runtime_start_delay": self.seconds}

    def matches(self, pod: dict[str, Any]) -> bool:
        meta = pod["metadata"]
        labels = meta.get("labels") or {}
        return (self.namespace in (None, meta["namespace"])) and (
            self.backend in (None, labels.get(BACKEND_LABEL))
        )


@dataclass
class Container:
    """One container of a pod: a supervised process group restarted like `restartPolicy: Always`."""

    pod: PodState
    spec: dict[str, Any]
    role: str  # sidecar | main
    state: str = "waiting"  # waiting|delayed|running|backoff|error|terminated
    pid: int | None = None
    argv: list[str] = field(default_factory=list)
    restarts: int = 0
    last_exit_code: int | None = None
    message: str = ""
    started: bool = False  # startup probe passed (or none) in the current run
    ready: bool = False
    started_at: float | None = None
    delay_until: float | None = None
    first_started: asyncio.Event = field(default_factory=asyncio.Event)
    _process: asyncio.subprocess.Process | None = None
    _task: asyncio.Task[None] | None = None
    _restart_override: float | None = None
    _abort_delay: asyncio.Event = field(default_factory=asyncio.Event)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _spawned: asyncio.Event = field(default_factory=asyncio.Event)
    _stopping: bool = False

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    @property
    def log_path(self) -> Path:
        pod = self.pod
        return pod.runner.workdir / "logs" / f"{pod.namespace}_{pod.name}_{self.name}.log"

    @property
    def ports(self) -> dict[str, int]:
        return {p["name"]: int(p["containerPort"]) for p in self.spec.get("ports", []) if p.get("name")}

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "name": self.name,
            "role": self.role,
            "state": self.state,
            "pid": self.pid,
            "started": self.started,
            "ready": self.ready,
            "restarts": self.restarts,
            "last_exit_code": self.last_exit_code,
            "message": self.message,
            "argv": self.argv,
            "log": str(self.log_path),
        }
        if self.delay_until is not None:
            info["start_delay_remaining"] = round(max(0.0, self.delay_until - time.monotonic()), 1)
        return info

    def start(self) -> None:
        self._task = asyncio.create_task(self._supervise(), name=f"{self.pod.key}/{self.name}")

    # The supervisor: start, watch, restart with back-off, until the pod goes.
    async def _supervise(self) -> None:
        backoff = self.pod.runner.backoff_initial
        while not self._stopping:
            begun = time.monotonic()
            self.started = self.ready = False
            self._spawned.clear()
            probes: asyncio.Task[None] | None = None
            try:
                argv, env, cwd = await self._command()
                self.argv = argv
                probes = asyncio.create_task(self._probe(begun))
                delay = self.pod.runner.start_delay(self.pod.pod) if self.spec["name"] == "runtime" else 0.0
                if delay > 0 and not await self._delay(delay):
                    rc: int | None = -9
                else:
                    rc = await self._run(argv, env, cwd)
            except ContainerError as error:
                if (self.state, self.message) != ("error", str(error)):  # once, not every back-off
                    log.error("%s/%s: %s", self.pod.key, self.name, error)
                self.state, self.message = "error", str(error)
                rc = None
            except asyncio.CancelledError:
                if probes:
                    probes.cancel()
                raise
            finally:
                self.delay_until = None
                if probes:
                    probes.cancel()
            self.pid, self._process, self.started, self.ready = None, None, False, False
            if self._stopping:
                break
            self.last_exit_code = rc
            if time.monotonic() - begun >= BACKOFF_RESET_AFTER:
                backoff = self.pod.runner.backoff_initial
            wait = backoff if self._restart_override is None else self._restart_override
            self._restart_override = None
            backoff = min(backoff * 2, self.pod.runner.backoff_max)
            if rc is not None:
                self.state = "backoff"
                self.message = f"exited with {rc}; restarting in {wait:g}s"
                log.warning("%s/%s %s", self.pod.key, self.name, self.message)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=wait)
            if not self._stopping and rc is not None:
                self.restarts += 1

    async def _delay(self, seconds: float) -> bool:
        """Wait out a start delay; False when killed meanwhile."""
        self.state, self.message = "delayed", f"start delayed {seconds:g}s (simulated cold start)"
        self.delay_until = time.monotonic() + seconds
        self._abort_delay.clear()
        log.info("%s/%s: %s", self.pod.key, self.name, self.message)
        try:
            await asyncio.wait_for(self._abort_delay.wait(), timeout=seconds)
            return False
        except TimeoutError:
            return True
        finally:
            self.delay_until = None

    async def _run(self, argv: list[str], env: dict[str, str], cwd: Path) -> int:
        out = await asyncio.to_thread(_open_log, self.log_path, f"start #{self.restarts}: {' '.join(argv)}")
        with out:
            launcher = ["setpriv", "--pdeathsig", "KILL", "--"] if shutil.which("setpriv") else []
            try:
                process = await asyncio.create_subprocess_exec(
                    *launcher,
                    *argv,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=out,
                    stderr=asyncio.subprocess.STDOUT,
                    env=env,
                    cwd=cwd,
                    start_new_session=True,
                )
            except OSError as error:
                raise ContainerError(f"cannot start {argv[0]}: {error}") from error
        self._process, self.pid = process, process.pid
        self._spawned.set()
        self.state, self.message, self.started_at = "running", "", time.time()
        log.info("%s/%s started, pid %d: %s", self.pod.key, self.name, process.pid, " ".join(argv))
        try:
            return await process.wait()
        except asyncio.CancelledError:
            _killpg(process.pid, signal.SIGKILL)
            raise

    async def _probe(self, begun: float) -> None:
        """Startup probe, then liveness and readiness, from the moment the container starts."""
        ports = self.ports
        startup = Probe.from_spec(self.spec.get("startupProbe"), ports)
        liveness = Probe.from_spec(self.spec.get("livenessProbe"), ports)
        readiness = Probe.from_spec(self.spec.get("readinessProbe"), ports)
        if startup:
            await asyncio.sleep(startup.initial_delay)
            failures = 0
            while not await self._check(startup):
                failures += 1
                if failures >= startup.failure_threshold:
                    await self._probe_kill(f"startup probe failed {failures} times")
                    return
                await asyncio.sleep(startup.period)
        else:
            await self._spawned.wait()
        self.started = True
        if not self.first_started.is_set():
            log.info("%s/%s started (%.1fs)", self.pod.key, self.name, time.monotonic() - begun)
        self.first_started.set()
        await asyncio.gather(
            self._keep_probing(liveness, "liveness"), self._keep_probing(readiness, "readiness")
        )

    async def _keep_probing(self, probe: Probe | None, purpose: str) -> None:
        if probe is None:
            if purpose == "readiness":
                self.ready = True
            return
        await asyncio.sleep(probe.initial_delay)
        failures = successes = 0
        while True:
            if await self._check(probe):
                failures, successes = 0, successes + 1
                if purpose == "readiness" and successes >= probe.success_threshold:
                    self.ready = True
            else:
                failures, successes = failures + 1, 0
                if failures >= probe.failure_threshold:
                    if purpose == "liveness":
                        await self._probe_kill(f"liveness probe failed {failures} times")
                        return
                    self.ready = False
            await asyncio.sleep(probe.period)

    async def _check(self, probe: Probe) -> bool:
        host = probe.host or self.pod.ip
        try:
            if probe.kind == "http":
                session = self.pod.runner.http
                url = f"{probe.scheme}://{host}:{probe.port}{probe.path}"
                timeout = aiohttp.ClientTimeout(total=probe.timeout)
                async with session.get(url, headers=dict(probe.headers), timeout=timeout, ssl=False) as resp:
                    return 200 <= resp.status < 400
            if probe.kind == "tcp":
                _, writer = await asyncio.wait_for(asyncio.open_connection(host, probe.port), probe.timeout)
                writer.close()
                return True
        except (OSError, TimeoutError, aiohttp.ClientError):
            return False
        # exec and grpc probes cannot be run for an image that is not here: they pass once the
        # process runs.
        return self._process is not None

    async def _probe_kill(self, why: str) -> None:
        self.message = f"{why}; killing the container"
        log.warning("%s/%s %s", self.pod.key, self.name, self.message)
        if self._process is not None:
            await self._terminate_process(self.pod.grace)
        else:
            self._abort_delay.set()

    async def _terminate_process(self, grace: float) -> None:
        process = self._process
        if process is None or process.returncode is not None:
            return
        _killpg(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(process.wait()), timeout=grace)
        except TimeoutError:
            _killpg(process.pid, signal.SIGKILL)
            await process.wait()

    def kill(self, restart_after: float | None) -> dict[str, Any]:
        """SIGKILL the container's process group now (as an OOM kill or crash would)."""
        self._restart_override = restart_after
        pid = self.pid
        if self._process is not None and self._process.returncode is None:
            _killpg(self._process.pid, signal.SIGKILL)
            return {"killed": True, "pid": pid, "restart_after": restart_after}
        if self.state == "delayed":
            self._abort_delay.set()
            return {"killed": True, "pid": None, "restart_after": restart_after}
        if self.state == "backoff" and restart_after is not None:
            self._wake.set()  # restart_after 0: restart now
        return {"killed": False, "pid": pid, "state": self.state}

    async def stop(self, grace: float) -> None:
        self._stopping = True
        self._wake.set()
        self._abort_delay.set()
        await self._terminate_process(grace)
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.state, self.pid = "terminated", None

    # What the container runs here.
    async def _command(self) -> tuple[list[str], dict[str, str], Path]:
        pod, runner = self.pod, self.pod.runner
        mounts = pod.mounts(self.spec)
        env = await pod.container_env(self.spec, mounts)
        command = [expand_vars(a, env) for a in self.spec.get("command") or []]
        host = _host_arg(self.spec.get("args") or [])
        if host not in (None, "0.0.0.0", "::", "[::]"):
            log.warning(
                "%s/%s listens on %s, which a real pod's peers cannot reach; here: %s",
                pod.key,
                self.name,
                host,
                pod.ip,
            )
        args = map_args([expand_vars(a, env) for a in self.spec.get("args") or []], mounts, pod.ip)
        extra = map_args(command[1:], mounts, pod.ip)
        image = str(self.spec.get("image", ""))
        if self.name == "agent" or "llmop" in image.rsplit("/", 1)[-1].split(":")[0]:
            if not runner.agent_program:
                raise ContainerError("the llmop command is not installed (make venv)")
            argv = set_flag([runner.agent_program, *extra, *args], "--host", pod.ip)
        elif self.name == "runtime":
            runtime = pod.runtime
            program = await runner.program(runtime)
            if runtime == "vllm":
                # vLLM images start `python3 -m vllm.entrypoints.openai.api_server` or `vllm serve`.
                extra = [a for a in extra if a not in ("-m", "vllm") and not a.startswith("vllm.")]
                if Path(program[-1]).name == "vllm":
                    extra = [*ENTRYPOINT_ARGS["vllm"], *[a for a in extra if a != "serve"]]
            elif runtime == "ollama":
                env["OLLAMA_HOST"] = ollama_host(env.get("OLLAMA_HOST"), pod.ip, self._first_port(11434))
            argv = [*program, *extra, *args]
        else:
            raise ContainerError(f"no local program for container {self.name!r} (image {image!r})")
        return argv, env, pod.dir

    def _first_port(self, default: int) -> int:
        ports = self.spec.get("ports") or []
        return int(ports[0]["containerPort"]) if ports else default


def _lock_workdir(workdir: Path) -> Any:
    """Create the workdir's folders and hold its lock: two runners over one workdir would start
    every container twice, so the second one stops here."""
    for sub in ("logs", "pods", "volumes"):
        (workdir / sub).mkdir(parents=True, exist_ok=True)
    lock = open(workdir / "podrunner.lock", "w")  # held (open) while the runner runs
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise SystemExit(f"another podrunner is running over {workdir}") from None
    return lock


def _host_arg(args: list[str]) -> str | None:
    for index, arg in enumerate(args):
        if arg == "--host" and index + 1 < len(args):
            return args[index + 1]
        if arg.startswith("--host="):
            return arg.partition("=")[2]
    return None


def _open_log(path: Path, line: str) -> Any:
    path.parent.mkdir(parents=True, exist_ok=True)
    out = open(path, "ab")  # the caller closes it
    out.write(f"\n=== podrunner {time.strftime('%Y-%m-%dT%H:%M:%S')}: {line}\n".encode())
    out.flush()
    return out


def _missing_file(argv: list[str]) -> str | None:
    return next((p for p in argv if p.startswith("/") and not Path(p).exists()), None)


def _started_at(started: float | None) -> dict[str, str]:
    if started is None:
        return {}
    return {"startedAt": datetime.fromtimestamp(started, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}


def _killpg(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


@dataclass
class PodState:
    runner: PodRunner
    pod: dict[str, Any]
    predecessors: list[PodState] = field(default_factory=list)
    containers: list[Container] = field(default_factory=list)
    phase: str = "starting"  # starting | running | stopping | stopped
    done: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None
    #: Every sidecar had started and every main container had run, once: the kubelet's
    #: "initialized", after which restarts no longer make the pod Pending.
    initialized_once: bool = False
    reported: dict[str, Any] | None = None  # the status last written to the API

    def kubelet_status(self) -> dict[str, Any]:
        """Phase, conditions and container statuses as the kubelet reports them.

        From pkg/kubelet/kubelet_pods.go (getPhase) and the status manager: the pod is Pending
        while a native sidecar runs but has not started (its startup probe has not passed) or a
        main container has not run yet; Running from then on, through container restarts. A
        container is ready when its readiness probe passes (or it has none and has started); the
        pod is Ready when all of them are.
        """
        sidecars = [c for c in self.containers if c.role == "sidecar"]
        mains = [c for c in self.containers if c.role == "main"]
        sidecars_started = all(c.started for c in sidecars)
        mains_ran = bool(mains) and all(c.state in ("running", "delayed") or c.restarts for c in mains)
        if sidecars_started and mains_ran:
            self.initialized_once = True
        initialized = self.initialized_once or sidecars_started
        ready = self.initialized_once and all(c.ready for c in self.containers)

        def condition(kind: str, true: bool, reason: str = "") -> dict[str, Any]:
            found: dict[str, Any] = {"type": kind, "status": "True" if true else "False"}
            if not true and reason:
                found["reason"] = reason
            return found

        def container(c: Container) -> dict[str, Any]:
            if c.state in ("running", "delayed"):
                # As the kubelet: when the current run's process started, to the second.
                state: dict[str, Any] = {"running": _started_at(c.started_at)}
            elif c.state == "backoff":
                state = {"waiting": {"reason": "CrashLoopBackOff", "message": c.message}}
            elif c.state == "error":
                state = {"waiting": {"reason": "CreateContainerError", "message": c.message}}
            elif c.role == "main" and not initialized:
                state = {"waiting": {"reason": "PodInitializing"}}
            else:
                state = {"waiting": {"reason": "ContainerCreating"}}
            status: dict[str, Any] = {
                "name": c.name,
                "image": str(c.spec.get("image", "")),
                "imageID": "",
                "ready": c.ready,
                "started": c.started,
                "restartCount": c.restarts,
                "state": state,
            }
            if c.last_exit_code is not None:
                status["lastState"] = {"terminated": {"exitCode": c.last_exit_code, "reason": "Error"}}
            return status

        return {
            "phase": "Running" if self.initialized_once else "Pending",
            "conditions": [
                condition("PodReadyToStartContainers", True),
                condition("Initialized", initialized, "ContainersNotInitialized"),
                condition("ContainersReady", ready, "ContainersNotReady"),
                condition("Ready", ready, "ContainersNotReady"),
            ],
            "initContainerStatuses": [container(c) for c in sidecars],
            "containerStatuses": [container(c) for c in mains],
        }

    @property
    def namespace(self) -> str:
        return str(self.pod["metadata"]["namespace"])

    @property
    def name(self) -> str:
        return str(self.pod["metadata"]["name"])

    @property
    def uid(self) -> str:
        return str(self.pod["metadata"]["uid"])

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def ip(self) -> str:
        return str(self.pod["status"]["podIP"])

    @property
    def runtime(self) -> str:
        return str((self.pod["metadata"].get("labels") or {}).get(RUNTIME_LABEL, ""))

    @property
    def tmp_dir(self) -> Path:
        """The pod's /tmp: short, as in a container, because programs put Unix sockets there
        (vLLM's engine does), and a socket's path may not pass 107 bytes."""
        return Path(tempfile.gettempdir()) / f"llmop-pod-{self.uid[:13]}"

    @property
    def dir(self) -> Path:
        return self.runner.workdir / "pods" / self.namespace / self.name

    @property
    def grace(self) -> float:
        return min(float(self.pod["spec"].get("terminationGracePeriodSeconds", 30)), MAX_TERMINATION_GRACE)

    def volume_dirs(self) -> dict[str, Path]:
        dirs = {}
        for volume in self.pod["spec"].get("volumes") or []:
            claim = volume.get("persistentVolumeClaim")
            if claim:
                dirs[volume["name"]] = self.runner.workdir / "volumes" / self.namespace / claim["claimName"]
            else:  # emptyDir, and anything else this machine cannot provide: an empty pod folder
                dirs[volume["name"]] = self.dir / volume["name"]
        return dirs

    def mounts(self, spec: dict[str, Any]) -> dict[str, Path]:
        volumes = self.volume_dirs()
        mounts = {}
        for mount in spec.get("volumeMounts") or []:
            base = volumes.get(mount["name"])
            if base is not None:
                mounts[mount["mountPath"]] = base / mount["subPath"] if mount.get("subPath") else base
        return mounts

    def describe(self) -> dict[str, Any]:
        labels = self.pod["metadata"].get("labels") or {}
        return {
            "namespace": self.namespace,
            "name": self.name,
            "uid": self.uid,
            "podIP": self.ip,
            "node": self.pod["spec"].get("nodeName"),
            "runtime": self.runtime,
            "backend": labels.get(BACKEND_LABEL),
            "phase": self.phase,
            "volumes": {name: str(path) for name, path in self.volume_dirs().items()},
            "containers": {c.name: c.describe() for c in self.containers},
        }

    def container(self, name: str) -> Container | None:
        return next((c for c in self.containers if c.name == name), None)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"pod {self.key}")

    async def _run(self) -> None:
        spec = self.pod["spec"]
        for init in spec.get("initContainers") or []:
            if init.get("restartPolicy") == "Always":
                self.containers.append(
                    Container(self, init, "sidecar", message="waiting for the pod to start")
                )
            else:
                log.warning(
                    "%s: init container %r (%s) is not run here", self.key, init["name"], init.get("image")
                )
        sidecars = list(self.containers)
        for main in spec.get("containers") or []:
            waiting = f"waiting for sidecar {sidecars[0].name} to start" if sidecars else "waiting"
            self.containers.append(Container(self, main, "main", message=waiting))
        for predecessor in self.predecessors:  # same name or same IP, still stopping: let it go first
            await predecessor.done.wait()
        for path in self.volume_dirs().values():
            path.mkdir(parents=True, exist_ok=True)
        await self.fill_secret_volumes()
        for index, sidecar in enumerate(sidecars):
            sidecar.start()
            # The kubelet starts the next container only once this sidecar's startup probe passed.
            await sidecar.first_started.wait()
            following = sidecars[index + 1] if index + 1 < len(sidecars) else None
            for later in self.containers[index + 1 :]:
                later.message = f"waiting for sidecar {following.name} to start" if following else ""
        for container in self.containers:
            if container.role == "main":
                container.start()
        self.phase = "running"

    async def fill_secret_volumes(self) -> None:
        """One file per key of each `secret` volume's Secret, written once at start; a Secret not
        there yet is waited for, as the kubelet keeps such a pod in ContainerCreating."""
        dirs = self.volume_dirs()
        for volume in self.pod["spec"].get("volumes") or []:
            source = volume.get("secret")
            if not source:
                continue
            waited = False
            while (
                data := await self.runner.read_data("secret", self.namespace, source["secretName"])
            ) is None:
                if not waited:
                    log.info("%s: waiting for secret %s", self.key, source["secretName"])
                    waited = True
                await asyncio.sleep(1.0)
            for key, value in data.items():
                path = dirs[volume["name"]] / key
                path.write_text(value)
                path.chmod(int(source.get("defaultMode", 0o644)) | 0o400)  # readable by us

    async def stop(self) -> None:
        self.phase = "stopping"
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        # Main containers first, then sidecars in reverse order, as the kubelet does.
        main = [c for c in self.containers if c.role == "main"]
        await asyncio.gather(*(c.stop(self.grace) for c in main))
        for sidecar in reversed([c for c in self.containers if c.role == "sidecar"]):
            await sidecar.stop(self.grace)
        for name, path in self.volume_dirs().items():
            if path.is_relative_to(self.dir):
                shutil.rmtree(path, ignore_errors=True)
                log.debug("%s: removed volume %s", self.key, name)
        shutil.rmtree(self.dir, ignore_errors=True)
        shutil.rmtree(self.tmp_dir, ignore_errors=True)
        self.phase = "stopped"
        self.done.set()
        log.info("%s: stopped", self.key)

    async def container_env(self, spec: dict[str, Any], mounts: dict[str, Path]) -> dict[str, str]:
        runner = self.runner
        home = self.dir / "home"
        tmp = self.tmp_dir
        home.mkdir(parents=True, exist_ok=True)
        tmp.mkdir(parents=True, exist_ok=True)
        env = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "HOME": str(home),
            "TMPDIR": str(tmp),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "HOSTNAME": self.name,
            "PYTHONUNBUFFERED": "1",
        }
        env.update(runner.extra_env)
        for source in spec.get("envFrom") or []:
            prefix = source.get("prefix", "")
            data = await self._env_source(source)
            env.update({prefix + k: v for k, v in data.items()})
        defined: dict[str, str] = {}
        for var in spec.get("env") or []:
            value = await self._env_value(spec, var, {**env, **defined})
            if value is not None:
                defined[var["name"]] = map_value(value, mounts, self.ip)
        env.update(defined)
        return env

    async def _env_value(self, spec: dict[str, Any], var: dict[str, Any], env: dict[str, str]) -> str | None:
        if "valueFrom" not in var:
            return expand_vars(str(var.get("value", "")), env)
        source = var["valueFrom"]
        if "fieldRef" in source:
            return _field(self.pod, source["fieldRef"]["fieldPath"])
        if "resourceFieldRef" in source:
            ref = source["resourceFieldRef"]
            kind, _, resource = ref["resource"].partition(".")
            return str(((spec.get("resources") or {}).get(kind) or {}).get(resource, "0"))
        for kind, key in (("configMapKeyRef", "configmap"), ("secretKeyRef", "secret")):
            if kind in source:
                ref = source[kind]
                data = await self.runner.read_data(key, self.namespace, ref["name"])
                if data is None or ref["key"] not in data:
                    if ref.get("optional"):
                        return None
                    raise ContainerError(f"env {var['name']}: {key} {ref['name']} has no key {ref['key']!r}")
                return data[ref["key"]]
        raise ContainerError(f"env {var['name']}: unsupported valueFrom {sorted(source)}")

    async def _env_source(self, source: dict[str, Any]) -> dict[str, str]:
        for kind, key in (("configMapRef", "configmap"), ("secretRef", "secret")):
            if kind in source:
                ref = source[kind]
                data = await self.runner.read_data(key, self.namespace, ref["name"])
                if data is None:
                    if ref.get("optional"):
                        return {}
                    raise ContainerError(f"envFrom: {key} {ref['name']} not found")
                return data
        return {}


def _field(pod: dict[str, Any], path: str) -> str:
    meta = pod["metadata"]
    match = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if match:
        return str((meta.get(match[1]) or {}).get(match[2], ""))
    values = {
        "metadata.name": meta["name"],
        "metadata.namespace": meta["namespace"],
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": pod["spec"].get("nodeName", ""),
        "spec.serviceAccountName": pod["spec"].get("serviceAccountName", ""),
        "status.podIP": pod["status"].get("podIP", ""),
        "status.hostIP": pod["status"].get("hostIP", ""),
    }
    if path not in values:
        raise ContainerError(f"fieldRef {path!r} is not supported here")
    return str(values[path])


# --- the runner -------------------------------------------------------------------------------


def discover_runtimes() -> dict[str, list[str]]:
    """Run hack/build-runtimes.sh (builds nothing when cached) and map runtime -> argv prefix."""
    import subprocess

    result = subprocess.run(
        [str(HACK_DIR / "build-runtimes.sh")], capture_output=True, text=True, check=False, cwd=REPO
    )
    if result.returncode != 0:
        raise ContainerError(f"hack/build-runtimes.sh failed:\n{result.stderr[-3000:]}")
    found: dict[str, list[str]] = {}
    for line in result.stdout.splitlines():
        name, _, rest = line.partition(": ")
        runtime = RUNTIME_PROGRAMS.get(name.strip())
        if runtime and rest.strip():
            found[runtime] = program_argv(rest.split(" (", 1)[0].strip())
    return found


def program_argv(path: str) -> list[str]:
    """A program path as an argv prefix: Python files run with the venv's python."""
    resolved = Path(path) if Path(path).is_absolute() else REPO / path
    if resolved.suffix == ".py":
        python = VENV_BIN / "python" if (VENV_BIN / "python").exists() else Path(sys.executable)
        return [str(python), str(resolved)]
    return [str(resolved)]


class PodRunner:
    """Runs the containers of the llmop runtime pods that the cluster says are Running, here.

    In-process use (tests may prefer the CLI and its HTTP API):

        runner = PodRunner(kubeconfig, workdir)
        await runner.start(control_port=0)   # None: no HTTP API
        ... runner.snapshot(); runner.kill(ns, pod, "runtime", restart_after=1)
        await runner.stop()
    """

    def __init__(
        self,
        kubeconfig: Path | None,
        workdir: Path,
        *,
        extra_env: dict[str, str] | None = None,
        runtimes: dict[str, str] | None = None,
        backoff_initial: float = BACKOFF_INITIAL,
        backoff_max: float = BACKOFF_MAX,
        poll_interval: float = POLL_INTERVAL,
        label_selector: str = RUNTIME_LABEL,
        namespaces: list[str] | None = None,
        agent_program: str | None = None,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.workdir = workdir.resolve()
        self.extra_env = dict(extra_env or {})
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.poll_interval = poll_interval
        self.label_selector = label_selector
        self.namespaces = list(namespaces or [])
        default_llmop = VENV_BIN / "llmop" if (VENV_BIN / "llmop").exists() else shutil.which("llmop")
        self.agent_program = agent_program or (str(default_llmop) if default_llmop else None)
        self.pods: dict[str, PodState] = {}  # by uid
        self.delays: list[DelayRule] = []
        self.control_url: str | None = None
        self._programs: dict[str, list[str]] = {k: program_argv(v) for k, v in (runtimes or {}).items()}
        self._discovered = False
        self._discovery_error: str | None = None
        self._discover_lock = asyncio.Lock()
        self._api: Any = None
        self._poller: asyncio.Task[None] | None = None
        self._site_runner: web.AppRunner | None = None
        self._stopping: set[asyncio.Task[None]] = set()
        self._api_error: str | None = None
        self._last_list_ok: float | None = None
        self._gone: dict[str, PodState] = {}  # by uid: pods being stopped
        self.http: aiohttp.ClientSession
        self._lock: Any = None

    # lifecycle
    async def start(self, control_port: int | None = None) -> None:
        self._lock = _lock_workdir(self.workdir)
        self.http = aiohttp.ClientSession()
        self._api = await asyncio.to_thread(self._make_api)
        if control_port is not None:
            await self._serve_control(control_port)
        self._poller = asyncio.create_task(self._poll(), name="poll pods")

    async def stop(self) -> None:
        if self._poller:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        await asyncio.gather(*(pod.stop() for pod in list(self.pods.values()) if pod.phase != "stopped"))
        await asyncio.gather(*self._stopping, return_exceptions=True)
        self.pods.clear()
        if self._site_runner:
            await self._site_runner.cleanup()
        await self.http.close()
        self._lock.close()

    def _make_api(self) -> Any:
        from kubernetes import client, config

        api_client = config.new_client_from_config(
            config_file=str(self.kubeconfig) if self.kubeconfig else None
        )
        api_client.configuration.retries = 0  # the poll loop retries, and says so once
        logging.getLogger("urllib3").setLevel(logging.ERROR)
        return client.CoreV1Api(api_client)

    # the cluster
    def _list_pods(self) -> list[dict[str, Any]]:
        # The runtime pods, and the fillers of model caches when the runner takes llmop's pods.
        selectors = [self.label_selector]
        if self.label_selector == RUNTIME_LABEL:
            selectors.append(MODEL_CACHE_LABEL)
        items: list[dict[str, Any]] = []
        for selector in selectors:
            options = {"label_selector": selector, "_preload_content": False, "_request_timeout": (3, 10)}
            if not self.namespaces:
                response = self._api.list_pod_for_all_namespaces(**options)
                items += json.loads(response.data)["items"]
                continue
            for namespace in self.namespaces:
                response = self._api.list_namespaced_pod(namespace, **options)
                items += json.loads(response.data)["items"]
        return items

    def _read_data(self, kind: str, namespace: str, name: str) -> dict[str, str] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            if kind == "configmap":
                response = self._api.read_namespaced_config_map(name, namespace, _preload_content=False)
                return dict(json.loads(response.data).get("data") or {})
            response = self._api.read_namespaced_secret(name, namespace, _preload_content=False)
            raw = json.loads(response.data).get("data") or {}
            return {k: base64.b64decode(v).decode() for k, v in raw.items()}
        except ApiException as error:
            if error.status == 404:
                return None
            raise ContainerError(
                f"reading {kind} {namespace}/{name}: {error.status} {error.reason}"
            ) from error

    async def read_data(self, kind: str, namespace: str, name: str) -> dict[str, str] | None:
        return await asyncio.to_thread(self._read_data, kind, namespace, name)

    async def _poll(self) -> None:
        while True:
            try:
                items = await asyncio.to_thread(self._list_pods)
            except Exception as error:  # the API server may be restarting: keep what runs, retry
                text = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
                if text != self._api_error:
                    log.warning("listing pods failed (%s); processes keep running, retrying", text)
                self._api_error = text
            else:
                if self._api_error:
                    log.info("listing pods works again")
                self._api_error = None
                self._last_list_ok = time.time()
                self._reconcile(items)
                await self._report_statuses()
            await asyncio.sleep(self.poll_interval)

    async def _report_statuses(self) -> None:
        """Write each pod's status where it changed, as the kubelet's status manager does."""
        for state in list(self.pods.values()):
            if state.phase not in ("starting", "running") or not state.containers:
                continue
            status = state.kubelet_status()
            if status == state.reported:
                continue
            try:
                await asyncio.to_thread(self._patch_status, state.namespace, state.name, status)
            except Exception as error:  # gone meanwhile, or the API server restarting: next round
                log.debug("%s: status not written: %s", state.key, error)
                continue
            state.reported = status

    def _patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self._api.patch_namespaced_pod_status(
            name,
            namespace,
            {"status": status},
            _content_type="application/strategic-merge-patch+json",
            _request_timeout=(3, 10),
        )

    def _reconcile(self, items: list[dict[str, Any]]) -> None:
        # kwok reports a pod Running with its IP at once; from then on the status is what this
        # runner writes (Pending while a sidecar starts), so a Pending pod with an IP is one it runs.
        running = {
            pod["metadata"]["uid"]: pod
            for pod in items
            if pod.get("status", {}).get("phase") in ("Running", "Pending")
            and pod["status"].get("podIP")
            and not pod["metadata"].get("deletionTimestamp")
        }
        for uid, state in list(self.pods.items()):
            if uid not in running:
                del self.pods[uid]
                reason = (
                    "deleted" if uid not in {p["metadata"]["uid"] for p in items} else "no longer Running"
                )
                log.info("%s: pod %s; stopping its processes", state.key, reason)
                task = asyncio.create_task(state.stop(), name=f"stop {state.key}")
                self._stopping.add(task)
                task.add_done_callback(self._stopping.discard)
                self._gone[state.uid] = state
        for uid, pod in running.items():
            if uid in self.pods:
                self.pods[uid].pod = pod
                continue
            key = f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"
            # A pod of the same name (its folder), or one that had the same IP (its ports), that is
            # still stopping: the new pod waits for it, as separate network namespaces would not.
            ip = pod["status"]["podIP"]
            predecessors = [
                gone
                for gone in self._gone.values()
                if not gone.done.is_set() and (gone.key == key or gone.ip == ip)
            ]
            state = PodState(self, pod, predecessors=predecessors)
            self.pods[uid] = state
            log.info(
                "%s: Running at %s on %s (runtime %s)",
                key,
                state.ip,
                pod["spec"].get("nodeName"),
                state.runtime,
            )
            state.start()
        self._gone = {k: v for k, v in self._gone.items() if not v.done.is_set()}

    # runtimes
    async def program(self, runtime: str) -> list[str]:
        async with self._discover_lock:
            if runtime not in self._programs and not self._discovered:
                log.info("finding the runtimes with hack/build-runtimes.sh (a first build takes minutes)")
                try:
                    found = await asyncio.to_thread(discover_runtimes)
                except ContainerError as error:
                    self._discovery_error = str(error)
                    found = {}
                for name, prefix in found.items():
                    self._programs.setdefault(name, prefix)
                self._discovered = True
        argv = self._programs.get(runtime)
        if argv is None:
            why = f" ({self._discovery_error})" if self._discovery_error else ""
            raise ContainerError(f"no program for runtime {runtime!r}{why}")
        missing = _missing_file(argv)
        if missing:
            raise ContainerError(
                f"runtime {runtime!r}: {missing} does not exist (run hack/build-runtimes.sh)"
            )
        return argv

    # test controls
    def start_delay(self, pod: dict[str, Any]) -> float:
        return max((rule.seconds for rule in self.delays if rule.matches(pod)), default=0.0)

    def set_delay(self, namespace: str | None, backend: str | None, seconds: float) -> list[dict[str, Any]]:
        self.delays = [r for r in self.delays if (r.namespace, r.backend) != (namespace, backend)]
        if seconds > 0:
            self.delays.append(DelayRule(namespace, backend, float(seconds)))
        return [rule.describe() for rule in self.delays]

    def find(self, namespace: str, name: str) -> PodState | None:
        return next((p for p in self.pods.values() if (p.namespace, p.name) == (namespace, name)), None)

    def kill(
        self, namespace: str, name: str, container: str = "runtime", restart_after: float | None = None
    ) -> dict[str, Any]:
        pod = self.find(namespace, name)
        target = pod.container(container) if pod else None
        if target is None:
            raise KeyError(f"no container {container!r} in a running pod {namespace}/{name}")
        log.info(
            "%s/%s: killed on request (restart after %s)",
            namespace,
            name,
            "back-off" if restart_after is None else f"{restart_after:g}s",
        )
        return target.kill(restart_after)

    def snapshot(self) -> dict[str, Any]:
        return {
            "pods": [pod.describe() for pod in self.pods.values()],
            "runtimes": {name: " ".join(argv) for name, argv in self._programs.items()},
            "runtime_discovery_error": self._discovery_error,
            "delays": [rule.describe() for rule in self.delays],
            "api_error": self._api_error,
            "last_list_ok": self._last_list_ok,
        }

    # HTTP control API
    async def _serve_control(self, port: int) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._h_health)
        app.router.add_get("/pods", self._h_pods)
        app.router.add_get("/pods/{ns}/{name}", self._h_pod)
        app.router.add_post("/pods/{ns}/{name}/kill", self._h_kill)
        app.router.add_get("/delays", self._h_delays)
        app.router.add_post("/delays", self._h_set_delay)
        app.router.add_delete("/delays", self._h_clear_delays)
        self._site_runner = web.AppRunner(app, access_log=None)
        await self._site_runner.setup()
        site = web.TCPSite(self._site_runner, "127.0.0.1", port)
        await site.start()
        addresses = self._site_runner.addresses
        bound = addresses[0][1] if addresses else port
        self.control_url = f"http://127.0.0.1:{bound}"

    async def _h_health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "api_error": self._api_error})

    async def _h_pods(self, request: web.Request) -> web.Response:
        return web.json_response(self.snapshot())

    async def _h_pod(self, request: web.Request) -> web.Response:
        pod = self.find(request.match_info["ns"], request.match_info["name"])
        if pod is None:
            return web.json_response({"error": "no such running pod"}, status=404)
        return web.json_response(pod.describe())

    async def _h_kill(self, request: web.Request) -> web.Response:
        container = request.query.get("container", "runtime")
        after = request.query.get("restart_after")
        try:
            result = self.kill(
                request.match_info["ns"],
                request.match_info["name"],
                container,
                float(after) if after is not None else None,
            )
        except KeyError as error:
            return web.json_response({"error": str(error.args[0])}, status=404)
        except ValueError:
            return web.json_response({"error": "restart_after must be a number of seconds"}, status=400)
        return web.json_response(result)

    async def _h_delays(self, request: web.Request) -> web.Response:
        return web.json_response({"delays": [rule.describe() for rule in self.delays]})

    async def _h_set_delay(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            seconds = float(body.get("runtime_start_delay", 0) or 0)
        except (ValueError, TypeError, AttributeError):
            return web.json_response(
                {"error": 'send {"namespace": ..., "backend": ..., "runtime_start_delay": SECONDS}'},
                status=400,
            )
        rules = self.set_delay(body.get("namespace"), body.get("backend"), seconds)
        return web.json_response({"delays": rules})

    async def _h_clear_delays(self, request: web.Request) -> web.Response:
        self.delays = []
        return web.json_response({"delays": []})


# --- CLI --------------------------------------------------------------------------------------


def _pairs(values: list[str], what: str) -> dict[str, str]:
    out = {}
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep or not key:
            raise SystemExit(f"{what} takes KEY=VALUE, not {value!r}")
        out[key] = rest
    return out


async def _main(args: argparse.Namespace) -> int:
    runner = PodRunner(
        Path(args.kubeconfig) if args.kubeconfig else None,
        Path(args.workdir),
        extra_env=_pairs(args.env, "--env"),
        runtimes=_pairs(args.runtime, "--runtime"),
        backoff_initial=args.backoff_initial,
        backoff_max=args.backoff_max,
        namespaces=args.namespace,
        agent_program=args.agent_program,
    )
    await runner.start(control_port=args.control_port)
    if runner.control_url:
        print(runner.control_url, flush=True)
    (runner.workdir / "podrunner.json").write_text(
        json.dumps({"pid": os.getpid(), "control_url": runner.control_url, "kubeconfig": args.kubeconfig})
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping every pod's processes")
    await runner.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"), help="default: $KUBECONFIG")
    parser.add_argument("--workdir", required=True, help="volumes, pod folders and logs go here")
    parser.add_argument(
        "--control-port",
        type=int,
        default=None,
        help="serve the control API on 127.0.0.1:PORT (0: any free port)",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="environment every container starts with (the pod's env wins), e.g. HF_ENDPOINT",
    )
    parser.add_argument(
        "--runtime",
        action="append",
        default=[],
        metavar="RUNTIME=PATH",
        help="program for a runtime (llamacpp, vllm, ollama) instead of build-runtimes.sh's",
    )
    parser.add_argument(
        "--backoff-initial",
        type=float,
        default=BACKOFF_INITIAL,
        help="first restart delay in seconds (the kubelet's: 10)",
    )
    parser.add_argument("--backoff-max", type=float, default=BACKOFF_MAX, help="longest restart delay (300)")
    parser.add_argument(
        "--namespace",
        action="append",
        default=[],
        help="run only the pods of this namespace (repeatable; default: all namespaces)",
    )
    parser.add_argument(
        "--agent-program",
        default=None,
        metavar="PATH",
        help="the llmop command the agent sidecar runs (default: .venv/bin/llmop)",
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s podrunner %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    return asyncio.run(_main(args))


if __name__ == "__main__":
    sys.exit(main())

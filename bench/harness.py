"""What every scenario uses: the bench cluster, an async API client with watches, the operator as a
measured process, runtime stand-ins, and facts about the machine."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psutil

REPO = Path(__file__).resolve().parents[1]
for _path in (REPO / "hack", REPO / "tests", REPO / "operator"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from llmop.k8s.client import DEPLOYMENTS, LLMBACKENDS, MODELPULLS, KubeAPIError, KubeClient, Resource  # noqa: E402
from support.runtimes import vllm_standin_command  # noqa: E402

NAMESPACES = Resource("v1", "namespaces", namespaced=False)
PYTHON = str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv").exists() else sys.executable
#: The benchmark's own cluster; $LLMOP_BENCH_CLUSTER names another, so that two checkouts on one
#: machine never bench on (or take down) the same one.
CLUSTER_NAME = os.environ.get("LLMOP_BENCH_CLUSTER") or "bench"

__all__ = ["DEPLOYMENTS", "LLMBACKENDS", "MODELPULLS", "NAMESPACES"]


# --- numbers -------------------------------------------------------------------------------------


def percentile(values: Iterable[float], q: float) -> float:
    """The q-th percentile (0-100), linear between closest ranks."""
    data = sorted(values)
    if not data:
        return float("nan")
    if len(data) == 1:
        return data[0]
    rank = (len(data) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (rank - low)


def median(values: Iterable[float]) -> float:
    data = list(values)
    return statistics.median(data) if data else float("nan")


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()


# --- the machine ---------------------------------------------------------------------------------


def machine_facts() -> dict[str, Any]:
    cpu_model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "cpu_model": cpu_model or platform.processor(),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def versions(kubectl: Path, kubeconfig: Path) -> dict[str, str]:
    import aiohttp
    import kopf  # noqa: F401
    import pydantic

    from llmop import __version__

    found = {
        "llmop": __version__,
        "kopf": _dist_version("kopf"),
        "httpx": httpx.__version__,
        "aiohttp": aiohttp.__version__,
        "pydantic": pydantic.__version__,
        "matplotlib": _dist_version("matplotlib"),
        "psutil": psutil.__version__,
    }
    result = subprocess.run(
        [str(kubectl), "--kubeconfig", str(kubeconfig), "version", "-o", "json"],
        capture_output=True,
        text=True,
        check=False,
    )
    with contextlib.suppress(ValueError, KeyError):
        found["kubernetes"] = json.loads(result.stdout)["serverVersion"]["gitVersion"]
    pinned = (REPO / "hack" / "versions.env").read_text()
    for key in ("ETCD_VERSION", "KWOK_VERSION"):
        match = re.search(rf"^{key}=(\S+)", pinned, re.M)
        if match:
            found[key.split("_")[0].lower()] = match.group(1)
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no", "operator"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    found["commit"] = commit + (" (operator/ modified)" if dirty else "")
    return found


def _dist_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "?"


# --- the cluster ---------------------------------------------------------------------------------


@dataclass
class BenchCluster:
    """LocalCluster("bench"): a control plane of its own, so no test session shares its load."""

    kubeconfig: Path
    kubectl: Path
    apiserver_pid: int | None
    etcd_pid: int | None

    @classmethod
    def up(cls) -> BenchCluster:
        from localcluster import LocalCluster, binaries_cached

        cluster = LocalCluster(CLUSTER_NAME)
        kubeconfig = cluster.up()
        kubectl = binaries_cached()["kubectl"]
        run = [str(kubectl), "--kubeconfig", str(kubeconfig)]
        subprocess.run(
            [*run, "apply", "--server-side", "-f", str(REPO / "crds")], check=True, capture_output=True
        )
        for crd in ("llmbackends.llmop.dev", "modelpulls.llmop.dev"):
            subprocess.run(
                [*run, "wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s"],
                check=True,
                capture_output=True,
            )
        deadline = time.monotonic() + 30
        while subprocess.run([*run, "get", "llmb", "-A"], capture_output=True).returncode != 0:
            if time.monotonic() > deadline:
                raise RuntimeError("the llmop kinds are not served")
            time.sleep(0.5)
        pids = cluster._state().get("pids", {})
        return cls(kubeconfig, kubectl, pids.get("kube-apiserver"), pids.get("etcd"))

    @staticmethod
    def down() -> None:
        from localcluster import LocalCluster

        LocalCluster(CLUSTER_NAME).down()

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds the API server and etcd have used so far."""
        found = {}
        for name, pid in (("kube-apiserver", self.apiserver_pid), ("etcd", self.etcd_pid)):
            with contextlib.suppress(psutil.Error, TypeError):
                times = psutil.Process(pid).cpu_times()  # type: ignore[arg-type]
                found[name] = times.user + times.system
        return found


# --- the API, as the benchmark drives it ---------------------------------------------------------


def api(kubeconfig: Path) -> KubeClient:
    client = KubeClient.from_environment(str(kubeconfig))
    # Watches of a thousand objects and bursts of creates: more connections than the operator's.
    client.http._transport._pool._max_connections = 100  # type: ignore[attr-defined]
    return client


async def ensure_namespace(kube: KubeClient, name: str) -> None:
    """A new, empty namespace: one left over by an interrupted run is emptied and deleted first."""
    if await kube.get(NAMESPACES, name) is not None:
        for resource in (LLMBACKENDS, MODELPULLS):
            await strip_finalizers(kube, resource, name)
        with contextlib.suppress(Exception):
            await kube.delete(NAMESPACES, name)
        deadline = time.monotonic() + 180
        while await kube.get(NAMESPACES, name) is not None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"namespace {name} left over from an earlier run does not go away")
            await asyncio.sleep(1)
    await kube.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})


BENCH_NAMESPACES = re.compile(r"^(scale-\d+|reference-\d+|ready-detection|reconcile|pull|churn|wake)$")


async def remove_leftovers(kube: KubeClient) -> None:
    """Namespaces an interrupted run left behind: the next operator would observe their backends."""
    for item in await kube.list(NAMESPACES):
        name = item["metadata"]["name"]
        if BENCH_NAMESPACES.match(name):
            print(f"bench: removing namespace {name} left by an earlier run", flush=True)
            for resource in (LLMBACKENDS, MODELPULLS):
                await strip_finalizers(kube, resource, name)
            await delete_namespace(kube, name, timeout=180)


async def delete_namespace(kube: KubeClient, name: str, timeout: float = 300.0) -> float:
    """Delete and wait until it is gone; seconds it took (inf when it did not go in time)."""
    started = time.monotonic()
    with contextlib.suppress(Exception):  # already terminating
        await kube.delete(NAMESPACES, name)
    while time.monotonic() - started < timeout:
        if await kube.get(NAMESPACES, name) is None:
            return time.monotonic() - started
        await asyncio.sleep(0.5)
    return float("inf")


async def strip_finalizers(kube: KubeClient, resource: Resource, namespace: str) -> None:
    """After the operator is gone: let its objects go without it."""
    for item in await kube.list(resource, namespace):
        if item["metadata"].get("finalizers"):
            with contextlib.suppress(Exception):
                await kube._request(
                    "PATCH",
                    resource.path(namespace, item["metadata"]["name"]),
                    content=json.dumps({"metadata": {"finalizers": None}}),
                    headers={"Content-Type": "application/merge-patch+json"},
                )


async def create_all(
    kube: KubeClient, resource: Resource, bodies: list[dict[str, Any]], concurrency: int = 32
) -> float:
    """POST every body, `concurrency` at a time; seconds it took."""
    gate = asyncio.Semaphore(concurrency)
    started = time.monotonic()

    async def one(body: dict[str, Any]) -> None:
        async with gate:
            await kube.create(resource, body)

    await asyncio.gather(*(one(body) for body in bodies))
    return time.monotonic() - started


def ready_status(obj: dict[str, Any]) -> str | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return str(cond.get("status"))
    return None


@dataclass
class Event:
    at: float  # time.time() when the benchmark received it
    type: str
    name: str
    object: dict[str, Any]


@dataclass
class Watcher:
    """Every event of one resource in one namespace, stamped with its arrival time."""

    kube: KubeClient
    resource: Resource
    namespace: str
    keep: Callable[[dict[str, Any]], dict[str, Any]] = lambda obj: obj
    events: list[Event] = field(default_factory=list)
    ready_at: dict[str, float] = field(default_factory=dict)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None
    _started: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self._started.wait(), 30)

    async def _first_list(self) -> httpx.Response:
        # Right after a CRD is Established, the API server may still answer 429 "storage is
        # (re)initializing" for a few seconds and asks the client to retry.
        for _ in range(60):
            try:
                return await self.kube._request("GET", self.resource.path(self.namespace))
            except KubeAPIError as error:
                if error.status_code != 429:
                    raise
                await asyncio.sleep(0.5)
        return await self.kube._request("GET", self.resource.path(self.namespace))

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _run(self) -> None:
        response = await self._first_list()
        version = response.json()["metadata"]["resourceVersion"]
        while True:
            params = {"watch": "1", "resourceVersion": version, "timeoutSeconds": "3600"}
            async with self.kube.http.stream(
                "GET", self.resource.path(self.namespace), params=params, timeout=httpx.Timeout(None)
            ) as stream:
                self._started.set()
                async for line in stream.aiter_lines():
                    if not line:
                        continue
                    event = json.loads(line)
                    obj = event.get("object", {})
                    if event.get("type") == "ERROR":
                        raise RuntimeError(f"watch failed: {obj}")
                    now = time.time()
                    version = obj["metadata"]["resourceVersion"]
                    name = obj["metadata"]["name"]
                    self.events.append(Event(now, event["type"], name, self.keep(obj)))
                    if name not in self.ready_at and ready_status(obj) == "True":
                        self.ready_at[name] = now
                    self._changed.set()

    async def wait_for(self, check: Callable[[], Any], timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"not reached in {timeout:.0f}s")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 1.0))

    def modified_between(self, start: float, end: float) -> list[Event]:
        return [e for e in self.events if e.type == "MODIFIED" and start <= e.at < end]


# --- the operator as a measured process ----------------------------------------------------------


@dataclass
class OperatorRun:
    """`llmop run` (through bench/operator_main.py) with psutil watching its CPU and memory."""

    kubeconfig: Path
    workdir: Path
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    peak_rss: int = 0
    _sampler: asyncio.Task[None] | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / "operator.log"

    @property
    def counters_path(self) -> Path:
        return self.workdir / "operator-counters.json"

    async def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "LLMOP_METRICS_PORT": "0",
            "LLMOP_BENCH_COUNTERS": str(self.counters_path),
            # The stand-ins of external backends listen on loopback; link-local stays refused.
            "LLMOP_EXTERNAL_DENY_CIDRS": "169.254.0.0/16,fe80::/10",
            **self.env,
        }
        if os.environ.get("LLMOP_BENCH_OPERATOR_SRC"):  # run.py --baseline: another checkout's llmop
            env["PYTHONPATH"] = os.environ["LLMOP_BENCH_OPERATOR_SRC"]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [PYTHON, str(REPO / "bench" / "operator_main.py"), "run"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while "llmop started" not in self.log_path.read_text(errors="replace"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the operator did not start:\n{self.log_path.read_text()[-3000:]}")
            await asyncio.sleep(0.2)
        self._sampler = asyncio.create_task(self._sample())

    async def _sample(self) -> None:
        assert self.process is not None
        proc = psutil.Process(self.process.pid)
        while True:
            with contextlib.suppress(psutil.Error):
                self.peak_rss = max(self.peak_rss, proc.memory_info().rss)
            await asyncio.sleep(0.2)

    def reset_peak(self) -> None:
        self.peak_rss = self.rss()

    def rss(self) -> int:
        assert self.process is not None
        return int(psutil.Process(self.process.pid).memory_info().rss)

    def rss_split(self) -> dict[str, int]:
        """The RSS in bytes, split as the kernel counts it: anonymous (the heaps: what the process
        allocated) and file-backed (pages of the interpreter, libraries and modules it touched)."""
        assert self.process is not None
        found = {}
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.process.pid}/smaps_rollup").read_text().splitlines():
                key, _, value = line.partition(":")
                if key in ("Rss", "Anonymous"):
                    found[key] = int(value.split()[0]) * 1024
        if not found:
            return {}
        return {"anon": found["Anonymous"], "file": found["Rss"] - found["Anonymous"]}

    def cpu_seconds(self) -> float:
        assert self.process is not None
        times = psutil.Process(self.process.pid).cpu_times()
        return float(times.user + times.system)

    async def counters(self) -> dict[str, Any]:
        """The operator's request counters at this moment (it writes them on SIGUSR1)."""
        assert self.process is not None
        before = self.counters_path.stat().st_mtime_ns if self.counters_path.exists() else 0
        self.process.send_signal(signal.SIGUSR1)
        for _ in range(100):
            await asyncio.sleep(0.05)
            if self.counters_path.exists() and self.counters_path.stat().st_mtime_ns != before:
                with contextlib.suppress(ValueError):
                    return dict(json.loads(self.counters_path.read_text()))
        raise RuntimeError("the operator did not write its counters")

    async def stop(self) -> None:
        if self._sampler:
            self._sampler.cancel()
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            for _ in range(150):
                if self.process.poll() is not None:
                    break
                await asyncio.sleep(0.1)
            if self.process.poll() is None:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def counter_delta(after: dict[str, Any], before: dict[str, Any]) -> dict[str, int]:
    keys = (set(after) | set(before)) - {"time"}
    return {key: int(after.get(key, 0)) - int(before.get(key, 0)) for key in sorted(keys)}


def api_requests(delta: dict[str, int]) -> dict[str, int]:
    """kopf's and llmop's requests to the API server, from the operator's counters."""
    kopf_total = sum(v for k, v in delta.items() if k.startswith("kopf."))
    return {
        "kopf": kopf_total,
        "llmop": delta.get("llmop.requests", 0),
        "total": kopf_total + delta.get("llmop.requests", 0),
        "status_patches": delta.get("llmop.status_patches", 0),
        "probes": delta.get("probes", 0),
    }


# --- runtime stand-ins ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Standin:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def bound_at(self) -> float | None:
        """When it started accepting connections, from its own log line (millisecond stamp)."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        match = re.search(r"INFO (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) Starting vLLM API server", text)
        if not match:
            return None
        return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()


def start_vllm_standin(workdir: Path, name: str, *, bind_delay: float = 0.0) -> Standin:
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / f"vllm-{name}-{port}.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            vllm_standin_command(name, port, "--bind-delay", str(bind_delay)),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    return Standin(process, f"http://127.0.0.1:{port}", log)


async def wait_serving(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(f"{url}/health", timeout=2)).status_code == 200:
                    return
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{url} did not serve within {timeout:.0f}s")


@contextlib.contextmanager
def standins(items: list[Standin]) -> Iterator[list[Standin]]:
    try:
        yield items
    finally:
        for item in items:
            item.stop()


def external_backend(name: str, namespace: str, url: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "llmop.dev/v1alpha1",
        "kind": "LLMBackend",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"external": {"url": url, "kind": "vllm"}, **spec},
    }


def seeded(seed: int) -> random.Random:
    return random.Random(seed)


@contextlib.asynccontextmanager
async def watching(
    kube: KubeClient,
    resource: Resource,
    namespace: str,
    keep: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> AsyncIterator[Watcher]:
    watcher = Watcher(kube, resource, namespace, keep or (lambda obj: obj))
    await watcher.start()
    try:
        yield watcher
    finally:
        await watcher.stop()

"""Real runtimes at the pods' addresses: the model source and the pod runner, as tests use them.

`run_modelsource` starts hack/modelsource.py (real bytes over HTTP, a Hugging Face-compatible
endpoint); `run_podrunner` starts hack/podrunner.py, which plays the kubelet's part for llmop
runtime pods in the local cluster and starts the real runtime processes at the pods' IPs. Both
run as child processes and are stopped (with every process the pod runner started) on exit.

`runtime_programs()` runs hack/build-runtimes.sh once per test session. A runtime it cannot
build or find fails the test that needs it: these tiers are never skipped for a missing binary.
"""

from __future__ import annotations

import contextlib
import functools
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from support.kube import REPO, eventually

HACK = REPO / "hack"
PYTHON = (
    str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv" / "bin" / "python").exists() else sys.executable
)
#: build-runtimes.sh names programs; pods name runtimes by the `llmop.dev/runtime` label.
RUNTIME_OF_PROGRAM = {"llama-server": "llamacpp", "vllm": "vllm", "ollama": "ollama"}


@functools.cache
def runtime_programs() -> dict[str, str]:
    """runtime (llamacpp, vllm, ollama) -> program path, from hack/build-runtimes.sh (cached)."""
    result = subprocess.run([str(HACK / "build-runtimes.sh")], capture_output=True, text=True, cwd=REPO)
    if result.returncode != 0:
        raise AssertionError(f"hack/build-runtimes.sh failed:\n{result.stderr[-4000:]}")
    found: dict[str, str] = {}
    for line in result.stdout.splitlines():
        name, _, rest = line.partition(": ")
        runtime = RUNTIME_OF_PROGRAM.get(name.strip())
        if runtime and rest.strip():
            path = Path(rest.split(" (", 1)[0].strip())
            found[runtime] = str(path if path.is_absolute() else REPO / path)
    return found


def runtime_program(runtime: str) -> str:
    """The program for one runtime; fails (never skips) when it is not there."""
    path = runtime_programs().get(runtime)
    if not path or not Path(path).is_file():
        raise AssertionError(
            f"no program for runtime {runtime!r} ({path or 'not reported by hack/build-runtimes.sh'}); "
            "run `make runtimes`"
        )
    return path


def _start(
    argv: list[str], log: Path, what: str, timeout: float = 60.0
) -> tuple[subprocess.Popen[bytes], str]:
    """Start a server that prints its URL as its first line of stdout; (process, url)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as err:
        process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL, cwd=REPO
        )
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    line = b""
    while time.monotonic() < deadline and b"\n" not in line:
        if process.poll() is not None:
            break
        ready, _, _ = select.select([process.stdout], [], [], 0.2)
        if ready:
            # os.read, not the buffered file: select() cannot see bytes a buffer already took.
            data = os.read(process.stdout.fileno(), 1024)
            if not data:
                break
            line += data
    url = line.decode().split("\n", 1)[0].strip()
    if not url.startswith("http://"):
        process.kill()
        tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
        raise AssertionError(f"{what} did not start (printed {url!r}); its log:\n{tail}")
    return process, url


def _stop(process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stdout:
        process.stdout.close()


# --- the model source ---------------------------------------------------------------------------


@dataclass
class ModelSource:
    url: str
    root: Path
    log: Path

    def _client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)

    def commit_of(self, repo_id: str) -> str:
        """The commit a Hugging Face repo on this source is at now (its listing's `sha`)."""
        with self._client() as client:
            sha: str = client.get(f"/api/models/{repo_id}").raise_for_status().json()["sha"]
        return sha

    def stats(self, path: str | None = None) -> dict[str, Any]:
        """All of /_stats, or one path's counters (zeros when it was never asked for)."""
        with self._client() as client:
            paths = client.get("/_stats").raise_for_status().json()["paths"]
        if path is None:
            return dict(paths)
        empty = {
            "requests": 0,
            "head_requests": 0,
            "range_requests": 0,
            "range_starts": [],
            "bytes_sent": 0,
            "completed": 0,
            "aborted": 0,
        }
        return dict(paths.get(path, empty))

    def reset_stats(self) -> None:
        with self._client() as client:
            client.delete("/_stats").raise_for_status()

    def throttle(self, bytes_per_second: int) -> None:
        with self._client() as client:
            client.post("/_throttle", json={"bytes_per_second": bytes_per_second}).raise_for_status()

    def fault(
        self, path: str, *, abort_after_bytes: int | None = None, status: int | None = None, times: int = 1
    ) -> None:
        body = {"path": path, "abort_after_bytes": abort_after_bytes, "status": status, "times": times}
        with self._client() as client:
            client.post("/_faults", json=body).raise_for_status()

    def clear_faults(self) -> None:
        with self._client() as client:
            client.delete("/_faults").raise_for_status()


@contextmanager
def run_modelsource(
    root: Path, *, populate: bool = True, throttle: int = 0, log: Path | None = None
) -> Iterator[ModelSource]:
    argv = [PYTHON, str(HACK / "modelsource.py"), "--root", str(root), "--port", "0"]
    if populate:
        argv.append("--populate")
    if throttle:
        argv += ["--throttle-bytes-per-second", str(throttle)]
    log = log or root.parent / f"{root.name}-modelsource.log"
    process, url = _start(argv, log, "hack/modelsource.py", timeout=120)
    try:
        yield ModelSource(url, root, log)
    finally:
        _stop(process)


# --- a registry Ollama pulls from --------------------------------------------------------------


def tiny_gguf(out: Path, seed: int = 0) -> Path:
    """hack/tiny-gguf's model (about 600 KB); another seed gives other bytes, so another digest."""
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([PYTHON, str(HACK / "tiny-gguf"), str(out), "--seed", str(seed)], check=True)
    return out


@contextmanager
def run_ollama_registry(models: dict[str, Path], log: Path, *, throttle: int = 0) -> Iterator[str]:
    """hack/standins/ollama_registry.py serving each GGUF under its name; yields `127.0.0.1:PORT`.

    `throttle` limits each blob download to that many bytes per second."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    argv = [PYTHON, str(HACK / "standins" / "ollama_registry.py"), "--port", str(port)]
    for name, path in models.items():
        argv += ["--model", f"{name}={path}"]
    if throttle:
        argv += ["--throttle", str(throttle)]
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        process = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    address = f"127.0.0.1:{port}"

    def answers() -> bool:
        try:
            return httpx.get(f"http://{address}/v2/", timeout=2).status_code < 500
        except httpx.HTTPError:
            return False

    try:
        eventually(answers, timeout=30, message=f"the Ollama registry ({log})")
        yield address
    finally:
        _stop(process)


# --- the pod runner -----------------------------------------------------------------------------


@dataclass
class PodRunner:
    url: str
    workdir: Path
    log: Path
    process: subprocess.Popen[bytes]

    def _client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)

    def snapshot(self) -> dict[str, Any]:
        with self._client() as client:
            return dict(client.get("/pods").raise_for_status().json())

    def pods(self, namespace: str | None = None) -> list[dict[str, Any]]:
        return [p for p in self.snapshot()["pods"] if namespace in (None, p["namespace"])]

    def pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        with self._client() as client:
            response = client.get(f"/pods/{namespace}/{name}")
        return None if response.status_code == 404 else dict(response.raise_for_status().json())

    def container(self, namespace: str, name: str, container: str = "runtime") -> dict[str, Any] | None:
        pod = self.pod(namespace, name)
        return (pod or {}).get("containers", {}).get(container)

    def kill(
        self, namespace: str, name: str, container: str = "runtime", restart_after: float | None = None
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"container": container}
        if restart_after is not None:
            params["restart_after"] = restart_after
        with self._client() as client:
            return dict(
                client.post(f"/pods/{namespace}/{name}/kill", params=params).raise_for_status().json()
            )

    def set_delay(self, seconds: float, *, namespace: str | None = None, backend: str | None = None) -> None:
        body = {"namespace": namespace, "backend": backend, "runtime_start_delay": seconds}
        with self._client() as client:
            client.post("/delays", json=body).raise_for_status()

    def clear_delays(self) -> None:
        with self._client() as client:
            client.delete("/delays").raise_for_status()

    def wait_running(
        self, namespace: str, container: str = "runtime", timeout: float = 120.0, name: str | None = None
    ) -> dict[str, Any]:
        """The first pod of the namespace (or the named one) whose container is running; its description."""

        def check() -> dict[str, Any] | None:
            for pod in self.pods(namespace):
                state = pod["containers"].get(container, {})
                if (name in (None, pod["name"])) and state.get("state") == "running" and state.get("pid"):
                    return pod
            return None

        return dict(
            eventually(
                check, timeout=timeout, message=f"container {container} running in {namespace}", interval=0.2
            )
            or {}
        )

    def log_of(self, namespace: str, pod: str, container: str) -> str:
        path = self.workdir / "logs" / f"{namespace}_{pod}_{container}.log"
        return path.read_text(errors="replace") if path.exists() else ""


@contextmanager
def run_podrunner(
    kubeconfig: Path,
    workdir: Path,
    *,
    env: dict[str, str] | None = None,
    runtimes: dict[str, str] | None = None,
    namespaces: list[str] | None = None,
    backoff_initial: float | None = None,
) -> Iterator[PodRunner]:
    """hack/podrunner.py for the cluster at kubeconfig; stopped, with every process it started, on exit."""
    argv = [
        PYTHON,
        str(HACK / "podrunner.py"),
        "--kubeconfig",
        str(kubeconfig),
        "--workdir",
        str(workdir),
        "--control-port",
        "0",
    ]
    for key, value in (env or {}).items():
        argv += ["--env", f"{key}={value}"]
    for runtime, path in (runtimes or {}).items():
        argv += ["--runtime", f"{runtime}={path}"]
    for namespace in namespaces or []:
        argv += ["--namespace", namespace]
    if backoff_initial is not None:
        argv += ["--backoff-initial", str(backoff_initial)]
    log = workdir / "podrunner.log"
    process, url = _start(argv, log, "hack/podrunner.py")
    try:
        yield PodRunner(url, workdir, log, process)
    finally:
        _stop(process)


def vllm_standin_command(served_model_name: str, port: int, *extra: str) -> list[str]:
    """hack/standins/vllm_server.py serving `served_model_name` on 127.0.0.1:`port`."""
    return [
        PYTHON,
        str(HACK / "standins" / "vllm_server.py"),
        "--model",
        f"/models/{served_model_name}",
        "--served-model-name",
        served_model_name,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *extra,
    ]


@contextmanager
def run_vllm_standin(
    workdir: Path, *, served_model_name: str = "tiny", max_model_len: int = 2048
) -> Iterator[str]:
    """The vLLM stand-in on a free loopback port, as a server outside the cluster; yields its URL."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    log = workdir / f"vllm-{port}.log"
    with open(log, "ab") as out:
        process = subprocess.Popen(
            vllm_standin_command(served_model_name, port, "--max-model-len", str(max_model_len)),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=REPO,
        )
    url = f"http://127.0.0.1:{port}"

    def serving() -> bool:
        try:
            return httpx.get(f"{url}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        eventually(serving, timeout=30, message="the vLLM stand-in")
        yield url
    finally:
        _stop(process)


#: Where each stand-in of hack/standins/openai_servers.py says it is ready (LM Studio has no health
#: endpoint: its model list answering is the sign).
OPENAI_STANDIN_READY_PATH = {
    "tgi": "/health",
    "sglang": "/health",
    "localai": "/readyz",
    "lmstudio": "/v1/models",
}


def openai_standin_command(flavor: str, models: list[str], port: int, *extra: str) -> list[str]:
    """hack/standins/openai_servers.py as `flavor` (tgi, sglang, localai, lmstudio) on 127.0.0.1:`port`."""
    argv = [
        PYTHON,
        str(HACK / "standins" / "openai_servers.py"),
        "--flavor",
        flavor,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    for model in models:
        argv += ["--model", model]
    return [*argv, *extra]


@contextmanager
def run_openai_standin(
    workdir: Path,
    flavor: str,
    models: list[str],
    *,
    api_key: str | None = None,
    max_model_len: int = 4096,
    extra: tuple[str, ...] = (),
) -> Iterator[str]:
    """A stand-in for LM Studio, LocalAI, TGI or SGLang on a free loopback port; yields its URL
    (`http://127.0.0.1:PORT`, without `/v1`) once it says it is ready."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    options = ["--max-model-len", str(max_model_len), *(["--api-key", api_key] if api_key else []), *extra]
    log = workdir / f"{flavor}-{port}.log"
    with open(log, "ab") as out:
        process = subprocess.Popen(
            openai_standin_command(flavor, models, port, *options),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=REPO,
        )
    url = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def serving() -> bool:
        try:
            answer = httpx.get(url + OPENAI_STANDIN_READY_PATH[flavor], headers=headers, timeout=1)
        except httpx.HTTPError:
            return False
        return answer.status_code == 200

    try:
        eventually(serving, timeout=30, message=f"the {flavor} stand-in ({log})")
        yield url
    finally:
        _stop(process)


# --- real runtimes outside the cluster ------------------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def real_runtime_command(runtime: str, port: int, model: str, served_name: str, *extra: str) -> list[str]:
    """The real runtime (hack/build-runtimes.sh's build) serving `model` on 127.0.0.1:`port`."""
    program = runtime_program(runtime)
    listen = ["--host", "127.0.0.1", "--port", str(port)]
    if runtime == "llamacpp":
        return [program, "-m", model, "--alias", served_name, *listen, "-c", "1024", "--threads", "1", *extra]
    if runtime == "vllm":
        return [
            program,
            "serve",
            model,
            "--served-model-name",
            served_name,
            *listen,
            "--enforce-eager",
            *extra,
        ]
    raise ValueError(f"no command for {runtime!r}; Ollama pulls its models: use run_real_ollama")


@contextmanager
def _running(
    argv: list[str], log: Path, ready_url: str, what: str, timeout: float, env: dict[str, str]
) -> Iterator[None]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        # Its own session: vLLM's engine and Ollama's runners are children, stopped with it.
        process = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=REPO,
            env={**os.environ, **env},
            start_new_session=True,
        )

    def answering() -> bool:
        if process.poll() is not None:
            raise AssertionError(
                f"{what} exited ({process.returncode}):\n{log.read_text(errors='replace')[-3000:]}"
            )
        try:
            return httpx.get(ready_url, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        eventually(answering, timeout=timeout, interval=0.5, message=f"{what} answering {ready_url}")
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@contextmanager
def run_real_runtime(
    workdir: Path, runtime: str, model: str, served_name: str, *extra: str, timeout: float = 300
) -> Iterator[str]:
    """Real llama-server or vLLM on a free loopback port, as a server outside the cluster; yields
    its URL once /health answers 200 (vLLM: once its model is loaded, a minute on 2 cores)."""
    port = _free_port()
    argv = real_runtime_command(runtime, port, model, served_name, *extra)
    url = f"http://127.0.0.1:{port}"
    with _running(argv, workdir / f"{runtime}-{port}.log", f"{url}/health", runtime, timeout, {}):
        yield url


@contextmanager
def run_real_ollama(workdir: Path, models: list[str]) -> Iterator[str]:
    """Real Ollama on a free loopback port with `models` pulled (from a registry that allows
    plain HTTP); yields its URL."""
    port = _free_port()
    home = workdir / f"ollama-{port}"
    env = {"OLLAMA_HOST": f"127.0.0.1:{port}", "OLLAMA_MODELS": str(home / "models"), "HOME": str(home)}
    url = f"http://127.0.0.1:{port}"
    with _running(
        [runtime_program("ollama"), "serve"], home / "log", f"{url}/api/version", "ollama", 60, env
    ):
        for model in models:
            pulled = httpx.post(
                f"{url}/api/pull", json={"model": model, "insecure": True, "stream": False}, timeout=120
            )
            assert pulled.status_code == 200 and pulled.json().get("status") == "success", pulled.text
        yield url

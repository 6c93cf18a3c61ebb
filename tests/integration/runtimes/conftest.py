"""Real runtimes for the adapter tests: llama-server built from source, vLLM (its CPU build) and its
stand-in, Ollama.

A runtime that cannot be built or found fails the tests that need it; nothing is skipped.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from runtime_processes import HACK, TINY_CONTEXT_LENGTH, VENV_BIN, RuntimeProcess, free_port
from vllm_servers import VLLMServers

#: A cold build of llama-server takes tens of minutes on 2 cores; cached, it takes a second.
COLD_BUILD_TIMEOUT_SECONDS = 3600


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Let the first test wait out a cold build of the runtimes instead of timing out."""
    if cached_binary("llama-server", "LLAMA_CPP_PYTHON_VERSION").is_file():
        return
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.path).parents:
            item.add_marker(pytest.mark.timeout(COLD_BUILD_TIMEOUT_SECONDS))


def cached_binary(name: str, version_variable: str) -> Path:
    """Where hack/build-runtimes.sh keeps NAME: $LLMOP_CACHE/bin/NAME-VERSION/NAME, VERSION from
    hack/versions.env."""
    versions = dict(
        line.split("=", 1)
        for line in (HACK / "versions.env").read_text().splitlines()
        if "=" in line and not line.lstrip().startswith("#")
    )
    version = versions.get(version_variable, "").strip()
    cache = Path(os.environ.get("LLMOP_CACHE", Path.home() / ".cache" / "llmop"))
    return cache / "bin" / f"{name}-{version}" / name


@pytest.fixture(scope="session")
def built_runtimes() -> dict[str, Path]:
    """Run hack/build-runtimes.sh (it builds what is missing) and read its `name: path` lines."""
    result = subprocess.run([str(HACK / "build-runtimes.sh")], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        pytest.fail(f"hack/build-runtimes.sh failed ({result.returncode}):\n{result.stderr[-4000:]}")
    binaries = {}
    for line in result.stdout.splitlines():
        name, sep, path = line.partition(": ")
        if sep:
            # "vllm: /path/vllm_server.py (stand-in)": the path is before the note.
            binaries[name.strip()] = Path(path.split(" (")[0].strip())
    return binaries


def runtime_binary(request: pytest.FixtureRequest, name: str, version_variable: str) -> Path:
    """The cached build of NAME, building it first when it is missing."""
    binary = cached_binary(name, version_variable)
    if not binary.is_file():
        binary = request.getfixturevalue("built_runtimes").get(name, binary)
    if not os.access(binary, os.X_OK):
        pytest.fail(f"no runnable {name} at {binary} after hack/build-runtimes.sh")
    return binary


@pytest.fixture(scope="session")
def llama_server_binary(request: pytest.FixtureRequest) -> Path:
    return runtime_binary(request, "llama-server", "LLAMA_CPP_PYTHON_VERSION")


@pytest.fixture(scope="session")
def vllm_binary(request: pytest.FixtureRequest) -> Path:
    """The real vLLM's launcher (`vllm serve ...`), its CPU build in a venv."""
    return runtime_binary(request, "vllm", "VLLM_VERSION")


def write_tiny_vllm_repo(factory: pytest.TempPathFactory) -> Path:
    """A tiny Qwen3-layout Hugging Face repo (safetensors, tokenizer) that vLLM loads in seconds."""
    out = factory.mktemp("models") / "tiny-qwen3"
    subprocess.run(
        [str(VENV_BIN / "python"), str(HACK / "modelsource.py"), "--write-tiny-repo", str(out)],
        check=True,
        capture_output=True,
    )
    return out


def new_vllm_pool(factory: pytest.TempPathFactory) -> VLLMServers:
    return VLLMServers(write_tiny_vllm_repo(factory), factory.mktemp("vllm"))


#: The session's pool, made as collection ends when a real vLLM is needed (see below).
_EARLY_POOL: list[VLLMServers] = []


def pytest_collection_finish(session: pytest.Session) -> None:
    """A real vLLM takes a minute of CPU to start: the pool's first server starts while the tests
    before the first vLLM test (the unit tier, in `make test`) run, instead of being waited for."""
    users = [index for index, item in enumerate(session.items) if "vllm_servers" in item.fixturenames]
    binary = cached_binary("vllm", "VLLM_VERSION")
    if not users or users[0] == 0 or not os.access(binary, os.X_OK) or session.config.option.collectonly:
        return
    # The factory the tmp_path_factory fixture returns, which fixtures cannot be asked for here.
    pool = new_vllm_pool(session.config._tmp_path_factory)  # type: ignore[attr-defined]
    pool.start_early("real", "plain", binary)
    _EARLY_POOL.append(pool)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """An early pool no test took (a run stopped before the vLLM tests) stops its servers too."""
    while _EARLY_POOL:
        _EARLY_POOL.pop().close()


@pytest.fixture(scope="session")
def vllm_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VLLMServers]:
    """Real and stand-in vLLM servers serving the tiny repo, shared by the session's tests (a real
    one takes a minute and 3.7 GB to start); at most two real ones run at once."""
    servers = _EARLY_POOL.pop() if _EARLY_POOL else new_vllm_pool(tmp_path_factory)
    yield servers
    servers.close()


@pytest.fixture(scope="session")
def ollama_binary(request: pytest.FixtureRequest) -> Path:
    return runtime_binary(request, "ollama", "OLLAMA_VERSION")


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("models") / "tiny.gguf"
    subprocess.run(
        [str(HACK / "tiny-gguf"), str(out), "--context-length", str(TINY_CONTEXT_LENGTH)],
        check=True,
        capture_output=True,
    )
    return out


@pytest.fixture
def runtime_processes(tmp_path: Path) -> Iterator[Callable[[str, list[str]], RuntimeProcess]]:
    """`make(name, argv, env)` -> an unstarted RuntimeProcess on a free port, `{port}` in argv and
    env replaced by it; every one made is stopped after the test."""
    made: list[RuntimeProcess] = []

    def make(name: str, argv: list[str], env: dict[str, str] | None = None) -> RuntimeProcess:
        port = free_port()
        process = RuntimeProcess(
            name=name,
            argv=[part.format(port=port) for part in argv],
            port=port,
            log_path=tmp_path / f"{name}-{port}.log",
            env={variable: value.format(port=port) for variable, value in (env or {}).items()},
        )
        made.append(process)
        return process

    yield make
    for process in made:
        process.stop()


@pytest.fixture
def llama_server(
    runtime_processes: Callable[..., RuntimeProcess], llama_server_binary: Path, tiny_gguf: Path
) -> Callable[..., RuntimeProcess]:
    """An unstarted real llama-server serving the tiny model; extra arguments are appended."""

    def make(*extra: str) -> RuntimeProcess:
        argv = [str(llama_server_binary), "-m", str(tiny_gguf), "--host", "127.0.0.1", "--port", "{port}"]
        return runtime_processes("llama-server", [*argv, "--threads", "1", *extra])

    return make


@pytest.fixture
def vllm_standin(runtime_processes: Callable[..., RuntimeProcess]) -> Callable[..., RuntimeProcess]:
    """An unstarted vLLM stand-in (hack/standins/vllm_server.py); extra arguments are appended."""
    script = HACK / "standins" / "vllm_server.py"
    if not script.is_file():
        pytest.fail(f"the vLLM stand-in is missing: {script}")

    def make(*extra: str) -> RuntimeProcess:
        argv = [str(VENV_BIN / "python"), str(script), "--host", "127.0.0.1", "--port", "{port}"]
        return runtime_processes("vllm", [*argv, *extra])

    return make

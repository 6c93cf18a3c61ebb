"""The operator image, as far as it can be checked without a Docker engine (there is none on the
machines that test llmop): the Dockerfile's promises, and the wheel it installs, built from the
same files the Dockerfile copies and run from a venv of its own."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import venv
from pathlib import Path
from typing import Any

import pytest

from llmop import __version__
from llmop.cli import _render_crds

REPO = Path(__file__).resolve().parents[2]


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """(instruction, arguments) per stage, continuation lines joined, comments dropped."""
    stages: list[list[tuple[str, str]]] = []
    logical = ""
    for raw in (REPO / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        logical += line.removesuffix("\\").strip() + " "
        if line.endswith("\\"):
            continue
        instruction, _, arguments = logical.strip().partition(" ")
        logical = ""
        if instruction.upper() == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((instruction.upper(), arguments.strip()))
    return stages


def last(stage: list[tuple[str, str]], instruction: str) -> str:
    found = [args for name, args in stage if name == instruction]
    assert found, f"no {instruction} in the final stage"
    return found[-1]


def test_the_image_runs_llmop_run_as_a_numeric_non_root_user() -> None:
    final = dockerfile_stages()[-1]
    user = last(final, "USER").split(":")[0]
    assert user.isdigit() and int(user) != 0, "runAsNonRoot can only verify a numeric user"
    # Runtime pods give the model volume to the agent's user (fsGroup): the image's user.
    from llmop.manifests.deployment import AGENT_USER

    assert int(user) == AGENT_USER
    assert last(final, "ENTRYPOINT") == '["llmop"]'
    assert last(final, "CMD") == '["run"]'
    # The agent sidecar runs llmop's image with `agent ...` as its arguments, at a tag of its own.
    from llmop.config import OperatorConfig

    assert OperatorConfig().agent_image.startswith("ghcr.io/llmop/llmop:")


def test_the_image_installs_the_package_from_a_wheel_and_writes_nothing_at_run_time() -> None:
    stages = dockerfile_stages()
    assert len(stages) == 2, "a build stage makes the wheel, the final one only installs it"
    build, final = stages
    assert any(name == "RUN" and "pip wheel" in args for name, args in build)
    copied = {source for name, args in build if name == "COPY" for source in shlex.split(args)[:-1]}
    assert copied == {"pyproject.toml", "README.md", "operator"}
    install = [args for name, args in final if name == "RUN"]
    assert any("--no-index" in args and "llmop" in args for args in install)
    env = " ".join(args for name, args in final if name == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env and "HOME=/tmp" in env


def test_dockerignore_lets_in_exactly_what_the_build_copies() -> None:
    lines = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"
    assert {"!pyproject.toml", "!README.md", "!operator/"} <= set(lines)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The wheel built from the Dockerfile's inputs, installed alone into a fresh venv."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(
        REPO / "operator", source / "operator", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(work / "dist"), str(source)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    wheel = next((work / "dist").glob("llmop-*.whl"))
    env_dir = work / "venv"
    venv.create(env_dir, with_pip=True)
    subprocess.run(
        [str(env_dir / "bin" / "pip"), "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    # The dependencies come from the test environment (a path, not its .pth files), so the
    # package itself can only be the installed wheel, never this checkout's editable install.
    site = next((env_dir / "lib").glob("python*/site-packages"))
    deps = [p for p in sys.path if p.endswith("site-packages")]
    (site / "test-dependencies.pth").write_text("\n".join(deps) + "\n")
    return {"wheel": wheel, "bin": env_dir / "bin"}


def run_installed(installed: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(installed["bin"] / "llmop"), *args], capture_output=True, text=True, timeout=60, cwd="/"
    )


def test_the_wheel_holds_every_module_and_the_entry_point(installed: dict[str, Any]) -> None:
    import zipfile

    names = set(zipfile.ZipFile(installed["wheel"]).namelist())
    sources = {
        str(path.relative_to(REPO / "operator"))
        for path in (REPO / "operator" / "llmop").rglob("*.py")
        if "__pycache__" not in path.parts
    }
    assert sources <= names, sorted(sources - names)
    assert "llmop/py.typed" in names
    entry_points = zipfile.ZipFile(installed["wheel"]).read(f"llmop-{__version__}.dist-info/entry_points.txt")
    assert b"llmop = llmop.cli:main" in entry_points


def test_the_installed_entry_point_runs(installed: dict[str, Any]) -> None:
    version = run_installed(installed, "--version")
    assert version.returncode == 0 and version.stdout.strip() == f"llmop {__version__}"
    where = subprocess.run(
        [str(installed["bin"] / "python"), "-c", "import llmop; print(llmop.__file__)"],
        capture_output=True,
        text=True,
        cwd="/",
        check=True,
    )
    assert where.stdout.startswith(str(installed["bin"].parent)), where.stdout
    crds = run_installed(installed, "crds")
    assert crds.returncode == 0 and crds.stdout == "---\n".join(_render_crds().values())
    run_help = run_installed(installed, "run", "--help")
    assert "--leader-election" in run_help.stdout and "--metrics-port" in run_help.stdout

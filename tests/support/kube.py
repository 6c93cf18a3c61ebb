"""Driving a cluster the way a user does: kubectl, against whatever kubeconfig the tests were given."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
#: The names of llmop's CRDs, as crds/ (what the chart carries too) defines them.
LLMOP_CRDS = tuple(
    sorted(yaml.safe_load(path.read_text())["metadata"]["name"] for path in (REPO / "crds").glob("*.yaml"))
)


@dataclass
class Kube:
    """kubectl bound to one kubeconfig."""

    kubectl_path: Path
    kubeconfig: Path

    def run(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self.kubectl_path), "--kubeconfig", str(self.kubeconfig), *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed:\n{result.stderr}")
        return result

    def apply(
        self, manifest: dict[str, Any] | str, namespace: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        text = manifest if isinstance(manifest, str) else yaml.safe_dump(manifest)
        args = ["apply", "-f", "-"] + (["-n", namespace] if namespace else [])
        return self.run(*args, input=text, check=check)

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
        args = ["get", kind, name, "-o", "json"] + (["-n", namespace] if namespace else [])
        return json.loads(self.run(*args).stdout)

    def get_or_none(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        args = ["get", kind, name, "-o", "json", "--ignore-not-found"] + (
            ["-n", namespace] if namespace else []
        )
        out = self.run(*args).stdout
        return json.loads(out) if out.strip() else None

    def list(
        self, kind: str, namespace: str | None = None, selector: str | None = None
    ) -> list[dict[str, Any]]:
        args = ["get", kind, "-o", "json"] + (["-n", namespace] if namespace else ["-A"])
        if selector:
            args += ["-l", selector]
        return list(json.loads(self.run(*args).stdout)["items"])

    def watch_command(self, kind: str, namespace: str, template: str, name: str | None = None) -> list[str]:
        """`kubectl get --watch-only` printing one jsonpath `template` line per watch event."""
        return [
            str(self.kubectl_path),
            "--kubeconfig",
            str(self.kubeconfig),
            "get",
            kind,
            *([name] if name else []),
            "-n",
            namespace,
            "--watch-only",
            "--output-watch-events",
            "-o",
            f"jsonpath={template}",
        ]

    def watch_changes(self, kind: str, namespace: str, seconds: float) -> list[str]:
        """Every change kubectl's watch sees in `seconds` (one line each: type, name, resourceVersion)."""
        template = '{.type} {.object.metadata.name} {.object.metadata.resourceVersion}{"\\n"}'
        process = subprocess.Popen(
            self.watch_command(kind, namespace, template),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            out, _ = process.communicate(timeout=seconds)
        except subprocess.TimeoutExpired:
            process.terminate()
            out, _ = process.communicate()
        return [line for line in out.splitlines() if line.strip()]

    @contextmanager
    def namespace(self, prefix: str = "test") -> Iterator[str]:
        name = f"{prefix}-{uuid.uuid4().hex[:6]}"
        self.run("create", "namespace", name)
        try:
            yield name
        finally:
            self.run("delete", "namespace", name, "--wait=false", check=False)


def eventually(
    check: Callable[[], Any], timeout: float = 60.0, interval: float = 0.5, message: str = "condition"
) -> Any:
    """Poll until `check` returns something truthy; fail with the last value otherwise."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{message} not reached within {timeout:.0f}s; last value: {last!r}")


def ready_condition(kube: Kube, name: str, namespace: str) -> dict[str, Any]:
    """The backend's Ready condition as kubectl shows it; {} before its first status."""
    status = kube.get("llmb", name, namespace).get("status", {})
    return next((c for c in status.get("conditions") or [] if c["type"] == "Ready"), {})


def wait_backend_ready(kube: Kube, name: str, namespace: str, timeout: str = "180s") -> dict[str, Any]:
    """`kubectl wait --for=condition=Ready llmb/NAME`, as a user waits; the status once Ready,
    or a failure that shows the status it stopped at."""
    result = kube.run(
        "wait",
        "-n",
        namespace,
        "--for=condition=Ready",
        f"llmb/{name}",
        f"--timeout={timeout}",
        check=False,
        timeout=660,
    )
    status: dict[str, Any] = kube.get("llmb", name, namespace).get("status", {})
    if result.returncode != 0:
        raise AssertionError(f"llmb/{name} not Ready: {result.stderr}\nstatus: {yaml.safe_dump(status)}")
    return status

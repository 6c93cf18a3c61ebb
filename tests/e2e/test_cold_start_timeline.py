"""The cold-start timeline end to end: a llama.cpp backend whose agent downloads a real GGUF from the
model source and whose real llama-server loads it, watched through kubectl as a user would."""

from __future__ import annotations

import itertools
import shutil
import time
import uuid
from datetime import datetime
from typing import Any

import pytest
import yaml

from support.kube import REPO, Kube
from support.operator import OperatorProcess
from support.runtimes import ModelSource, PodRunner

pytestmark = pytest.mark.e2e

AGENT_STAGES = ["Scheduling", "PullingImage", "Downloading", "Starting", "Loading", "Warming"]


def parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def published_gguf(source: ModelSource) -> tuple[str, int]:
    """`hf://llmop-e2e/timeline-<random>/tiny.gguf` on the source, and its size."""
    repo = f"timeline-{uuid.uuid4().hex[:6]}"
    target = source.root / "hf" / "llmop-e2e" / repo / "tiny.gguf"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source.root / "files" / "tiny.gguf", target)
    return f"hf://llmop-e2e/{repo}/tiny.gguf", target.stat().st_size


def backend(name: str, model: str) -> dict[str, Any]:
    manifest = dict(yaml.safe_load((REPO / "examples" / "llamacpp.yaml").read_text()))
    manifest["metadata"]["name"] = name
    manifest["spec"].update(
        gpu={"count": 0}, models=[{"name": model}], startup={"timeout": "10m", "probeInterval": "1s"}
    )
    return manifest


def stage_column(kube: Kube, name: str, namespace: str) -> str:
    """What `kubectl get llmb` prints under STAGE ("" for nothing)."""
    header, row = kube.run("get", "llmb", name, "-n", namespace).stdout.splitlines()[:2]
    start = header.index("STAGE")
    shown = row[start:].split("  ")[0].strip()
    return "" if shown == "<none>" else shown


@pytest.fixture
def source(modelsource: ModelSource) -> Any:
    modelsource.throttle(0)
    modelsource.clear_faults()
    yield modelsource
    modelsource.throttle(0)


def test_the_timeline_of_a_backend_that_pulls_and_loads_adds_up_to_the_time_from_apply_to_ready(
    kube: Kube, operator: OperatorProcess, podrunner: PodRunner, source: ModelSource
) -> None:
    model, size = published_gguf(source)
    source.throttle(size // 4)  # about four seconds of download, long enough to be seen with its bytes
    with kube.namespace("timeline") as namespace:
        kube.apply(backend("timeline", model), namespace)
        columns: list[str] = []  # each distinct STAGE kubectl showed, in order
        downloading: list[dict[str, Any]] = []  # the replica's progress while it downloaded
        deadline = time.monotonic() + 180
        while True:
            status = kube.get("llmb", "timeline", namespace).get("status") or {}
            startup = status.get("startup") or {}
            if startup.get("stage") == "Ready":
                break
            replicas = startup.get("replicas") or [{}]
            if replicas[0].get("stage") == "Downloading" and replicas[0].get("progress"):
                downloading.append(replicas[0]["progress"])
            column = stage_column(kube, "timeline", namespace)
            if not columns or columns[-1] != column:
                columns.append(column)
            assert time.monotonic() < deadline, f"no complete timeline in 180s:\n{yaml.safe_dump(status)}"
            time.sleep(0.3)

        body = kube.get("llmb", "timeline", namespace)
        assert stage_column(kube, "timeline", namespace) == ""  # Ready: no stage to show
    startup = body["status"]["startup"]
    [replica] = startup["replicas"]
    stages = replica["stages"]
    assert [stage["name"] for stage in stages] == AGENT_STAGES, yaml.safe_dump(startup)
    for before, after in itertools.pairwise(stages):
        assert before["end"] == after["start"], "stages must be contiguous"
    total = sum(stage["seconds"] for stage in stages)
    ready = next(c for c in body["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"
    apply_to_ready = (
        parse(ready["lastTransitionTime"]) - parse(body["metadata"]["creationTimestamp"])
    ).total_seconds()
    assert abs(total - apply_to_ready) <= 2, (
        f"stages add up to {total}s, apply to Ready took {apply_to_ready}s"
    )
    assert startup["appliedAt"] == body["metadata"]["creationTimestamp"] and startup["seconds"] == total
    # The download was throttled to about four seconds: it shows, with its bytes.
    by_name = {stage["name"]: stage["seconds"] for stage in stages}
    assert by_name["Downloading"] >= 2, yaml.safe_dump(startup)
    # Bytes as the pull reports them: none before its first progress, then part of the file's size.
    assert any(0 < p["completedBytes"] < size and p["totalBytes"] == size for p in downloading), downloading
    assert any(column.startswith("Downloading") for column in columns), columns
    explained = " ".join(kube.run("explain", "llmbackend.status.startup.replicas.stages").stdout.split())
    # Each field says what it is in kubectl explain.
    assert "Scheduling (until a node is chosen)" in explained and "end - start, in seconds" in explained, (
        explained
    )

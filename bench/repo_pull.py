"""Scenario 6: a sharded repository pulled by the agent, its files a few at once, against
`curl --parallel` of the same files from the same source.

The local model source (hack/modelsource.py) serves a Hugging Face style repo of 4 files of random
bytes (2 GiB in all, as vLLM's sharded safetensors) on loopback. Each repetition fetches it three
ways, each going first in turn, into a folder of the same disk as the source:

- curl: `curl --parallel --parallel-max 4` of the four files, from the URLs the agent uses (the
  commit the listing names);
- curl, verified: the same, then `openssl dgst -sha256` of the four files, four at once, each
  compared with the digest the listing gives, and `sync -d` of the files: what the agent
  guarantees (every byte checked, on disk before it is in place);
- agent: `llmop agent` (its own process, LLMOP_PARALLEL_DOWNLOADS=4), a pull of
  `hf://bench/sharded` timed from the request to its answer: listing, the four files (sha256
  computed as the bytes arrive and compared with the listing's), each synced to disk and renamed
  into place, the record written. Removed again (DELETE /api/delete) before the next way.

The source's own byte counters (GET /_stats) say how much each way was sent. No cluster: the
operator's part of a pull is measured by section 4.
"""

from __future__ import annotations

import os
import resource
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from harness import REPO, load_average, median

REPO_ID = "bench/sharded"
FILES = 4
PARALLEL = 4


def _write_shards(repo_dir: Path, mib: int) -> list[str]:
    """FILES files of random bytes, mib MiB in all (kept when already there at that size)."""
    repo_dir.mkdir(parents=True, exist_ok=True)
    names = [f"model-{n:05d}-of-{FILES:05d}.safetensors" for n in range(1, FILES + 1)]
    each = (mib // FILES) << 20
    for name in names:
        path = repo_dir / name
        if path.exists() and path.stat().st_size == each:
            continue
        with open(path, "wb") as out:
            for _ in range(each >> 20):
                out.write(os.urandom(1 << 20))
    return names


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_agent(models_dir: Path, endpoint: str, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    env = {**os.environ, "HF_ENDPOINT": endpoint, "LLMOP_PARALLEL_DOWNLOADS": str(PARALLEL)}
    argv = [str(REPO / ".venv" / "bin" / "llmop"), "agent", "--models-dir", str(models_dir)]
    argv += ["--host", "127.0.0.1", "--port", str(port)]
    with open(log, "ab") as out:
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        if process.poll() is not None:
            raise RuntimeError(f"llmop agent exited ({process.returncode}); see {log}")
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"llmop agent did not answer; see {log}")


def _cpu_seconds(agent: subprocess.Popen[bytes]) -> float:
    """CPU time (user and system) of the agent and of every child process waited for so far."""
    own = psutil.Process(agent.pid).cpu_times()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.user + own.system + children.ru_utime + children.ru_stime


def _agent_pull(agent: str) -> float:
    model = f"hf://{REPO_ID}"
    started = time.monotonic()
    answer = httpx.post(f"{agent}/api/pull", json={"model": model, "stream": False}, timeout=1800)
    seconds = time.monotonic() - started
    if answer.status_code != 200 or answer.json().get("status") != "success":
        raise RuntimeError(f"the agent's pull failed: {answer.status_code} {answer.text[:500]}")
    httpx.request("DELETE", f"{agent}/api/delete", json={"model": model}, timeout=60).raise_for_status()
    return seconds


def _curl(urls: list[str], target: Path, digests: dict[str, str] | None) -> float:
    """Seconds for `curl --parallel` of the urls into target (and, with digests, their check and
    sync)."""
    target.mkdir(parents=True, exist_ok=True)
    argv = ["curl", "--parallel", "--parallel-max", str(PARALLEL), "-sSf", "--no-progress-meter"]
    for url in urls:
        argv += ["-o", str(target / url.rsplit("/", 1)[1]), url]
    started = time.monotonic()
    subprocess.run(argv, check=True)
    if digests is not None:
        checks = {
            name: subprocess.Popen(
                ["openssl", "dgst", "-sha256", "-r", str(target / name)], stdout=subprocess.PIPE
            )
            for name in digests
        }
        for name, check in checks.items():
            out, _ = check.communicate()
            if out.split()[0].decode() != digests[name]:
                raise RuntimeError(f"{name}: curl's bytes do not match the listed sha256")
        subprocess.run(["sync", "-d", *(str(target / name) for name in digests)], check=True)
    seconds = time.monotonic() - started
    shutil.rmtree(target)
    return seconds


def run_repo_pull(workdir: Path, mib: int, repeats: int) -> dict[str, Any]:
    from support.runtimes import run_modelsource

    root = workdir / "repo" / "source"
    names = _write_shards(root / "hf" / REPO_ID, mib)
    models_dir = workdir / "repo" / "agent"
    with run_modelsource(root, populate=False) as source:
        # The source hashes each file once, for the listing: before anything is timed.
        listing = httpx.get(f"{source.url}/api/models/{REPO_ID}/revision/main?blobs=true", timeout=600).json()
        digests = {s["rfilename"]: s["lfs"]["sha256"] for s in listing["siblings"]}
        urls = [f"{source.url}/{REPO_ID}/resolve/{listing['sha']}/{name}" for name in names]
        agent, agent_url = _start_agent(models_dir, source.url, workdir / "repo" / "agent.log")
        times: dict[str, list[float]] = {"curl": [], "verified": [], "agent": []}
        sent: dict[str, list[int]] = {kind: [] for kind in times}
        cpu: dict[str, list[float]] = {kind: [] for kind in times}
        loads = [load_average()]
        try:
            kinds = list(times)
            for rep in range(repeats):
                for kind in kinds[rep % 3 :] + kinds[: rep % 3]:  # each goes first in turn
                    source.reset_stats()
                    cpu_before = _cpu_seconds(agent)
                    if kind == "agent":
                        seconds = _agent_pull(agent_url)
                    else:
                        out = workdir / "repo" / "curl"
                        seconds = _curl(urls, out, digests if kind == "verified" else None)
                    cpu[kind].append(_cpu_seconds(agent) - cpu_before)
                    times[kind].append(seconds)
                    sent[kind].append(sum(p["bytes_sent"] for p in source.stats().values()))
                    print(f"  {kind}: {seconds:.2f} s, CPU {cpu[kind][-1]:.2f} s", flush=True)
                loads.append(load_average())
        finally:
            agent.terminate()
            agent.wait(30)
    shutil.rmtree(workdir / "repo", ignore_errors=True)
    return {
        "mib": mib,
        "files": FILES,
        "parallel": PARALLEL,
        "repeats": repeats,
        "curl_seconds": times["curl"],
        "verified_seconds": times["verified"],
        "agent_seconds": times["agent"],
        "bytes_sent": sent,
        "cpu_seconds": cpu,
        "ratio": median(times["agent"]) / median(times["curl"]),
        "ratio_to_verified": median(times["agent"]) / median(times["verified"]),
        "loads": loads,
        "curl_version": subprocess.run(["curl", "--version"], capture_output=True, text=True).stdout.split()[
            1
        ],
    }


if __name__ == "__main__":  # a quick look: python bench/repo_pull.py [MiB] [repeats]
    import json
    import tempfile

    mib = int(sys.argv[1]) if len(sys.argv) > 1 else 2048
    print(
        json.dumps(
            run_repo_pull(
                Path(tempfile.mkdtemp(prefix="llmop-bench-")),
                mib,
                int(sys.argv[2:3][0]) if sys.argv[2:] else 3,
            ),
            indent=1,
        )
    )

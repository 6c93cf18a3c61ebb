"""Scenario 6: a sharded repository pulled by the agent, its files a few at once, against
`curl --parallel` of the same files from the same source.

The local model source (hack/modelsource.py) serves a Hugging Face style repo of 4 files of random
bytes (2 GiB in all, as vLLM's sharded safetensors) on loopback. Each repetition fetches it four
ways, each going first in turn, into a folder of the same disk as the source:

- curl: `curl --parallel --parallel-max 4` of the four files, from the URLs the agent uses (the
  commit the listing names);
- curl, synced: the same, then `sync -d` of the files: on disk, as the agent leaves them (plain
  curl's files are removed before the kernel writes them out: their bytes never reach the disk);
- curl, verified: the same, then `openssl dgst -sha256` of the four files, four at once, each
  compared with the digest the listing gives, and `sync -d` of the files: what the agent
  guarantees (every byte checked, on disk before it is in place);
- agent: `llmop agent` (its own process, LLMOP_PARALLEL_DOWNLOADS=4), a pull of
  `hf://bench/sharded` timed from the request to its answer: listing, the four files (sha256
  computed as the bytes arrive and compared with the listing's), each synced to disk and renamed
  into place, the record written. Removed again (DELETE /api/delete) before the next way.

Then, with the source sending each response at most 100 MiB/s (a link slower than this machine's
CPU, as a CDN's rate per connection), once each: curl, the agent, and the agent fetching one file
after another (LLMOP_PARALLEL_DOWNLOADS=1, as every pull did before files were fetched at once).

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
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
import psutil

from harness import REPO, load_average, median

REPO_ID = "bench/sharded"
FILES = 4
PARALLEL = 4
THROTTLE_MIB_PER_SECOND = 100


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


def _start_agent(
    models_dir: Path, endpoint: str, log: Path, parallel: int
) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    env = {**os.environ, "HF_ENDPOINT": endpoint, "LLMOP_PARALLEL_DOWNLOADS": str(parallel)}
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


def _agent_pull(agent: str) -> float:
    model = f"hf://{REPO_ID}"
    started = time.monotonic()
    answer = httpx.post(f"{agent}/api/pull", json={"model": model, "stream": False}, timeout=1800)
    seconds = time.monotonic() - started
    if answer.status_code != 200 or answer.json().get("status") != "success":
        raise RuntimeError(f"the agent's pull failed: {answer.status_code} {answer.text[:500]}")
    httpx.request("DELETE", f"{agent}/api/delete", json={"model": model}, timeout=60).raise_for_status()
    return seconds


def _curl(urls: list[str], target: Path, digests: dict[str, str] | None, sync: bool) -> float:
    """Seconds for `curl --parallel` of the urls into target (and, with digests, their check; with
    sync, their bytes on disk)."""
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
    if sync:
        subprocess.run(["sync", "-d", *(str(target / url.rsplit("/", 1)[1]) for url in urls)], check=True)
    seconds = time.monotonic() - started
    shutil.rmtree(target)
    return seconds


def run_repo_pull(workdir: Path, mib: int, repeats: int) -> dict[str, Any]:
    from support.runtimes import run_modelsource

    root = workdir / "repo" / "source"
    names = _write_shards(root / "hf" / REPO_ID, mib)
    with run_modelsource(root, populate=False) as source:
        # The source hashes each file once, for the listing: before anything is timed.
        listing = httpx.get(f"{source.url}/api/models/{REPO_ID}/revision/main?blobs=true", timeout=600).json()
        digests = {s["rfilename"]: s["lfs"]["sha256"] for s in listing["siblings"]}
        urls = [f"{source.url}/{REPO_ID}/resolve/{listing['sha']}/{name}" for name in names]
        bench = _Ways(workdir / "repo", source, urls, digests)
        try:
            loads = [load_average()]
            kinds = ["curl", "synced", "verified", "agent"]
            for rep in range(repeats):
                for kind in kinds[rep % 4 :] + kinds[: rep % 4]:  # each goes first in turn
                    bench.measure(kind)
                loads.append(load_average())
            results = bench.results(kinds)
            # A link slower than this machine's CPU (a CDN's rate per connection): what fetching
            # the files at once gains, against one after another as the agent did before.
            source.throttle(THROTTLE_MIB_PER_SECOND << 20)
            for kind in ("curl", "agent", "agent_one_at_a_time"):
                bench.measure(kind, f"throttled {kind}")
            throttled = bench.results(["throttled curl", "throttled agent", "throttled agent_one_at_a_time"])
            loads.append(load_average())
        finally:
            bench.stop()
    shutil.rmtree(workdir / "repo", ignore_errors=True)
    t = throttled["seconds"]
    return {
        "mib": mib,
        "files": FILES,
        "parallel": PARALLEL,
        "repeats": repeats,
        **results,
        "ratio": median(results["seconds"]["agent"]) / median(results["seconds"]["curl"]),
        "ratio_to_verified": median(results["seconds"]["agent"]) / median(results["seconds"]["verified"]),
        "ratio_to_synced": median(results["seconds"]["agent"]) / median(results["seconds"]["synced"]),
        "throttled": {
            "mib_per_second_per_connection": THROTTLE_MIB_PER_SECOND,
            **throttled,
            "ratio": t["throttled agent"][0] / t["throttled curl"][0],
        },
        "loads": loads,
        "curl_version": subprocess.run(["curl", "--version"], capture_output=True, text=True).stdout.split()[
            1
        ],
    }


class _Ways:
    """The ways of fetching the repo, each timed with its CPU and the bytes the source sent."""

    def __init__(self, workdir: Path, source: Any, urls: list[str], digests: dict[str, str]) -> None:
        self.workdir, self.source, self.urls, self.digests = workdir, source, urls, digests
        self.agents = {
            parallel: _start_agent(workdir / f"agent-{parallel}", source.url, workdir / "agent.log", parallel)
            for parallel in (PARALLEL, 1)
        }
        self.seconds: dict[str, list[float]] = defaultdict(list)
        self.cpu: dict[str, list[float]] = defaultdict(list)
        self.sent: dict[str, list[int]] = defaultdict(list)

    def measure(self, kind: str, label: str | None = None) -> None:
        label = label or kind
        self.source.reset_stats()
        cpu_before = self._cpu_seconds()
        if kind.startswith("agent"):
            seconds = _agent_pull(self.agents[1 if kind == "agent_one_at_a_time" else PARALLEL][1])
        else:
            digests = self.digests if kind == "verified" else None
            seconds = _curl(self.urls, self.workdir / "curl", digests, sync=kind in ("synced", "verified"))
        self.cpu[label].append(self._cpu_seconds() - cpu_before)
        self.seconds[label].append(seconds)
        self.sent[label].append(sum(p["bytes_sent"] for p in self.source.stats().values()))
        print(f"  {label}: {seconds:.2f} s, CPU {self.cpu[label][-1]:.2f} s", flush=True)

    def results(self, labels: list[str]) -> dict[str, Any]:
        return {
            "seconds": {label: self.seconds[label] for label in labels},
            "cpu_seconds": {label: self.cpu[label] for label in labels},
            "bytes_sent": {label: self.sent[label] for label in labels},
        }

    def _cpu_seconds(self) -> float:
        """CPU time (user and system) of the agents and of every child process waited for so far."""
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        total = children.ru_utime + children.ru_stime
        for process, _ in self.agents.values():
            own = psutil.Process(process.pid).cpu_times()
            total += own.user + own.system
        return total

    def stop(self) -> None:
        for process, _ in self.agents.values():
            process.terminate()
            process.wait(30)


if __name__ == "__main__":  # a quick look: python bench/repo_pull.py [MiB [repeats]]
    import json
    import tempfile

    args = [int(arg) for arg in sys.argv[1:3]] + [2048, 3][len(sys.argv[1:3]) :]
    print(json.dumps(run_repo_pull(Path(tempfile.mkdtemp(prefix="llmop-bench-")), *args), indent=1))

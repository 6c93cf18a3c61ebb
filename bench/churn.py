"""Churn: create N external backends, wait until every one is Ready, delete them all, wait until
they are gone; several rounds. Prints the operator's RSS at start and after each round, and
beside it the arenas of Python's small-object allocator and what live objects use of them.

What the operator holds for a backend (its observer, apply errors, metrics state, the agent
token) goes when the backend goes: live Python objects return to about their size at start.
Python keeps every arena a round grew in which a few objects outlive the burst, so after a round
the operator runs itself anew in place (llmop.loops.heap; the same PID, which this script
follows); `--operator-env LLMOP_HEAP_RESTART_PERCENT=0` shows the RSS without it, where what a
leak adds shows in the rounds after the first. On the bench cluster of `make bench`
(LocalCluster "bench"), with one shared vLLM stand-in; measures, never asserts.

    .venv/bin/python bench/churn.py                        # 300 backends, 3 rounds
    .venv/bin/python bench/churn.py --backends 20          # a quick look
    .venv/bin/python bench/churn.py --operator-env PYTHONMALLOC=malloc   # glibc for every object
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from harness import (
    LLMBACKENDS,
    BenchCluster,
    OperatorRun,
    Watcher,
    api,
    create_all,
    delete_namespace,
    ensure_namespace,
    external_backend,
    load_average,
    remove_leftovers,
    start_vllm_standin,
    wait_serving,
)
from llmop.k8s.client import KubeClient

NAMESPACE = "churn"
CONCURRENCY = 32
#: After the last backend of a round is gone, the operator gets this long to let go of it.
SETTLE_SECONDS = 60.0


async def churn_round(
    kube: KubeClient, watcher: Watcher, round_number: int, count: int, url: str, deadline: float
) -> dict[str, float]:
    names = [f"r{round_number}-b-{index:04d}" for index in range(count)]
    started = time.monotonic()
    await create_all(
        kube, LLMBACKENDS, [external_backend(name, NAMESPACE, url) for name in names], CONCURRENCY
    )
    await watcher.wait_for(lambda: all(name in watcher.ready_at for name in names), timeout=deadline)
    ready = time.monotonic() - started
    gate = asyncio.Semaphore(CONCURRENCY)

    async def delete(name: str) -> None:
        async with gate:
            await kube.delete(LLMBACKENDS, name, NAMESPACE)

    await asyncio.gather(*(delete(name) for name in names))
    while await kube.list(LLMBACKENDS, NAMESPACE):  # the operator removes its finalizers
        if time.monotonic() - started > deadline:
            raise RuntimeError(f"round {round_number}: backends still there after {deadline:.0f}s")
        await asyncio.sleep(0.5)
    return {"ready_seconds": ready, "round_seconds": time.monotonic() - started}


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    workdir = Path(tempfile.mkdtemp(prefix="llmop-churn-"))
    cluster = BenchCluster.up()
    kube = api(cluster.kubeconfig)
    standin = start_vllm_standin(workdir / "standins", "churn")
    env = dict(setting.split("=", 1) for setting in args.operator_env)
    operator = OperatorRun(cluster.kubeconfig, workdir / "operator", env=env)
    rows: list[dict[str, Any]] = []
    try:
        await remove_leftovers(kube)
        await wait_serving(standin.url)
        await ensure_namespace(kube, NAMESPACE)
        watcher = Watcher(kube, LLMBACKENDS, NAMESPACE, lambda obj: {})
        await watcher.start()
        await operator.start()
        await asyncio.sleep(SETTLE_SECONDS)  # kopf has listed and watches; the heap is warm
        rows.append(
            {"when": "start", **memory(operator), **await python_heap(operator), "load": load_average()}
        )
        print(f"churn: operator RSS at start {rows[0]['rss_mib']:.1f} MiB", flush=True)
        for number in range(1, args.rounds + 1):
            operator.reset_peak()
            timing = await churn_round(kube, watcher, number, args.backends, standin.url, args.deadline)
            watcher.events.clear()
            await asyncio.sleep(SETTLE_SECONDS)
            row = {
                "when": f"after round {number}",
                **memory(operator),
                **await python_heap(operator),
                **timing,
            }
            rows.append({**row, "load": load_average()})
            print(
                f"churn: round {number}: {args.backends} Ready in {timing['ready_seconds']:.1f}s, all gone "
                f"after {timing['round_seconds']:.1f}s; operator RSS {row['rss_mib']:.1f} MiB "
                f"(peak {row['peak_mib']:.1f} MiB)",
                flush=True,
            )
        await watcher.stop()
    finally:
        await operator.stop()
        standin.stop()
        await delete_namespace(kube, NAMESPACE, timeout=120)
        await kube.close()
        if not args.keep_cluster:
            BenchCluster.down()
    return rows


def memory(operator: OperatorRun) -> dict[str, float]:
    """The operator's RSS (what the criterion is about) and, to tell where it is, its anonymous and
    file-backed parts and the highest RSS seen since the last reset, all in MiB."""
    rss, split = operator.rss(), operator.rss_split()
    return {
        "rss_mib": rss / 2**20,
        "anon_mib": split.get("anon", float("nan")) / 2**20,
        "file_mib": split.get("file", float("nan")) / 2**20,
        "peak_mib": max(operator.peak_rss, rss) / 2**20,
    }


async def python_heap(operator: OperatorRun) -> dict[str, float]:
    """Python's small-object allocator in the operator, in MiB: the arenas it holds (anonymous
    memory) and what live objects use of them. An arena goes back only once all its objects are
    freed, so a few objects that outlive a burst keep whole arenas."""
    figures = (await operator.counters()).get("pymalloc", {})
    nan = float("nan")
    return {
        "arenas_mib": figures.get("arenas_bytes", nan) / 2**20,
        "in_use_mib": figures.get("in_use_bytes", nan) / 2**20,
    }


def print_summary(rows: list[dict[str, Any]], backends: int) -> None:
    start, first, last = rows[0]["rss_mib"], rows[1]["rss_mib"], rows[-1]["rss_mib"]
    print(
        f"\n| when | operator RSS | anonymous | file-backed | Python's arenas | live Python objects "
        f"| peak in the round | load 1/5/15 |  ({backends} external backends per round)"
    )
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        load = "/".join(f"{value:.2f}" for value in row["load"])
        peak = f"{row['peak_mib']:.1f} MiB" if row["when"] != "start" else ""
        print(
            f"| {row['when']} | {row['rss_mib']:.1f} MiB | {row['anon_mib']:.1f} MiB "
            f"| {row['file_mib']:.1f} MiB | {row['arenas_mib']:.1f} MiB | {row['in_use_mib']:.1f} MiB "
            f"| {peak} | {load} |"
        )
    print(
        f"\nlast round against the first: {100 * (last - first) / first:+.1f}%; "
        f"against the start: {100 * (last - start) / start:+.1f}%"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backends", type=int, default=300, help="backends created and deleted per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--deadline", type=float, default=900.0, help="seconds one round may take")
    parser.add_argument("--keep-cluster", action="store_true", help="leave the bench cluster running")
    parser.add_argument(
        "--operator-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set in the operator's environment (another allocator: PYTHONMALLOC, LD_PRELOAD)",
    )
    args = parser.parse_args()
    rows = asyncio.run(run(args))
    print_summary(rows, args.backends)
    return 0


if __name__ == "__main__":
    sys.exit(main())

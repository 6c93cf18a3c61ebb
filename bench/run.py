#!/usr/bin/env python3
"""llmop's benchmarks: how fast it sees the truth, how far it scales, what it costs.

Runs every scenario on a local cluster of its own (LocalCluster("bench"), or the name in
$LLMOP_BENCH_CLUSTER), writes the figures as JSON (bench/results.json) and the report,
docs/benchmarks.md, with its plots (docs/benchmarks/).

    make bench                                   # everything, as the report was made
    .venv/bin/python bench/run.py --only scale --sizes 100
    .venv/bin/python bench/run.py --only wake    # a request at zero replicas (spec.autoscaling)
    .venv/bin/python bench/run.py --report-only  # the report again, from bench/results.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    REPO,
    BenchCluster,
    api,
    load_average,
    machine_facts,
    median,
    remove_leftovers,
    start_vllm_standin,
    versions,
    wait_serving,
)
from llmop.k8s.client import KubeClient

SCENARIOS = ("scale", "ready", "reconcile", "pull", "wake", "gateway", "repo", "cache")
#: Scenarios that need no cluster (processes on loopback only).
LOOPBACK = ("gateway", "repo")
RESULTS = REPO / "bench" / "results.json"


async def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="llmop-bench-"))
    print(f"bench: work files in {workdir}", flush=True)
    only = args.only or list(SCENARIOS)
    if all(name in LOOPBACK for name in only):
        return await asyncio.to_thread(_run_loopback, args, workdir, only)
    cluster = BenchCluster.up()
    kube = api(cluster.kubeconfig)
    await remove_leftovers(kube)
    existing: dict[str, Any] = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    saved: dict[str, Any] = {}
    if args.baseline:
        # The same scenarios against another checkout's operator (e.g. the commit before a change),
        # kept apart in results["baseline"] for the before/after table.
        os.environ["LLMOP_BENCH_OPERATOR_SRC"] = str(Path(args.baseline).resolve() / "operator")
        commit = subprocess.run(
            ["git", "-C", args.baseline, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        saved = existing
        results: dict[str, Any] = {
            "commit": commit,
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "load_at_start": load_average(),
        }
    else:
        # A baseline (--baseline) is measured on its own; a full run keeps it for the before/after table.
        results = existing if args.keep else {key: existing[key] for key in ("baseline",) if key in existing}
        results.update(
            machine=machine_facts(),
            versions=versions(cluster.kubectl, cluster.kubeconfig),
            command=" ".join(["make bench"] if args.make else [shlex.quote(a) for a in sys.argv]),
            started=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            load_at_start=load_average(),
        )

    def save(current: dict[str, Any]) -> None:
        whole = {**saved, "baseline": current} if args.baseline else current
        RESULTS.write_text(json.dumps(whole, indent=1, default=str))

    try:
        if "scale" in only:
            from scale import run_reference, run_scale

            shared = start_vllm_standin(workdir / "standins", "bench")
            try:
                await wait_serving(shared.url)
                results["scale"] = []
                for n in args.sizes:
                    print(f"bench: scale, {n} backends", flush=True)
                    ours = await run_scale(
                        kube, cluster, workdir, n, shared.url, args.quiet_seconds, args.ready_deadline
                    )
                    if "not_all_ready" in ours:
                        print(f"  N={n}: not all Ready after {args.ready_deadline:.0f}s: {ours}", flush=True)
                        results["scale"].append(ours)
                        save(results)
                        continue
                    print(f"bench: reference, {n} backends", flush=True)
                    ref = await run_reference(
                        kube, cluster, n, shared.url, ours["status_writes"], ours["sample_status"] or {}
                    )
                    ours["reference"] = ref
                    ours["ratio"] = ours["seconds_to_all_ready"] / ref["seconds_to_all_ready"]
                    if n == max(args.sizes) and args.scale_repeats > 1:
                        ours.update(await _repeat_scale(kube, cluster, workdir, n, shared.url, ours, args))
                    results["scale"].append(ours)
                    _summary_scale(ours)
                    save(results)
            finally:
                shared.stop()
        if "ready" in only:
            from detection import run_detection

            print("bench: ready detection", flush=True)
            results["ready"] = await run_detection(kube, cluster, workdir, args.ready_runs)
            save(results)
        if "reconcile" in only:
            from reconcile import run_reconcile

            print("bench: reconcile latency", flush=True)
            results["reconcile"] = await run_reconcile(kube, cluster, workdir, args.reconcile_runs)
            save(results)
        if "pull" in only:
            from pull import run_pull

            print("bench: pull overhead", flush=True)
            results["pull"] = await run_pull(kube, cluster, workdir, args.pull_mib, args.pull_repeats)
            save(results)
        if "cache" in only and not args.baseline:  # ModelCache is this checkout's
            from cache_bytes import run_cache_bytes

            print("bench: bytes sent for a 3-replica backend, with and without a ModelCache", flush=True)
            started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
            results["cache_bytes"] = await run_cache_bytes(kube, cluster, workdir, args.cache_mib)
            results["cache_bytes"].update(started=started)
            save(results)
        if "wake" in only:
            from wake import run_wake, summary_line

            print("bench: a request at zero replicas (spec.autoscaling)", flush=True)
            started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
            results["wake"] = await run_wake(kube, cluster, workdir, args.wake_runs)
            results["wake"].update(started=started)
            print(summary_line(results["wake"]), flush=True)
            save(results)
    finally:
        await kube.close()
        if not args.keep_cluster:
            BenchCluster.down()
    if "gateway" in only and not args.baseline:  # the gateway measured is always this checkout's
        # On loopback, after the cluster is gone: its processes would take the CPU measured here.
        from gateway import run_gateway_bench

        started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        results["gateway"] = await asyncio.to_thread(run_gateway_bench, workdir, args.gateway_seconds)
        results["gateway"].update(started=started, load=load_average())
    if "repo" in only and not args.baseline:
        results["repo_pull"] = await asyncio.to_thread(_run_repo_pull, args, workdir)
    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    results["load_at_end"] = load_average()
    save(results)
    return results


def _run_loopback(args: argparse.Namespace, workdir: Path, only: list[str]) -> dict[str, Any]:
    """Scenarios without a cluster, their figures merged into the last full run's."""
    from gateway import run_gateway_bench

    results: dict[str, Any] = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    if "gateway" in only:
        started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        results["gateway"] = run_gateway_bench(workdir, args.gateway_seconds)
        results["gateway"].update(started=started, alone=True, load=load_average())
    if "repo" in only:
        results["repo_pull"] = _run_repo_pull(args, workdir)
    RESULTS.write_text(json.dumps(results, indent=1, default=str))
    return results


def _run_repo_pull(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from repo_pull import run_repo_pull

    print(f"bench: sharded repo pull, {args.repo_mib} MiB in 4 files", flush=True)
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    found = run_repo_pull(workdir, args.repo_mib, args.repo_repeats)
    found.update(started=started)
    return found


async def _repeat_scale(
    kube: KubeClient, cluster: BenchCluster, workdir: Path, n: int, url: str, first: dict[str, Any], args: Any
) -> dict[str, Any]:
    """More pairs of (llmop, reference) at the largest size, without the quiet window: the time
    to all Ready swings from run to run on a shared machine, so its median is what is compared."""
    from scale import run_reference, run_scale

    pairs = [(first["seconds_to_all_ready"], first["reference"]["seconds_to_all_ready"])]
    for repeat in range(2, args.scale_repeats + 1):
        print(f"bench: scale, {n} backends, repeat {repeat}", flush=True)
        ours = await run_scale(kube, cluster, workdir, n, url, 1.0, args.ready_deadline)
        if "not_all_ready" in ours:
            pairs.append((float("inf"), float("nan")))
            continue
        ref = await run_reference(kube, cluster, n, url, ours["status_writes"], ours["sample_status"] or {})
        pairs.append((ours["seconds_to_all_ready"], ref["seconds_to_all_ready"]))
        print(f"  repeat {repeat}: {pairs[-1][0]:.1f}s, reference {pairs[-1][1]:.1f}s", flush=True)
    return {
        "repeats": [{"seconds": a, "reference_seconds": b, "ratio": a / b} for a, b in pairs],
        "seconds_median": median(a for a, _ in pairs),
        "ratio_median": median(a / b for a, b in pairs),
    }


def _summary_scale(r: dict[str, Any]) -> None:
    s = r["steady"]
    print(
        f"  N={r['n']}: all Ready in {r['seconds_to_all_ready']:.1f}s "
        f"(reference {r['reference']['seconds_to_all_ready']:.1f}s, ratio {r['ratio']:.2f}); "
        f"requests {r['requests']}; peak RSS {r['peak_rss_mib']:.0f} MiB; CPU {r['cpu_seconds']:.1f}s; "
        f"steady: {s['status_writes_per_minute']:.1f} status writes/min, {s['cpu_percent']:.1f}% CPU, "
        f"{s['probes_per_second']:.1f} probes/s, RSS {s['rss_mib']:.0f} MiB; load {r['load_before']}",
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--only", action="append", choices=SCENARIOS, help="run only this scenario (repeatable)"
    )
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[100, 300, 1000])
    parser.add_argument("--quiet-seconds", type=float, default=60.0, help="steady-state window")
    parser.add_argument(
        "--ready-deadline", type=float, default=600.0, help="scale: give up on all Ready after"
    )
    parser.add_argument(
        "--scale-repeats", type=int, default=3, help="runs at the largest size; their medians are compared"
    )
    parser.add_argument("--ready-runs", type=int, default=40)
    parser.add_argument("--reconcile-runs", type=int, default=30)
    parser.add_argument("--wake-runs", type=int, default=5, help="wake: requests at zero replicas")
    parser.add_argument("--pull-mib", type=int, default=1024)
    parser.add_argument("--pull-repeats", type=int, default=3)
    parser.add_argument("--repo-mib", type=int, default=2048, help="repo: the sharded repo's size")
    parser.add_argument("--repo-repeats", type=int, default=4)
    parser.add_argument("--cache-mib", type=int, default=512, help="cache: the sharded repo's size")
    parser.add_argument("--gateway-seconds", type=float, default=10.0, help="gateway: each measurement")
    parser.add_argument("--keep", action="store_true", help="keep other scenarios' results in results.json")
    parser.add_argument("--keep-cluster", action="store_true", help="leave the bench cluster running")
    parser.add_argument("--make", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument(
        "--baseline",
        metavar="CHECKOUT",
        help="measure the operator of another checkout (kept in results.baseline)",
    )
    args = parser.parse_args()
    if not args.report_only:
        asyncio.run(run(args))
    from report import write_report

    write_report(json.loads(RESULTS.read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

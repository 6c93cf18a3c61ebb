"""`llmop run`, with counters the benchmark reads: the operator's own view of the requests it makes.

The benchmark starts the operator through this module instead of the `llmop` script. It runs the
same code (`llmop.cli.main(["run", ...])`) and adds, outside llmop's own code:

- kopf's requests to the API server: every aiohttp client request in the process (kopf is the
  only aiohttp client here), by method;
- llmop's requests to the API server: `KubeClient.requests_made`, and status patches among them;
- probes: requests to runtimes on the shared `memo.runtime_http` client.

On SIGUSR1 it writes them as JSON to $LLMOP_BENCH_COUNTERS (atomically), so a reader gets the
numbers of that moment, not of the last timer tick; with them, what Python's small-object allocator
holds and how much of it is in use (bench/churn.py prints both).

    LLMOP_BENCH_COUNTERS=/tmp/c.json python bench/operator_main.py run --verbose
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import kopf

from llmop.loops.context import OperatorContext

COUNTS: Counter[str] = Counter()
_MEMO: dict[str, Any] = {}


def _count_aiohttp() -> None:
    original = aiohttp.ClientSession._request

    async def counted(self: aiohttp.ClientSession, method: str, url: Any, *args: Any, **kwargs: Any) -> Any:
        watching = "watch=true" in str(url) or (kwargs.get("params") or {}).get("watch") in (True, "true")
        COUNTS[f"kopf.{method.upper()}{'.watch' if watching else ''}"] += 1
        return await original(self, method, url, *args, **kwargs)

    aiohttp.ClientSession._request = counted  # type: ignore[method-assign]


#: What `sys._debugmallocstats()` says of Python's small-object allocator (pymalloc), in bytes.
PYMALLOC_FIGURES = {
    "arenas_bytes": r"arenas \* \d+ bytes/arena\s*=\s*([\d,]+)",
    "in_use_bytes": r"# bytes in allocated blocks\s*=\s*([\d,]+)",
}


def _pymalloc() -> dict[str, int]:
    """The memory Python's allocator holds in arenas and how much of it live objects use: an arena
    goes back to the system only once every object in it is freed. Empty under PYTHONMALLOC=malloc.
    `sys._debugmallocstats()` prints to the C stderr, so file descriptor 2 is captured meanwhile."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        capture.seek(0)
        text = capture.read().decode(errors="replace")
    figures = {}
    for name, pattern in PYMALLOC_FIGURES.items():
        found = re.search(pattern, text)
        if found:
            figures[name] = int(found.group(1).replace(",", ""))
    return figures


def _dump() -> None:
    path = os.environ.get("LLMOP_BENCH_COUNTERS")
    if not path:
        return
    data: dict[str, Any] = dict(COUNTS)
    kube = _MEMO.get("kube")
    data["llmop.requests"] = getattr(kube, "requests_made", 0)
    data["time"] = time.time()
    data["pymalloc"] = _pymalloc()
    tmp = Path(path).with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


async def bench_counters(memo: OperatorContext, **_: Any) -> None:
    """Runs after llmop's own startup handler (registered earlier): its clients exist now."""
    import asyncio

    _MEMO["kube"] = memo.kube

    async def on_kube_request(request: httpx.Request) -> None:
        if request.method == "PATCH" and request.url.path.endswith("/status"):
            COUNTS["llmop.status_patches"] += 1
        COUNTS[f"llmop.{request.method}"] += 1

    async def on_probe(request: httpx.Request) -> None:
        COUNTS["probes"] += 1

    memo.kube.http.event_hooks["request"].append(on_kube_request)
    memo.runtime_http.event_hooks["request"].append(on_probe)
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, _dump)
    _dump()


def main() -> int:
    _count_aiohttp()
    import llmop.handlers  # noqa: F401  (llmop's handlers first, so its startup runs first)
    from llmop.cli import main as llmop_main

    # Registered after llmop's: kopf runs startup handlers in the order they were registered.
    kopf.on.startup()(bench_counters)
    result = llmop_main(sys.argv[1:])
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())

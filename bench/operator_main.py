"""`llmop run`, with counters the benchmark reads: the operator's own view of the requests it makes.

The benchmark starts the operator through this module instead of the `llmop` script. It runs the
same code (`llmop.cli.main(["run", ...])`) and adds, outside llmop's own code:

- kopf's requests to the API server: every aiohttp client request in the process (kopf is the
  only aiohttp client here), by method;
- llmop's requests to the API server: `KubeClient.requests_made`, and status patches among them;
- probes: requests to runtimes on the shared `memo.runtime_http` client.

On SIGUSR1 it writes them as JSON to $LLMOP_BENCH_COUNTERS (atomically), so a reader gets the
numbers of that moment, not of the last timer tick.

    LLMOP_BENCH_COUNTERS=/tmp/c.json python bench/operator_main.py run --verbose
"""

from __future__ import annotations

import json
import os
import signal
import sys
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


def _dump() -> None:
    path = os.environ.get("LLMOP_BENCH_COUNTERS")
    if not path:
        return
    data: dict[str, Any] = dict(COUNTS)
    kube = _MEMO.get("kube")
    data["llmop.requests"] = getattr(kube, "requests_made", 0)
    data["time"] = time.time()
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

"""The gateway's cost on loopback: added latency, requests/s and streamed events/s, against going
direct to the upstream and through nginx (Debian's package, a plain reverse proxy).

Every process runs on this machine: the upstream (bench/gateway_servers.py, answers at once),
the proxy under test, and the load generator, a raw asyncio HTTP/1.1 client in this process
(keep-alive connections, one request at a time each). Going direct measures what the load
generator and the upstream can do on their own: a proxy that reaches that rate is not measured.

nginx: `apt-get install -y nginx` (Debian bookworm's 1.22; the bench installs it when apt works
and it is missing), one worker, upstream keep-alive, `proxy_buffering off` so that a stream passes
event by event, as through the gateway.
"""

from __future__ import annotations

import asyncio
import pstats
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil

HERE = Path(__file__).resolve().parent
SERVERS = HERE / "gateway_servers.py"
PATH = "/v1/chat/completions"
CONCURRENCY = 64


def _request(stream: bool) -> bytes:
    body = b'{"model":"bench","messages":[{"role":"user","content":"hi"}],"max_tokens":100' + (
        b',"stream":true,"stream_options":{"include_usage":true}}' if stream else b"}"
    )
    return (
        b"POST %s HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
        % (PATH.encode(), len(body), body)
    )


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    """One request on a kept-alive connection; the events in its answer (0 for a plain one)."""
    writer.write(request)
    head = (await reader.readuntil(b"\r\n\r\n")).lower()
    if not head.startswith(b"http/1.1 200"):
        raise RuntimeError(f"answer {head[:200]!r}")
    if b"transfer-encoding: chunked" not in head:
        at = head.index(b"content-length:")
        await reader.readexactly(int(head[at + 15 :].split(b"\r\n", 1)[0]))
        return 0
    events = 0
    while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
        events += (await reader.readexactly(size + 2)).count(b"\n\n")
    await reader.readuntil(b"\r\n")
    return events


async def load(
    port: int, concurrency: int, seconds: float, stream: bool, warmup: float = 1.0
) -> dict[str, Any]:
    """`concurrency` connections, each sending its next request as soon as the last was answered."""
    request = _request(stream)
    latencies: list[float] = []
    events = [0]
    errors: list[str] = []
    started = time.perf_counter()
    measure_from, stop_at = started + warmup, started + warmup + seconds

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while (t0 := time.perf_counter()) < stop_at:
                got = await _exchange(reader, writer, request)
                if t0 >= measure_from:
                    latencies.append(time.perf_counter() - t0)
                    events[0] += got
        except (OSError, RuntimeError, asyncio.IncompleteReadError) as error:
            errors.append(repr(error)[:200])
        finally:
            writer.close()

    cpu = time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    latencies.sort()
    n = len(latencies)
    return {
        "concurrency": concurrency,
        "requests": n,
        "requests_per_second": n / seconds,
        "events_per_second": events[0] / seconds,
        "p50_ms": 1000 * latencies[n // 2] if n else None,
        "p99_ms": 1000 * latencies[min(n - 1, int(n * 0.99))] if n else None,
        "mean_ms": 1000 * sum(latencies) / n if n else None,
        "loadgen_cpu_seconds": time.process_time() - cpu,
        "errors": errors[:3],
        "error_count": len(errors),
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"exited with {process.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


@contextmanager
def _process(args: list[str], port: int) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_port(port, process)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def nginx_binary() -> str | None:
    """Debian's nginx; installed with apt-get when it is missing and apt works (as root)."""
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if found or not shutil.which("apt-get"):
        return found
    print("bench: gateway: installing nginx (apt-get install -y nginx)", flush=True)
    subprocess.run(
        ["apt-get", "install", "-y", "--no-install-recommends", "nginx"],
        env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
        capture_output=True,
        check=False,
    )
    return shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


NGINX_CONF = """
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {prefix}/body;
  proxy_temp_path {prefix}/proxy;
  upstream runtime {{ server 127.0.0.1:{upstream}; keepalive 256; }}
  server {{
    listen 127.0.0.1:{port} backlog=1024;
    keepalive_requests 1000000;
    location / {{
      proxy_pass http://runtime;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }}
  }}
}}
"""


def _nginx_args(binary: str, workdir: Path, port: int, upstream: int) -> list[str]:
    prefix = workdir / "nginx"
    prefix.mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(NGINX_CONF.format(prefix=prefix, port=port, upstream=upstream))
    return [binary, "-p", str(prefix), "-c", str(conf)]


def _cpu_seconds(process: subprocess.Popen[bytes]) -> float:
    """CPU of the process and its children (nginx's worker)."""
    root = psutil.Process(process.pid)
    total = 0.0
    for p in [root, *root.children(recursive=True)]:
        times = p.cpu_times()
        total += times.user + times.system
    return total


def _measure(port: int, process: subprocess.Popen[bytes] | None, seconds: float) -> dict[str, Any]:
    """Unloaded (one connection), 64 at once (plain answers), and 64 streams at once."""
    out: dict[str, Any] = {}
    for name, concurrency, stream in (
        ("single", 1, False),
        ("c64", CONCURRENCY, False),
        ("stream", CONCURRENCY, True),
    ):
        before = _cpu_seconds(process) if process is not None else 0.0
        result = asyncio.run(load(port, concurrency, seconds, stream))
        if process is not None:
            spent = _cpu_seconds(process) - before
            result["proxy_cpu_ms_per_request"] = 1000 * spent / max(result["requests"], 1)
        out[name] = result
        print(f"  {name}: {_line(result)}", flush=True)
    return out


def _line(r: dict[str, Any]) -> str:
    return (
        f"{r['requests_per_second']:.0f} req/s, {r['events_per_second']:.0f} events/s, "
        f"p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, errors {r['error_count']}"
    )


def run_gateway_bench(workdir: Path, seconds: float = 5.0) -> dict[str, Any]:
    python = sys.executable
    upstream_port = _free_port()
    results: dict[str, Any] = {"seconds": seconds, "concurrency": CONCURRENCY}
    with _process([python, str(SERVERS), "upstream", str(upstream_port)], upstream_port):
        print("bench: gateway: direct", flush=True)
        results["direct"] = _measure(upstream_port, None, seconds)
        binary = nginx_binary()
        if binary:
            port = _free_port()
            with _process(_nginx_args(binary, workdir, port, upstream_port), port) as nginx:
                print("bench: gateway: nginx", flush=True)
                results["nginx"] = _measure(port, nginx, seconds)
            version = subprocess.run([binary, "-v"], capture_output=True, text=True).stderr.strip()
            results["nginx_version"] = version.removeprefix("nginx version: ")
        port = _free_port()
        with _process([python, str(SERVERS), "gateway", str(port), str(upstream_port)], port) as gateway:
            print("bench: gateway: llmop gateway", flush=True)
            results["gateway"] = _measure(port, gateway, seconds)
        results["profile"] = _profile(workdir, upstream_port, seconds)
    return results


def _profile(workdir: Path, upstream_port: int, seconds: float) -> dict[str, Any]:
    """The gateway under cProfile at 64 concurrent plain requests: where its CPU goes."""
    stats_file = workdir / "gateway.pstats"
    port = _free_port()
    args = [sys.executable, str(SERVERS), "gateway", str(port), str(upstream_port), str(stats_file)]
    print("bench: gateway: profile", flush=True)
    with _process(args, port):
        result = asyncio.run(load(port, CONCURRENCY, seconds, False))
    stats = pstats.Stats(str(stats_file))
    return {"requests": result["requests"] + 0, **summarize(stats)}


#: Where a function's time is counted, by the file it is in (first match).
_AREAS = (
    ("llmop gateway", "/llmop/gateway/"),
    ("prometheus_client", "/prometheus_client/"),
    ("aiohttp server (web_*)", "/aiohttp/web"),
    ("aiohttp client", "/aiohttp/client"),
    ("aiohttp other (streams, parsers, connector)", "/aiohttp/"),
    ("asyncio event loop", "/asyncio/"),
    ("json", "/json/"),
)


def summarize(stats: pstats.Stats) -> dict[str, Any]:
    """Own time (tottime) by area, and the functions that take most."""
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = sum(entry[2] for entry in raw.values()) or 1.0
    areas: dict[str, float] = {}
    rows = []
    for (filename, line, function), (_, calls, tottime, cumtime, _) in raw.items():
        area = next((name for name, part in _AREAS if part in filename), "other (C builtins, sockets)")
        if filename == "~" and "method" in function and ("send" in function or "recv" in function):
            area = "socket system calls"
        areas[area] = areas.get(area, 0.0) + tottime
        rows.append((tottime, calls, cumtime, f"{Path(filename).name}:{line}({function})"))
    rows.sort(reverse=True)
    return {
        "total_seconds": total,
        "areas": {name: 100 * t / total for name, t in sorted(areas.items(), key=lambda x: -x[1])},
        "top": [
            {"function": where, "calls": calls, "own_percent": 100 * own / total, "cumulative_s": cum}
            for own, calls, cum, where in rows[:15]
        ],
    }

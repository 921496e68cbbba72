"""A lean HTTP/1.1 load generator for latency entries: asyncio, keep-alive, in its own process.

The serving benchmark's throughput entries drive the servers with ``httpx`` client threads (a client a
user would write). For *latency* goals that is the wrong instrument on a 2-core machine: dozens of
Python client threads contend for the GIL and the cores, and their own scheduling delays show up in
the p99 being measured. This generator is what ``wrk2`` is in C, in a few lines of Python: one event
loop in a separate process (no GIL shared with the bench), requests encoded once up front, responses
parsed by ``Content-Length`` only, and latency counted from each request's *scheduled* start in the
open-loop mode (no coordinated omission: a stalled server cannot slow the schedule and hide its queue).

Run by the benchmark through `run` (``python -m bench.loadgen`` with a JSON job on stdin, the result as
JSON on stdout).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

HEADER_LIMIT = 64 * 1024  # a response head larger than this is not one of our servers'
TIMEOUT_S = 60.0


def _requests(url: str, bodies: list[bytes]) -> tuple[str, int, list[bytes]]:
    parts = urlsplit(url)
    head = (
        f"POST {parts.path} HTTP/1.1\r\nHost: {parts.hostname}:{parts.port}\r\n"
        "Content-Type: application/json\r\nContent-Length: {n}\r\n\r\n"
    )
    return parts.hostname, int(parts.port), [head.format(n=len(b)).encode() + b for b in bodies]


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    """Send one request on a kept-alive connection; read the whole response; return its status code."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    if len(head) > HEADER_LIMIT:
        raise RuntimeError("response head over 64 KiB")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = None
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
        elif name.strip().lower() == "transfer-encoding":
            raise RuntimeError(f"chunked responses are not supported by this generator ({value.strip()})")
    if length is None:
        raise RuntimeError("response without Content-Length")
    await reader.readexactly(length)
    return status


def _summary(latencies: list[float], errors: list[int], elapsed: float) -> dict:
    if errors:
        raise RuntimeError(f"{len(errors)} requests failed, first status {errors[0]}")
    lat = sorted(x * 1000 for x in latencies)

    def pct(q: float) -> float:
        return lat[min(len(lat) - 1, int(round(q / 100 * (len(lat) - 1))))]

    return {"n": len(lat), "rps": len(lat) / elapsed, "p50": pct(50), "p99": pct(99)}


async def closed_loop(url: str, bodies: list[bytes], concurrency: int, seconds: float) -> dict:
    """``concurrency`` connections, each sending its next request when the previous one returns.

    Returns:
        ``{"n", "rps", "p50", "p99"}`` (latencies in ms).
    """
    host, port, requests = _requests(url, bodies)
    conns = [await asyncio.open_connection(host, port) for _ in range(concurrency)]
    latencies: list[float] = []
    errors: list[int] = []
    start = time.perf_counter()
    stop_at = start + seconds

    async def client(k: int) -> None:
        reader, writer = conns[k]
        i = k
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            status = await _exchange(reader, writer, requests[i % len(requests)])
            (latencies.append(time.perf_counter() - t0) if status == 200 else errors.append(status))
            i += concurrency

    await asyncio.wait_for(asyncio.gather(*(client(k) for k in range(concurrency))), seconds + TIMEOUT_S)
    elapsed = time.perf_counter() - start
    for _, writer in conns:
        writer.close()
    return _summary(latencies, errors, elapsed)


async def open_loop(
    url: str, bodies: list[bytes], rate: float, seconds: float, connections: int = 32
) -> dict:
    """Requests start on a fixed schedule at ``rate``/s; each latency counts from its scheduled start.

    A request whose turn comes while every connection is busy waits for one, and that wait is part
    of its latency (the server's queue, seen from outside).

    Returns:
        ``{"n", "rps", "p50", "p99", "rate"}`` (latencies in ms).
    """
    host, port, requests = _requests(url, bodies)
    pool: asyncio.Queue = asyncio.Queue()
    for _ in range(connections):
        reader, writer = await asyncio.open_connection(host, port)
        await _exchange(reader, writer, requests[0])  # connected and warm before the schedule starts
        pool.put_nowait((reader, writer))
    n = max(4, int(rate * seconds))
    latencies: list[float] = []
    errors: list[int] = []
    t0 = time.perf_counter() + 0.05

    async def one(i: int, due: float) -> None:
        conn = await pool.get()
        try:
            status = await _exchange(*conn, requests[i % len(requests)])
        finally:
            pool.put_nowait(conn)
        (latencies.append(time.perf_counter() - due) if status == 200 else errors.append(status))

    tasks = []
    for i in range(n):
        due = t0 + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one(i, due)))
    await asyncio.wait_for(asyncio.gather(*tasks), TIMEOUT_S)
    elapsed = time.perf_counter() - t0
    while not pool.empty():
        pool.get_nowait()[1].close()
    return {**_summary(latencies, errors, elapsed), "rate": rate}


MODES = {"closed": closed_loop, "open": open_loop}


def run(mode: str, url: str, bodies: list[bytes], **kwargs) -> dict:
    """Run one load job in a fresh process (``closed``: `closed_loop`, ``open``: `open_loop`) and return its summary.

    Raises:
        RuntimeError: the job failed (its error output is in the message).
    """
    job = {"mode": mode, "url": url, "bodies": [b.decode() for b in bodies], "kwargs": kwargs}
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve())],
        input=json.dumps(job),
        capture_output=True,
        text=True,
        timeout=kwargs.get("seconds", 10) + 2 * TIMEOUT_S,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed: {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout)


def _main() -> int:
    job = json.loads(sys.stdin.read())
    try:
        import uvloop  # the lighter event loop, where installed (KServe depends on it)

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    bodies = [b.encode() for b in job["bodies"]]
    out = runner(MODES[job["mode"]](job["url"], bodies, **job["kwargs"]))
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(_main())

"""Storage benchmark: `upload_dir` (thread pool, resumable) vs a sequential ``fput_object`` loop.

Runs against moto's S3 server in its own process on loopback (no MinIO here), so absolute numbers
say little about a cluster; the ratios show what parallelism and resume-by-checksum buy. Prints one
JSON entry per line: ``name, ours, baseline, unit, ratio`` (ratio = baseline / ours, higher is better).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _common  # noqa: E402

N_FILES = 12 if _common.tiny() else 120
FILE_BYTES = 64 * 1024


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"moto server on port {port} did not start in {timeout} s")


def main() -> int:
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for(port)
        os.environ.update(
            S3_ENDPOINT=f"127.0.0.1:{port}",
            S3_USE_HTTPS="0",
            AWS_ACCESS_KEY_ID="bench",
            AWS_SECRET_ACCESS_KEY="bench-secret",
            AWS_REGION="us-east-1",
        )
        from minio import Minio

        from mammosynth import storage

        client = Minio(f"127.0.0.1:{port}", "bench", "bench-secret", secure=False, region="us-east-1")
        client.make_bucket("bench")
        rng = np.random.default_rng(0)
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp)
            for i in range(N_FILES):
                (src / f"d{i % 6}").mkdir(exist_ok=True)
                (src / f"d{i % 6}" / f"{i:04d}.dcm").write_bytes(rng.bytes(FILE_BYTES))
            paths = sorted(p for p in src.rglob("*") if p.is_file())

            def naive(prefix: str) -> float:
                start = time.perf_counter()
                for p in paths:
                    client.fput_object("bench", f"{prefix}/{p.relative_to(src).as_posix()}", str(p))
                return time.perf_counter() - start

            def ours(prefix: str) -> float:
                start = time.perf_counter()
                storage.upload_dir(src, f"s3://bench/{prefix}", workers=8, progress_every=10**9)
                return time.perf_counter() - start

            n = _common.repeats()
            k = iter(range(10**6))
            # Fresh prefixes: a full upload each time; then the same prefix again: resume.
            first = _common.interleave(lambda: ours(f"ours{next(k)}"), lambda: naive(f"naive{next(k)}"), n)
            again = _common.interleave(lambda: ours("ours0"), lambda: naive("naive1"), n)
        mb = N_FILES * FILE_BYTES / 1e6
        entries = [
            _common.entry("storage_upload_8_workers_vs_sequential", *first, "s", False, mb=round(mb, 1)),
            _common.entry("storage_reupload_resume_vs_sequential", *again, "s", False),
        ]
        _common.emit(entries)
    finally:
        server.terminate()
        server.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())

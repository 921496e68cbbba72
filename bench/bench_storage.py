"""Storage benchmark: `upload_dir` (thread pool, resumable) vs a sequential ``fput_object`` loop.

Runs against moto's S3 server in its own process on loopback (no MinIO here), so absolute numbers
say little about a cluster; the ratios show what parallelism and resume-by-checksum buy. Prints one
JSON entry per line: ``name, ours, baseline, unit, ratio`` (ratio = baseline / ours, higher is better).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

N_FILES = 120
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

            base_first, ours_first = naive("naive"), ours("ours")
            base_again, ours_again = naive("naive"), ours("ours")
        mb = N_FILES * FILE_BYTES / 1e6
        entries = [
            {
                "name": f"storage upload {N_FILES}x{FILE_BYTES // 1024}KiB to S3 (moto): 8 workers vs sequential",
                "ours": round(ours_first, 3),
                "baseline": round(base_first, 3),
                "unit": "s",
                "ratio": round(base_first / ours_first, 2),
                "mb": round(mb, 1),
            },
            {
                "name": "storage re-upload of an unchanged folder: resume (skip by checksum) vs sequential",
                "ours": round(ours_again, 3),
                "baseline": round(base_again, 3),
                "unit": "s",
                "ratio": round(base_again / ours_again, 2),
            },
        ]
        for entry in entries:
            print(json.dumps(entry))
    finally:
        server.terminate()
        server.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())

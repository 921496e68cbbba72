"""`python -m bench`: run every bench/bench_*.py, collect its entries, write bench.json, print a table.

Each benchmark script prints its results as JSON (one entry per line, or a list) with the keys
``name, ours, baseline, unit, ratio``; ``ratio`` is how many times better ours is (higher is better,
whatever the unit). Ours and the baseline are always measured in the same process run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

KEYS = {"name", "ours", "baseline", "unit", "ratio"}


def _entries(stdout: str) -> list[dict]:
    found = []
    for line in stdout.splitlines():
        line = line.strip()
        if not line.startswith(("{", "[")):
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            continue
        for item in data if isinstance(data, list) else [data]:
            if isinstance(item, dict) and KEYS <= set(item):
                found.append(item)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench/bench.json"))
    parser.add_argument("--only", nargs="*", help="run only these bench modules (e.g. bench_gan)")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per benchmark script")
    args = parser.parse_args(argv)
    scripts = sorted(Path(__file__).parent.glob("bench_*.py"))
    if args.only:
        scripts = [s for s in scripts if s.stem in set(args.only)]
    results, failures = [], []
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    for script in scripts:
        started = time.monotonic()
        print(f"bench: {script.stem} ...", flush=True)
        try:
            proc = subprocess.run(
                [sys.executable, str(script)],
                capture_output=True,
                text=True,
                timeout=args.timeout,
                env=env,
                cwd=Path(__file__).parent.parent,
            )
        except subprocess.TimeoutExpired:
            failures.append(f"{script.stem}: timed out after {args.timeout} s")
            continue
        entries = _entries(proc.stdout)
        if proc.returncode != 0 or not entries:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
            failures.append(
                f"{script.stem}: exit {proc.returncode}, {len(entries)} entries: {' | '.join(tail)}"
            )
        for e in entries:
            e.setdefault("source", script.stem)
        results.extend(entries)
        print(f"bench: {script.stem} done in {time.monotonic() - started:.0f} s ({len(entries)} entries)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=2))
    os.replace(tmp, args.out)
    width = max([len(r["name"]) for r in results] + [4])
    print(f"\n{'name':<{width}}  {'ours':>12}  {'baseline':>12}  {'unit':<10}  {'ratio':>7}")
    for r in results:
        print(
            f"{r['name']:<{width}}  {float(r['ours']):>12.4g}  {float(r['baseline']):>12.4g}  "
            f"{r['unit']:<10}  {float(r['ratio']):>6.2f}×"
        )
    print(f"\nwritten to {args.out}")
    for f in failures:
        print(f"FAILED {f}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

"""`python -m bench`: run every bench/bench_*.py, collect its entries, write bench.json, print a table.

Each benchmark script prints its results as JSON (one entry per line, or a list) with the keys of
`bench._common.SCHEMA` (``name, ours, baseline, unit, ratio, repeats, min, max``); ``ratio`` is how
many times better ours is (higher is better, whatever the unit), ``ours``/``baseline`` are medians of
``repeats`` interleaved repeats in one process and ``min``/``max`` the per-repeat ratio range.

Beside the module entries, ``study_seconds`` is the embedded study's wall time from
``runs/latest/run.json`` (written by ``make run``) against the figure the previous bench run recorded
(``runs/bench/history.jsonl``, one line per bench run), so a slowdown is visible.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import SCHEMA  # noqa: E402

KEYS = set(SCHEMA)


def validate(entry: dict) -> dict:
    """Check one entry against `SCHEMA`.

    Raises:
        ValueError: a key is missing or has the wrong type, naming the entry and the key.
    """
    name = entry.get("name", "<unnamed>")
    missing = [k for k in SCHEMA if k not in entry]
    if missing:
        raise ValueError(f"bench entry {name!r}: missing key(s) {missing}; every entry needs {list(SCHEMA)}")
    for key in ("ours", "baseline", "ratio", "min", "max"):
        if not isinstance(entry[key], (int, float)) or isinstance(entry[key], bool):
            raise ValueError(f"bench entry {name!r}: {key} must be a number, got {entry[key]!r}")
    if not isinstance(entry["repeats"], int) or entry["repeats"] < 1:
        raise ValueError(f"bench entry {name!r}: repeats must be an int >= 1, got {entry['repeats']!r}")
    return entry


def study_entry(run_json: Path, history: Path) -> dict | None:
    """``study_seconds`` of ``run_json`` vs the previous bench run's figure (None if no run.json).

    ``ratio`` = previous / now (> 1: the study got faster); with no previous figure, the baseline is
    the current one and the entry says so.
    """
    try:
        run = json.loads(run_json.read_text())
        now = float(run["study_seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    previous = None
    if history.exists():
        for line in history.read_text().splitlines():
            try:
                previous = float(json.loads(line)["study_seconds"]) or previous
            except (ValueError, KeyError, TypeError):
                continue
    base = previous if previous else now
    out = {
        "name": "study_seconds",
        "ours": round(now, 1),
        "baseline": round(base, 1),
        "unit": "s",
        "ratio": round(base / now, 3) if now > 0 else 1.0,
        "repeats": 1,
        "min": round(base / now, 3) if now > 0 else 1.0,
        "max": round(base / now, 3) if now > 0 else 1.0,
        "note": f"{run_json} (make run) vs the previous bench run"
        if previous
        else f"{run_json}: no previous figure",
    }
    if isinstance(run.get("stages"), dict):
        out["stages"] = run["stages"]
    return out


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
            if isinstance(item, dict) and {"name", "ratio"} <= set(item):
                found.append(item)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench/bench.json"))
    parser.add_argument("--only", nargs="*", help="run only these bench modules (e.g. bench_gan)")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per benchmark script")
    parser.add_argument(
        "--run-json", type=Path, default=Path("runs/latest/run.json"), help="the study's run.json"
    )
    parser.add_argument(
        "--tiny", action="store_true", help="smoke-test sizes (BENCH_TINY=1); numbers mean nothing"
    )
    args = parser.parse_args(argv)
    scripts = sorted(Path(__file__).parent.glob("bench_*.py"))
    if args.only:
        scripts = [s for s in scripts if s.stem in set(args.only)]
    results, failures = [], []
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **({"BENCH_TINY": "1"} if args.tiny else {})}
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
            try:
                results.append(validate(e))
            except ValueError as exc:
                failures.append(f"{script.stem}: {exc}")
        print(f"bench: {script.stem} done in {time.monotonic() - started:.0f} s ({len(entries)} entries)")
    history = args.out.parent / "history.jsonl"
    study = study_entry(args.run_json, history)
    if study is not None:
        results.append(study)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=2))
    os.replace(tmp, args.out)
    if not args.tiny:
        record = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "out": str(args.out)}
        record["study_seconds"] = study["ours"] if study else None
        record["ratios"] = {r["name"]: r["ratio"] for r in results}
        with open(history, "a") as fh:
            fh.write(json.dumps(record) + "\n")
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

"""Shared pieces of the bench modules: tiny mode, interleaved repeats, entries, the machine probe.

Every bench entry is one JSON object with the keys of `SCHEMA`: ``ours`` and ``baseline`` are the
medians over ``repeats`` interleaved repeats (ours, baseline, ours, baseline, ... in one process, so
load from other processes hits both alike), ``ratio`` is how many times better ours is (> 1: ours is
better, whatever the unit) and ``min`` / ``max`` are the smallest and largest per-repeat ratio.

``BENCH_TINY=1`` shrinks every module to a smoke run of a few seconds (the test suite uses it so a
broken benchmark fails CI); its numbers mean nothing.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable, Sequence

SCHEMA = ("name", "ours", "baseline", "unit", "ratio", "repeats", "min", "max")


def tiny() -> bool:
    """True when ``BENCH_TINY=1``: run every benchmark at smoke-test size."""
    return os.environ.get("BENCH_TINY", "") == "1"


def repeats(default: int = 3) -> int:
    """Repeats per entry: ``BENCH_REPEATS`` (default 1 in tiny mode; at least 3 otherwise)."""
    if tiny():
        return max(1, int(os.environ.get("BENCH_REPEATS", 1)))
    return max(3, int(os.environ.get("BENCH_REPEATS", default)))


def entry(
    name: str, ours: Sequence[float], baseline: Sequence[float], unit: str, higher_is_better: bool, **extra
) -> dict:
    """One bench entry from per-repeat measurements of ours and the baseline.

    Args:
        name: entry name (stable: the README and the history key on it).
        ours: one figure per repeat for ours.
        baseline: one figure per repeat for the baseline, measured interleaved with ``ours``.
        unit: unit of the figures.
        higher_is_better: True for rates (ratio = ours / baseline), False for times and sizes.
        **extra: further keys to keep (e.g. ``note``, ``flops_per_step``).

    Returns:
        A dict with the keys of `SCHEMA` (plus ``extra``).

    Raises:
        ValueError: the lists are empty, differ in length or hold a non-positive figure.
    """
    if not ours or len(ours) != len(baseline):
        raise ValueError(f"{name}: need as many baseline as ours figures, got {len(ours)} / {len(baseline)}")
    if min(list(ours) + list(baseline)) <= 0:
        raise ValueError(f"{name}: figures must be > 0, got ours={list(ours)} baseline={list(baseline)}")
    per = [(o / b) if higher_is_better else (b / o) for o, b in zip(ours, baseline, strict=True)]
    med_o, med_b = statistics.median(ours), statistics.median(baseline)
    return {
        "name": name,
        "ours": _round(med_o),
        "baseline": _round(med_b),
        "unit": unit,
        "ratio": _round(med_o / med_b if higher_is_better else med_b / med_o),
        "repeats": len(per),
        "min": _round(min(per)),
        "max": _round(max(per)),
        **extra,
    }


def _round(x: float) -> float:
    return float(f"{x:.4g}")


def emit(entries: list[dict]) -> None:
    """Print entries as one JSON object per line (what ``python -m bench`` collects)."""
    for e in entries:
        print(json.dumps(e), flush=True)


def interleave(ours: Callable[[], float], baseline: Callable[[], float], n: int) -> tuple[list, list]:
    """Run ``ours`` and ``baseline`` alternately ``n`` times each; return their figures."""
    o, b = [], []
    for i in range(n):
        # Alternate who goes first so a slow start or a drifting load does not favour one side.
        if i % 2 == 0:
            o.append(ours())
            b.append(baseline())
        else:
            b.append(baseline())
            o.append(ours())
    return o, b


def probe_flops(seconds: float = 1.0) -> dict:
    """Sustained float32 FLOP/s of this machine with TensorFlow: a dense matmul and a 3×3 conv.

    Each kernel runs in a compiled loop for about ``seconds`` after warm-up; FLOPs are counted
    analytically (2·M·N·K for the matmul, 2·N·H·W·Cin·Cout·9 for the conv).

    Returns:
        ``{"matmul_flops": ..., "conv_flops": ..., "peak_flops": max of both}`` in FLOP/s.
    """
    import tensorflow as tf

    n = 256 if tiny() else 1024
    a = tf.random.uniform((n, n))
    b = tf.random.uniform((n, n))
    x = tf.random.uniform((8 if tiny() else 32, 64, 64, 64))
    w = tf.random.uniform((3, 3, 64, 64))

    @tf.function
    def mm(a, b):
        return tf.reduce_sum(tf.matmul(a, b))

    @tf.function
    def conv(x, w):
        return tf.reduce_sum(tf.nn.conv2d(x, w, 1, "SAME"))

    def rate(fn, args, flops):
        float(fn(*args))
        k, start = 0, time.perf_counter()
        while time.perf_counter() - start < (0.1 if tiny() else seconds):
            float(fn(*args))
            k += 1
        return k * flops / (time.perf_counter() - start)

    out = {
        "matmul_flops": rate(mm, (a, b), 2 * n**3),
        "conv_flops": rate(conv, (x, w), 2 * x.shape[0] * 64 * 64 * 64 * 64 * 9),
    }
    out["peak_flops"] = max(out.values())
    return out


def graph_flops(fn: Callable, *args) -> int:
    """FLOPs of one call of the ``tf.function`` ``fn`` on ``args``, by TF's profiler.

    Uses ``tf.compat.v1.profiler`` float-operation counting on the traced graph (forward and
    backward convolutions, matmuls and elementwise ops with registered statistics). Ops whose shapes
    are unknown at trace time (e.g. sized by ``tf.shape``) are not counted, so this is a lower bound.
    """
    import tensorflow as tf

    graph = fn.get_concrete_function(*args).graph
    tf.get_logger().setLevel("ERROR")  # the v1 profiler warns about its own deprecated helpers
    opts = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    opts["output"] = "none"
    prof = tf.compat.v1.profiler.profile(graph, options=opts)
    return int(prof.total_float_ops)


def fraction_of_peak(name: str, flops_per_step: int, steps_per_s: Sequence[float], probe: dict) -> dict:
    """Entry: achieved FLOP/s of a step (ours) vs the probed peak (baseline); ratio = the fraction."""
    achieved = [flops_per_step * s / 1e9 for s in steps_per_s]
    peak = [probe["peak_flops"] / 1e9] * len(achieved)
    return entry(
        name,
        achieved,
        peak,
        "GFLOP/s",
        True,
        flops_per_step=int(flops_per_step),
        flops_counted_by="tf.compat.v1.profiler float_operation on the traced step graph",
        note="ratio = fraction_of_peak (achieved / probed TF matmul-or-conv peak); FLOPs a lower bound",
    )

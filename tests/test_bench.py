"""The bench harness: entry schema, study_seconds history, README table, and every module in tiny mode.

No timing asserts: the tiny runs only prove that each benchmark still runs and emits valid entries.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import __main__ as harness
from bench import _common, readme

ROOT = Path(__file__).resolve().parent.parent


def test_entry_has_the_schema_and_medians():
    e = _common.entry("x", [2.0, 4.0, 3.0], [1.0, 1.0, 2.0], "steps/s", True)
    assert list(e)[: len(_common.SCHEMA)] == list(_common.SCHEMA)
    assert (e["ours"], e["baseline"], e["repeats"]) == (3.0, 1.0, 3)
    assert e["ratio"] == 3.0 and e["min"] == 1.5 and e["max"] == 4.0
    t = _common.entry("t", [1.0], [4.0], "s", False)  # times: lower is better
    assert t["ratio"] == 4.0
    assert harness.validate(e) is e


@pytest.mark.parametrize(
    "bad",
    [
        {"name": "a", "ours": 1, "baseline": 1, "unit": "s", "ratio": 1},  # no repeats/min/max
        {"name": "a", "ours": "1", "baseline": 1, "unit": "s", "ratio": 1, "repeats": 1, "min": 1, "max": 1},
        {"name": "a", "ours": 1, "baseline": 1, "unit": "s", "ratio": 1, "repeats": 0, "min": 1, "max": 1},
    ],
)
def test_validate_names_the_problem(bad):
    with pytest.raises(ValueError, match="bench entry 'a'"):
        harness.validate(bad)


def test_entry_rejects_mismatched_or_nonpositive():
    with pytest.raises(ValueError, match="as many"):
        _common.entry("x", [1.0, 2.0], [1.0], "s", False)
    with pytest.raises(ValueError, match="> 0"):
        _common.entry("x", [0.0], [1.0], "s", False)


def test_interleave_alternates_who_goes_first():
    calls = []
    _common.interleave(lambda: calls.append("o") or 1.0, lambda: calls.append("b") or 1.0, 3)
    assert calls == ["o", "b", "b", "o", "o", "b"]


def test_study_seconds_against_previous_bench_run(tmp_path):
    run_json, history = tmp_path / "run.json", tmp_path / "history.jsonl"
    assert harness.study_entry(run_json, history) is None  # no make run yet
    run_json.write_text(
        json.dumps({"study_seconds": 100.0, "stages": {"train": {"seconds": 60, "share": 0.6}}})
    )
    first = harness.study_entry(run_json, history)
    assert first["baseline"] == 100.0 and "no previous" in first["note"]
    history.write_text(
        json.dumps({"study_seconds": 120.0}) + "\n" + json.dumps({"study_seconds": None}) + "\n"
    )
    e = harness.validate(harness.study_entry(run_json, history))
    assert (e["ours"], e["baseline"], e["ratio"]) == (100.0, 120.0, 1.2)
    assert e["stages"]["train"]["share"] == 0.6


def test_readme_table_replaces_only_the_marked_block():
    entries = [
        _common.entry("input_vs_keras3_layers", [2.0], [1.0], "images/s", True),
        _common.entry("gan_vs_kerasio_compiled", [3.0], [2.0], "steps/s", True),
    ]
    text = f"intro\n{readme.BEGIN}\nold table\n{readme.END}\noutro\n"
    out = readme.render(text, entries, "make bench-readme")
    assert out.startswith("intro\n") and out.endswith("\noutro\n") and "old table" not in out
    assert out.index("gan_vs_kerasio_compiled") < out.index("input_vs_keras3_layers")  # primary order
    with pytest.raises(ValueError, match="markers"):
        readme.render("no markers", entries, "x")


def test_readme_has_the_markers():
    text = (ROOT / "README.md").read_text()
    assert readme.BEGIN in text and readme.END in text


def _tiny_env() -> dict:
    return {
        **os.environ,
        "BENCH_TINY": "1",
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }


@pytest.mark.parametrize(
    "module", ["bench_gan", "bench_input", "bench_ingest", "bench_storage", "bench_serving"]
)
def test_each_bench_module_runs_tiny(module):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / f"{module}.py")],
        capture_output=True,
        text=True,
        timeout=600,
        env=_tiny_env(),
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    entries = harness._entries(proc.stdout)
    assert entries, proc.stdout[-2000:]
    for e in entries:
        harness.validate(e)
    if module == "bench_serving":  # the latency goal comes with its same-schedule ceiling beside it
        names = {e["name"] for e in entries}
        assert {
            "serving_p99_half_max_vs_2x_c1",
            "serving_p99_half_max_vs_kserve_ceiling",
            "serving_p99_goal_on_kserve_ceiling",
        } <= names, names
        goal = next(e for e in entries if e["name"] == "serving_p99_goal_on_kserve_ceiling")
        assert len(goal["ceiling_c1_p50_ms"]) == goal["repeats"], goal
        # the forward-pass bound is measured at TF's default pool and at one intra-op thread
        fwd = next(e for e in entries if e["name"] == "serving_forward_cpu_per_image_vs_ceiling_c8")
        assert set(fwd["forward_cpu_ms_by_intra_op_threads"]) == {"tf default", "1"}, fwd


def test_serving_forward_bound_uses_the_cheaper_thread_setting():
    from bench import bench_serving

    ceiling = [2.0, 2.0, 2.0]
    e = bench_serving._forward_entry({0: [1.0, 1.2, 1.1], 1: [0.5, 0.6, 0.4]}, ceiling)
    assert e["intra_op_threads"] == 1 and e["ours"] == pytest.approx(0.5)
    assert e["bound_ratio"] == pytest.approx(2.0 / 2.5, abs=1e-3)
    assert e["forward_cpu_ms_by_intra_op_threads"] == {"tf default": 1.1, "1": 0.5}
    e = bench_serving._forward_entry({0: [0.3, 0.3, 0.3], 1: [0.5, 0.6, 0.4]}, ceiling)
    assert e["intra_op_threads"] == "tf default" and e["bound_ratio"] == pytest.approx(2.0 / 2.3, abs=1e-3)


def test_bench_gpu_without_gpu_says_so_and_exits_0(tmp_path):
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("a GPU is visible: the no-GPU path does not apply")
    from bench import gpu

    out = tmp_path / "bench-gpu.json"
    assert gpu.main(["--out", str(out)]) == 0
    assert not out.exists()


def test_bench_gpu_tiny_writes_valid_entries(tmp_path):
    out = tmp_path / "bench-gpu.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.gpu", "--tiny", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        env=_tiny_env(),
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    entries = json.loads(out.read_text())
    assert {e["name"] for e in entries} >= {"gpu_vgg16_32_mixed_vs_fp32", "gpu_serving_batched_vs_single"}
    for e in entries:
        harness.validate(e)


def test_gan_flop_normalised_fields():
    from bench.bench_gan import flop_normalised

    # the peer does 1.25x our FLOPs and we are 1.25x faster: equal efficiency, the bound reached
    times = {"peer_step_ms": 100.0, "generator_forward_ms": 15.0, "discriminator_forward_ms": 5.0}
    out = flop_normalised(1.25, {"flops_ours": 800, "flops_peer": 1000, **times})
    assert out["flop_bound"] == 1.25 and out["ratio_flop_normalised"] == 1.0
    assert out["time_bound"] == 1.25  # 100 / (100 - 15 - 5): the peer's second G and D passes
    out = flop_normalised(0.9, {"flops_ours": 0, "flops_peer": 1000, **times})
    assert out["flop_bound"] == 0.0 and out["ratio_flop_normalised"] == 0.0


def _tiny_http_server(status: int):
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the load generator expects

        def do_POST(self):  # noqa: N802 - the stdlib's name
            self.rfile.read(int(self.headers["Content-Length"]))
            body = b'{"ok": true}'
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/v2/models/m/infer"


def test_loadgen_counts_every_request_and_refuses_failures():
    import pytest

    from bench import loadgen

    server, url = _tiny_http_server(200)
    try:
        closed = loadgen.run("closed", url, [b'{"a": 1}'], concurrency=2, seconds=0.3)
        opened = loadgen.run("open", url, [b'{"a": 1}'], rate=50.0, seconds=0.2, connections=2)
    finally:
        server.shutdown()
    assert closed["n"] > 0 and closed["rps"] > 0 and closed["p99"] >= closed["p50"] > 0
    assert opened["n"] == 10 and opened["rate"] == 50.0  # every scheduled request answered and counted
    server, url = _tiny_http_server(500)
    try:
        with pytest.raises(RuntimeError, match="failed"):
            loadgen.run("closed", url, [b"{}"], concurrency=1, seconds=0.2)
    finally:
        server.shutdown()

"""The one pipeline: compiles for Kubeflow with the right platform settings, and runs under kfp.local."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
GPU_STEPS = {"exec-train-gan", "exec-train-arm"}


DISPLAY_NAMES = {
    "ingest": "Ingest",
    "split": "Patient split",
    "preprocess": "Preprocess",
    "prepare-external": "External test set",
    "tune": "Tune hyperparameters",
    "train-gan": "Train GAN",
    "synthesize": "Synthesize",
    "assess-generator": "Generator report card",
    "plan-arms": "Plan arms",
    "evaluate": "Evaluate",
    "select-model": "Select model",
    "report": "Report",
    "deploy": "Deploy",
}


def _compile(out: Path, gpu: bool) -> tuple[dict, dict]:
    """Compile in a fresh interpreter (the GPU switch is read at compile time), return (spec, platform)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAMMOSYNTH_")}
    env["MAMMOSYNTH_GPU"] = "1" if gpu else "0"
    cmd = [sys.executable, "-m", "pipelines", "compile", "--out", str(out)]
    subprocess.run(cmd, cwd=ROOT, check=True, env=env, capture_output=True)
    docs = list(yaml.safe_load_all(out.read_text()))
    return docs[0], docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """The GPU variant (`make compile-gpu`)."""
    return _compile(tmp_path_factory.mktemp("compiled") / "study-gpu.yaml", gpu=True)


@pytest.fixture(scope="module")
def compiled_cpu(tmp_path_factory):
    """The default, portable variant (`make compile`)."""
    return _compile(tmp_path_factory.mktemp("compiled") / "study.yaml", gpu=False)


def _all_tasks(spec: dict) -> dict[str, dict]:
    """Every task of the root DAG and of its sub-DAGs (the ParallelFor body), by task name."""
    tasks = dict(spec["root"]["dag"]["tasks"])
    for comp in spec["components"].values():
        tasks.update(comp.get("dag", {}).get("tasks", {}))
    return tasks


def test_compiled_pipeline_has_every_stage_in_our_image(compiled):
    spec, _ = compiled
    assert spec["pipelineInfo"]["name"] == "mammosynth-study"
    executors = spec["deploymentSpec"]["executors"]
    stages = {
        "ingest",
        "split",
        "preprocess",
        "prepare-external",
        "tune",
        "train-gan",
        "synthesize",
        "assess-generator",
        "plan-arms",
        "train-arm",
        "evaluate",
        "select-model",
        "report",
        "deploy",
    }
    assert {f"exec-{s}" for s in stages} == set(executors)
    for name, ex in executors.items():
        assert ex["container"]["image"].startswith("ghcr.io/mammosynth/trainer"), name
        assert "pip install" not in " ".join(ex["container"]["command"]), f"{name} installs packages"
    assert set(spec["root"]["inputDefinitions"]["parameters"]) == {
        "source",
        "preset",
        "overrides",
        "synthetic_publish_uri",
        "synthetic_set_uri",
        "model_uri",
        "namespace",
        "external_source",
    }
    assert spec["root"]["inputDefinitions"]["parameters"]["external_source"]["defaultValue"] == ""


def test_gpus_node_pool_and_tolerations_exactly_on_gpu_steps(compiled):
    spec, platform = compiled
    for name, ex in spec["deploymentSpec"]["executors"].items():
        accel = ex["container"].get("resources", {}).get("accelerator")
        k8s = platform.get(name, {})
        if name in GPU_STEPS:
            assert accel["resourceType"] == "nvidia.com/gpu" and accel["resourceCount"] == "1"
            assert k8s["nodeSelector"]["labels"] == {"nvidia.com/gpu.present": "true"}
            assert k8s["tolerations"][0]["key"] == "nvidia.com/gpu"
        else:
            assert accel is None, f"{name} should not request a GPU"
            assert "nodeSelector" not in k8s and "tolerations" not in k8s
    tune_inputs = spec["root"]["dag"]["tasks"]["tune"]["inputs"]["parameters"]
    assert tune_inputs["trial_gpu"]["runtimeValue"]["constant"] is True  # Katib trials on the GPU pool


def test_default_compile_is_cpu_only(compiled_cpu):
    """`make compile`: no GPU request, node selector or toleration anywhere, so it runs on a CPU cluster."""
    spec, platform = compiled_cpu
    for name, ex in spec["deploymentSpec"]["executors"].items():
        assert "accelerator" not in ex["container"].get("resources", {}), f"{name} requests a GPU"
        k8s = platform.get(name, {})
        assert "nodeSelector" not in k8s and "tolerations" not in k8s, name
    assert "nvidia.com" not in yaml.safe_dump(spec) + yaml.safe_dump(platform)
    tune_inputs = spec["root"]["dag"]["tasks"]["tune"]["inputs"]["parameters"]
    assert tune_inputs["trial_gpu"]["runtimeValue"]["constant"] is False  # Katib trials on CPU too
    # The storage wiring is the same in both variants.
    assert all("secretAsEnv" in k8s for k8s in platform.values())


@pytest.mark.parametrize("variant", ["compiled", "compiled_cpu"])
def test_every_task_and_the_loop_have_display_names(variant, request):
    spec, _ = request.getfixturevalue(variant)
    tasks = _all_tasks(spec)
    shown = {name: task["taskInfo"]["name"] for name, task in tasks.items()}
    for name, display in DISPLAY_NAMES.items():
        assert shown[name] == display, name
    assert shown["train-arm"] == "Train arm"
    loops = [t for t in tasks.values() if "parameterIterator" in t]
    assert [t["taskInfo"]["name"] for t in loops] == ["Arms x seeds"]
    assert all(not display.startswith(("for-loop", "exec-")) for display in shown.values())


@pytest.mark.parametrize("variant", ["compiled", "compiled_cpu"])
def test_deploy_is_never_cached_and_gpu_steps_retry(variant, request):
    spec, _ = request.getfixturevalue(variant)
    tasks = _all_tasks(spec)
    assert tasks["deploy"]["cachingOptions"].get("enableCache", False) is False
    assert tasks["ingest"]["cachingOptions"]["enableCache"] is True  # the default elsewhere stays on
    for name in ("train-gan", "train-arm"):
        policy = tasks[name]["retryPolicy"]
        assert policy["maxRetryCount"] == 2 and policy["backoffDuration"] == "60s", name
    retried = {name for name, task in tasks.items() if "retryPolicy" in task}
    assert retried == {"train-gan", "train-arm"}


def test_trainer_image_comes_from_the_environment(tmp_path):
    """`make compile REGISTRY=... TAG=...` exports MAMMOSYNTH_TRAINER_IMAGE; every step then runs it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAMMOSYNTH_")}
    env["MAMMOSYNTH_TRAINER_IMAGE"] = "registry.example/me/mammosynth-trainer:v9"
    out = tmp_path / "study.yaml"
    cmd = [sys.executable, "-m", "pipelines", "compile", "--out", str(out)]
    subprocess.run(cmd, cwd=ROOT, check=True, env=env, capture_output=True)
    spec = next(yaml.safe_load_all(out.read_text()))
    images = {ex["container"]["image"] for ex in spec["deploymentSpec"]["executors"].values()}
    assert images == {"registry.example/me/mammosynth-trainer:v9"}


def test_storage_credentials_come_from_a_secret_never_literals(compiled):
    spec, platform = compiled
    for name, k8s in platform.items():
        keys = {e["envVar"] for s in k8s.get("secretAsEnv", []) for e in s["keyToEnv"]}
        assert keys == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}, name
        cm = {e["envVar"] for c in k8s.get("configMapAsEnv", []) for e in c["keyToEnv"]}
        assert cm == {"S3_ENDPOINT", "S3_USE_HTTPS"}, name
    text = json.dumps(spec)
    assert "AWS_SECRET_ACCESS_KEY=" not in text and "minioadmin" not in text


def test_arms_fan_out_with_parallel_for(compiled):
    spec, _ = compiled
    loops = [t for t in spec["root"]["dag"]["tasks"].values() if "parameterIterator" in t]
    assert len(loops) == 1
    assert loops[0]["iteratorPolicy"]["parallelismLimit"] >= 1


@pytest.mark.pipeline
def test_tiny_study_runs_end_to_end_through_kfp_local_from_minio(tmp_path, s3_env):
    """The real pipeline function, kfp.local SubprocessRunner, the tiny preset, the raw data read from
    an s3:// prefix (moto on loopback, real minio client): artifacts, metrics and the run folder."""
    from mammosynth import storage
    from mammosynth.config import load_config
    from mammosynth.data import phantom

    cfg = load_config("tiny")
    raw = phantom.generate(
        tmp_path / "raw", n_patients=cfg.phantom.n_patients, seed=cfg.seed, crop_size=cfg.phantom.crop_size
    )
    source = f"s3://{s3_env}/cbis-ddsm"
    storage.upload_source(raw, source)  # with its _manifest.json: ingest refuses an upload without one
    runs = tmp_path / "runs"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines",
            "run",
            "--preset",
            "tiny",
            "--source",
            source,
            "--synthetic-publish-uri",
            f"s3://{s3_env}/synthetic",
            "--runs-dir",
            str(runs),
            "--work-dir",
            str(tmp_path / "work"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    latest = runs / "latest"
    assert latest.is_symlink()
    for name in (
        "report.md",
        "report.html",
        "metrics.json",
        "model/model.json",
        "model/model.keras",
        "model/saved_model/1/saved_model.pb",
        "report_card.json",
    ):
        assert (latest / name).exists(), name
    metrics = json.loads((latest / "metrics.json").read_text())
    assert set(metrics["arms"]) == {"real", "real+synthetic"}
    for arm in metrics["arms"].values():
        assert 0.0 <= arm["accuracy"] <= 1.0 and 0.0 <= arm["auc"] <= 1.0
        assert len(arm["per_seed"]) == 2  # tiny preset: 2 seeds
    assert metrics["seed"] == 2026 and metrics["split_sizes"]["test"]
    assert any(c["baseline"] == "real" and "p_value" in c for c in metrics["comparisons"])
    assert {p.name for p in (latest / "figures").glob("*.png")} >= {
        "roc_curves.png",
        "confusion_matrices.png",
    }
    report = (latest / "report.md").read_text()
    assert source in report  # the report names the data it used
    published = storage.list_sets(f"s3://{s3_env}/synthetic")
    assert len(published) == 1 and published[0]["kind"] == "synthetic"
    assert storage.verify_set(published[0]["uri"]).ok
    assert "results in" in proc.stdout
    # A readable terminal: stage lines with durations, no executor dumps; run.json has the stage times.
    assert "stage ingest: started" in proc.stdout and "Got executor_input" not in proc.stdout
    run = json.loads((latest / "run.json").read_text())
    assert {"ingest", "train-gan"} <= set(run["stages"]) and run["study_seconds"] > 0, sorted(run["stages"])
    # Known gap: stages inside/after the ParallelFor (train-arm, evaluate, select-model, report,
    # deploy) do not reach the stdout filter yet; the stages before it are timed.
    assert {"ingest", "split", "preprocess", "tune", "train-gan", "synthesize"} <= set(run["stages"])
    assert all(0 <= s["share"] <= 1 and s["seconds"] >= 0 for s in run["stages"].values())
    model_meta = json.loads((latest / "model" / "model.json").read_text())
    assert model_meta["data_source"] in {"phantom", "cbis-ddsm"} and source in model_meta["trained_on"]


@pytest.mark.slow
def test_tiny_study_with_an_external_source_writes_the_external_block(tmp_path):
    """kfp.local, tiny preset, the embedded phantom as the internal set and a generated labels.csv folder
    (another 'site': PNGs, its own patients) as external_source: metrics.json and the report get it."""
    import numpy as np
    from PIL import Image

    site = tmp_path / "site-b"
    site.mkdir()
    rng = np.random.default_rng(5)
    lines = ["image_path,patient_id,label,view"]
    for p in range(24):
        for view in ("CC", "MLO"):
            img = np.clip(rng.normal(90 + 50 * (p % 2), 25, (64, 64)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(site / f"{p}-{view}.png")
            lines.append(f"{p}-{view}.png,B{p:03d},{'malignant' if p % 2 else 'benign'},{view}")
    (site / "labels.csv").write_text("\n".join(lines) + "\n")
    runs = tmp_path / "runs"
    cmd = [sys.executable, "-m", "pipelines", "run", "--preset", "tiny", "--external-source", str(site)]
    cmd += ["--runs-dir", str(runs), "--work-dir", str(tmp_path / "work")]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    metrics = json.loads((runs / "latest" / "metrics.json").read_text())
    ext = metrics["external"]
    assert ext["test_set"]["n"] == 48 and ext["test_set"]["n_malignant"] == 24
    assert set(ext["arms"]) == set(metrics["arms"]) == {"real", "real+synthetic"}
    for arm in ext["arms"].values():
        assert len(arm["per_seed"]) == 2 and 0.0 <= arm["auc"] <= 1.0
    assert ext["verdict"]["comparisons"] and "p_adjusted" in ext["verdict"]["comparisons"][0]
    assert ext["agreement"]["sentence"] in metrics["conclusion"]
    assert ext["set"]["source_layout"] == "table" and ext["set"]["patients_also_internal"] == 0
    report = (runs / "latest" / "report.md").read_text()
    assert "## External test set" in report and ext["agreement"]["sentence"] in report


def test_external_source_that_is_not_a_folder_is_refused_before_work(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines",
            "run",
            "--preset",
            "tiny",
            "--external-source",
            str(tmp_path / "nope"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0 and "--external-source" in proc.stderr + proc.stdout


def test_embedded_source_generates_the_phantom_and_ingests_it(tmp_path):
    """source="embedded" goes through the same ingest as a real CBIS-DDSM folder."""
    from mammosynth.study import ingest_step

    result = ingest_step("embedded", str(tmp_path / "set"), str(tmp_path / "eda.md"), preset="tiny")
    index = (tmp_path / "set" / "index.csv").read_text().splitlines()
    assert len(index) > 40 and index[0].startswith("image_id,")
    assert (tmp_path / "eda.md").read_text().strip()
    assert result

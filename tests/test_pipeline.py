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
    "resolve-config": "Resolve config",
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


def _compile(out: Path, gpu: bool, **extra_env: str) -> tuple[dict, dict]:
    """Compile in a fresh interpreter (the GPU switch is read at compile time), return (spec, platform)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAMMOSYNTH_")}
    env["MAMMOSYNTH_GPU"] = "1" if gpu else "0"
    env.update(extra_env)
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


# The run form: parameter -> (type, default). Typed ones: empty list / 0 / "" = the preset's value.
RUN_FORM = {
    "source": ("STRING", "embedded"),
    "preset": ("STRING", "embedded"),
    "overrides": ("STRING", "{}"),
    "model_uri": ("STRING", ""),
    "namespace": ("STRING", "mammosynth"),
    "synthetic_publish_uri": ("STRING", ""),
    "synthetic_set_uri": ("STRING", ""),
    "gan_checkpoint_uri": ("STRING", ""),
    "external_source": ("STRING", ""),
    "seeds": ("LIST", []),
    "arms": ("LIST", []),
    "synthetic_ratios": ("LIST", []),
    "image_size": ("NUMBER_INTEGER", 0),
    "classifier": ("STRING", ""),
    "classifier_epochs": ("NUMBER_INTEGER", 0),
    "tune_trials": ("NUMBER_INTEGER", 0),
    "gan_kind": ("STRING", ""),
    "gan_steps": ("NUMBER_INTEGER", 0),
    "gan_seeds": ("NUMBER_INTEGER", 0),
}
TYPED = {"seeds", "arms", "image_size", "classifier", "classifier_epochs", "tune_trials"}
TYPED |= {"gan_kind", "gan_steps", "gan_seeds", "synthetic_ratios"}
# Which config view (mammosynth.config.STAGE_FIELDS) each task receives.
TASK_STAGE = {
    "ingest": "ingest",
    "split": "split",
    "preprocess": "preprocess",
    "prepare-external": "external",
    "tune": "tune",
    "train-gan": "gan",
    "synthesize": "synthesize",
    "assess-generator": "card",
    "plan-arms": "plan",
    "train-arm": "train_arm",
    "evaluate": "evaluate",
    "select-model": "select",
    "report": "report",
}


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
        "resolve-config",
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
    assert set(spec["root"]["inputDefinitions"]["parameters"]) == set(RUN_FORM)


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


def test_compiled_outputs_are_typed_and_labelled(compiled_cpu):
    """Typed artifacts (issue 16): one ClassificationMetrics per arm and one for the deployed model; the
    evaluation a Dataset, the report card a Metrics; evaluate keeps no unlabelled ROC of its own."""
    spec, _ = compiled_cpu

    def outputs(component: str) -> dict[str, str]:
        arts = spec["components"][f"comp-{component}"]["outputDefinitions"]["artifacts"]
        return {name: a["artifactType"]["schemaTitle"] for name, a in arts.items()}

    assert outputs("train-arm") == {"arm_result": "system.Model", "roc": "system.ClassificationMetrics"}
    assert outputs("select-model") == {"final_model": "system.Model", "roc": "system.ClassificationMetrics"}
    assert outputs("evaluate") == {"evaluation": "system.Dataset", "metrics": "system.Metrics"}
    assert outputs("assess-generator") == {"report_card": "system.Metrics"}
    assert outputs("report") == {
        "run_dir": "system.Artifact",
        "report_html": "system.HTML",
        "report_md": "system.Markdown",
    }
    # The arm's ROC names its test set as phantom or real, so the run's source reaches train-arm.
    arm_inputs = _all_tasks(spec)["train-arm"]["inputs"]["parameters"]
    assert arm_inputs["source"] == {"componentInputParameter": "pipelinechannel--source"}
    # The component bodies label what they log (display names are set at run time, in the core).
    executors = spec["deploymentSpec"]["executors"]
    for name, call in (
        ("train-arm", "ui_metrics.log_classification(roc, study.arm_roc_step("),
        ("select-model", "ui_metrics.log_classification(roc, study.deployed_roc_step("),
        ("evaluate", "ui_metrics.log_metrics(metrics,"),
    ):
        assert call in " ".join(executors[f"exec-{name}"]["container"]["command"]), name


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
            "--seeds",
            "0,1",
            "--gan-steps",
            "12",
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
    # The typed flags reached the stages through resolve_config's views (tiny: 20 GAN steps).
    assert run["config"]["gan"]["steps"] == 12 and run["config"]["seeds"] == [0, 1]
    assert "resolve-config" in run["stages"]
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


# ---- the run form, per-stage views and KFP cache keys ---------------------------------------------------
@pytest.mark.parametrize("variant", ["compiled", "compiled_cpu"])
def test_run_form_parameters_have_types_defaults_and_descriptions(variant, request):
    spec, _ = request.getfixturevalue(variant)
    params = spec["root"]["inputDefinitions"]["parameters"]
    for name, (kind, default) in RUN_FORM.items():
        definition = params[name]
        assert definition["parameterType"] == kind, name
        assert definition["defaultValue"] == default and definition.get("isOptional") is True, name
        assert len(definition.get("description", "")) > 20, f"{name}: the UI shows no description"
    for name in TYPED:  # each says which value means "use the preset's"
        text = params[name]["description"]
        assert "the preset's" in text or "arms unchanged" in text, (name, text)
    assert "applied last" in params["overrides"]["description"]


@pytest.mark.parametrize("variant", ["compiled", "compiled_cpu"])
def test_each_task_receives_only_its_own_config_view(variant, request):
    spec, _ = request.getfixturevalue(variant)
    tasks = _all_tasks(spec)
    run_knobs = {"preset", "overrides"} | TYPED
    for name, task in tasks.items():
        if "componentRef" not in task or name == "resolve-config":
            continue
        inputs = task["inputs"].get("parameters", {})
        comp = spec["components"][task["componentRef"]["name"]]
        if "dag" in comp:  # the ParallelFor itself
            continue
        declared = set(comp.get("inputDefinitions", {}).get("parameters", {}))
        assert not (declared & run_knobs), f"{name} still takes {sorted(declared & run_knobs)}"
        if name == "deploy":
            continue
        stage = TASK_STAGE[name]
        if name == "train-arm":  # the loop item carries the train_arm view
            binding = inputs["config"]
            assert binding["parameterExpressionSelector"] == 'parseJson(string_value)["config"]'
            plan_inputs = tasks["plan-arms"]["inputs"]["parameters"]
            assert plan_inputs["arm_config"]["taskOutputParameter"]["outputParameterKey"] == "train_arm"
            continue
        source = inputs["config"]["taskOutputParameter"]
        assert source == {"producerTask": "resolve-config", "outputParameterKey": stage}, name
    ingest = tasks["ingest"]["inputs"]["parameters"]
    assert ingest["source_digest"]["taskOutputParameter"]["outputParameterKey"] == "source_digest"
    assert set(ingest) == {"source", "config", "source_digest"}


@pytest.mark.parametrize("variant", ["compiled", "compiled_cpu"])
def test_resolve_config_runs_first_and_is_never_cached(variant, request):
    spec, _ = request.getfixturevalue(variant)
    task = spec["root"]["dag"]["tasks"]["resolve-config"]
    assert task["taskInfo"]["name"] == "Resolve config"
    assert task["cachingOptions"].get("enableCache", False) is False
    assert set(task["inputs"]["parameters"]) == set(RUN_FORM) - {
        "model_uri",
        "namespace",
        "synthetic_publish_uri",
        "synthetic_set_uri",
        "gan_checkpoint_uri",
        "external_source",
    }


def test_resolve_config_outputs_follow_the_stage_table():
    """KFP maps a NamedTuple's values to outputs by position: the order must be STAGE_FIELDS'."""
    from components import resolve_config
    from mammosynth.config import STAGE_FIELDS

    fields = resolve_config.python_func.__annotations__["return"]._fields
    assert fields == (*STAGE_FIELDS, "source_digest")
    assert set(TASK_STAGE.values()) == set(STAGE_FIELDS)


def _go_json(value) -> str:
    """What Go's encoding/json.Marshal writes: sorted map keys, compact, HTML characters escaped, whole
    numbers without a fraction (structpb numbers are doubles)."""

    def norm(v):
        if isinstance(v, float) and v.is_integer():
            return int(v)
        if isinstance(v, dict):
            return {k: norm(x) for k, x in v.items()}
        if isinstance(v, list):
            return [norm(x) for x in v]
        return v

    text = json.dumps(norm(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def kfp_cache_key(spec: dict, task_name: str, parameters: dict, artifacts: dict) -> str:
    """A task's cache fingerprint as the KFP v2 backend computes it.

    Follows kubeflow/pipelines backend/src/v2/cacheutils/cache.go: GenerateCacheKey builds a CacheKey of
    the input artifacts' names, the input parameter values (the task's bindings, then the component's
    defaults), the output artifacts' types, the output parameters' types and the container (image, command
    + args); GenerateFingerPrint is the sha256 of its protojson re-marshalled with encoding/json.

    Args:
        spec: the compiled pipeline spec.
        task_name: the task.
        parameters: resolved values, ``{"<producer>/<output>" or "pipeline/<param>": value}``.
        artifacts: artifact names (MLMD ids), ``{"<producer>/<output>": name}``.
    """
    import hashlib

    task = _all_tasks(spec)[task_name]
    comp = spec["components"][task["componentRef"]["name"]]
    container = spec["deploymentSpec"]["executors"][comp["executorLabel"]]["container"]
    values = {}
    for name, binding in task["inputs"].get("parameters", {}).items():
        if "runtimeValue" in binding:
            values[name] = binding["runtimeValue"]["constant"]
        elif "componentInputParameter" in binding:
            values[name] = parameters[f"pipeline/{binding['componentInputParameter']}"]
        else:
            out = binding["taskOutputParameter"]
            values[name] = parameters[f"{out['producerTask']}/{out['outputParameterKey']}"]
    for name, definition in comp.get("inputDefinitions", {}).get("parameters", {}).items():
        if name not in values and "defaultValue" in definition:
            values[name] = definition["defaultValue"]
    in_artifacts = {}
    for name, binding in task["inputs"].get("artifacts", {}).items():
        out = binding["taskOutputArtifact"]
        in_artifacts[name] = {
            "artifactNames": [artifacts[f"{out['producerTask']}/{out['outputArtifactKey']}"]]
        }
    outputs = comp.get("outputDefinitions", {})
    key = {
        "inputArtifactNames": in_artifacts,
        "inputParameterValues": values,
        "outputArtifactsSpec": {
            name: {"type": {k: d["artifactType"][k] for k in ("schemaTitle", "schemaVersion")}}
            for name, d in outputs.get("artifacts", {}).items()
        },
        "outputParametersSpec": {
            name: d["parameterType"] for name, d in outputs.get("parameters", {}).items()
        },
        "containerSpec": {
            "image": container["image"],
            "cmdArgs": container["command"] + container.get("args", []),
        },
    }
    key = {k: v for k, v in key.items() if v}  # protojson leaves empty maps out
    return hashlib.sha256(_go_json(key).encode()).hexdigest()


def _data_stage_keys(spec: dict, source: str = "embedded", **run_params) -> dict[str, str]:
    """Cache keys of ingest, split, preprocess, tune and train-gan for one run's parameters.

    resolve_config's outputs come from the real step (`study.resolve_config_step`); an upstream
    artifact's name is derived from its producer's key (a cached producer hands over the same artifact).
    """
    from mammosynth import study

    pipeline = {k: d["defaultValue"] for k, d in spec["root"]["inputDefinitions"]["parameters"].items()}
    pipeline.update(source=source, **run_params)
    typed = {k: pipeline[k] for k in TYPED}
    views = study.resolve_config_step(
        source, preset=pipeline["preset"], overrides=pipeline["overrides"], **typed
    )
    parameters = {f"pipeline/{k}": v for k, v in pipeline.items()}
    parameters.update({f"resolve-config/{k}": v for k, v in views.items()})
    artifacts, keys = {}, {}
    for task in ("ingest", "split", "preprocess", "tune", "train-gan"):
        keys[task] = kfp_cache_key(spec, task, parameters, artifacts)
        comp = spec["components"][_all_tasks(spec)[task]["componentRef"]["name"]]
        for out in comp.get("outputDefinitions", {}).get("artifacts", {}):
            artifacts[f"{task}/{out}"] = f"artifact-{keys[task][:16]}-{out}"
    return keys


@pytest.mark.parametrize("variant", ["compiled", "compiled_cpu"])
def test_a_gan_or_seed_change_keeps_the_data_stages_cache_keys(variant, request):
    spec, _ = request.getfixturevalue(variant)
    base = _data_stage_keys(spec, preset="tiny")
    changed = _data_stage_keys(spec, preset="tiny", gan_steps=55, seeds=[3, 4, 5], classifier_epochs=3)
    for task in ("ingest", "split", "preprocess", "tune"):
        assert base[task] == changed[task], f"{task} would miss the cache"
    assert base["train-gan"] != changed["train-gan"]
    # The same change through the overrides escape hatch is cut the same way.
    via_json = _data_stage_keys(spec, preset="tiny", overrides='{"gan": {"steps": 55}}')
    assert via_json["ingest"] == base["ingest"] and via_json["train-gan"] == changed["train-gan"]


@pytest.mark.parametrize("variant", ["compiled", "compiled_cpu"])
def test_an_image_size_change_reruns_preprocess_but_not_ingest_or_split(variant, request):
    spec, _ = request.getfixturevalue(variant)
    base = _data_stage_keys(spec, preset="tiny")
    bigger = _data_stage_keys(spec, preset="tiny", image_size=48)
    assert base["ingest"] == bigger["ingest"] and base["split"] == bigger["split"]
    assert base["preprocess"] != bigger["preprocess"]
    assert base["tune"] != bigger["tune"]  # it reads a new prepared set


def test_ingest_of_an_s3_upload_is_keyed_on_its_manifest_digest(compiled_cpu, tmp_path, s3_env):
    from mammosynth import storage

    spec, _ = compiled_cpu
    folder = tmp_path / "upload"
    folder.mkdir()
    (folder / "calc_case.csv").write_text("patient_id\nP_00001\n")
    source = f"s3://{s3_env}/cbis-ddsm"
    storage.upload_source(folder, source)
    first = _data_stage_keys(spec, source=source, preset="tiny")
    again = _data_stage_keys(spec, source=source, preset="tiny", gan_steps=33)
    assert first["ingest"] == again["ingest"]  # unchanged upload: cache hit
    (folder / "mass_case.csv").write_text("patient_id\nP_00002\n")
    storage.upload_source(folder, source)
    changed = _data_stage_keys(spec, source=source, preset="tiny")
    assert changed["ingest"] != first["ingest"]  # a changed upload re-runs ingest


def test_ingest_refuses_an_upload_that_changed_after_resolve(tmp_path, s3_env):
    from mammosynth import storage
    from mammosynth.study import ingest_step

    folder = tmp_path / "upload"
    folder.mkdir()
    (folder / "a.csv").write_text("x\n1\n")
    source = f"s3://{s3_env}/raw"
    storage.upload_source(folder, source)
    with pytest.raises(ValueError, match=r"changed since the run resolved its config .*start the run again"):
        ingest_step(source, str(tmp_path / "out"), preset="tiny", source_digest="0" * 64)


def test_a_stage_reading_outside_its_view_fails(tmp_path, monkeypatch):
    """A wrong STAGE_FIELDS row fails at the stage that reads the missing field, naming it."""
    from mammosynth import config, study

    monkeypatch.setitem(config.STAGE_FIELDS, "split", ("seed",))
    with pytest.raises(AttributeError, match=r"stage 'split' read config field 'val_fraction'"):
        study.split_step(str(tmp_path / "in"), str(tmp_path / "out"), preset="tiny")
    monkeypatch.setitem(config.STAGE_FIELDS, "plan", ("arms",))
    with pytest.raises(AttributeError, match=r"stage 'plan' read config field 'synthetic_ratio'"):
        study.plan_arms(preset="tiny")


def test_arm_tasks_carry_the_train_arm_view():
    from mammosynth import study
    from mammosynth.config import resolve, stage_view

    cfg = resolve("tiny", arms=["real+aug+synthetic"])
    items = study.arm_tasks(stage_view(cfg, "plan"), stage_view(cfg, "train_arm"))
    assert [i["arm"] for i in items] == ["real", "real+aug+synthetic", "real+aug"]
    assert {i["config"] for i in items} == {stage_view(cfg, "train_arm")}
    with pytest.raises(ValueError, match="got the config view of stage 'plan'"):
        study.arm_tasks(stage_view(cfg, "plan"), stage_view(cfg, "plan"))


def test_run_flags_set_the_typed_parameters(monkeypatch, capsys):
    import pipelines.__main__ as cli

    seen = {}
    monkeypatch.setattr(
        cli, "run_local", lambda **kw: seen.update(kw) or (_ for _ in ()).throw(SystemExit(0))
    )
    with pytest.raises(SystemExit):
        cli.main(
            [
                "run",
                "--preset",
                "tiny",
                "--seeds",
                "0,1,2",
                "--gan-steps",
                "40",
                "--synthetic-ratios",
                "0.5,1",
            ]
        )
    assert seen["seeds"] == [0, 1, 2] and seen["gan_steps"] == 40 and seen["synthetic_ratios"] == [0.5, 1.0]
    assert "arms" not in seen and "image_size" not in seen  # unset flags keep the preset's values
    assert cli.main(["run", "--preset", "tiny", "--gan-kind", "big-gan"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(
        "python -m pipelines run: error: config field gan.kind (run parameter gan_kind)"
    )
    with pytest.raises(SystemExit):
        cli.main(["run", "--seeds", "0,x"])
    assert "not a comma-separated list of integers" in capsys.readouterr().err


def test_a_checkpoint_pvc_is_mounted_into_the_gan_step_only(tmp_path, compiled_cpu):
    """MAMMOSYNTH_GAN_CHECKPOINT_PVC at compile time mounts that claim into train-gan (kfp-kubernetes), where
    gan_checkpoint_uri=<mount path> keeps checkpoints across pod restarts; without it nothing is mounted."""
    _, platform = _compile(tmp_path / "pvc.yaml", gpu=False, MAMMOSYNTH_GAN_CHECKPOINT_PVC="gan-ckpt")
    mounted = {name: ex["pvcMount"] for name, ex in platform.items() if ex.get("pvcMount")}
    assert list(mounted) == ["exec-train-gan"]
    (mount,) = mounted["exec-train-gan"]
    assert mount["mountPath"] == "/mnt/gan-checkpoints"
    assert "gan-ckpt" in json.dumps(mount)
    _, default = compiled_cpu
    assert not [name for name, ex in default.items() if ex.get("pvcMount")]

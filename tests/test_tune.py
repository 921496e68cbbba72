"""Search space → Katib Experiment (validated against Katib's OpenAPI spec) and the Optuna backend."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import yaml

from mammosynth import train, tune
from mammosynth.cluster import katib
from mammosynth.data import shards


def _sample_value(p: tune.Param) -> str:
    return str(p.choices[0]) if p.kind == "categorical" else str(p.low if p.kind == "int" else p.high)


def test_default_experiment_validates_and_trial_command_parses(tmp_path):
    out = tmp_path / "experiment.yaml"
    assert (
        tune.main(
            [
                "--emit-katib",
                str(out),
                "--preset",
                "cbis-ddsm",
                "--model",
                "tuned_cnn",
                "--data-uri",
                "s3://mammosynth/prepared/v1",
                "--name",
                "mammosynth-tune",
            ]
        )
        == 0
    )
    exp = yaml.safe_load(out.read_text())
    katib.validate_experiment(exp)
    spec = exp["spec"]
    assert spec["objective"]["objectiveMetricName"] == train.OBJECTIVE_METRIC == "val_auc"
    assert spec["objective"]["type"] == "maximize"
    assert set(spec["objective"]["additionalMetricNames"]) == set(train.ADDITIONAL_METRICS)
    assert spec["maxTrialCount"] == 24 and spec["metricsCollectorSpec"]["collector"]["kind"] == "StdOut"
    assert [p["name"] for p in spec["parameters"]] == [p.name for p in tune.SEARCH_SPACE]
    pod = spec["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert spec["trialTemplate"]["primaryContainerName"] == container["name"]
    assert (
        container["resources"]["limits"]["nvidia.com/gpu"] == "1"
        and pod["tolerations"]
        and pod["nodeSelector"]
    )
    # The trial command is one the trainer's own parser accepts once Katib substitutes values.
    refs = {tp["name"]: tp["reference"] for tp in spec["trialTemplate"]["trialParameters"]}
    by_name = {p.name: p for p in tune.SEARCH_SPACE}
    argv = [
        a if not a.startswith("${trialParameters.") else _sample_value(by_name[refs[a[18:-1]]])
        for a in container["command"]
    ]
    assert argv[:3] == ["python", "-m", "mammosynth.train"]
    args = train._parser().parse_args(argv[3:])
    assert (args.model, args.n_conv_layers, args.filters, args.learning_rate) == ("tuned_cnn", 2, 16, 1e-2)
    assert args.no_save_model and args.data == "s3://mammosynth/prepared/v1"


def test_misspelt_or_mistyped_fields_fail_validation():
    exp = katib.build_experiment(
        "mammosynth-tune", "kubeflow", image="trainer:1", data_uri="s3://b/p", algorithm="random", gpu=False
    )
    katib.validate_experiment(exp)
    cases = [
        (lambda e: e["spec"]["objective"].update(objectivMetricName="val_auc"), "objectivMetricName"),
        (lambda e: e["spec"].update(parallelTrialCount="3"), "is not of type 'integer'"),
        (
            lambda e: e["spec"]["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]["containers"][
                0
            ].update(imagePullPolcy="Always"),
            "imagePullPolcy",
        ),
        (
            lambda e: e["spec"]["trialTemplate"]["trialParameters"].pop(),
            "learningRate} which is not declared",
        ),
        (lambda e: e["spec"]["objective"].update(type="maximise"), "objective.type"),
        (lambda e: e["spec"]["parameters"][0].update(parameterType="integer"), "parameterType"),
        (lambda e: e["spec"]["trialTemplate"].update(primaryContainerName="main"), "primaryContainerName"),
    ]
    for mutate, message in cases:
        bad = copy.deepcopy(exp)
        mutate(bad)
        with pytest.raises(ValueError, match="invalid Katib Experiment") as info:
            katib.validate_experiment(bad)
        assert message in str(info.value), (message, str(info.value))
    with pytest.raises(ValueError, match="unknown Katib algorithm"):
        katib.build_experiment("x", "kubeflow", image="i", data_uri="s3://b", algorithm="annealing")
    with pytest.raises(ValueError, match="DNS-1123"):
        katib.build_experiment("Bad_Name", "kubeflow", image="i", data_uri="s3://b")


class _FakeCustomObjects:
    """Stands in for kubernetes.client.CustomObjectsApi: records the create, replays statuses."""

    def __init__(self, statuses):
        self.statuses = list(statuses)
        self.created = None

    def create_namespaced_custom_object(self, group, version, namespace, plural, body):
        self.created = (group, version, namespace, plural, body)

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        return {"status": self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]}


def test_run_experiment_polls_until_done_and_returns_best_trial():
    exp = katib.build_experiment("mammosynth-tune", "kubeflow", image="trainer:1", data_uri="s3://b/p")
    done = {
        "conditions": [{"type": "Succeeded", "status": "True"}],
        "trials": 3,
        "trialsSucceeded": 3,
        "currentOptimalTrial": {
            "bestTrialName": "t-2",
            "parameterAssignments": [
                {"name": "learning_rate", "value": "0.003"},
                {"name": "filters", "value": "64"},
            ],
            "observation": {"metrics": [{"name": "val_auc", "latest": "0.81", "max": "0.83"}]},
        },
    }
    api = _FakeCustomObjects([{"trialsRunning": 2}, done])
    found = katib.run_experiment(exp, timeout_s=5, poll_s=0, api=api)
    assert api.created[:4] == ("kubeflow.org", "v1beta1", "kubeflow", "experiments")
    assert found["best_params"] == {"learning_rate": "0.003", "filters": "64"} and found["best_value"] == 0.81
    failed = _FakeCustomObjects([{"conditions": [{"type": "Failed", "status": "True", "message": "quota"}]}])
    with pytest.raises(RuntimeError, match="quota"):
        katib.run_experiment(exp, timeout_s=5, poll_s=0, api=failed)
    with pytest.raises(TimeoutError):
        katib.run_experiment(exp, timeout_s=0, poll_s=0, api=_FakeCustomObjects([{"trialsRunning": 1}]))


def test_space_for_model_keeps_only_its_parameters():
    assert [p.name for p in tune.space_for("simple_cnn")] == ["dense_units", "dropout", "learning_rate"]
    assert tune.space_for("tuned_cnn") == tune.SEARCH_SPACE
    assert tune.SEARCH_SPACE[1].cast("64") == 64 and tune.SEARCH_SPACE[0].cast("3") == 3


def _position_set(root, size=16, n=(48, 24, 24), seed=0):
    """One blob per image; malignant iff it lies in the left half: position, not brightness, decides."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    for split, count in zip(["train", "val", "test"], n, strict=True):
        labels = np.arange(count) % 2
        imgs = np.empty((count, size, size, 1), np.float32)
        for i, lab in enumerate(labels):
            cy = rng.uniform(size * 0.25, size * 0.75)
            cx = rng.uniform(size * 0.1, size * 0.4) if lab else rng.uniform(size * 0.6, size * 0.9)
            blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (size * 0.08) ** 2))
            imgs[i, ..., 0] = 0.3 + 0.5 * blob + rng.normal(0, 0.05, (size, size))
        shards.write_split(root, split, np.clip(imgs, 0, 1), labels, [f"{split}-{i}" for i in range(count)])
    shards.write_meta(root, size)
    return root


def test_optuna_beats_the_default_config(tmp_path):
    """One epoch is too little for the default learning rate (1e-3) on this task; a search over the
    learning rate must find a better one, and its reported value must be what training reproduces."""
    prepared = _position_set(tmp_path / "prepared")
    kw = dict(model="tuned_cnn", epochs=1, batch_size=16, seed=0, save_model=False, predict_test=False)
    default = train.train_classifier(prepared, tmp_path / "default", **kw)["val_auc"]
    space = (tune.Param("learning_rate", "double", 1e-4, 3e-2, log=True),)
    result = tune.run_tune(
        prepared,
        tmp_path / "best_params.json",
        backend="optuna",
        n_trials=3,
        epochs_per_trial=1,
        seed=0,
        model="tuned_cnn",
        batch_size=16,
        space=space,
    )
    assert result.n_trials == 3 and len(result.trials) == 3 and result.backend == "optuna"
    assert result.best_value > default + 0.05, (result.best_value, default, result.trials)
    written = json.loads((tmp_path / "best_params.json").read_text())
    assert written["best_params"] == result.best_params and set(result.best_params) == {"learning_rate"}
    again = train.train_classifier(prepared, tmp_path / "again", **{**kw, **result.best_params})["val_auc"]
    assert again == pytest.approx(result.best_value)


def test_katib_backend_casts_best_params_and_writes_the_same_result(tmp_path, monkeypatch):
    submitted = {}

    def fake_run(obj, timeout_s):
        submitted["obj"] = obj
        return {
            "best_params": {"dense_units": "256", "dropout": "0.25", "learning_rate": "0.002"},
            "best_value": 0.77,
            "metric": "val_auc",
            "n_trials": 5,
        }

    monkeypatch.setattr(katib, "run_experiment", fake_run)
    result = tune.run_tune(
        tmp_path / "prepared",
        tmp_path / "best.json",
        backend="katib",
        n_trials=5,
        model="simple_cnn",
        image="trainer:1",
        data_uri="s3://b/prepared",
        gpu=False,
    )
    assert result.best_params == {"dense_units": 256, "dropout": 0.25, "learning_rate": 0.002}
    assert result.backend == "katib" and result.n_trials == 5
    assert json.loads((tmp_path / "best.json").read_text())["best_params"]["dense_units"] == 256
    spec = submitted["obj"]["spec"]
    assert [p["name"] for p in spec["parameters"]] == ["dense_units", "dropout", "learning_rate"]
    assert spec["maxTrialCount"] == 5
    with pytest.raises(ValueError, match="unknown tune backend"):
        tune.run_tune(tmp_path, tmp_path / "x.json", backend="hyperopt")
    assert tune.main(["--preset", "tiny"]) == 2  # neither --data nor --emit-katib

"""Stage glue: arm planning, synthetic set sizing, final-model choice, run folder publishing."""

import json

import pytest

from mammosynth.config import load_config
from mammosynth.study import final_arm, plan_arms, synthetic_counts
from pipelines.__main__ import publish_run


def test_plan_arms_always_includes_the_real_control():
    assert plan_arms(preset="tiny", overrides={"arms": ["real+aug", "tstr"]}) == ["real", "real+aug", "tstr"]
    with pytest.raises(ValueError, match="unknown arm"):
        plan_arms(preset="tiny", overrides={"arms": ["real+gan"]})


def test_synthetic_counts_cover_the_largest_ratio_evenly():
    cfg = load_config("tiny", {"arms": ["real", "real+synthetic@0.25", "real+synthetic@1.0"]})
    assert synthetic_counts(cfg, 100) == {"benign": 50, "malignant": 50}
    cfg = load_config("tiny", {"arms": ["real", "tstr"]})
    assert sum(synthetic_counts(cfg, 101).values()) >= 101  # TSTR trains on as many as the real set


def _arm(tmp_path, name, val_aucs):
    d = tmp_path / name.replace("+", "_")
    d.mkdir()
    metrics = {str(i): {"val_auc": v} for i, v in enumerate(val_aucs)}
    (d / "arm.json").write_text(json.dumps({"arm": name, "seeds": list(metrics), "metrics": metrics}))
    return str(d)


def test_final_arm_is_chosen_on_mean_validation_auc(tmp_path):
    a = _arm(tmp_path, "real", [0.70, 0.72])
    b = _arm(tmp_path, "real+synthetic", [0.90, 0.50])  # best single seed, worse mean
    c = _arm(tmp_path, "real+aug", [0.75, 0.76])
    assert final_arm([a, b, c]) == c


def test_publish_run_copies_and_repoints_latest(tmp_path):
    src = tmp_path / "out"
    src.mkdir()
    (src / "metrics.json").write_text("{}")
    runs = tmp_path / "runs"
    first = publish_run(src, runs, "r1")
    second = publish_run(src, runs, "r2")
    assert (first / "metrics.json").exists() and (second / "metrics.json").exists()
    assert (runs / "latest").resolve() == second.resolve()
    assert not list(runs.glob(".*tmp"))


def test_a_published_synthetic_set_is_reused_without_training_a_gan(tmp_path, s3_env):
    import numpy as np

    from mammosynth import storage
    from mammosynth.data import shards
    from mammosynth.study import synthesize_step, train_gan_step

    prepared = tmp_path / "prepared"
    rng = np.random.default_rng(0)
    shards.write_split(prepared, "train", rng.random((6, 32, 32, 1)), [0, 1] * 3, [f"r{i}" for i in range(6)])
    shards.write_meta(prepared, 32)
    patients = {"splits": {"train": {"digest": "d-here", "n_patients": 2, "patients": ["pa", "pb"]}}}
    (prepared / "patients.json").write_text(json.dumps(patients))
    synthetic = tmp_path / "synthetic"
    shards.write_split(
        synthetic, "train", rng.random((4, 32, 32, 1)), [0, 0, 1, 1], [f"s{i}" for i in range(4)]
    )
    seen = {"patients_digest": "d-gen", "patients": ["pa"], "split_seed": 1, "val_fraction": 0.15}
    shards.write_meta(synthetic, 32, {"lineage": {"generator": "test", "train_split": seen}})
    uri = storage.publish_set(synthetic, f"s3://{s3_env}/synthetic", kind="synthetic")["uri"]
    # A set whose generator saw a patient outside this run's train split (e.g. a test patient) is refused.
    leaky = tmp_path / "leaky"
    shards.write_split(leaky, "train", rng.random((4, 32, 32, 1)), [0, 0, 1, 1], [f"s{i}" for i in range(4)])
    shards.write_meta(leaky, 32, {"lineage": {"train_split": {**seen, "patients": ["pa", "p-test"]}}})
    leaky_uri = storage.publish_set(leaky, f"s3://{s3_env}/leaky", kind="synthetic")["uri"]
    with pytest.raises(ValueError, match="d-gen.*d-here"):
        synthesize_step(
            str(tmp_path / "gan"), str(prepared), str(tmp_path / "l"), preset="tiny", reuse_uri=leaky_uri
        )

    info = train_gan_step(str(prepared), str(tmp_path / "gan"), preset="tiny", reuse_uri=uri)
    assert info == {"reused_synthetic_set": uri}
    assert not (tmp_path / "gan" / "generator").exists()  # nothing trained
    out = tmp_path / "reused"
    meta = synthesize_step(str(tmp_path / "gan"), str(prepared), str(out), preset="tiny", reuse_uri=uri)
    assert meta["reused_from"] == uri
    images, labels, ids = shards.read_split(out, "train")
    assert list(ids) == [f"s{i}" for i in range(4)] and labels.tolist() == [0, 0, 1, 1]

    shards.write_meta(prepared, 64)  # a run at another image size must not silently mix sizes
    with pytest.raises(ValueError, match="same image_size"):
        synthesize_step(
            str(tmp_path / "gan"), str(prepared), str(tmp_path / "bad"), preset="tiny", reuse_uri=uri
        )
    with pytest.raises(Exception, match="manifest"):
        synthesize_step(
            str(tmp_path / "gan"),
            str(prepared),
            str(tmp_path / "none"),
            preset="tiny",
            reuse_uri=f"s3://{s3_env}/nothing-here",
        )


def _saved_arm(root, name: str, training: dict) -> str:
    import keras

    from mammosynth.models.io import save_classifier

    d = root / name.replace("+", "_")
    inputs = keras.Input((16, 16, 1))
    net = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(keras.layers.Flatten()(inputs)))
    save_classifier(net, d / "seed-0" / "model", {"image_size": 16, "seed": 0, "training": training}, False)
    (d / "arm.json").write_text(json.dumps({"arm": name, "metrics": {"0": {"val_auc": 0.8}}}))
    return str(d)


@pytest.mark.parametrize(
    "source, kind, where",
    [("embedded", "phantom", "embedded phantom"), ("s3://mammosynth/cbis-ddsm", "cbis-ddsm", "s3://mammo")],
)
def test_final_model_json_records_the_data_source(tmp_path, source, kind, where):
    from mammosynth.models.io import load_meta
    from mammosynth.study import select_model_step

    arm = _saved_arm(
        tmp_path,
        "real+synthetic@0.5",
        {"arm": "real+synthetic@0.5", "n_train_real": 48, "n_train_synthetic": 24},
    )
    out = tmp_path / "final"
    result = select_model_step([arm], str(tmp_path), str(out), source=source, preset="tiny")
    meta = load_meta(out)
    assert meta["data_source"] == kind == result["data_source"]
    line = meta["trained_on"]
    assert isinstance(line, str) and "\n" not in line
    assert "preset tiny" in line and where in line and "48 real + 24 synthetic" in line
    assert f"split seed {load_config('tiny').seed}" in line and "arm real+synthetic@0.5" in line


def test_model_json_states_the_label_convention(tmp_path):
    """Users read labels in model.json: malignant = 1 is positive here, the study used malignant = 0."""
    import json

    import keras

    from mammosynth.config import CLASS_NAMES
    from mammosynth.models.io import save_classifier

    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(1)])
    save_classifier(model, tmp_path / "m", {"image_size": 8})
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["class_names"] == list(CLASS_NAMES) and meta["positive_class"] == "malignant"
    assert "malignant = 1" in meta["label_convention"] and "malignant = 0" in meta["label_convention"]


def test_the_rerun_command_rebuilds_the_resolved_config():
    """The report's re-run line carries what differs from the preset (typed parameters included)."""
    from mammosynth.config import preset_diff, resolve
    from mammosynth.report import _rerun

    cfg = resolve("embedded", seeds=[0, 1], gan_steps=40)
    line = _rerun(cfg, "embedded", preset_diff(cfg))
    assert line == """make run PRESET=embedded OVERRIDES='{"seeds": [0, 1], "gan": {"steps": 40}}'"""
    assert _rerun(cfg, "embedded", {}) == "make run PRESET=embedded"
    line = _rerun(cfg, "s3://b/cbis", preset_diff(cfg))
    assert line.startswith("python -m pipelines run --source s3://b/cbis --preset embedded --overrides '{")
    assert load_config("embedded", json.loads(line.split("--overrides ")[1].strip("'"))) == cfg


def test_a_phantom_uploaded_under_any_name_is_labelled_phantom(tmp_path):
    """Issue 12: the label comes from what ingest recorded (the phantom's marker), not the source string."""
    from mammosynth.models.io import load_meta
    from mammosynth.study import select_model_step

    training = {"arm": "real", "n_train_real": 48, "n_train_synthetic": 0, "data_source": "phantom"}
    arm = _saved_arm(tmp_path, "real", training)
    out = tmp_path / "final"
    source = "s3://mammosynth/cbis-ddsm"
    result = select_model_step([arm], str(tmp_path), str(out), source=source, preset="tiny")
    meta = load_meta(out)
    assert meta["data_source"] == result["data_source"] == "phantom"
    assert "phantom uploaded to s3://mammosynth/cbis-ddsm" in meta["trained_on"]

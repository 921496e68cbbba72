"""Training stage: outputs, determinism, resume, arm layout, the Katib trial CLI."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from mammosynth import train
from mammosynth.data import shards

# Katib's default StdOut metrics-collector filter.
KATIB_FILTER = re.compile(r"([\w|-]+)\s*=\s*([+-]?\d*(\.\d+)?([Ee][+-]?\d+)?)")


def make_set(root, size=32, n=(48, 24, 24), seed=0, synthetic=False):
    """A tiny prepared set: bright disk (malignant, 1) vs faint disk (benign, 0) on a noisy background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    for split, count in zip(["train", "val"] if synthetic else ["train", "val", "test"], n, strict=False):
        labels = np.arange(count) % 2
        imgs = np.empty((count, size, size, 1), np.float32)
        for i, lab in enumerate(labels):
            cy, cx = rng.uniform(size * 0.3, size * 0.7, 2)
            disk = ((yy - cy) ** 2 + (xx - cx) ** 2) < rng.uniform(size * 0.12, size * 0.22) ** 2
            imgs[i, ..., 0] = (
                rng.uniform(0.2, 0.4) + disk * (0.35 if lab else 0.1) + rng.normal(0, 0.12, (size, size))
            )
        shards.write_split(
            root,
            split,
            np.clip(imgs, 0, 1),
            labels,
            [f"{split}-{i:04d}" for i in range(count)],
            shard_size=20,
        )
    shards.write_meta(root, size, {"lineage": {"generator": "test"}} if synthetic else None)
    return root


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("sets")
    return make_set(root / "prepared"), make_set(root / "synthetic", synthetic=True, seed=7)


def test_train_classifier_outputs_and_determinism(sets, tmp_path):
    prepared, synthetic = sets
    kw = dict(epochs=2, batch_size=16, seed=3, synthetic_dir=synthetic, synthetic_ratio=0.5, augment=True)
    m1 = train.train_classifier(prepared, tmp_path / "a", **kw)
    m2 = train.train_classifier(prepared, tmp_path / "b", save_model=False, **kw)
    assert m2["val_auc"] == m1["val_auc"] and m2["train_accuracy"] == m1["train_accuracy"]
    for key in (
        "train_accuracy",
        "val_auc",
        "val_accuracy",
        "val_loss",
        "epochs_run",
        "n_train_real",
        "n_train_synthetic",
        "seed",
        "params",
    ):
        assert key in m1, key
    assert (m1["n_train_real"], m1["n_train_synthetic"], m1["epochs_run"]) == (48, 24, 2)
    # Same seed on CPU → the same run, epoch by epoch.
    assert json.loads((tmp_path / "a/history.json").read_text()) == json.loads(
        (tmp_path / "b/history.json").read_text()
    )
    assert json.loads((tmp_path / "a/train_metrics.json").read_text())["val_auc"] == m1["val_auc"]
    assert not (tmp_path / "b/model").exists() and not (tmp_path / "a/checkpoints").exists()
    with open(tmp_path / "a/predictions.csv") as fh:
        rows = list(csv.DictReader(fh))
    _, labels, ids = shards.read_split(prepared, "test")
    assert [r["image_id"] for r in rows] == list(ids)
    assert [int(r["label_id"]) for r in rows] == list(labels)
    assert all(0.0 <= float(r["prob"]) <= 1.0 for r in rows)


def test_saved_model_reloads_and_predicts_identically(sets, tmp_path):
    from mammosynth.models.io import load_classifier

    prepared, _ = sets
    train.train_classifier(
        prepared,
        tmp_path,
        epochs=1,
        batch_size=16,
        seed=0,
        model="tuned_cnn",
        n_conv_layers=2,
        filters=8,
        dense_units=16,
    )
    model, meta = load_classifier(tmp_path / "model")
    assert meta["arch"] == "tuned_cnn" and meta["image_size"] == 32 and meta["seed"] == 0
    assert meta["training"]["n_train_real"] == 48
    images, _, _ = shards.read_split(prepared, "test")
    probs = model.predict(images, verbose=0).reshape(-1)
    with open(tmp_path / "predictions.csv") as fh:
        saved = np.array([float(r["prob"]) for r in csv.DictReader(fh)])
    np.testing.assert_allclose(probs, saved, atol=1e-6)


def test_resume_after_interruption(sets, tmp_path, monkeypatch):
    import keras

    prepared, _ = sets

    class Crash(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                raise RuntimeError("simulated preemption")

    real_progress = train._make_progress_callback
    monkeypatch.setattr(train, "_make_progress_callback", lambda *a: Crash())
    kw = dict(epochs=2, batch_size=16, seed=1, patience=10, save_model=False)
    with pytest.raises(RuntimeError, match="preemption"):
        train.train_classifier(prepared, tmp_path, **kw)
    state = json.loads((tmp_path / "checkpoints/state.json").read_text())
    assert state["epoch"] == 1
    monkeypatch.setattr(train, "_make_progress_callback", real_progress)
    metrics = train.train_classifier(prepared, tmp_path, **kw)
    history = json.loads((tmp_path / "history.json").read_text())
    assert metrics["epochs_run"] == 2 and history[:1] == state["history"]


def test_train_arm_layout_is_what_evaluate_reads(sets, tmp_path):
    from mammosynth.evaluate import load_arm

    prepared, synthetic = sets
    record = train.train_arm(
        prepared,
        tmp_path,
        arm="real+synthetic@0.25",
        seeds=[0, 1],
        synthetic_dir=synthetic,
        epochs=1,
        batch_size=16,
    )
    assert record["spec"]["synthetic_ratio"] == 0.25
    assert set(record["metrics"]) == {"0", "1"} and record["metrics"]["0"]["n_train_synthetic"] == 12
    assert (tmp_path / "seed-0/model/model.keras").exists() and not (tmp_path / "seed-1/model").exists()
    arm = load_arm(tmp_path)
    assert arm["arm"] == "real+synthetic@0.25" and sorted(arm["seeds"]) == [0, 1]
    # TSTR: synthetic only, as many images as the real training split would give at ratio 1.
    tstr = train.train_arm(
        prepared,
        tmp_path / "tstr",
        arm="tstr",
        seeds=[0],
        synthetic_dir=synthetic,
        epochs=1,
        batch_size=16,
        save_model_seeds=0,
    )
    assert tstr["metrics"]["0"]["n_train_real"] == 0 and tstr["metrics"]["0"]["n_train_synthetic"] == 48
    assert (
        tstr["metrics"]["0"]["val_source"] == "synthetic" and record["metrics"]["0"]["val_source"] == "real"
    )


def test_tstr_never_reads_real_validation_data(sets, tmp_path, monkeypatch):
    prepared, synthetic = sets
    opened = []
    real_dataset, real_read = shards.dataset, shards.read_split
    monkeypatch.setattr(
        shards,
        "dataset",
        lambda d, split, **kw: opened.append((str(d), split)) or real_dataset(d, split, **kw),
    )
    monkeypatch.setattr(
        shards,
        "read_split",
        lambda d, split, **kw: opened.append((str(d), split)) or real_read(d, split, **kw),
    )
    train.train_classifier(
        prepared,
        tmp_path / "t",
        synthetic_dir=synthetic,
        synthetic_ratio=1.0,
        use_real=False,
        epochs=1,
        batch_size=16,
        save_model=False,
    )
    assert (str(synthetic), "val") in opened
    real_reads = {split for d, split in opened if d == str(prepared)}
    assert real_reads == {"test"}, f"TSTR opened real splits {real_reads} (only the test split may be read)"


def test_tstr_without_a_synthetic_val_split_is_refused(sets, tmp_path):
    prepared, _ = sets
    only_train = tmp_path / "syn"
    images, labels, ids = shards.read_split(sets[1], "train")
    shards.write_split(only_train, "train", images, labels, ids)
    shards.write_meta(only_train, 32)
    with pytest.raises(ValueError, match="synthetic validation split"):
        train.train_classifier(
            prepared,
            tmp_path / "t",
            synthetic_dir=only_train,
            synthetic_ratio=1.0,
            use_real=False,
            epochs=1,
            save_model=False,
        )


def test_train_arm_pairs_classifier_seed_k_with_generator_k_mod_g(sets, tmp_path, monkeypatch):
    import shutil

    prepared, synthetic = sets
    root = tmp_path / "syn"
    for g in range(2):
        shutil.copytree(synthetic, root / f"gan-seed-{g}")
    used = {}

    def fake_train(prepared_dir, out_dir, *, seed, synthetic_dir, **kw):
        used[seed] = synthetic_dir.name
        return {"val_auc": 0.5, "seed": seed}

    monkeypatch.setattr(train, "train_classifier", fake_train)
    record = train.train_arm(
        prepared, tmp_path / "arm", arm="real+synthetic@0.25", seeds=[0, 1, 2, 3, 4], synthetic_dir=root
    )
    assert used == {0: "gan-seed-0", 1: "gan-seed-1", 2: "gan-seed-0", 3: "gan-seed-1", 4: "gan-seed-0"}
    assert record["generators"] == {"0": 0, "1": 1, "2": 0, "3": 1, "4": 0}
    assert json.loads((tmp_path / "arm" / "arm.json").read_text())["generators"] == record["generators"]


def test_bad_inputs_fail_clearly(sets, tmp_path):
    prepared, _ = sets
    with pytest.raises(ValueError, match="minimum of 75x75"):
        train.train_classifier(prepared, tmp_path, model="inception_resnet_v2", weights=None, epochs=1)
    with pytest.raises(ValueError, match="unknown classifier 'resnet'"):
        train.train_classifier(prepared, tmp_path, model="resnet", epochs=1)
    with pytest.raises(ValueError, match="needs a synthetic set"):
        train.train_classifier(prepared, tmp_path, synthetic_ratio=0.5, epochs=1)
    with pytest.raises(FileNotFoundError, match="not a prepared set"):
        train.train_classifier(tmp_path / "nowhere", tmp_path, epochs=1)
    with pytest.raises(ValueError, match="synthetic_dir"):
        train.train_arm(prepared, tmp_path, arm="real+synthetic", seeds=[0])


def test_cli_prints_katib_metric_lines_and_writes_model(sets, tmp_path):
    prepared, _ = sets
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mammosynth.train",
            "--data",
            str(prepared),
            "--out",
            str(tmp_path),
            "--model",
            "simple_cnn",
            "--learning-rate",
            "0.001",
            "--dropout",
            "0.2",
            "--epochs",
            "2",
            "--batch-size",
            "16",
            "--seed",
            "0",
            "--augment",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [ln for ln in proc.stdout.splitlines() if train.METRIC_VAL_AUC in ln]
    assert len(lines) == 3  # two epochs + the final (best-epoch) line
    final = {m[0]: float(m[1]) for m in KATIB_FILTER.findall(lines[-1])}
    assert set(final) == {train.OBJECTIVE_METRIC, *train.ADDITIONAL_METRICS}
    metrics = json.loads((tmp_path / "train_metrics.json").read_text())
    assert final[train.METRIC_VAL_AUC] == pytest.approx(metrics["val_auc"], rel=1e-5)
    assert (tmp_path / "model/model.json").exists()


def test_cli_bad_data_exits_2_with_reason(tmp_path, capsys):
    assert train.main(["--data", str(tmp_path / "missing"), "--out", str(tmp_path / "x")]) == 2
    assert "not a prepared set" in capsys.readouterr().err


@pytest.mark.slow  # ~30 s: traces VGG16 twice (frozen, then fine-tuning)
def test_transfer_model_trains_through_both_fine_tuning_phases(sets, tmp_path, caplog):
    prepared, _ = sets
    caplog.set_level("INFO", logger="mammosynth")
    metrics = train.train_classifier(
        prepared,
        tmp_path,
        model="vgg16",
        weights=None,
        dense_units=8,
        epochs=2,
        batch_size=16,
        seed=0,
        patience=5,
        save_model=False,
        predict_test=False,
    )
    assert metrics["epochs_run"] == 2 and metrics["params"]["weights"] is None
    phases = [r.getMessage() for r in caplog.records if r.getMessage().startswith("phase:")]
    assert len(phases) == 2 and "trainable layers 0" in phases[0] and "trainable layers 0" not in phases[1]


def _external_set(root, size=32, n=20, seed=5):
    """An external set: a prepared set with one split ``test`` and the external record in meta.json."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    images = np.clip(rng.normal(0.3, 0.1, (n, size, size, 1)) + labels[:, None, None, None] * 0.2, 0, 1)
    shards.write_split(root, "test", images, labels, [f"ext-{i:03d}" for i in range(n)])
    shards.write_meta(root, size, {"external": {"source": "site-b"}})
    return root


def test_every_seed_model_predicts_the_external_set(sets, tmp_path):
    from mammosynth.evaluate import load_arm

    prepared, _ = sets
    external = _external_set(tmp_path / "external")
    train.train_arm(
        prepared, tmp_path / "arm", arm="real", seeds=[0, 1], epochs=1, batch_size=16, external_dir=external
    )
    arm = load_arm(tmp_path / "arm")
    assert sorted(arm["external_predictions"]) == [0, 1]  # seed 1 keeps no model/ but still predicted it
    for seed, df in arm["external_predictions"].items():
        assert list(df["image_id"]) == [f"ext-{i:03d}" for i in range(20)]
        assert list(df["label_id"]) == [i % 2 for i in range(20)]
        assert df["prob"].between(0, 1).all()
        assert not df["prob"].equals(arm["predictions"][seed]["prob"])
    with pytest.raises(ValueError, match="16px images, the model 32px"):
        train.train_classifier(
            prepared,
            tmp_path / "bad",
            epochs=1,
            batch_size=16,
            external_dir=_external_set(tmp_path / "e16", size=16),
        )

"""Stage `train`: one classifier on a prepared set (optionally mixed with a synthetic set).

`train_classifier` is the core (also each Katib trial, through the CLI); `train_arm` runs one
experimental arm over several seeds into the arm-directory layout the evaluate stage reads::

    <arm dir>/arm.json                     {"arm", "seeds", "spec", "metrics": {seed: {...}}}
    <arm dir>/seed-<s>/predictions.csv     image_id,label_id,prob  (TEST split)
    <arm dir>/seed-<s>/external_predictions.csv  the same on the external test set (``external_dir``)
    <arm dir>/seed-<s>/train_metrics.json  train_accuracy, val_auc, val_accuracy, val_loss, ...
    <arm dir>/seed-<s>/history.json        per-epoch Keras logs
    <arm dir>/seed-<s>/model/              (first ``save_model_seeds`` seeds) see mammosynth.models.io

The CLI prints ``name=value`` lines (per epoch and at the end) whose names are the ``METRIC_*``
constants below, the same names the Katib Experiment's objective and StdOut collector use.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from mammosynth import arms as armlib
from mammosynth import atomic, space
from mammosynth.arms import (
    ARM_FILE,
    EXTERNAL_PREDICTIONS_FILE,
    MODEL_DIR,
    PREDICTIONS_FILE,
    TRAIN_METRICS_FILE,
    parse_arm,
)
from mammosynth.config import ClassifierConfig
from mammosynth.logs import setup_logging

_DEFAULTS = ClassifierConfig()  # every default declared once, in the config

log = logging.getLogger(__name__)

METRIC_VAL_AUC = "val_auc"
METRIC_VAL_ACCURACY = "val_accuracy"
METRIC_VAL_LOSS = "val_loss"
METRIC_TRAIN_ACCURACY = "train_accuracy"
OBJECTIVE_METRIC = METRIC_VAL_AUC
ADDITIONAL_METRICS = (METRIC_VAL_ACCURACY, METRIC_VAL_LOSS, METRIC_TRAIN_ACCURACY)

__all__ = ["ARM_FILE", "MODEL_DIR", "PREDICTIONS_FILE", "TRAIN_METRICS_FILE", "train_arm", "train_classifier"]

HISTORY_FILE = "history.json"
CHECKPOINT_DIR = "checkpoints"

# Keys of **hp that steer the fine-tuning schedule instead of the builder.
_SCHEDULE_KEYS = ("warmup_fraction", "unfreeze_fraction", "fine_tune_lr_factor")


def _write_atomic(path: Path, text: str) -> None:
    atomic.write_text(path, text)


def _json(obj: Any) -> str:
    def default(o):
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, os.PathLike):
            return os.fspath(o)
        return str(o)

    return json.dumps(obj, indent=2, default=default, allow_nan=True)


def configure_devices(mixed_precision: bool | None = None, deterministic: bool | None = None):
    """Pick the distribution strategy and numeric policy for the visible devices.

    Mixed precision (float16 compute, float32 weights) only on GPUs: on CPU it is slower. A
    `tf.distribute.MirroredStrategy` when more than one GPU is visible, else the default strategy,
    so the training code path is identical. Op determinism on CPU makes a seed repeat exactly.

    Args:
        mixed_precision: force on/off; None = on iff a GPU is visible.
        deterministic: force op determinism on/off; None = on iff no GPU is visible.

    Returns:
        The `tf.distribute.Strategy` to build and compile models under.
    """
    import keras
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    use_mp = bool(gpus) if mixed_precision is None else mixed_precision
    keras.mixed_precision.set_global_policy("mixed_float16" if use_mp else "float32")
    if deterministic if deterministic is not None else not gpus:
        tf.config.experimental.enable_op_determinism()
    strategy = tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    log.info(
        "devices: %d GPU(s), policy %s, strategy %s",
        len(gpus),
        keras.mixed_precision.global_policy().name,
        type(strategy).__name__,
    )
    return strategy


def _metric_line(values: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())


def _make_progress_callback(epochs_total: int, print_metrics: bool):
    import keras

    class Progress(keras.callbacks.Callback):
        """Per-epoch progress to the log (and ``name=value`` lines to stdout for Katib)."""

        def on_epoch_begin(self, epoch, logs=None):
            self._t0 = time.monotonic()

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            vals = {
                "epoch": epoch + 1,
                METRIC_TRAIN_ACCURACY: float(logs.get("accuracy", math.nan)),
                "train_loss": float(logs.get("loss", math.nan)),
                METRIC_VAL_AUC: float(logs.get("val_auc", math.nan)),
                METRIC_VAL_ACCURACY: float(logs.get("val_accuracy", math.nan)),
                METRIC_VAL_LOSS: float(logs.get("val_loss", math.nan)),
            }
            log.info(
                "epoch %d/%d (%.1fs): %s",
                epoch + 1,
                epochs_total,
                time.monotonic() - self._t0,
                _metric_line(vals),
            )
            if print_metrics:
                print(_metric_line(vals), flush=True)

    return Progress()


def _make_best_keeper(patience: int, ckpt_dir: Path | None, state: dict[str, Any], min_epochs: int = 0):
    """Early stopping on validation AUC over all fine-tuning phases, with per-epoch checkpoints.

    No stop before ``min_epochs``: small CNNs from scratch often sit at chance for several epochs
    before they start to learn, and stopping then would report an untrained model.

    One object spans every ``fit`` call (Keras' EarlyStopping would reset between phases), keeps
    the best weights in memory, and writes ``last``/``best`` weights plus a state file each epoch
    so an interrupted run resumes where it stopped.
    """
    import keras

    class BestKeeper(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.state = state
            self.best_weights = None
            self.stopped = False

        def new_phase(self):
            self.state["wait"] = 0
            self.stopped = False

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            st = self.state
            st["history"].append({k: float(v) for k, v in logs.items()})
            st["epoch"] = epoch + 1
            value = float(logs.get("val_auc", math.nan))
            if not math.isnan(value) and (st["best_value"] is None or value > st["best_value"]):
                st.update(best_value=value, best_epoch=epoch + 1, wait=0)
                self.best_weights = self.model.get_weights()
                if ckpt_dir is not None:
                    self.model.save_weights(ckpt_dir / "best.weights.h5")
            else:
                st["wait"] += 1
                if st["wait"] >= patience and epoch + 1 >= min_epochs:
                    log.info(
                        "early stopping: val_auc has not improved for %d epochs (best %.4f at epoch %s)",
                        patience,
                        st["best_value"] or math.nan,
                        st["best_epoch"],
                    )
                    self.model.stop_training = True
                    self.stopped = True
            if ckpt_dir is not None:
                self.model.save_weights(ckpt_dir / "last.weights.h5")
                st["stopped"] = self.stopped
                _write_atomic(ckpt_dir / "state.json", _json(st))

    return BestKeeper()


def _write_predictions(path: Path, ids: np.ndarray, labels: np.ndarray, probs: np.ndarray) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["image_id", "label_id", "prob"])
    for i, y, p in zip(ids, labels, probs, strict=True):
        writer.writerow([str(i), int(y), f"{float(p):.8g}"])
    _write_atomic(path, buf.getvalue())


def _predict_external(net, external_dir: Any, size: int, batch_size: int, path: Path) -> None:
    """Predict the external test set with the trained model into ``path``.

    Raises:
        ValueError: the external set's image size differs from the model's.
    """
    from mammosynth.data import shards

    ext_size = int(shards.read_meta(external_dir)["image_size"])
    if ext_size != size:
        raise ValueError(
            f"external set {external_dir} has {ext_size}px images, the model {size}px: prepare the external "
            "set with the study's image_size (mammosynth.external.prepare_external)"
        )
    images, labels, ids = shards.read_split(external_dir, "test")
    probs = net.predict(images, batch_size=batch_size, verbose=0).reshape(-1)
    _write_predictions(path, ids, labels, probs)


def _validation_set(prepared_dir: Any, synthetic_dir: Any, use_real: bool) -> Any:
    """The set whose ``val`` split selects the checkpoint: real, or synthetic for TSTR.

    Raises:
        ValueError: TSTR with a synthetic set that has no ``val`` split.
    """
    from mammosynth.data import shards

    if use_real:
        return prepared_dir
    if synthetic_dir is None or "val" not in shards.splits(synthetic_dir):
        raise ValueError(
            "TSTR (use_real=False) selects its checkpoint on a synthetic validation split, but the "
            f"synthetic set {synthetic_dir} has no 'val' split: re-run synthesize with n_val_per_class"
        )
    return synthetic_dir


def train_classifier(
    prepared_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    model: str = _DEFAULTS.model,
    epochs: int = _DEFAULTS.epochs,
    batch_size: int = _DEFAULTS.batch_size,
    learning_rate: float = _DEFAULTS.learning_rate,
    dropout: float = _DEFAULTS.dropout,
    seed: int = 0,
    augment: bool = False,
    augment_config: dict[str, Any] | None = None,
    synthetic_dir: str | os.PathLike | None = None,
    synthetic_ratio: float = 0.0,
    use_real: bool = True,
    patience: int = _DEFAULTS.patience,
    min_epochs: int | None = None,
    class_balance: str | None = "weights",
    save_model: bool = True,
    export_saved_model: bool = False,
    arm: str | None = None,
    print_metrics: bool = False,
    predict_test: bool = True,
    external_dir: str | os.PathLike | None = None,
    **hp: Any,
) -> dict[str, Any]:
    """Train one classifier and write its outputs into ``out_dir``.

    Validation AUC drives early stopping and picks the weights kept: on the real ``val`` split, or — for
    TSTR (``use_real=False``) — on the synthetic set's ``val`` split, so a synthetic-only classifier never
    reads real data before its test predictions. The test split is only predicted, never looked at for
    choices.

    Args:
        prepared_dir: the real prepared set (splits ``train``, ``val``, ``test``).
        out_dir: output directory (``model/``, ``predictions.csv``, ``train_metrics.json``, ``history.json``).
        model: a name in `mammosynth.models.classifiers.BUILDERS`.
        epochs: maximum epochs (over all fine-tuning phases).
        batch_size: images per batch.
        learning_rate: Adam learning rate (of the first phase).
        dropout: dropout before the output unit.
        seed: seeds weights, shuffling, augmentation and synthetic sampling.
        augment: apply training augmentation (`mammosynth.data.augment`).
        augment_config: `AugmentConfig` fields overriding its defaults.
        synthetic_dir: a synthetic set (prepared set with split ``train``) to mix in.
        synthetic_ratio: synthetic images per real training image.
        use_real: train on the real training split (False = train on synthetic only, TSTR).
        patience: epochs without a val AUC improvement before stopping.
        min_epochs: no early stop before this epoch (default: half of ``epochs``).
        class_balance: None, ``"weights"`` (balanced loss weights) or ``"oversample"``.
        save_model: write ``out_dir/model/`` (`mammosynth.models.io.save_classifier`).
        export_saved_model: also export the TF SavedModel for serving.
        arm: arm name recorded in the metadata.
        print_metrics: print ``name=value`` lines to stdout (the Katib trial CLI does).
        predict_test: write ``predictions.csv`` for the test split.
        external_dir: an external test set (a prepared set with split ``test`` at the same image size,
            `mammosynth.external.prepare_external`); this seed's model also writes
            ``external_predictions.csv`` for it. Never used for any choice.
        **hp: builder hyperparameters (e.g. ``n_conv_layers``, ``filters``, ``dense_units``,
            ``weights``) and fine-tuning schedule keys (``warmup_fraction``, ...).

    Returns:
        The metrics written to ``train_metrics.json``.

    Raises:
        FileNotFoundError: the prepared set or a split is missing.
        ValueError: bad model name, image size below the model's minimum, or bad mixing options.
    """
    from mammosynth.data import shards
    from mammosynth.models import classifiers

    if model not in classifiers.BUILDERS:
        raise ValueError(f"unknown classifier {model!r}; choose one of: {', '.join(classifiers.BUILDERS)}")
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    size = int(shards.read_meta(prepared_dir)["image_size"])
    schedule_kw = {k: hp.pop(k) for k in _SCHEDULE_KEYS if k in hp}
    params = {
        "model": model,
        "epochs": epochs,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "dropout": dropout,
        "augment": augment,
        "synthetic_ratio": synthetic_ratio,
        "use_real": use_real,
        "patience": patience,
        "class_balance": class_balance,
        **hp,
        **schedule_kw,
    }
    if augment_config:
        params["augment_config"] = augment_config
    sources = {
        "prepared": prepared_dir,
        "synthetic": synthetic_dir,
        "ratio": synthetic_ratio,
        "use_real": use_real,
    }

    import keras

    keras.utils.set_random_seed(seed)
    strategy = configure_devices()
    train_ds, val_ds, counts = _data(sources, batch_size, seed, augment, augment_config, class_balance)
    log.info(
        "train %s seed %d: %d real + %d synthetic training images, image size %d",
        model,
        seed,
        counts["n_real"],
        counts["n_synthetic"],
        size,
    )
    with strategy.scope():
        net = classifiers.build_classifier(model, (size, size, 1), dropout=dropout, **hp)
    phases = classifiers.fine_tune_schedule(net, epochs, learning_rate, **schedule_kw)
    ckpt_dir = out / CHECKPOINT_DIR
    state, keeper = _resume(ckpt_dir, params, seed, sources, net, strategy, patience, min_epochs, epochs)
    progress = _make_progress_callback(epochs, print_metrics)
    train_seconds = _fit(net, phases, state, [keeper, progress], strategy, train_ds, val_ds)
    if keeper.best_weights is not None:
        net.set_weights(keeper.best_weights)
    metrics = _metrics(state, counts, use_real, seed, model, arm, size, train_seconds, params)
    _predict_test_sets(net, out, prepared_dir if predict_test else None, external_dir, size, batch_size)
    if save_model:
        _save_model(net, out, sources, counts, metrics, augment, export_saved_model)
    _write_atomic(out / HISTORY_FILE, _json(state["history"]))
    _write_atomic(out / TRAIN_METRICS_FILE, _json(metrics))
    shutil.rmtree(ckpt_dir, ignore_errors=True)  # finished: the checkpoints only served resuming
    _announce(metrics, train_seconds, print_metrics)
    return metrics


def _predict_test_sets(
    net, out: Path, prepared_dir: Any, external_dir: Any, size: int, batch_size: int
) -> None:
    """Predict the test splits: ``predictions.csv`` (prepared set), ``external_predictions.csv`` (external).

    Each is written only when its set is given; the external set is checked for the model's image size.
    """
    from mammosynth.data import shards

    if prepared_dir:
        images, labels, ids = shards.read_split(prepared_dir, "test")
        probs = net.predict(images, batch_size=batch_size, verbose=0).reshape(-1)
        _write_predictions(out / PREDICTIONS_FILE, ids, labels, probs)
    if external_dir:
        _predict_external(net, external_dir, size, batch_size, out / EXTERNAL_PREDICTIONS_FILE)


def _announce(metrics: dict[str, Any], train_seconds: float, print_metrics: bool) -> None:
    """Log the finished run; with ``print_metrics``, print the objective's ``name=value`` line for Katib."""
    if print_metrics:
        objective = (OBJECTIVE_METRIC, *ADDITIONAL_METRICS)
        print(_metric_line({k: float(metrics[k]) for k in objective if metrics[k] is not None}), flush=True)
    log.info(
        "trained %s seed %d: val_auc %.4f at epoch %s of %d (%.1fs)",
        metrics["model"],
        metrics["seed"],
        metrics[METRIC_VAL_AUC] or math.nan,
        metrics["best_epoch"],
        metrics["epochs_run"],
        train_seconds,
    )


def _data(sources: dict[str, Any], batch_size: int, seed: int, augment, augment_config, class_balance):
    """The training dataset (real and/or synthetic mix), the validation dataset and the image counts."""
    from mammosynth.data import shards
    from mammosynth.data.augment import AugmentConfig, build_augmenter

    augmenter = build_augmenter(AugmentConfig.from_dict(augment_config), seed=seed) if augment else None
    train_ds, counts = shards.mixed_dataset(
        sources["prepared"],
        sources["synthetic"],
        sources["ratio"],
        use_real=sources["use_real"],
        batch_size=batch_size,
        shuffle=True,
        seed=seed,
        augment=augmenter,
        class_balance=class_balance,
    )
    val_dir = _validation_set(sources["prepared"], sources["synthetic"], sources["use_real"])
    return train_ds, shards.dataset(val_dir, "val", batch_size=batch_size), counts


def _resume(ckpt_dir: Path, params, seed, sources, net, strategy, patience, min_epochs, epochs):
    """The training state (fresh, or resumed from matching checkpoints) and its best-weights keeper."""
    fingerprint = _json(
        {
            "params": params,
            "seed": seed,
            "prepared": os.fspath(sources["prepared"]),
            "synthetic": os.fspath(sources["synthetic"]) if sources["synthetic"] else None,
        }
    )
    state = {
        "fingerprint": fingerprint,
        "epoch": 0,
        "best_value": None,
        "best_epoch": None,
        "wait": 0,
        "history": [],
        "stopped": False,
    }
    resumed = _try_resume(ckpt_dir, fingerprint, net)
    if resumed is not None:
        state = resumed
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    keeper = _make_best_keeper(patience, ckpt_dir, state, epochs // 2 if min_epochs is None else min_epochs)
    if resumed is not None and (ckpt_dir / "best.weights.h5").exists():
        # Best weights so far live on disk; load them into memory via a throwaway copy of the net.
        keeper.best_weights = _weights_from(ckpt_dir / "best.weights.h5", net, strategy)
    return state, keeper


def _fit(net, phases, state: dict[str, Any], callbacks: list, strategy, train_ds, val_ds) -> float:
    """Run the fine-tuning phases not done yet (``callbacks[0]`` is the keeper); return the seconds."""
    import keras

    from mammosynth.models import classifiers

    keeper = callbacks[0]
    t0 = time.monotonic()
    start = 0
    for phase in phases:
        end = start + phase.epochs
        if state["stopped"] or state["epoch"] >= end:
            start = end
            continue
        with strategy.scope():
            classifiers.set_trainable(net, phase.trainable_layers)
            net.compile(
                optimizer=keras.optimizers.Adam(phase.learning_rate),
                loss=keras.losses.BinaryCrossentropy(),
                metrics=[keras.metrics.BinaryAccuracy(name="accuracy"), keras.metrics.AUC(name="auc")],
            )
        keeper.new_phase()
        log.info(
            "phase: epochs %d-%d, backbone trainable layers %s, lr %.3g",
            start + 1,
            end,
            phase.trainable_layers,
            phase.learning_rate,
        )
        net.fit(
            train_ds,
            validation_data=val_ds,
            epochs=end,
            initial_epoch=max(start, state["epoch"]),
            callbacks=callbacks,
            verbose=0,
            shuffle=False,
        )
        if keeper.stopped:
            state["stopped"] = True
        start = end
    return time.monotonic() - t0


def _metrics(state, counts, use_real, seed, model, arm, size, train_seconds, params) -> dict[str, Any]:
    """The ``train_metrics.json`` record: the best epoch's values and the run's provenance."""
    history = state["history"]
    best_epoch = state["best_epoch"] or len(history)
    best_logs = history[best_epoch - 1] if history else {}
    return {
        METRIC_TRAIN_ACCURACY: best_logs.get("accuracy"),
        METRIC_VAL_AUC: state["best_value"] if state["best_value"] is not None else best_logs.get("val_auc"),
        METRIC_VAL_ACCURACY: best_logs.get("val_accuracy"),
        METRIC_VAL_LOSS: best_logs.get("val_loss"),
        "best_epoch": best_epoch,
        "epochs_run": len(history),
        "early_stopped": bool(state["stopped"]),
        "n_train_real": counts["n_real"],
        "n_train_synthetic": counts["n_synthetic"],
        "val_source": "real" if use_real else "synthetic",
        "seed": seed,
        "model": model,
        "arm": arm,
        "image_size": size,
        "train_seconds": round(train_seconds, 2),
        "params": params,
    }


def _save_model(net, out: Path, sources, counts, metrics, augment: bool, export_saved_model: bool) -> None:
    """Write ``out/model/`` with the metadata the final model and serving read."""
    from mammosynth.data import shards
    from mammosynth.models.io import save_classifier

    synthetic_dir = sources["synthetic"]
    syn_meta = shards.read_meta(synthetic_dir) if synthetic_dir and counts["n_synthetic"] else {}
    real_meta = shards.read_meta(sources["prepared"])
    model_meta = {
        "image_size": metrics["image_size"],
        "arch": metrics["model"],
        "seed": metrics["seed"],
        "training": {  # the final model adds data_source / trained_on (study.provenance)
            "arm": metrics["arm"],
            "use_real": sources["use_real"],
            "augment": augment,
            "synthetic_ratio": sources["ratio"],
            "n_train_real": counts["n_real"],
            "n_train_synthetic": counts["n_synthetic"],
            "synthetic_lineage": syn_meta.get("lineage"),
            "data_source": real_meta.get(
                "data_source"
            ),  # ingest's record (read back by provenance.data_source)
        },
        "val_auc": metrics[METRIC_VAL_AUC],
        "params": metrics["params"],
    }
    save_classifier(net, out / MODEL_DIR, model_meta, export_saved_model=export_saved_model)


def _try_resume(ckpt_dir: Path, fingerprint: str, net) -> dict[str, Any] | None:
    state_path = ckpt_dir / "state.json"
    if not state_path.exists() or not (ckpt_dir / "last.weights.h5").exists():
        return None
    state = json.loads(state_path.read_text())
    if state.get("fingerprint") != fingerprint:
        log.warning("ignoring checkpoints in %s: written by a run with other parameters", ckpt_dir)
        shutil.rmtree(ckpt_dir, ignore_errors=True)
        return None
    net.load_weights(ckpt_dir / "last.weights.h5")
    log.info("resuming from %s after epoch %d (optimizer state restarts)", ckpt_dir, state["epoch"])
    return state


def _weights_from(path: Path, net, strategy) -> list[np.ndarray]:
    import keras

    with strategy.scope():
        twin = keras.models.clone_model(net)
    twin.load_weights(path)
    return twin.get_weights()


def train_arm(
    prepared_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    arm: str,
    seeds: list[int],
    synthetic_dir: str | os.PathLike | None = None,
    default_ratio: float = 0.5,
    save_model_seeds: int = 1,
    **train_kwargs: Any,
) -> dict[str, Any]:
    """Train one experimental arm for each seed into ``out_dir/seed-<s>/`` and write ``arm.json``.

    With G generators (``synthetic_dir/gan-seed-<g>/``, `mammosynth.synthesize.generator_sets`),
    classifier seed k trains on generator k mod G's set (`mammosynth.arms.generator_index`), so the
    across-seed spread of a synthetic arm includes generator randomness; ``arm.json`` records the pairing
    under ``generators``.

    Args:
        prepared_dir: the real prepared set.
        out_dir: the arm directory.
        arm: an arm name (`mammosynth.arms.parse_arm`), e.g. ``real+synthetic@0.5``.
        seeds: one run per seed.
        synthetic_dir: the synthetic set, or the folder of per-generator sets (needed by synthetic arms).
        default_ratio: synthetic ratio for arm names without ``@ratio``.
        save_model_seeds: only the first this-many seeds keep their ``model/`` directory.
        **train_kwargs: passed to `train_classifier` (model, epochs, batch_size, learning_rate, ...).

    Returns:
        The arm record written to ``arm.json``.

    Raises:
        ValueError: a synthetic arm without ``synthetic_dir``, or no seeds.
    """
    from mammosynth.synthesize import generator_sets

    spec = parse_arm(arm, default_ratio)
    if spec.uses_synthetic and not synthetic_dir:
        raise ValueError(f"arm {arm!r} uses synthetic images: pass synthetic_dir (the synthesize output)")
    if not seeds:
        raise ValueError(f"arm {arm!r}: no seeds given")
    sets = generator_sets(synthetic_dir) if spec.uses_synthetic else []
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    per_seed: dict[str, Any] = {}
    generators: dict[str, int] = {}
    for i, seed in enumerate(seeds):
        log.info("arm %s: seed %d (%d/%d)", arm, seed, i + 1, len(seeds))
        syn = None
        if sets:
            g = armlib.generator_index(int(seed), len(sets))
            generators[str(seed)] = g
            syn = sets[g]
        per_seed[str(seed)] = train_classifier(
            prepared_dir,
            armlib.seed_dir(out, seed),
            seed=int(seed),
            use_real=spec.use_real,
            augment=spec.augment,
            synthetic_dir=syn,
            synthetic_ratio=spec.synthetic_ratio,
            save_model=i < save_model_seeds,
            arm=arm,
            **train_kwargs,
        )
    return armlib.write_arm(out, spec, seeds, per_seed, generators=generators)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mammosynth train",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--data", required=True, help="prepared set (local path or s3:// URI)")
    p.add_argument("--out", required=True, help="output directory (arm directory with --arm)")
    p.add_argument("--model", default=_DEFAULTS.model, help="classifier builder name")
    p.add_argument("--epochs", type=int, default=_DEFAULTS.epochs)
    p.add_argument("--batch-size", type=int, default=_DEFAULTS.batch_size)
    p.add_argument(
        "--patience", type=int, default=_DEFAULTS.patience, help="early-stopping patience on val AUC"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", default=None, help="comma-separated seeds (with --arm)")
    p.add_argument("--arm", default=None, help="run a whole arm (e.g. real+synthetic@0.5) over --seeds")
    p.add_argument("--synthetic", default=None, help="synthetic set to mix in (path or s3:// URI)")
    p.add_argument(
        "--synthetic-ratio",
        type=float,
        default=None,
        help="synthetic:real ratio (default 0.5 when --synthetic is given, else 0)",
    )
    p.add_argument("--synthetic-only", action="store_true", help="train on synthetic images only (TSTR)")
    p.add_argument("--augment", action="store_true", help="training augmentation")
    p.add_argument("--class-balance", choices=["weights", "oversample", "none"], default="weights")
    space.add_flags(p)
    p.add_argument(
        "--weights", default=None, help="transfer models: 'imagenet', a local notop weights file, or 'none'"
    )
    p.add_argument("--no-save-model", action="store_true", help="skip writing model/ (Katib trials)")
    p.add_argument("--export-saved-model", action="store_true", help="also export the TF SavedModel")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    setup_logging()
    from mammosynth import storage

    data = os.fspath(storage.localize(args.data))
    synthetic = os.fspath(storage.localize(args.synthetic)) if args.synthetic else None
    hp: dict[str, Any] = {}
    for key in (p.name for p in space.SEARCH_SPACE if p.name not in space.TRAIN_DEFAULTS):
        if getattr(args, key) is not None:
            hp[key] = getattr(args, key)
    if args.weights is not None:
        hp["weights"] = None if args.weights.lower() == "none" else args.weights
    common = dict(
        model=args.model,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        dropout=args.dropout,
        patience=args.patience,
        class_balance=None if args.class_balance == "none" else args.class_balance,
        export_saved_model=args.export_saved_model,
        print_metrics=True,
        **hp,
    )
    try:
        if args.arm:
            seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else [args.seed]
            train_arm(
                data,
                args.out,
                arm=args.arm,
                seeds=seeds,
                synthetic_dir=synthetic,
                default_ratio=0.5 if args.synthetic_ratio is None else args.synthetic_ratio,
                save_model_seeds=0 if args.no_save_model else 1,
                **common,
            )
        else:
            ratio = args.synthetic_ratio if args.synthetic_ratio is not None else (0.5 if synthetic else 0.0)
            train_classifier(
                data,
                args.out,
                seed=args.seed,
                augment=args.augment,
                synthetic_dir=synthetic,
                synthetic_ratio=ratio,
                use_real=not args.synthetic_only,
                save_model=not args.no_save_model,
                **common,
            )
    except (FileNotFoundError, ValueError, TypeError) as exc:
        print(f"mammosynth train: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The model directory every consumer reads: training writes it, serving and reports load it.

Layout: ``model.keras`` (Keras 3 native), ``saved_model/<version>/`` (TF SavedModel with a
``serving_default`` signature, what KServe's TensorFlow runtime expects under a numeric folder),
and ``model.json`` (name, version, image_size, channels, class_names, threshold, ...).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from mammosynth import atomic
from mammosynth.config import CLASS_NAMES, LABEL_CONVENTION

MODEL_FILE = "model.keras"
META_FILE = "model.json"
SAVED_MODEL_DIR = "saved_model"


def save_classifier(
    model, model_dir: str | os.PathLike, meta: dict[str, Any], export_saved_model: bool = True
) -> Path:
    """Write a trained classifier atomically (a temp dir renamed into place).

    Args:
        model: a built keras model taking (S,S,1) floats in [0,1], returning P(malignant) (N,1).
        model_dir: target directory (replaced if present).
        meta: at least ``image_size``; ``name``, ``version`` etc. get defaults.
        export_saved_model: also export ``saved_model/<version>/`` for the TF serving runtime.
    """
    import keras

    target = Path(model_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    full = {
        "name": "mammosynth",
        "version": "1",
        "channels": 1,
        "class_names": list(CLASS_NAMES),
        "positive_class": CLASS_NAMES[1],
        "label_convention": LABEL_CONVENTION,
        "threshold": 0.5,
        "keras_version": keras.__version__,
        **meta,
    }
    if "image_size" not in full:
        raise ValueError("model meta needs image_size")
    with atomic.replace_dir(target) as tmp:
        model.save(tmp / MODEL_FILE)
        if export_saved_model:
            model.export(
                str(tmp / SAVED_MODEL_DIR / str(full["version"])), format="tf_saved_model", verbose=False
            )
        (tmp / META_FILE).write_text(json.dumps(full, indent=2, default=str))
    return target


def load_meta(model_dir: str | os.PathLike) -> dict[str, Any]:
    """Read the metadata saved next to a model (input size, classes, training config)."""
    path = Path(model_dir) / META_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} missing: {model_dir} is not a mammosynth model directory")
    return json.loads(path.read_text())


def load_classifier(model_dir: str | os.PathLike):
    """Load ``(keras_model, meta)`` from a model directory.

    Raises:
        FileNotFoundError: the directory lacks model.keras or model.json.
    """
    import keras

    import mammosynth.models.layers  # noqa: F401  (registers custom layers for deserialisation)

    meta = load_meta(model_dir)
    path = Path(model_dir) / MODEL_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} missing: {model_dir} is not a mammosynth model directory")
    return keras.models.load_model(path, compile=False), meta

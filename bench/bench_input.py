"""Input-pipeline benchmark at 64²: our tf.data pipeline vs the two ways a user would augment instead.

Entries (interleaved repeats in this process, see `bench._common`; ratio > 1 = ours better):

* ``input_vs_keras3_layers``: images/s of `mammosynth.data.shards.dataset` (shards streamed, cached,
  shuffled, augmented as batches by one fused affine warp in a parallel map, prefetched) vs the Keras
  3 idiom: the arrays in ``tf.data.Dataset.from_tensor_slices``, shuffled, batched, then batched
  ``RandomRotation`` / ``RandomTranslation`` / ``RandomZoom`` / ``RandomFlip`` in a parallel map,
  prefetched. The honest baseline.
* ``input_vs_study_imagedatagenerator``: vs the study's way (every image in one NumPy array through
  ``tf_keras`` ``ImageDataGenerator.flow`` with the same rotation/shift/shear/zoom/flip).
* ``input_vs_model_simple_cnn_64px``: input-only images/s (ours) vs model-only training images/s of
  the simple CNN on an in-memory batch; ratio > 1 means the input pipeline keeps up with training.
* ``input_fraction_of_warp_ceiling``: ours vs the bare ``ImageProjectiveTransformV3`` kernel alone on the
  same in-memory batches in the same parallel map (no decode, shuffle, cast or random draws): the
  kernel is ~90% of our augmentation, so this is our limit; ``ratio`` is the fraction of it reached.
  The ImageDataGenerator entry carries ``warp_ceiling_vs_baseline`` (kernel rate / ImageDataGenerator
  rate): where it is below 3, the 3× goal is out of reach with this kernel on this CPU.
* ``classifier_fraction_of_peak``: achieved FLOP/s of the simple CNN's compiled training step vs the
  machine probe in this process.

All sides produce the same number of augmented float images. Keep it under a minute on 2 CPU cores.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from bench import _common  # noqa: E402

N_IMAGES = 64 if _common.tiny() else 512
SIZE = 32 if _common.tiny() else 64
BATCH = 32
EPOCHS = 1 if _common.tiny() else 2  # timed epochs per repeat, after one warm-up epoch


def _make_set(root: Path) -> None:
    from mammosynth.data import shards

    rng = np.random.default_rng(0)
    images = rng.random((N_IMAGES, SIZE, SIZE, 1), dtype=np.float32)
    labels = np.arange(N_IMAGES) % 2
    shards.write_split(root, "train", images, labels, [f"b{i:05d}" for i in range(N_IMAGES)], shard_size=128)
    shards.write_meta(root, SIZE)


def _count(ds, epochs: int) -> float:
    """Images/s of iterating ``ds`` (yielding (x, ...) batches) for ``epochs`` epochs."""
    t0, seen = time.perf_counter(), 0
    for _ in range(epochs):
        for x, *_ in ds:
            seen += int(x.shape[0])
    return seen / (time.perf_counter() - t0)


def _keras3_idiom(x_all, y_all):
    """The Keras 3 documentation's input idiom with the study's augmentation as separate layers."""
    import keras
    import tensorflow as tf

    aug = keras.Sequential(
        [
            keras.layers.RandomRotation(0.05, fill_mode="reflect", seed=1),
            keras.layers.RandomTranslation(0.1, 0.1, fill_mode="reflect", seed=2),
            keras.layers.RandomZoom(0.1, fill_mode="reflect", seed=3),
            keras.layers.RandomFlip("horizontal", seed=4),
        ]
    )
    ds = tf.data.Dataset.from_tensor_slices((x_all, y_all)).shuffle(len(x_all), seed=0).batch(BATCH)
    ds = ds.map(lambda x, y: (aug(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def _study_flow(x_all, y_all):
    from tf_keras.preprocessing.image import ImageDataGenerator

    gen = ImageDataGenerator(
        rotation_range=18,
        width_shift_range=0.1,
        height_shift_range=0.1,
        shear_range=5.7,
        zoom_range=0.1,
        horizontal_flip=True,
        fill_mode="reflect",
    )
    flow = gen.flow(x_all, y_all, batch_size=BATCH, shuffle=True, seed=0)
    next(flow)

    def run() -> float:
        t0, seen = time.perf_counter(), 0
        for _ in range(EPOCHS * len(flow)):
            xb, _yb = next(flow)
            seen += len(xb)
        return seen / (time.perf_counter() - t0)

    return run


def _warp_ceiling(x_all):
    """Images/s of the bare bilinear reflect warp over in-memory batches (the kernel ours is bound by)."""
    import tensorflow as tf

    x = tf.constant(x_all)
    transforms = tf.constant(np.tile([[1.02, 0.05, 0.4, -0.05, 0.98, 0.3, 0.0, 0.0]], (BATCH, 1)), tf.float32)

    def warp(b):
        return tf.raw_ops.ImageProjectiveTransformV3(
            images=b,
            transforms=transforms[: tf.shape(b)[0]],
            output_shape=tf.shape(b)[1:3],
            fill_value=0.0,
            interpolation="BILINEAR",
            fill_mode="REFLECT",
        )

    ds = tf.data.Dataset.from_tensor_slices(x).batch(BATCH).cache()
    ds = ds.map(warp, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
    _count(ds, 1)
    return lambda: _count(ds, EPOCHS)


def _model_rates(x_all, y_all, n: int) -> tuple[list[float], int]:
    """Model-only training images/s of the simple CNN (``n`` repeats) and FLOPs of one step."""
    import tensorflow as tf

    from mammosynth.models.classifiers import build_simple_cnn

    model = build_simple_cnn((SIZE, SIZE, 1))
    model.compile(optimizer="adam", loss="binary_crossentropy")
    xb, yb = tf.constant(x_all[:BATCH]), tf.constant(y_all[:BATCH].astype(np.float32)[:, None])
    step = tf.function(lambda x, y: model.train_step((x, y)), reduce_retracing=True)
    step(xb, yb)
    rates = []
    for _ in range(n):
        k = 3 if _common.tiny() else 20
        t0 = time.perf_counter()
        for _ in range(k):
            out = step(xb, yb)
        float(out["loss"])
        rates.append(k * BATCH / (time.perf_counter() - t0))
    return rates, _common.graph_flops(step, xb, yb)


def run(out: list[dict]) -> list[dict]:
    import tensorflow as tf

    from mammosynth.data import shards
    from mammosynth.data.augment import STUDY_AUGMENT, build_augmenter

    tf.keras.utils.set_random_seed(0)
    n = _common.repeats()
    with tempfile.TemporaryDirectory(prefix="bench-input-") as tmp:
        root = Path(tmp)
        _make_set(root)
        ds = shards.dataset(
            root,
            "train",
            batch_size=BATCH,
            shuffle=True,
            seed=0,
            augment=build_augmenter(STUDY_AUGMENT, seed=0),
        )
        _count(ds, 1)  # warm-up epoch: trace the map function, fill the cache
        x_all, y_all, _ = shards.read_split(root, "train")
        keras3 = _keras3_idiom(x_all, y_all)
        _count(keras3, 1)

        def ours() -> float:
            return _count(ds, EPOCHS)

        o, b = _common.interleave(ours, lambda: _count(keras3, EPOCHS), n)
        out.append(_common.entry("input_vs_keras3_layers", o, b, "images/s", True, size=SIZE))
        o, b = _common.interleave(ours, _study_flow(x_all, y_all), n)
        o_w, ceiling = _common.interleave(ours, _warp_ceiling(x_all), n)
        idg = _common.entry("input_vs_study_imagedatagenerator", o, b, "images/s", True, size=SIZE)
        idg["warp_ceiling_vs_baseline"] = _common._round(statistics.median(ceiling) / statistics.median(b))
        out.append(idg)
        out.append(
            _common.entry(
                "input_fraction_of_warp_ceiling",
                o_w,
                ceiling,
                "images/s",
                True,
                size=SIZE,
                note="baseline = bare ImageProjectiveTransformV3 (bilinear, reflect) in the same map",
            )
        )
        rates, flops = _model_rates(x_all, y_all, n)
        out.append(_common.entry("input_vs_model_simple_cnn_64px", o, rates, "images/s", True, size=SIZE))
        out.append(
            _common.fraction_of_peak(
                "classifier_fraction_of_peak", flops, [r / BATCH for r in rates], _common.probe_flops()
            )
        )
    return out


def main() -> int:
    entries: list[dict] = []
    run(entries)
    _common.emit(entries)
    return 0


if __name__ == "__main__":
    sys.exit(main())

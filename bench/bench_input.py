"""Input-pipeline benchmark at 64²: our tf.data pipeline vs the study's ImageDataGenerator.

Entries (one JSON object per line: ``name, ours, baseline, unit, ratio``; ratio > 1 = ours better):

* ``input_augmented_64px``: images/s of `mammosynth.data.shards.dataset` (shards streamed, cached,
  shuffled, augmented as batches by Keras layers in a parallel map, prefetched) vs the study's way
  (every image in one NumPy array through ``tf_keras`` ``ImageDataGenerator.flow`` with the same
  rotation/shift/shear/zoom/flip). Both produce the same number of augmented float images.
* ``input_vs_model_simple_cnn_64px``: input-only images/s (ours) vs model-only training images/s
  of the simple CNN on an in-memory batch; ratio > 1 means the input pipeline keeps up with training.

Both sides run in this process on the same data. Keep it under a minute on 2 CPU cores.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

N_IMAGES = 512
SIZE = 64
BATCH = 32
EPOCHS = 2  # timed epochs, after one warm-up epoch that fills the cache


def _make_set(root: Path) -> None:
    from mammosynth.data import shards

    rng = np.random.default_rng(0)
    images = rng.random((N_IMAGES, SIZE, SIZE, 1), dtype=np.float32)
    labels = np.arange(N_IMAGES) % 2
    shards.write_split(root, "train", images, labels, [f"b{i:05d}" for i in range(N_IMAGES)], shard_size=128)
    shards.write_meta(root, SIZE)


def _images_per_s(iterate, n_batches: int) -> float:
    t0 = time.perf_counter()
    seen = iterate(n_batches)
    return seen / (time.perf_counter() - t0)


def run(out: list[dict]) -> list[dict]:
    import tensorflow as tf

    from mammosynth.data import shards
    from mammosynth.data.augment import STUDY_AUGMENT, build_augmenter
    from mammosynth.models.classifiers import build_simple_cnn

    tf.keras.utils.set_random_seed(0)
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
        for _ in ds:  # warm-up epoch: trace the map function, fill the cache
            pass

        def ours(_n):
            seen = 0
            for _ in range(EPOCHS):
                for x, _y, *_ in ds:
                    seen += int(x.shape[0])
            return seen

        ours_ips = _images_per_s(ours, 0)

        # The study: the whole split as one float array, augmented per image on the Python side.
        from tf_keras.preprocessing.image import ImageDataGenerator

        x_all, y_all, _ = shards.read_split(root, "train")
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
        steps = EPOCHS * len(flow)

        def baseline(_n):
            seen = 0
            for _ in range(steps):
                xb, _yb = next(flow)
                seen += len(xb)
            return seen

        base_ips = _images_per_s(baseline, 0)
        out.append(
            {
                "name": "input_augmented_64px",
                "ours": round(ours_ips, 1),
                "baseline": round(base_ips, 1),
                "unit": "images/s",
                "ratio": round(ours_ips / base_ips, 3),
            }
        )

        # Model-only: training steps on one in-memory batch, no input pipeline at all.
        model = build_simple_cnn((SIZE, SIZE, 1))
        model.compile(optimizer="adam", loss="binary_crossentropy")
        xb, yb = x_all[:BATCH], y_all[:BATCH].astype(np.float32)
        model.train_on_batch(xb, yb)
        n_steps = 20
        t0 = time.perf_counter()
        for _ in range(n_steps):
            model.train_on_batch(xb, yb)
        model_ips = n_steps * BATCH / (time.perf_counter() - t0)
        out.append(
            {
                "name": "input_vs_model_simple_cnn_64px",
                "ours": round(ours_ips, 1),
                "baseline": round(model_ips, 1),
                "unit": "images/s",
                "ratio": round(ours_ips / model_ips, 3),
            }
        )
    return out


def main() -> int:
    entries: list[dict] = []
    run(entries)
    for e in entries:
        print(json.dumps(e))
    return 0


if __name__ == "__main__":
    sys.exit(main())

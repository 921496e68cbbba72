"""`make bench-gpu`: GPU benchmarks at 224² -> runs/bench/bench-gpu.json (same entry format as bench.json).

Entries (interleaved repeats in this process, see `bench._common`; ratio > 1 = ours better):

* ``gpu_<model>_224_mixed_vs_fp32``: training images/s of InceptionResNetV2 and VGG16 (weights=None,
  whole network trainable, batch 32) with the ``mixed_float16`` policy (ours) vs float32.
* ``gpu_cgan_xla_vs_noxla``: stable-cGAN training steps/s at 64², batch 32, XLA on vs off.
* ``gpu_serving_batched_vs_single``: images/s of the serving forward pass
  (`mammosynth.serving.model.compile_inference`) at micro-batches of 32 vs one image per call.

Without a GPU it says so and exits 0 (nothing written). ``--tiny`` runs the same code on any device at
smoke-test sizes (VGG16 at 32², no InceptionResNetV2, no XLA) so CI can check it; its numbers mean nothing.
Aims at under 5 minutes on one GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _train_rate(name: str, size: int, batch: int, steps: int, mixed: bool) -> Callable[[], float]:
    import keras
    import numpy as np

    from mammosynth.models.classifiers import build_classifier

    keras.config.set_dtype_policy("mixed_float16" if mixed else "float32")
    try:
        model = build_classifier(name, (size, size, 1), weights=None)
        model.trainable = True
        for layer in model._flatten_layers():
            layer.trainable = True
        model.compile(optimizer="adam", loss="binary_crossentropy")  # Keras adds loss scaling
    finally:
        keras.config.set_dtype_policy("float32")
    rng = np.random.default_rng(0)
    x = rng.random((batch, size, size, 1), dtype=np.float32)
    y = rng.integers(0, 2, (batch, 1)).astype(np.float32)
    model.train_on_batch(x, y)  # trace + compile

    def run() -> float:
        t0 = time.perf_counter()
        for _ in range(steps):
            loss = model.train_on_batch(x, y)
        float(np.asarray(loss).ravel()[0])
        return steps * batch / (time.perf_counter() - t0)

    return run


def _gan_rate(size: int, batch: int, steps: int, jit: bool) -> Callable[[], float]:
    import numpy as np
    import tensorflow as tf

    from mammosynth.models.cgan import build_gan, default_optimizers

    model = build_gan("stable-cgan", size, 64, seed=0)
    model.compile(*default_optimizers("stable-cgan", 2e-4))
    fn = tf.function(model.train_step, jit_compile=jit)
    rng = np.random.default_rng(0)
    data = (tf.constant(rng.random((batch, size, size, 1), dtype=np.float32)), tf.zeros((batch,), tf.int32))
    fn(data)

    def run() -> float:
        t0 = time.perf_counter()
        for _ in range(steps):
            out = fn(data)
        float(out["d_loss"])
        return steps / (time.perf_counter() - t0)

    return run


def _serving_rates(size: int, n_images: int) -> tuple[Callable[[], float], Callable[[], float]]:
    import numpy as np

    from mammosynth.models.classifiers import build_simple_cnn
    from mammosynth.serving.model import compile_inference

    infer = compile_inference(build_simple_cnn((size, size, 1)), size)
    x = np.random.default_rng(0).random((32, size, size, 1), dtype=np.float32)
    infer(x)
    infer(x[:1])

    def batched() -> float:
        t0 = time.perf_counter()
        for _ in range(n_images // 32):
            infer(x)
        return (n_images // 32) * 32 / (time.perf_counter() - t0)

    def single() -> float:
        t0 = time.perf_counter()
        for i in range(n_images // 4):
            infer(x[i % 32 : i % 32 + 1])
        return (n_images // 4) / (time.perf_counter() - t0)

    return batched, single


def run(tiny: bool) -> list[dict]:
    """Measure every GPU entry (``tiny``: smoke sizes). Returns the entries."""
    from bench import _common

    n = 1 if tiny else 3
    size, batch, steps = (32, 4, 2) if tiny else (224, 32, 10)
    entries = []
    for name in ["vgg16"] if tiny else ["inception_resnet_v2", "vgg16"]:
        o, b = _common.interleave(
            _train_rate(name, size, batch, steps, True), _train_rate(name, size, batch, steps, False), n
        )
        entries.append(_common.entry(f"gpu_{name}_{size}_mixed_vs_fp32", o, b, "images/s", True, batch=batch))
    gan_size, gan_steps = (32, 2) if tiny else (64, 30)
    if not tiny:
        o, b = _common.interleave(
            _gan_rate(gan_size, 32, gan_steps, True), _gan_rate(gan_size, 32, gan_steps, False), n
        )
        entries.append(_common.entry("gpu_cgan_xla_vs_noxla", o, b, "steps/s", True, size=gan_size))
    o, b = _common.interleave(*_serving_rates(64, 64 if tiny else 4096), n)
    entries.append(_common.entry("gpu_serving_batched_vs_single", o, b, "images/s", True, size=64))
    return entries


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench/bench-gpu.json"))
    parser.add_argument("--tiny", action="store_true", help="smoke-test sizes on any device (CI)")
    args = parser.parse_args(argv)
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus and not args.tiny:
        print("bench-gpu: no GPU visible to TensorFlow on this machine; nothing measured (exit 0)")
        return 0
    for gpu in gpus:
        tf.config.experimental.set_memory_growth(gpu, True)
    entries = run(args.tiny)
    for e in entries:
        e["device"] = gpus[0].name if gpus else "cpu"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(entries, indent=2))
    os.replace(tmp, args.out)
    for e in entries:
        print(json.dumps(e))
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

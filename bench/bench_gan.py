"""GAN training throughput: our compiled `StableCGAN.train_step` vs keras-io's conditional-GAN step.

The peer is the keras-io ``conditional_gan`` example's ``train_step`` (alternating updates: the
discriminator on fresh fakes, then the generator on new fakes through the updated discriminator),
trained on the *same* networks with the same hinge losses, DiffAugment and EMA, so the difference is
our simultaneous update (one generator pass shared by both losses) only. Entries (interleaved
repeats in this process, see `bench._common`):

* ``gan_vs_kerasio_compiled``: both steps compiled with ``tf.function`` (how ``fit`` runs
  ``train_step``; XLA off, as `mammosynth.gan` trains on CPU). The honest baseline.
* ``gan_vs_kerasio_xla``: the peer XLA-compiled as Keras 3 ``fit(jit_compile="auto")`` would for
  these layers, ours as above (secondary; skipped in tiny mode: XLA compiles for tens of seconds).
* ``gan_vs_eager_kerasio``: the peer step by step in eager mode (the old, weak baseline; secondary).
* ``gan_vs_kerasio_compiled`` also carries the breakdown that bounds it: ``flops_ours`` /
  ``flops_peer`` (profiler-counted FLOPs per step), ``generator_forward_ms`` (one training-mode
  generator pass) and ``discriminator_forward_ms`` (one D pass on B images). Both steps update D
  from a forward and backward pass on B real + B fake images and send the generator's gradient back
  through D on the B fakes; the peer also runs a second generator pass and a second D pass on the
  fakes, which ours shares. That is all a step with the same networks and losses can save, so
  ``time_bound`` = peer_ms / (peer_ms − generator_forward_ms − discriminator_forward_ms) bounds
  ``ratio``.
* ``flop_bound`` / ``ratio_flop_normalised`` (on ``gan_vs_kerasio_compiled``): the FLOP ratio
  peer/ours, the most a step doing the same maths in fewer FLOPs can gain at equal FLOP/s, and
  ``ratio`` divided by it (≈ 1: the gap to a goal above ``flop_bound`` is the FLOPs, not speed).
* ``gan_fraction_of_peak``: achieved FLOP/s of our step vs the machine probe in this process.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from bench import _common  # noqa: E402
from mammosynth.models.cgan import build_gan, default_optimizers, diff_augment  # noqa: E402

IMAGE_SIZE = 32 if _common.tiny() else 64
BATCH = 8 if _common.tiny() else 32
LATENT = 64
STEPS = 2 if _common.tiny() else 12


def kerasio_step(model, real, labels):
    """keras-io ``conditional_gan`` train_step on our networks: D on fresh fakes, then G."""
    real = tf.cast(real, "float32") * 2.0 - 1.0
    labels = tf.cast(labels, "int32")
    batch = tf.shape(real)[0]
    z = tf.random.normal((batch, model.latent_dim))
    fake = model.generator([z, labels], training=True)
    with tf.GradientTape() as tape:
        both = diff_augment(tf.concat([real, fake], 0), model.seed_generator)
        logits = model.discriminator([both, tf.concat([labels, labels], 0)], training=True)
        d_real, d_fake = tf.split(logits, 2, axis=0)
        d_loss = tf.reduce_mean(tf.nn.relu(1.0 - d_real)) + tf.reduce_mean(tf.nn.relu(1.0 + d_fake))
    grads = tape.gradient(d_loss, model.discriminator.trainable_variables)
    model.d_optimizer.apply_gradients(zip(grads, model.discriminator.trainable_variables, strict=True))
    z = tf.random.normal((batch, model.latent_dim))
    with tf.GradientTape() as tape:
        fake = model.generator([z, labels], training=True)
        logits = model.discriminator([diff_augment(fake, model.seed_generator), labels], training=True)
        g_loss = -tf.reduce_mean(logits)
    grads = tape.gradient(g_loss, model.generator.trainable_variables)
    model.g_optimizer.apply_gradients(zip(grads, model.generator.trainable_variables, strict=True))
    model._update_ema()
    return {"d_loss": d_loss, "g_loss": g_loss}


def flop_normalised(ratio: float, breakdown: dict) -> dict:
    """The secondary fields that say how much of ``ratio`` is doing less work vs doing it faster.

    ``flop_bound`` = flops_peer / flops_ours: the speed-up from the FLOPs ours skips alone (at equal
    FLOP/s); ``ratio_flop_normalised`` = ratio / flop_bound: achieved FLOP/s of ours over the peer's
    (1 = both run their graphs equally efficiently, so ``ratio`` is bounded by ``flop_bound``).
    """
    bound = breakdown["flops_peer"] / breakdown["flops_ours"] if breakdown["flops_ours"] > 0 else 0.0
    saved = (
        breakdown["peer_step_ms"] - breakdown["generator_forward_ms"] - breakdown["discriminator_forward_ms"]
    )
    return {
        "flop_bound": _common._round(bound) if bound else 0.0,
        "ratio_flop_normalised": _common._round(ratio / bound) if bound else 0.0,
        "time_bound": _common._round(breakdown["peer_step_ms"] / saved) if saved > 0 else 0.0,
        "bound_note": "flops_* count the traced graphs before Grappler prunes unused gradient branches, so "
        "flop_bound is indicative; time_bound = peer_step_ms / (peer_step_ms - generator_forward_ms - "
        "discriminator_forward_ms) is the measured bound (ours saves the peer's second generator pass and its "
        "second discriminator pass on the fakes, the only work the two steps do not share)",
    }


def _model():
    model = build_gan("stable-cgan", IMAGE_SIZE, LATENT, seed=0)
    model.compile(*default_optimizers("stable-cgan", 2e-4))
    return model


def _timer(step, batches, steps: int):
    """A callable timing ``steps`` steps (after one warm-up call that also traces); returns steps/s."""
    float(step(*batches[0])["d_loss"])

    def run() -> float:
        start = time.perf_counter()
        for k in range(steps):
            out = step(*batches[k % len(batches)])
        float(out["d_loss"])  # wait for the last step
        return steps / (time.perf_counter() - start)

    return run


def _forward_rates(model, n: int, net: str = "generator") -> list[float]:
    """Forward passes per second (``n`` repeats) of the generator (training mode) or D on B images.

    These are the passes the peer's step runs twice and ours once: the work ours saves.
    """
    labels = tf.constant(np.arange(BATCH) % 2, tf.int32)
    if net == "generator":
        fwd = tf.function(lambda: model.generator([tf.random.normal((BATCH, LATENT)), labels], training=True))
    else:
        images = tf.random.uniform((BATCH, IMAGE_SIZE, IMAGE_SIZE, 1), -1.0, 1.0)
        fwd = tf.function(lambda: model.discriminator([images, labels], training=False)[:, :, None, None])
    fwd()
    rates = []
    for _ in range(n):
        start = time.perf_counter()
        for _ in range(STEPS):
            out = fwd()
        float(out[0, 0, 0, 0])
        rates.append(STEPS / (time.perf_counter() - start))
    return rates


def main() -> int:
    rng = np.random.default_rng(0)
    batches = [
        (
            tf.constant(rng.uniform(0, 1, (BATCH, IMAGE_SIZE, IMAGE_SIZE, 1)).astype(np.float32)),
            tf.constant(rng.integers(0, 2, BATCH).astype(np.int32)),
        )
        for _ in range(4)
    ]
    n = _common.repeats()
    ours_model, peer_model = _model(), _model()
    ours_fn = tf.function(ours_model.train_step, reduce_retracing=True)
    peer_fn = tf.function(lambda x, y: kerasio_step(peer_model, x, y), reduce_retracing=True)
    ours = _timer(lambda x, y: ours_fn((x, y)), batches, STEPS)
    peer = _timer(peer_fn, batches, STEPS)
    tag = f"stable-cGAN {IMAGE_SIZE}px batch {BATCH}"
    o, b = _common.interleave(ours, peer, n)
    breakdown = {
        "flops_ours": _common.graph_flops(ours_fn, batches[0]),
        "flops_peer": _common.graph_flops(peer_fn, *batches[0]),
        "generator_forward_ms": _common._round(1000 / statistics.median(_forward_rates(ours_model, n))),
        "discriminator_forward_ms": _common._round(
            1000 / statistics.median(_forward_rates(ours_model, n, "discriminator"))
        ),
        "peer_step_ms": _common._round(1000 / statistics.median(b)),
    }
    main_entry = _common.entry("gan_vs_kerasio_compiled", o, b, "steps/s", True, config=tag, **breakdown)
    entries = [{**main_entry, **flop_normalised(main_entry["ratio"], breakdown)}]
    if not _common.tiny():
        xla_model = _model()
        xla_fn = tf.function(lambda x, y: kerasio_step(xla_model, x, y), jit_compile=True)
        o2, b2 = _common.interleave(ours, _timer(xla_fn, batches, STEPS), n)
        entries.append(_common.entry("gan_vs_kerasio_xla", o2, b2, "steps/s", True, config=tag))
    eager_model = _model()
    eager = _timer(lambda x, y: kerasio_step(eager_model, x, y), batches, max(2, STEPS // 3))
    o3, b3 = _common.interleave(ours, eager, n)
    entries.append(_common.entry("gan_vs_eager_kerasio", o3, b3, "steps/s", True, config=tag))
    probe = _common.probe_flops()
    flops = _common.graph_flops(ours_fn, batches[0])
    entries.append(_common.fraction_of_peak("gan_fraction_of_peak", flops, o, probe))
    _common.emit(entries)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Train a class-conditional GAN on a prepared set, resumably.

``train_gan`` writes into ``out_dir``:

* ``checkpoints/step-XXXXXX/`` every ``checkpoint_every`` steps (`mammosynth.checkpoints`: written to
  a temp dir, renamed into place, then ``checkpoints/latest`` updated atomically): every model and
  optimiser variable, the in-graph RNG state, the step, the NumPy batch-sampler RNG state and the
  loss log so far. A killed job restarted with ``resume=True`` continues from the saved step with
  the same data order. With ``checkpoint_uri`` each checkpoint is also mirrored there (s3:// or a
  PVC path; pointer written last) and a restart in a fresh pod restores the newest valid one.
* ``samples/step-XXXXXX.png``: a grid, one row per class, from fixed noise.
* ``generator/``: ``generator.keras`` (``[z, label] → (S,S,C)`` in [0,1]) and ``gan.json``
  (kind, image_size, latent_dim, channels, steps, seed, class_names, config).
* ``losses.csv``: step and the model's metrics (GANs: d_loss, g_loss, d_real, d_fake; the VAE:
  loss, recon, kl), means over each logging interval.
* ``train_summary.json``: what `train_gan` returns (steps, seconds, steps/s, final losses).

Test-only fault injection: ``MAMMOSYNTH_FAULT_AFTER_STEP=N`` SIGKILLs the training process right
after the checkpoint at step N is saved and mirrored, as a preempted pod dies (tests run it in a
subprocess). Never set it outside tests.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mammosynth import atomic, checkpoints
from mammosynth.atomic import write_text as _atomic_text
from mammosynth.config import CLASS_NAMES
from mammosynth.data import shards
from mammosynth.logs import setup_logging
from mammosynth.storage.base import join

log = logging.getLogger(__name__)

GENERATOR_DIR = "generator"
GENERATOR_FILE = "generator.keras"
GAN_META = "gan.json"
FAULT_ENV = "MAMMOSYNTH_FAULT_AFTER_STEP"


def _load_train(prepared_dir: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, int]:
    meta = shards.read_meta(prepared_dir)
    images, labels, _ = shards.read_split(prepared_dir, "train")
    if images.ndim != 4 or images.shape[-1] != 1 or images.shape[1] != images.shape[2]:
        raise ValueError(f"{prepared_dir}: train images must be (N,S,S,1), got {images.shape}")
    size = int(images.shape[1])
    if int(meta.get("image_size", size)) != size:
        raise ValueError(
            f"{prepared_dir}/meta.json: image_size {meta['image_size']} but shards hold "
            f"{size}px images; re-run preprocess"
        )
    bad = sorted(set(np.unique(labels).tolist()) - set(range(len(CLASS_NAMES))))
    if bad:
        raise ValueError(f"{prepared_dir}: train labels {bad} outside 0..{len(CLASS_NAMES) - 1}")
    missing = [CLASS_NAMES[c] for c in range(len(CLASS_NAMES)) if not (labels == c).any()]
    if missing:
        raise ValueError(
            f"{prepared_dir}: no train images of class {missing}; a conditional GAN needs every class"
        )
    return images, labels.astype(np.int32), size


class BalancedSampler:
    """Class-balanced batches: each draw picks a class uniformly, then an image of that class.

    Malignant masses are the minority in CBIS-DDSM; uniform class draws give the generator equal
    practice on both. The NumPy generator's state is part of each checkpoint.
    """

    def __init__(self, labels: np.ndarray, batch_size: int, seed: int):
        self.by_class = [np.flatnonzero(labels == c) for c in range(len(CLASS_NAMES))]
        self.batch_size = batch_size
        self.rng = np.random.default_rng(seed)

    def next(self) -> tuple[np.ndarray, np.ndarray]:
        """One batch: (image indices, their class labels)."""
        classes = self.rng.integers(0, len(self.by_class), self.batch_size)
        idx = np.array([self.by_class[c][self.rng.integers(len(self.by_class[c]))] for c in classes])
        return idx, classes.astype(np.int32)


def _grid_png(images: np.ndarray, rows: int, path: Path) -> None:
    """Tile (rows·cols, S, S, C) [0,1] images into one PNG (1-px gaps), atomically."""
    from PIL import Image

    n, s = images.shape[0], images.shape[1]
    cols = n // rows
    canvas = np.ones((rows * (s + 1) - 1, cols * (s + 1) - 1), np.float32)
    gray = images.mean(axis=-1)
    for i in range(n):
        r, c = divmod(i, cols)
        canvas[r * (s + 1) : r * (s + 1) + s, c * (s + 1) : c * (s + 1) + s] = gray[i]
    path.parent.mkdir(parents=True, exist_ok=True)
    grid = Image.fromarray(np.round(np.clip(canvas, 0, 1) * 255).astype(np.uint8))
    atomic.write_with(path, lambda tmp: grid.save(tmp, format="PNG"))


def save_generator(model, out_dir: str | os.PathLike, meta: dict[str, Any]) -> Path:
    """Write ``generator.keras`` + ``gan.json`` atomically (temp dir renamed into place)."""
    target = Path(out_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic.replace_dir(target) as tmp:
        model.sampler().save(tmp / GENERATOR_FILE)
        (tmp / GAN_META).write_text(json.dumps(meta, indent=2, default=str))
    return target


def load_generator(generator_dir: str | os.PathLike):
    """Load ``(sampler, meta)``: ``sampler([z (B,latent_dim), labels (B,)])`` → (B,S,S,C) in [0,1].

    Raises:
        FileNotFoundError: the directory lacks generator.keras or gan.json.
    """
    import keras

    import mammosynth.models.cgan  # noqa: F401  (registers custom layers)

    root = Path(generator_dir)
    for name in (GAN_META, GENERATOR_FILE):
        if not (root / name).exists():
            raise FileNotFoundError(
                f"{root / name} missing: {root} is not a generator directory (run `mammosynth gan`)"
            )
    meta = json.loads((root / GAN_META).read_text())
    return keras.models.load_model(root / GENERATOR_FILE, compile=False), meta


def _has_gpu() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


@dataclass(frozen=True)
class _Job:
    """One `train_gan` call's settings, passed whole between the training seams."""

    kind: str
    steps: int
    batch_size: int
    latent_dim: int
    learning_rate: float
    seed: int
    checkpoint_every: int
    sample_every: int | None
    resume: bool
    log_every: int
    jit: bool
    gpu: bool
    stop_after: int | None
    model_kwargs: dict[str, Any] | None
    checkpoint_uri: str

    def __post_init__(self):
        """Refuse step counts a run cannot use.

        Raises:
            ValueError: steps, batch_size or log_every is not positive.
        """
        if self.steps < 1 or self.batch_size < 1 or self.log_every < 1:
            raise ValueError(
                f"steps ({self.steps}), batch_size ({self.batch_size}) and log_every ({self.log_every}) "
                "must be positive"
            )


def train_gan(
    prepared_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    kind: str = "stable-cgan",
    steps: int = 1500,
    batch_size: int = 32,
    latent_dim: int = 64,
    learning_rate: float = 2e-4,
    seed: int = 0,
    checkpoint_every: int = 250,
    sample_every: int | None = None,
    resume: bool = True,
    log_every: int = 50,
    jit_compile: bool | None = None,
    stop_after: int | None = None,
    model_kwargs: dict[str, Any] | None = None,
    checkpoint_uri: str | os.PathLike = "",
) -> dict[str, Any]:
    """Train a conditional GAN on the ``train`` split of a prepared set.

    Args:
        prepared_dir: prepared set (``mammosynth.data.shards``).
        out_dir: run directory (checkpoints, samples, generator, losses.csv).
        kind: ``"stable-cgan"`` (default), ``"seed-cgan"`` (the study's architecture) or
            ``"cvae"`` (a conditional VAE, non-adversarial comparison).
        steps: total optimisation steps (one D and one G update each).
        batch_size: real images per step (class-balanced).
        latent_dim: noise size.
        learning_rate: generator learning rate (see `cgan.default_optimizers`).
        seed: seeds weights, in-graph noise and the batch sampler.
        checkpoint_every: steps between checkpoints (0 = only the final one).
        sample_every: steps between sample grids (default: ``checkpoint_every``).
        resume: continue from the newest checkpoint that loads (local, or durable at
            ``checkpoint_uri``); False discards both and starts over.
        log_every: steps per logged / recorded loss mean.
        jit_compile: XLA-compile the step; default on GPU only (on 2 CPU cores XLA added ~15–25 s
            of compile time for no measurable per-step gain at 64²).
        stop_after: stop after this many steps of *this* call without a final checkpoint or
            generator, as a kill would (tests, time-boxed jobs). Returns ``status="stopped"`` and
            the loss rows logged in this call.
        model_kwargs: extra architecture options for `cgan.build_gan`.
        checkpoint_uri: durable checkpoint folder for this one generator (``s3://bucket/prefix`` or a
            local / PVC path; `mammosynth.checkpoints`). Every checkpoint is mirrored there, pointer
            last, and a start restores the newest valid one from there when it is newer than the
            local one. Empty (default): local checkpoints only.

    Returns:
        Summary: status, kind, steps, start_step, resumed_from (the checkpoint restored, "" when
        none), image_size, seconds, steps_per_s, final losses, generator_dir.

    Raises:
        ValueError: bad arguments or a prepared set a cGAN cannot learn from.
        StorageError: ``checkpoint_uri`` cannot be read or written (after the store's retries).
    """
    gpu = _has_gpu()
    job = _Job(
        kind=kind,
        steps=steps,
        batch_size=batch_size,
        latent_dim=latent_dim,
        learning_rate=learning_rate,
        seed=seed,
        checkpoint_every=checkpoint_every,
        sample_every=sample_every or checkpoint_every or steps,
        resume=resume,
        log_every=log_every,
        jit=gpu if jit_compile is None else bool(jit_compile),
        gpu=gpu,
        stop_after=stop_after,
        model_kwargs=model_kwargs,
        checkpoint_uri=str(checkpoint_uri or ""),
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    images, labels, size = _load_train(prepared_dir)
    # Mixed precision on GPU only (CPUs gain nothing from float16).
    with _dtype_policy("mixed_float16" if gpu else "float32"):
        return _train(images, labels, size, out, prepared_dir, job)


@contextmanager
def _dtype_policy(name: str) -> Iterator[None]:
    """Keras' global dtype policy set to ``name`` inside, restored after (later stages are unaffected)."""
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _train(images, labels, size, out: Path, prepared_dir, job: _Job) -> dict[str, Any]:
    """Build, resume, fit, write the outputs: the seams of one `train_gan` call."""
    import keras

    keras.utils.set_random_seed(job.seed)
    model = _build_model(job, size)
    sampler = BalancedSampler(labels, job.batch_size, job.seed)
    start, losses, resumed_from = _resume(out, model, sampler, job)
    log.info(
        "training %s on %d images (%dpx) for steps %d..%d, batch %d, jit=%s, gpu=%s",
        job.kind,
        len(images),
        size,
        start + 1,
        job.steps,
        job.batch_size,
        job.jit,
        job.gpu,
    )
    samples = _SampleGrid(model, job.latent_dim, job.seed, out / "samples")
    done_here, seconds, stopped_at = _fit(model, sampler, images, start, losses, out, job, samples)
    if stopped_at is not None:
        return {
            "status": "stopped",
            "kind": job.kind,
            "step": stopped_at,
            "start_step": start,
            "resumed_from": resumed_from,
            "losses": [r for r in losses if r["step"] > start],
        }
    if start < job.steps:
        _checkpoint(out, model, job.steps, sampler, losses, job)
    if not (out / "samples" / f"step-{job.steps:06d}.png").exists():
        samples.write(job.steps)
    gen_dir = save_generator(
        model, out / GENERATOR_DIR, _generator_meta(model, job, size, labels, prepared_dir)
    )
    _atomic_text(out / "losses.csv", checkpoints.losses_csv(losses, [m.name for m in model.metrics]))
    summary = {
        "status": "done",
        "kind": job.kind,
        "steps": job.steps,
        "start_step": start,
        "resumed_from": resumed_from,
        "image_size": size,
        "seconds": round(seconds, 2),
        "steps_per_s": round(done_here / seconds, 3) if done_here and seconds > 0 else None,
        "final": losses[-1] if losses else None,
        "generator_dir": str(gen_dir),
    }
    _atomic_text(out / "train_summary.json", json.dumps(summary, indent=2))
    log.info("%s done: %s", job.kind, summary)
    return summary


def _build_model(job: _Job, size: int):
    """The compiled GAN (loss-scaled optimisers on GPU, where the policy is mixed_float16)."""
    import keras

    from mammosynth.models.cgan import build_gan, default_optimizers

    model = build_gan(job.kind, size, job.latent_dim, channels=1, seed=job.seed, **(job.model_kwargs or {}))
    d_opt, g_opt = default_optimizers(job.kind, job.learning_rate)
    if job.gpu:
        d_opt, g_opt = keras.optimizers.LossScaleOptimizer(d_opt), keras.optimizers.LossScaleOptimizer(g_opt)
    model.compile(d_optimizer=d_opt, g_optimizer=g_opt)
    return model


def _resume(out: Path, model, sampler: BalancedSampler, job: _Job) -> tuple[int, list[dict], str]:
    """Restore the newest checkpoint that loads (local, or durable when newer); (step, losses, source).

    With ``resume=False`` the local and durable checkpoints are discarded instead.
    """
    if not job.resume:
        if (out / "checkpoints").exists():
            shutil.rmtree(out / "checkpoints")
        if job.checkpoint_uri:
            checkpoints.discard(job.checkpoint_uri)
        return 0, [], ""
    ckpt = checkpoints.latest(out)
    source = str(ckpt) if ckpt is not None else ""
    if job.checkpoint_uri:
        local_step = checkpoints.step_of(ckpt.name) if ckpt is not None else -1
        fetched = checkpoints.fetch(job.checkpoint_uri, out, newer_than=local_step)
        if fetched is not None:
            ckpt, source = fetched, join(job.checkpoint_uri, fetched.name)
    if ckpt is None:
        return 0, [], ""
    start, losses = checkpoints.restore(ckpt, model, sampler)
    log.info("resuming %s from %s (step %d of %d)", job.kind, source, start, job.steps)
    if start > job.steps:
        raise ValueError(
            f"{source}: checkpoint is at step {start}, beyond steps={job.steps}; ask for "
            "at least that many steps or pass resume=False"
        )
    return start, [row for row in losses if row["step"] <= start], source


class _SampleGrid:
    """Sample grids from fixed noise (one row per class), so grids of different steps compare."""

    def __init__(self, model, latent_dim: int, seed: int, folder: Path, n_cols: int = 8):
        rng = np.random.default_rng(seed + 1)
        self.model, self.folder = model, folder
        self.z = rng.standard_normal((len(CLASS_NAMES) * n_cols, latent_dim)).astype(np.float32)
        self.y = np.repeat(np.arange(len(CLASS_NAMES), dtype=np.int32), n_cols)

    def write(self, step: int) -> None:
        """Write ``samples/step-<n>.png``."""
        grid = self.model([self.z, self.y], training=False).numpy()
        _grid_png(grid, len(CLASS_NAMES), self.folder / f"step-{step:06d}.png")


def _fit(model, sampler, images, start: int, losses: list, out: Path, job: _Job, samples: _SampleGrid):
    """Steps ``start+1..steps``: log, checkpoint and sample on schedule; appends to ``losses``.

    Returns:
        (steps done in this call, seconds, the step ``stop_after`` stopped at or None).
    """
    import tensorflow as tf

    step_fn = tf.function(model.train_step, jit_compile=job.jit)
    fields = [m.name for m in model.metrics]  # losses.csv columns after "step"
    t0 = time.perf_counter()
    done_here = 0
    for step in range(start + 1, job.steps + 1):
        idx, y = sampler.next()
        result = step_fn((tf.constant(images[idx]), tf.constant(y)))
        done_here += 1
        if step % job.log_every == 0 or step == job.steps:
            losses.append(_log_row(model, job, step, result, fields, done_here / (time.perf_counter() - t0)))
        if job.stop_after is not None and done_here >= job.stop_after and step < job.steps:
            log.warning("stopping after %d steps at step %d (stop_after)", done_here, step)
            return done_here, time.perf_counter() - t0, step
        if job.checkpoint_every and step % job.checkpoint_every == 0 and step < job.steps:
            _checkpoint(out, model, step, sampler, losses, job)
        if job.sample_every and step % job.sample_every == 0:
            samples.write(step)
    return done_here, time.perf_counter() - t0, None


def _log_row(model, job: _Job, step: int, result, fields: list[str], rate: float) -> dict[str, float]:
    """The loss row of ``step`` (metric means since the last row); resets the metrics.

    Raises:
        FloatingPointError: a loss is not finite.
    """
    row = {"step": step, **{k: float(v) for k, v in result.items()}}
    if not all(np.isfinite(row[k]) for k in fields):
        raise FloatingPointError(
            f"{job.kind}: non-finite loss at step {step}: {row}; lower "
            "learning_rate or resume from an earlier checkpoint"
        )
    for m in model.metrics:
        m.reset_state()
    shown = " ".join(f"{k}={row[k]:.4f}" for k in fields)
    log.info("step %d/%d %s (%.2f steps/s)", step, job.steps, shown, rate)
    return row


def _checkpoint(out: Path, model, step: int, sampler, losses: list, job: _Job) -> None:
    """Save the checkpoint of ``step`` locally, mirror it to ``checkpoint_uri``, then the test fault."""
    path = checkpoints.save(out, model, step, sampler, losses)
    if job.checkpoint_uri:
        checkpoints.mirror(path, job.checkpoint_uri)
    log.info("checkpoint at step %d", step)
    _fault_after(step)


def _fault_after(step: int) -> None:
    """Test-only: SIGKILL this process after the checkpoint of step ``$MAMMOSYNTH_FAULT_AFTER_STEP``.

    Raises:
        ValueError: the variable is set but not an integer.
    """
    raw = os.environ.get(FAULT_ENV, "").strip()
    if not raw:
        return
    try:
        at = int(raw)
    except ValueError:
        raise ValueError(
            f"{FAULT_ENV}={raw!r} is not a step number; unset it (it is for tests only)"
        ) from None
    if step == at:
        log.warning("%s=%d: killing this process after the checkpoint (test-only fault)", FAULT_ENV, at)
        for handler in logging.getLogger().handlers:
            handler.flush()
        os.kill(os.getpid(), signal.SIGKILL)


def _generator_meta(model, job: _Job, size: int, labels: np.ndarray, prepared_dir) -> dict[str, Any]:
    """``gan.json``: what the generator is, what it learned from, and its output range."""
    return {
        "kind": job.kind,
        "image_size": size,
        "latent_dim": job.latent_dim,
        "channels": 1,
        "steps": job.steps,
        "seed": job.seed,
        "batch_size": job.batch_size,
        "learning_rate": job.learning_rate,
        "class_names": list(CLASS_NAMES),
        "n_train": len(labels),
        "train_counts": {name: int((labels == i).sum()) for i, name in enumerate(CLASS_NAMES)},
        "prepared_dir": str(prepared_dir),
        "config": model.get_config(),
        "output_range": [0.0, 1.0],
    }


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mammosynth gan", description=__doc__.splitlines()[0])
    p.add_argument("--prepared-dir", required=True, help="prepared set to learn from (split train)")
    p.add_argument("--out-dir", required=True, help="run directory (checkpoints, samples, generator)")
    p.add_argument("--kind", default="stable-cgan", choices=["stable-cgan", "seed-cgan", "cvae"])
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--latent-dim", type=int, default=64)
    p.add_argument("--learning-rate", type=float, default=2e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint-every", type=int, default=250)
    p.add_argument("--sample-every", type=int, default=None)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--no-resume", action="store_true", help="start over, discarding checkpoints")
    p.add_argument("--jit-compile", choices=["auto", "on", "off"], default="auto")
    p.add_argument(
        "--checkpoint-uri",
        default="",
        help="also keep checkpoints there (s3://bucket/prefix or a PVC path) and resume from there",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """``mammosynth gan``: train, print the summary as JSON, return 0."""
    args = _parser().parse_args(argv)
    setup_logging()
    summary = train_gan(
        args.prepared_dir,
        args.out_dir,
        kind=args.kind,
        steps=args.steps,
        batch_size=args.batch_size,
        latent_dim=args.latent_dim,
        learning_rate=args.learning_rate,
        seed=args.seed,
        checkpoint_every=args.checkpoint_every,
        sample_every=args.sample_every,
        resume=not args.no_resume,
        log_every=args.log_every,
        jit_compile={"auto": None, "on": True, "off": False}[args.jit_compile],
        checkpoint_uri=args.checkpoint_uri,
    )
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

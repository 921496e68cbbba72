"""Train a class-conditional GAN on a prepared set, resumably.

``train_gan`` writes into ``out_dir``:

* ``checkpoints/step-XXXXXX/`` every ``checkpoint_every`` steps (written to a temp dir, renamed
  into place, then ``checkpoints/latest`` updated atomically): every model and optimiser variable,
  the in-graph RNG state, the step, the NumPy batch-sampler RNG state and the loss log so far. A
  killed job restarted with ``resume=True`` continues from the saved step with the same data order.
* ``samples/step-XXXXXX.png``: a grid, one row per class, from fixed noise.
* ``generator/``: ``generator.keras`` (``[z, label] → (S,S,C)`` in [0,1]) and ``gan.json``
  (kind, image_size, latent_dim, channels, steps, seed, class_names, config).
* ``losses.csv``: step and the model's metrics (GANs: d_loss, g_loss, d_real, d_fake; the VAE:
  loss, recon, kl), means over each logging interval.
* ``train_summary.json``: what `train_gan` returns (steps, seconds, steps/s, final losses).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import os
import shutil
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from mammosynth import atomic
from mammosynth.atomic import write_text as _atomic_text
from mammosynth.config import CLASS_NAMES
from mammosynth.data import shards
from mammosynth.logs import setup_logging

log = logging.getLogger(__name__)

GENERATOR_DIR = "generator"
GENERATOR_FILE = "generator.keras"
GAN_META = "gan.json"
KEEP_CHECKPOINTS = 2


def _losses_csv(rows: list[dict[str, float]], fields: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["step", *fields])
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (row[k] if k == "step" else f"{row[k]:.6g}") for k in ["step", *fields]})
    return buf.getvalue()


def _read_losses(path: Path) -> list[dict[str, float]]:
    with open(path, newline="") as fh:
        return [{k: (int(v) if k == "step" else float(v)) for k, v in r.items()} for r in csv.DictReader(fh)]


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
        classes = self.rng.integers(0, len(self.by_class), self.batch_size)
        idx = np.array([self.by_class[c][self.rng.integers(len(self.by_class[c]))] for c in classes])
        return idx, classes.astype(np.int32)


def _save_checkpoint(
    out: Path, model, step: int, sampler: BalancedSampler, losses: list[dict[str, float]]
) -> Path:
    """Write ``checkpoints/step-<n>/`` atomically (fsync, rename), then the ``latest`` pointer.

    Retention keeps the newest `KEEP_CHECKPOINTS` by step and never the one just written.
    """
    root = out / "checkpoints"
    name = f"step-{step:06d}"
    final = root / name
    with atomic.replace_dir(final) as tmp:
        arrays = {f"v{i:04d}": np.asarray(v.numpy()) for i, v in enumerate(model.state_variables())}
        with open(tmp / "state.npz", "wb") as fh:
            np.savez(fh, **arrays)
        state = {
            "step": step,
            "kind": model.kind,
            "config": model.get_config(),
            "sampler_rng": sampler.rng.bit_generator.state,
            "n_variables": len(arrays),
        }
        (tmp / "state.json").write_text(json.dumps(state))
        (tmp / "losses.csv").write_text(_losses_csv(losses, [m.name for m in model.metrics]))
    _atomic_text(root / "latest", name + "\n")
    for stale in root.glob(".step-*"):  # temp dirs of checkpoints a kill interrupted
        shutil.rmtree(stale, ignore_errors=True)
    kept = sorted((p for p in root.glob("step-*") if p.is_dir()), key=_checkpoint_step)
    for old in kept[:-KEEP_CHECKPOINTS]:
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


def _checkpoint_step(path: Path) -> int:
    """The step of a ``step-<n>`` folder (-1 when the name is not one)."""
    try:
        return int(path.name.removeprefix("step-"))
    except ValueError:
        return -1


def _checkpoint_loads(path: Path) -> bool:
    """Whether a checkpoint is complete: state.json parses and state.npz holds every array intact."""
    try:
        state = json.loads((path / "state.json").read_text())
        with np.load(path / "state.npz", allow_pickle=False) as z:
            if len(z.files) != int(state["n_variables"]):
                return False
            for key in z.files:  # reading each array checks the zip member's CRC
                z[key]
        return int(state["step"]) == _checkpoint_step(path)
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as exc:
        log.warning("checkpoint %s is damaged (%s); trying an older one", path.name, type(exc).__name__)
        return False


def _latest_checkpoint(out: Path) -> Path | None:
    """The newest checkpoint that loads, whatever the ``latest`` pointer says (it may be damaged)."""
    root = out / "checkpoints"
    if not root.is_dir():
        return None
    candidates = (p for p in root.glob("step-*") if p.is_dir())
    for path in sorted(candidates, key=_checkpoint_step, reverse=True):
        if _checkpoint_loads(path):
            pointer = root / "latest"
            said = pointer.read_text(errors="replace").strip() if pointer.exists() else ""
            if said != path.name:
                log.warning("checkpoints/latest says %r; using %s, the newest that loads", said, path.name)
            return path
    return None


def _restore_checkpoint(path: Path, model, sampler: BalancedSampler) -> tuple[int, list[dict]]:
    state = json.loads((path / "state.json").read_text())
    if state["kind"] != model.kind:
        raise ValueError(
            f"{path}: checkpoint is a {state['kind']} but kind={model.kind!r} was asked; "
            "use another out_dir or resume=False"
        )
    variables = model.state_variables()
    with np.load(path / "state.npz", allow_pickle=False) as z:
        if len(z.files) != len(variables):
            raise ValueError(
                f"{path}: checkpoint holds {len(z.files)} variables, model has "
                f"{len(variables)}; architecture changed — use resume=False"
            )
        for i, var in enumerate(variables):
            value = z[f"v{i:04d}"]
            if tuple(value.shape) != tuple(var.shape):
                raise ValueError(
                    f"{path}: variable {i} ({var.path}) has shape {value.shape}, "
                    f"model expects {tuple(var.shape)}; use resume=False"
                )
            var.assign(value)
    sampler.rng.bit_generator.state = state["sampler_rng"]
    return int(state["step"]), _read_losses(path / "losses.csv")


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
        resume: continue from ``out_dir``'s latest checkpoint when one exists.
        log_every: steps per logged / recorded loss mean.
        jit_compile: XLA-compile the step; default on GPU only (on 2 CPU cores XLA added ~15–25 s
            of compile time for no measurable per-step gain at 64²).
        stop_after: stop after this many steps of *this* call without a final checkpoint or
            generator, as a kill would (tests, time-boxed jobs). Returns ``status="stopped"`` and
            the loss rows logged in this call.
        model_kwargs: extra architecture options for `cgan.build_gan`.

    Returns:
        Summary: status, kind, steps, start_step, image_size, seconds, steps_per_s, final losses,
        generator_dir.

    Raises:
        ValueError: bad arguments or a prepared set a cGAN cannot learn from.
    """
    import keras

    if steps < 1 or batch_size < 1 or log_every < 1:
        raise ValueError(
            f"steps ({steps}), batch_size ({batch_size}) and log_every ({log_every}) must be positive"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    images, labels, size = _load_train(prepared_dir)
    gpu = _has_gpu()
    jit = gpu if jit_compile is None else bool(jit_compile)
    previous_policy = keras.config.dtype_policy()
    # Mixed precision on GPU only (CPUs gain nothing from float16); restored afterwards so later
    # stages run in the same process are unaffected.
    keras.config.set_dtype_policy("mixed_float16" if gpu else "float32")
    try:
        return _train(
            images,
            labels,
            size,
            out,
            prepared_dir,
            kind=kind,
            steps=steps,
            batch_size=batch_size,
            latent_dim=latent_dim,
            learning_rate=learning_rate,
            seed=seed,
            checkpoint_every=checkpoint_every,
            sample_every=sample_every,
            resume=resume,
            log_every=log_every,
            jit=jit,
            gpu=gpu,
            stop_after=stop_after,
            model_kwargs=model_kwargs,
        )
    finally:
        keras.config.set_dtype_policy(previous_policy)


def _train(
    images,
    labels,
    size,
    out: Path,
    prepared_dir,
    *,
    kind,
    steps,
    batch_size,
    latent_dim,
    learning_rate,
    seed,
    checkpoint_every,
    sample_every,
    resume,
    log_every,
    jit,
    gpu,
    stop_after,
    model_kwargs,
) -> dict[str, Any]:
    import keras
    import tensorflow as tf

    from mammosynth.models.cgan import build_gan, default_optimizers

    keras.utils.set_random_seed(seed)

    model = build_gan(kind, size, latent_dim, channels=1, seed=seed, **(model_kwargs or {}))
    d_opt, g_opt = default_optimizers(kind, learning_rate)
    if gpu:
        d_opt, g_opt = keras.optimizers.LossScaleOptimizer(d_opt), keras.optimizers.LossScaleOptimizer(g_opt)
    model.compile(d_optimizer=d_opt, g_optimizer=g_opt)
    sampler = BalancedSampler(labels, batch_size, seed)

    start, losses = 0, []
    ckpt = _latest_checkpoint(out) if resume else None
    if ckpt is not None:
        start, losses = _restore_checkpoint(ckpt, model, sampler)
        log.info("resuming %s from %s (step %d of %d)", kind, ckpt.name, start, steps)
        if start > steps:
            raise ValueError(
                f"{ckpt}: checkpoint is at step {start}, beyond steps={steps}; ask for "
                "at least that many steps or pass resume=False"
            )
    elif not resume and (out / "checkpoints").exists():
        shutil.rmtree(out / "checkpoints")
    losses = [row for row in losses if row["step"] <= start]

    step_fn = tf.function(model.train_step, jit_compile=jit)
    fields = [m.name for m in model.metrics]  # losses.csv columns after "step"
    sample_every = sample_every or checkpoint_every or steps
    fixed_rng = np.random.default_rng(seed + 1)
    n_cols = 8
    fixed_z = fixed_rng.standard_normal((len(CLASS_NAMES) * n_cols, latent_dim)).astype(np.float32)
    fixed_y = np.repeat(np.arange(len(CLASS_NAMES), dtype=np.int32), n_cols)

    def write_samples(step: int) -> None:
        grid = model([fixed_z, fixed_y], training=False).numpy()
        _grid_png(grid, len(CLASS_NAMES), out / "samples" / f"step-{step:06d}.png")

    log.info(
        "training %s on %d images (%dpx) for steps %d..%d, batch %d, jit=%s, gpu=%s",
        kind,
        len(images),
        size,
        start + 1,
        steps,
        batch_size,
        jit,
        gpu,
    )
    t0 = time.perf_counter()
    done_here = 0
    for step in range(start + 1, steps + 1):
        idx, y = sampler.next()
        result = step_fn((tf.constant(images[idx]), tf.constant(y)))
        done_here += 1
        if step % log_every == 0 or step == steps:
            row = {"step": step, **{k: float(v) for k, v in result.items()}}
            if not all(np.isfinite(row[k]) for k in fields):
                raise FloatingPointError(
                    f"{kind}: non-finite loss at step {step}: {row}; lower "
                    "learning_rate or resume from an earlier checkpoint"
                )
            losses.append(row)
            for m in model.metrics:
                m.reset_state()
            rate = done_here / (time.perf_counter() - t0)
            shown = " ".join(f"{k}={row[k]:.4f}" for k in fields)
            log.info("step %d/%d %s (%.2f steps/s)", step, steps, shown, rate)
        if stop_after is not None and done_here >= stop_after and step < steps:
            log.warning("stopping after %d steps at step %d (stop_after)", done_here, step)
            return {
                "status": "stopped",
                "kind": kind,
                "step": step,
                "start_step": start,
                "losses": [r for r in losses if r["step"] > start],
            }
        if checkpoint_every and step % checkpoint_every == 0 and step < steps:
            _save_checkpoint(out, model, step, sampler, losses)
            log.info("checkpoint at step %d", step)
        if sample_every and step % sample_every == 0:
            write_samples(step)
    seconds = time.perf_counter() - t0

    if start < steps:
        _save_checkpoint(out, model, steps, sampler, losses)
    if not (out / "samples" / f"step-{steps:06d}.png").exists():
        write_samples(steps)
    meta = {
        "kind": kind,
        "image_size": size,
        "latent_dim": latent_dim,
        "channels": 1,
        "steps": steps,
        "seed": seed,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "class_names": list(CLASS_NAMES),
        "n_train": len(images),
        "train_counts": {name: int((labels == i).sum()) for i, name in enumerate(CLASS_NAMES)},
        "prepared_dir": str(prepared_dir),
        "config": model.get_config(),
        "output_range": [0.0, 1.0],
    }
    gen_dir = save_generator(model, out / GENERATOR_DIR, meta)
    _atomic_text(out / "losses.csv", _losses_csv(losses, fields))
    summary = {
        "status": "done",
        "kind": kind,
        "steps": steps,
        "start_step": start,
        "image_size": size,
        "seconds": round(seconds, 2),
        "steps_per_s": round(done_here / seconds, 3) if done_here and seconds > 0 else None,
        "final": losses[-1] if losses else None,
        "generator_dir": str(gen_dir),
    }
    _atomic_text(out / "train_summary.json", json.dumps(summary, indent=2))
    log.info("%s done: %s", kind, summary)
    return summary


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
    return p


def main(argv: list[str] | None = None) -> int:
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
    )
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Sample a synthetic set from a trained generator.

The synthetic set is a prepared set (`mammosynth.data.shards`) with one split, ``train``, ids
``synthetic-<class>-<k:06d>``, and a ``lineage`` block in ``meta.json`` naming the generator
(directory, kind, steps, training seed) and the sampling seed, so any synthetic image can be
regenerated and traced back to the GAN run that produced it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from mammosynth.config import CLASS_NAMES
from mammosynth.data import shards
from mammosynth.logs import setup_logging

log = logging.getLogger(__name__)

STUDY_COUNTS = {"benign": 300, "malignant": 250}  # the study's 550 synthetic images
SAMPLE_BATCH = 64
VAL_SEED_OFFSET = 7_919  # the val split's noise stream differs from the train split's
GENERATOR_PREFIX = "gan-seed-"  # <generator artifact>/gan-seed-<g>/ and <synthetic set>/gan-seed-<g>/


def generator_sets(root: str | os.PathLike) -> list[Path]:
    """The per-generator folders of a generator artifact or synthetic set, in generator order.

    A study with ``gan.seeds`` G > 1 keeps one folder per generator (``gan-seed-0``, ...); with one
    generator the root itself is the only set.

    Args:
        root: a generator artifact or synthetic set directory.

    Returns:
        ``[root]`` or ``[root/gan-seed-0, root/gan-seed-1, ...]``.
    """
    root = Path(root)
    subs = sorted(
        (p for p in root.glob(f"{GENERATOR_PREFIX}*") if p.is_dir()),
        key=lambda p: int(p.name[len(GENERATOR_PREFIX) :]),
    )
    return subs or [root]


def train_split_lineage(
    prepared_dir: str | os.PathLike, split_seed: int, val_fraction: float
) -> dict[str, Any]:
    """What a generator trained on ``prepared_dir``'s train split saw: hashed patients and split settings.

    Raises:
        FileNotFoundError: the prepared set has no ``patients.json`` (re-run preprocess).
    """
    from mammosynth.preprocess import PATIENTS_FILE, read_patients

    patients = read_patients(prepared_dir)
    if not patients:
        raise FileNotFoundError(
            f"{Path(prepared_dir) / PATIENTS_FILE} missing: re-run preprocess so the synthetic set can "
            "record which patients its generator saw"
        )
    train = patients["splits"]["train"]
    return {
        "patients_digest": train["digest"],
        "n_patients": train["n_patients"],
        "patients": train["patients"],
        "split_seed": int(split_seed),
        "val_fraction": float(val_fraction),
        "index_sha256": patients.get("index_sha256"),
    }


def check_reuse_lineage(set_meta: dict[str, Any], prepared_dir: str | os.PathLike, uri: str) -> None:
    """Refuse a reused synthetic set whose generator saw any patient outside this run's train split.

    Args:
        set_meta: the reused set's ``meta.json``.
        prepared_dir: this run's prepared set.
        uri: the reused set's URI (for the message).

    Raises:
        ValueError: the set records no training patients, or its generator saw patients that are not in
            this run's train split (they may be in this run's val or test split); the message names both
            digests.
    """
    from mammosynth.preprocess import read_patients

    seen = (set_meta.get("lineage") or {}).get("train_split")
    here = (read_patients(prepared_dir) or {}).get("splits", {}).get("train")
    if not here:
        raise ValueError(
            f"prepared set {prepared_dir} has no patients.json: re-run preprocess before reusing {uri}"
        )
    if not seen or not seen.get("patients"):
        raise ValueError(
            f"synthetic set {uri} records no training patients (lineage.train_split): it cannot be shown that "
            f"its generator never saw this run's val/test patients; regenerate it or drop synthetic_set_uri"
        )
    outside = set(seen["patients"]) - set(here["patients"])
    if outside:
        raise ValueError(
            f"synthetic set {uri} was made by a generator that saw {len(outside)} patient(s) outside this "
            f"run's train split (generator train digest {seen.get('patients_digest')}, split seed "
            f"{seen.get('split_seed')}, val fraction {seen.get('val_fraction')}; this run's train digest "
            f"{here['digest']}): they may be in this run's test split. Reuse a set made under the same split "
            "or drop synthetic_set_uri"
        )


def resolve_counts(
    n_per_class: dict[str, int] | str | None, real_counts: dict[str, int] | None = None
) -> dict[str, int]:
    """How many images to draw per class.

    Args:
        n_per_class: explicit ``{class: n}``; ``"study"`` for the study's 300 benign / 250
            malignant; ``"balance"`` or None for a class-balanced set with as many images per class
            as the larger real class (so real+synthetic arms up to ratio 1.0 can draw from it
            without repeating images); ``"top-up"`` for just the minority class's gap, making
            real + synthetic balanced.
        real_counts: ``{class: n}`` of the real training split (needed for balance / top-up).

    Raises:
        ValueError: unknown class names or mode, negative counts, or balancing without real counts.
    """
    mode = n_per_class if isinstance(n_per_class, str) else ("balance" if n_per_class is None else None)
    if mode == "study":
        return dict(STUDY_COUNTS)
    if mode is None:
        unknown = sorted(set(n_per_class) - set(CLASS_NAMES))
        if unknown:
            raise ValueError(f"n_per_class has unknown classes {unknown}; known: {list(CLASS_NAMES)}")
        counts = {name: int(n_per_class.get(name, 0)) for name in CLASS_NAMES}
        if any(n < 0 for n in counts.values()) or not sum(counts.values()):
            raise ValueError(f"n_per_class {n_per_class}: counts must be ≥ 0 and not all zero")
        return counts
    if mode not in ("balance", "top-up"):
        raise ValueError(f"n_per_class {mode!r}: use a {{class: n}} mapping, 'study', 'balance' or 'top-up'")
    if not real_counts:
        raise ValueError(
            f"n_per_class={mode!r} needs real_counts ({{class: n}} of the real train "
            "split) or pass n_per_class explicitly"
        )
    real = {name: int(real_counts.get(name, 0)) for name in CLASS_NAMES}
    top = max(real.values())
    if top < 1:
        raise ValueError(f"real_counts {real_counts} has no images")
    if mode == "balance":
        return {name: top for name in CLASS_NAMES}
    gaps = {name: top - n for name, n in real.items()}
    if not any(gaps.values()):
        raise ValueError(f"real_counts {real} are already balanced: nothing to top up")
    return gaps


def generate(
    sampler, latent_dim: int, counts: dict[str, int], seed: int, batch_size: int = SAMPLE_BATCH
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Draw images per class from a loaded sampler (see `mammosynth.gan.load_generator`).

    Returns:
        ``(images (N,S,S,1) float32 in [0,1], labels int64, ids)`` ordered by class.
    """
    rng = np.random.default_rng(seed)
    images, labels, ids = [], [], []
    for label_id, name in enumerate(CLASS_NAMES):
        n = int(counts.get(name, 0))
        for start in range(0, n, batch_size):
            m = min(batch_size, n - start)
            z = rng.standard_normal((m, latent_dim)).astype(np.float32)
            y = np.full(m, label_id, np.int32)
            out = np.asarray(sampler([z, y], training=False), np.float32)
            if out.shape[-1] == 3:  # the study's RGB variant: store gray like every prepared set
                out = out.mean(axis=-1, keepdims=True)
            images.append(np.clip(out, 0.0, 1.0))
            labels.append(np.full(m, label_id, np.int64))
            ids += [f"synthetic-{name}-{start + i + 1:06d}" for i in range(m)]
        log.info("sampled %d %s images", n, name)
    return np.concatenate(images), np.concatenate(labels), ids


def run_synthesize(
    generator_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    n_per_class: dict[str, int] | str | None = None,
    seed: int = 0,
    real_counts: dict[str, int] | None = None,
    publish_uri: str | None = None,
    n_val_per_class: dict[str, int] | None = None,
    trained_on: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write a synthetic set sampled from a generator directory.

    Args:
        generator_dir: ``generator/`` written by `mammosynth.gan.train_gan`.
        out_dir: the synthetic set to write (a prepared set with split ``train``).
        n_per_class: see `resolve_counts` (mapping, ``"study"``, ``"balance"``/None).
        seed: sampling seed (noise).
        real_counts: real training counts per class, for balancing (default: the counts the
            generator was trained on, from its ``gan.json``).
        publish_uri: also publish the set immutably under this URI (local path, ``file://`` or
            ``s3://``) with `mammosynth.storage.publish_set`; the result's ``published_uri`` names it.
        n_val_per_class: also write a ``val`` split of this many images per class, drawn with other
            noise: the synthetic validation split TSTR selects its checkpoint on.
        trained_on: what the generator saw (`train_split_lineage`), recorded as ``lineage.train_split``
            so a later run can refuse to reuse a set whose generator saw its test patients.

    Returns:
        The written ``meta.json`` content.

    Raises:
        FileNotFoundError: ``generator_dir`` is not a generator directory.
        ValueError: bad counts (see `resolve_counts`).
    """
    from mammosynth.gan import load_generator

    sampler, gmeta = load_generator(generator_dir)
    # The generator remembers its real training counts, so balancing works without the real set.
    counts = resolve_counts(n_per_class, real_counts or gmeta.get("train_counts"))
    images, labels, ids = generate(sampler, int(gmeta["latent_dim"]), counts, seed)
    out = Path(out_dir)
    for stale in shards.splits(out) if out.exists() else []:
        for path in shards.iter_shards(out, stale):
            path.unlink()
    shards.write_split(out, "train", images, labels, ids)
    if n_val_per_class:
        v_images, v_labels, v_ids = generate(
            sampler, int(gmeta["latent_dim"]), n_val_per_class, seed + VAL_SEED_OFFSET
        )
        shards.write_split(
            out, "val", v_images, v_labels, [i.replace("synthetic-", "synthetic-val-", 1) for i in v_ids]
        )
    lineage = {
        "generator_dir": str(generator_dir),
        "kind": gmeta.get("kind"),
        "steps": gmeta.get("steps"),
        "train_seed": gmeta.get("seed"),
        "latent_dim": gmeta.get("latent_dim"),
        "sampling_seed": int(seed),
        "requested": counts,
        "synthetic": True,
    }
    if trained_on:
        lineage["train_split"] = trained_on
    meta = shards.write_meta(out, int(images.shape[1]), {"lineage": lineage})
    log.info("wrote synthetic set %s: %s", out, meta["counts"])
    if publish_uri:
        from mammosynth.storage import publish_set

        manifest = publish_set(out, publish_uri, kind="synthetic", lineage=lineage)
        log.info("published synthetic set to %s", manifest["uri"])
        meta = {**meta, "published_uri": manifest["uri"]}
    return meta


def _counts_arg(text: str) -> dict[str, int] | str:
    if text in ("study", "balance", "top-up"):
        return text
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(
            f"--n-per-class {text!r}: expected 'study', 'balance', 'top-up' or JSON like "
            '\'{"benign": 300, "malignant": 250}\''
        ) from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"--n-per-class {text!r}: expected a JSON object")
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mammosynth synthesize", description=__doc__.splitlines()[0])
    p.add_argument("--generator-dir", required=True, help="generator/ written by `mammosynth gan`")
    p.add_argument("--out-dir", required=True, help="synthetic set to write")
    p.add_argument(
        "--n-per-class",
        type=_counts_arg,
        default=None,
        help="'study' (300/250), 'balance' (default: each class as large as the larger "
        "real class), 'top-up' (minority gap only) or JSON {class: n}",
    )
    p.add_argument(
        "--real-dir",
        default=None,
        help="real prepared set whose train counts drive balancing (default: the "
        "counts recorded in the generator's gan.json)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--publish-uri", default=None, help="also publish the set here (path or s3://...)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the command line (``python -m mammosynth.synthesize``).

    Args:
        argv: arguments (default: ``sys.argv[1:]``).

    Returns:
        The process exit status.
    """
    args = _parser().parse_args(argv)
    setup_logging()
    real_counts = None
    if args.real_dir:
        real_counts = shards.read_meta(args.real_dir).get("counts", {}).get("train")
        if not real_counts:
            raise SystemExit(f"{args.real_dir}/meta.json has no train counts; re-run preprocess")
    meta = run_synthesize(
        args.generator_dir,
        args.out_dir,
        n_per_class=args.n_per_class,
        seed=args.seed,
        real_counts=real_counts,
        publish_uri=args.publish_uri,
    )
    print(json.dumps({"counts": meta["counts"], "published_uri": meta.get("published_uri")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

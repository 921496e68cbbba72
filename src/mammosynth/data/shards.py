"""The prepared-set format: fixed-size image shards that every training stage reads.

A prepared set is a directory of ``<split>-<k:05d>.npz`` shards (``images`` uint16 (N,S,S,1) holding
intensity × 65535, ``labels`` int64, ``image_ids`` str) and a ``meta.json``. 16 bits keep the
mammogram's dynamic range after normalisation at half the size of float32.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from mammosynth.atomic import write_with as _atomic_write
from mammosynth.config import CLASS_NAMES

SCALE = 65535.0
DEFAULT_SHARD_SIZE = 1024


def to_uint16(images: np.ndarray) -> np.ndarray:
    """[0,1] floats → uint16 storage values (clipped)."""
    return np.round(np.clip(np.asarray(images, np.float32), 0.0, 1.0) * SCALE).astype(np.uint16)


def write_split(
    out_dir: str | os.PathLike,
    split: str,
    images: np.ndarray,
    labels: np.ndarray,
    image_ids: list[str] | np.ndarray,
    shard_size: int = DEFAULT_SHARD_SIZE,
) -> list[Path]:
    """Write one split as shards. ``images`` are (N,S,S,1) floats in [0,1] (or uint16).

    Raises:
        ValueError: shapes disagree or images are not (N,S,S,1).
    """
    images = np.asarray(images)
    labels = np.asarray(labels, dtype=np.int64)
    ids = np.asarray(image_ids, dtype=str)
    if images.ndim != 4 or images.shape[-1] != 1 or images.shape[1] != images.shape[2]:
        raise ValueError(f"split {split!r}: expected images of shape (N,S,S,1), got {images.shape}")
    if not (len(images) == len(labels) == len(ids)):
        raise ValueError(
            f"split {split!r}: {len(images)} images, {len(labels)} labels, {len(ids)} ids differ"
        )
    stored = images if images.dtype == np.uint16 else to_uint16(images)
    out = Path(out_dir)
    for old in out.glob(f"{split}-*.npz"):
        old.unlink()
    paths = []
    n_shards = max(1, -(-len(stored) // shard_size))
    for k in range(n_shards):
        sl = slice(k * shard_size, (k + 1) * shard_size)
        path = out / f"{split}-{k:05d}.npz"

        def _write(tmp, sl=sl):
            with open(tmp, "wb") as fh:
                np.savez(fh, images=stored[sl], labels=labels[sl], image_ids=ids[sl])

        _atomic_write(path, _write)
        paths.append(path)
    return paths


def write_meta(out_dir: str | os.PathLike, image_size: int, extra: dict[str, Any] | None = None) -> dict:
    """Write ``meta.json`` with per-split, per-label counts computed from the shards present."""
    out = Path(out_dir)
    counts: dict[str, dict[str, int]] = {}
    for split in splits(out):
        _, labels, _ = read_split(out, split, as_float=False)
        counts[split] = {name: int((labels == i).sum()) for i, name in enumerate(CLASS_NAMES)}
    meta = {
        "image_size": int(image_size),
        "channels": 1,
        "class_names": list(CLASS_NAMES),
        "counts": counts,
        **(extra or {}),
    }
    _atomic_write(out / "meta.json", lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2)))
    return meta


def read_meta(set_dir: str | os.PathLike) -> dict[str, Any]:
    """Read a prepared set's ``meta.json``.

    Raises:
        FileNotFoundError: the folder is not a prepared set.
    """
    path = Path(set_dir) / "meta.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} missing: {set_dir} is not a prepared set (run preprocess)")
    return json.loads(path.read_text())


def splits(set_dir: str | os.PathLike) -> list[str]:
    """Names of the splits (``train``, ``val``, ...) that have shards in ``set_dir``."""
    names = {p.name.rsplit("-", 1)[0] for p in Path(set_dir).glob("*-[0-9][0-9][0-9][0-9][0-9].npz")}
    return sorted(names)


def iter_shards(set_dir: str | os.PathLike, split: str) -> Iterator[Path]:
    """Yield the ``<split>-NNNNN.npz`` shard paths of one split, in order."""
    yield from sorted(Path(set_dir).glob(f"{split}-[0-9][0-9][0-9][0-9][0-9].npz"))


def read_split(
    set_dir: str | os.PathLike, split: str, as_float: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Load a whole split: (images (N,S,S,1) float32 in [0,1] or uint16, labels int64, ids str).

    Raises:
        FileNotFoundError: the set has no shards for ``split``.
    """
    paths = list(iter_shards(set_dir, split))
    if not paths:
        raise FileNotFoundError(
            f"no shards for split {split!r} in {set_dir} (found splits: {splits(set_dir) or 'none'})"
        )
    imgs, labels, ids = [], [], []
    for p in paths:
        with np.load(p, allow_pickle=False) as z:
            imgs.append(z["images"])
            labels.append(z["labels"])
            ids.append(z["image_ids"])
    images = np.concatenate(imgs)
    if as_float:
        images = images.astype(np.float32) / SCALE
    return images, np.concatenate(labels), np.concatenate(ids)


# ---------------------------------------------------------------------------------------------
# tf.data input (training). TensorFlow is imported lazily so reading shards stays numpy-only.

CLASS_BALANCE_MODES = (None, "weights", "oversample")


def _scan_labels(set_dir: str | os.PathLike, split: str) -> list[tuple[Path, np.ndarray]]:
    """(shard path, labels) per shard; np.load reads only the ``labels`` member, not the images."""
    found = []
    for p in iter_shards(set_dir, split):
        with np.load(p, allow_pickle=False) as z:
            found.append((p, z["labels"]))
    if not found:
        raise FileNotFoundError(
            f"no shards for split {split!r} in {set_dir} (found splits: {splits(set_dir) or 'none'})"
        )
    return found


def _select(
    scanned: list[tuple[Path, np.ndarray]], n: int | None, rng: np.random.Generator
) -> list[tuple[Path, np.ndarray]]:
    """Pick ``n`` rows (all when None) uniformly without replacement; returns (shard, row indices)."""
    sizes = [len(labels) for _, labels in scanned]
    total = sum(sizes)
    if n is None or n >= total:
        return [(p, np.arange(len(labels))) for p, labels in scanned]
    chosen = np.sort(rng.choice(total, size=int(n), replace=False))
    out, start = [], 0
    for (p, _), size in zip(scanned, sizes, strict=True):
        rows = chosen[(chosen >= start) & (chosen < start + size)] - start
        if len(rows):
            out.append((p, rows))
        start += size
    return out


def _labels_of(selection: list[tuple[Path, np.ndarray]], scanned: dict[Path, np.ndarray]) -> np.ndarray:
    parts = [scanned[p][rows] for p, rows in selection]
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def class_weights(labels: np.ndarray) -> dict[int, float]:
    """Balanced class weights n / (2 n_c) (classes absent from ``labels`` get weight 1)."""
    labels = np.asarray(labels)
    n = max(len(labels), 1)
    return {
        c: (n / (len(CLASS_NAMES) * int((labels == c).sum())) if (labels == c).any() else 1.0)
        for c in range(len(CLASS_NAMES))
    }


def _pipeline(
    selection: list[tuple[Path, np.ndarray]],
    labels: np.ndarray,
    image_size: int,
    *,
    batch_size: int,
    shuffle: bool,
    seed: int,
    augment,
    class_balance: str | None,
    cache: bool,
    drop_remainder: bool,
):
    import tensorflow as tf

    if class_balance not in CLASS_BALANCE_MODES:
        raise ValueError(f"class_balance must be one of {CLASS_BALANCE_MODES}, got {class_balance!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    rng = np.random.default_rng(seed)
    if class_balance == "oversample" and len(labels):
        # Repeat minority-class rows (seeded) until every class present is as frequent as the largest.
        counts = {c: int((labels == c).sum()) for c in np.unique(labels)}
        target = max(counts.values())
        extra_sel = []
        flat = [(p, r) for p, rows in selection for r in rows]  # same order as ``labels``
        for c, n_c in counts.items():
            if n_c < target:
                idx = rng.choice(np.flatnonzero(labels == c), size=target - n_c, replace=True)
                extra_sel += [flat[i] for i in idx]
        by_shard: dict[Path, list[int]] = {}
        for p, r in flat + extra_sel:
            by_shard.setdefault(p, []).append(int(r))
        selection = [(p, np.asarray(rows)) for p, rows in by_shard.items()]
    n = sum(len(rows) for _, rows in selection)
    paths = [str(p) for p, _ in selection]
    rows_of = [np.asarray(rows) for _, rows in selection]

    def rows():
        # Stream shard by shard so only one shard's images are decompressed at a time.
        for path, idx in zip(paths, rows_of, strict=True):
            with np.load(path, allow_pickle=False) as z:
                images, lab = z["images"], z["labels"]
                if images.shape[1:] != (image_size, image_size, 1):
                    raise ValueError(
                        f"{path}: images {images.shape[1:]} but the set's image_size is "
                        f"{image_size}; re-run preprocess with one image_size"
                    )
                for i in idx:
                    yield images[i], lab[i]

    spec = (tf.TensorSpec((image_size, image_size, 1), tf.uint16), tf.TensorSpec((), tf.int64))
    ds = tf.data.Dataset.from_generator(rows, output_signature=spec)
    ds = ds.apply(tf.data.experimental.assert_cardinality(n))
    if cache:
        ds = ds.cache()  # uint16: half the memory of the float images
    if shuffle:
        ds = ds.shuffle(max(n, 1), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    weights = class_weights(labels) if class_balance == "weights" else None
    weight_table = tf.constant([weights[c] for c in range(len(CLASS_NAMES))], tf.float32) if weights else None

    def to_float(x, y):
        x = tf.cast(x, tf.float32) / SCALE
        if augment is not None:
            x = augment(x, training=True)
        y = tf.cast(y, tf.float32)
        if weight_table is not None:
            return x, y, tf.gather(weight_table, tf.cast(y, tf.int32))
        return x, y

    ds = ds.map(to_float, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def dataset(
    set_dir: str | os.PathLike,
    split: str,
    *,
    batch_size: int = 32,
    shuffle: bool = False,
    seed: int = 0,
    augment=None,
    extra: list[tuple[str | os.PathLike, str, int | None]] | None = None,
    cache: bool = True,
    class_balance: str | None = None,
    drop_remainder: bool = False,
):
    """A `tf.data.Dataset` of ``(images float32 (B,S,S,1) in [0,1], labels float32 (B,)[, weights])``.

    Shards stream one at a time, decoded rows are cached (as uint16), shuffled with ``seed``, batched,
    converted and augmented in a parallel deterministic map, and prefetched.

    Args:
        set_dir: a prepared set.
        split: ``train``, ``val`` or ``test``.
        batch_size: images per batch.
        shuffle: reshuffle every epoch (seeded).
        seed: shuffle/sampling seed.
        augment: a callable ``augment(x, training=True)`` (e.g. `mammosynth.data.augment.build_augmenter`).
        extra: more sources mixed into this split: ``(set_dir, split, n)`` takes ``n`` rows (all when
            None) sampled with ``seed``; e.g. a synthetic set.
        cache: cache decoded rows in memory after the first epoch.
        class_balance: None, ``"weights"`` (yield balanced per-sample weights as a third element) or
            ``"oversample"`` (repeat minority-class rows).
        drop_remainder: drop the last partial batch.

    Raises:
        FileNotFoundError: a split has no shards.
        ValueError: sets disagree on image size, or a bad option.
    """
    sources = [(set_dir, split, None), *(extra or [])]
    selection, labels, size = _plan(sources, seed)
    return _pipeline(
        selection,
        labels,
        size,
        batch_size=batch_size,
        shuffle=shuffle,
        seed=seed,
        augment=augment,
        class_balance=class_balance,
        cache=cache,
        drop_remainder=drop_remainder,
    )


def _plan(sources, seed: int):
    rng = np.random.default_rng(seed)
    selection: list[tuple[Path, np.ndarray]] = []
    labels = []
    size = None
    for set_dir, split, n in sources:
        s = int(read_meta(set_dir)["image_size"])
        if size is not None and s != size:
            raise ValueError(
                f"{set_dir}: image_size {s} differs from {size} of the other set(s); "
                "prepare both sets at the same image size"
            )
        size = s
        scanned = _scan_labels(set_dir, split)
        sel = _select(scanned, n, rng)
        selection += sel
        labels.append(_labels_of(sel, dict(scanned)))
    return selection, np.concatenate(labels) if labels else np.zeros(0, np.int64), size


def count(set_dir: str | os.PathLike, split: str) -> int:
    """Number of rows in a split (reads labels only)."""
    return int(sum(len(labels) for _, labels in _scan_labels(set_dir, split)))


def mixed_dataset(
    real_dir: str | os.PathLike | None,
    synthetic_dir: str | os.PathLike | None,
    ratio: float,
    *,
    use_real: bool = True,
    split: str = "train",
    batch_size: int = 32,
    shuffle: bool = True,
    seed: int = 0,
    augment=None,
    cache: bool = True,
    class_balance: str | None = None,
    drop_remainder: bool = False,
):
    """Real training rows plus synthetic rows at ``ratio`` synthetic:real.

    ``round(ratio × n_real)`` synthetic rows are sampled (seeded, without replacement) from the
    synthetic set's ``train`` split; with ``use_real=False`` (train-on-synthetic, test-on-real) only
    that many synthetic rows are used, so the training-set size matches the real arm.

    Returns:
        ``(dataset, counts)`` with ``counts = {"n_real", "n_synthetic", "n_requested_synthetic"}``.

    Raises:
        ValueError: a ratio < 0, a ratio > 0 without a synthetic set, or nothing to train on.
    """
    if ratio < 0:
        raise ValueError(f"synthetic ratio must be >= 0, got {ratio}")
    if real_dir is None:
        raise ValueError("mixed_dataset needs real_dir (its size sets the synthetic count)")
    n_real = count(real_dir, split)
    n_syn = int(round(ratio * n_real))
    if n_syn and synthetic_dir is None:
        raise ValueError(f"synthetic ratio {ratio} needs a synthetic set (synthetic_dir / --synthetic)")
    if not use_real and not n_syn:
        raise ValueError("use_real=False with no synthetic rows leaves nothing to train on")
    available = count(synthetic_dir, "train") if n_syn else 0
    used_syn = min(n_syn, available)
    if used_syn < n_syn:
        import logging

        logging.getLogger(__name__).warning(
            "synthetic set %s has %d images, %d requested (ratio %.3g × %d real): using all %d",
            synthetic_dir,
            available,
            n_syn,
            ratio,
            n_real,
            available,
        )
    sources = ([(real_dir, split, None)] if use_real else []) + (
        [(synthetic_dir, "train", used_syn)] if used_syn else []
    )
    selection, labels, size = _plan(sources, seed)
    ds = _pipeline(
        selection,
        labels,
        size,
        batch_size=batch_size,
        shuffle=shuffle,
        seed=seed,
        augment=augment,
        class_balance=class_balance,
        cache=cache,
        drop_remainder=drop_remainder,
    )
    counts = {"n_real": n_real if use_real else 0, "n_synthetic": used_syn, "n_requested_synthetic": n_syn}
    return ds, counts

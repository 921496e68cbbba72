"""The prepared-set format: fixed-size image shards that every training stage reads.

A prepared set is a directory of ``<split>-<k:05d>.npz`` shards (``images`` uint16 (N,S,S,1) holding
intensity × 65535, ``labels`` int64, ``image_ids`` str) and a ``meta.json``. 16 bits keep the
mammogram's dynamic range after normalisation at half the size of float32.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from mammosynth.config import CLASS_NAMES

SCALE = 65535.0
DEFAULT_SHARD_SIZE = 1024


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


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
    meta = {"image_size": int(image_size), "channels": 1, "class_names": list(CLASS_NAMES),
            "counts": counts, **(extra or {})}
    _atomic_write(out / "meta.json", lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2)))
    return meta


def read_meta(set_dir: str | os.PathLike) -> dict[str, Any]:
    path = Path(set_dir) / "meta.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} missing: {set_dir} is not a prepared set (run preprocess)")
    return json.loads(path.read_text())


def splits(set_dir: str | os.PathLike) -> list[str]:
    names = {p.name.rsplit("-", 1)[0] for p in Path(set_dir).glob("*-[0-9][0-9][0-9][0-9][0-9].npz")}
    return sorted(names)


def iter_shards(set_dir: str | os.PathLike, split: str) -> Iterator[Path]:
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

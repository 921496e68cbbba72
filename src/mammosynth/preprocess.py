"""Preprocessing: one function turns any mammogram pixel array into model input.

`prepare_image` is used by the preprocess stage *and* by the model server, so training and serving
can never disagree about windowing, resizing or channels.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

import numpy as np
from PIL import Image

from mammosynth import atomic
from mammosynth.data import shards
from mammosynth.provenance import data_source

log = logging.getLogger(__name__)

# Robust intensity window: percentiles ignore the few saturated / zero pixels real crops carry.
LOW_PERCENTILE = 0.5
HIGH_PERCENTILE = 99.5


def prepare_image(pixels: np.ndarray, image_size: int) -> np.ndarray:
    """Window, normalise and resize one image to the classifier's input.

    Args:
        pixels: (H,W), (H,W,1) or (H,W,3|4) array of any numeric dtype (16-bit DICOM values,
            8-bit PNG/JPEG). Colour is converted to luminance.
        image_size: output side S.

    Returns:
        float32 array (S,S,1) in [0,1].

    Raises:
        ValueError: not an image-shaped array, or an empty image.
    """
    arr = np.asarray(pixels)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        arr = arr[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    elif arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise ValueError(f"expected a 2-D image or (H,W,1|3|4) array, got shape {tuple(np.shape(pixels))}")
    if arr.size == 0 or min(arr.shape) < 2:
        raise ValueError(f"image too small to use: shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise ValueError(f"expected numeric pixels, got dtype {arr.dtype}")
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        raise ValueError("image contains NaN or infinite values")
    # float() keeps the arithmetic in float32: NumPy 2 would promote to float64, whose bytes PIL's
    # mode "F" would then misread as float32.
    lo, hi = (float(v) for v in np.percentile(arr, [LOW_PERCENTILE, HIGH_PERCENTILE]))
    if hi <= lo:
        hi = lo + 1.0
    arr = np.clip((arr - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
    if arr.shape != (image_size, image_size):
        # BOX (area) filtering when shrinking avoids aliasing of fine spicules.
        img = Image.fromarray(arr, mode="F")
        resample = Image.BOX if min(arr.shape) > image_size else Image.BILINEAR
        arr = np.asarray(img.resize((image_size, image_size), resample=resample), np.float32)
        arr = np.clip(arr, 0.0, 1.0)
    return arr[..., None]


def load_png16(path: str | os.PathLike) -> np.ndarray:
    """Read an ingested image (16-bit grayscale PNG) as a uint16/uint8 array."""
    with Image.open(path) as img:
        return np.asarray(img)


def run_preprocess(
    split_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    image_size: int,
    splits: tuple[str, ...] = ("train", "val", "test"),
) -> dict:
    """Turn a split ingested set into a prepared set (one shard set per split).

    Args:
        split_dir: ingested set whose ``index.csv`` has the ``split`` column filled.
        out_dir: where the prepared set is written.
        image_size: side S of the square model input.
        splits: the splits to write, each required non-empty (an external test set has only ``test``).

    Returns:
        The prepared set's ``meta.json`` content.
    """
    import pandas as pd

    split_dir, out = Path(split_dir), Path(out_dir)
    index = pd.read_csv(split_dir / "index.csv", dtype=str, keep_default_na=False)
    missing = {"image_id", "label_id", "split", "image_path"} - set(index.columns)
    if missing:
        raise ValueError(f"{split_dir / 'index.csv'} lacks columns {sorted(missing)}; run split first")
    out.mkdir(parents=True, exist_ok=True)
    for split in splits:
        rows = index[index["split"] == split]
        if rows.empty:
            raise ValueError(f"{split_dir / 'index.csv'}: split {split!r} is empty")
        images = np.empty((len(rows), image_size, image_size, 1), np.uint16)
        for i, path in enumerate(rows["image_path"]):
            images[i] = shards.to_uint16(prepare_image(load_png16(split_dir / path), image_size))
        shards.write_split(
            out, split, images, rows["label_id"].astype(int).to_numpy(), rows["image_id"].to_list()
        )
        log.info("preprocess: %s split, %d images at %d²", split, len(rows), image_size)
    write_patients(out, index, storage_digest(split_dir / "index.csv"))
    extra = {"source": str(split_dir), "data_source": data_source(None, split_dir)}  # ingest's record, copied
    return shards.write_meta(out, image_size, extra)


PATIENTS_FILE = "patients.json"


def storage_digest(path: Path) -> str:
    """sha256 of a file (the split index: it fixes the source, split seed and val fraction)."""
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def _patient_hash(patient_id: str) -> str:
    import hashlib

    return hashlib.sha256(f"mammosynth-patient:{patient_id}".encode()).hexdigest()[:16]


def write_patients(out: Path, index, index_sha256: str) -> dict:
    """Write ``patients.json``: hashed patient ids per split (no raw id is stored) and per image.

    ``{"index_sha256", "splits": {split: {"n_patients", "digest", "patients": [hash...]}},
    "image_patient": {split: {image_id: hash}}}``. The digest of a split is the sha256 of its sorted
    patient hashes: two prepared sets trained on the same patients share it. Reuse lineage
    (`mammosynth.synthesize.check_reuse_lineage`) and the patient-grouped floors of the report card
    (`mammosynth.quality`) read it.
    """
    import hashlib

    if "patient_id" not in index.columns:
        return {}
    data: dict = {"index_sha256": index_sha256, "splits": {}, "image_patient": {}}
    for split in ("train", "val", "test"):
        rows = index[index["split"] == split]
        hashes = [_patient_hash(p) for p in rows["patient_id"]]
        unique = sorted(set(hashes))
        digest = hashlib.sha256("\n".join(unique).encode()).hexdigest()
        data["splits"][split] = {"n_patients": len(unique), "digest": digest, "patients": unique}
        data["image_patient"][split] = dict(zip(rows["image_id"], hashes, strict=True))
    atomic.write_text(out / PATIENTS_FILE, json.dumps(data, indent=1, sort_keys=True) + "\n")
    return data


def read_patients(prepared_dir: str | os.PathLike) -> dict | None:
    """``patients.json`` of a prepared set (see `write_patients`), or None when it has none."""
    path = Path(prepared_dir) / PATIENTS_FILE
    return json.loads(path.read_text()) if path.exists() else None


def main(argv: list[str] | None = None) -> int:
    """Run the command line (``python -m mammosynth.preprocess``).

    Args:
        argv: arguments (default: ``sys.argv[1:]``).

    Returns:
        The process exit status.
    """
    parser = argparse.ArgumentParser(
        prog="mammosynth preprocess",
        description="Resize and normalise a split ingested set into training shards.",
    )
    parser.add_argument("--input", required=True, help="split ingested set directory")
    parser.add_argument("--out", required=True, help="prepared set directory to write")
    parser.add_argument("--image-size", type=int, default=64, help="square model input side")
    args = parser.parse_args(argv)
    meta = run_preprocess(args.input, args.out, image_size=args.image_size)
    print(f"prepared set written to {args.out}: {meta['counts']}")
    return 0

"""Ingest: CBIS-DDSM (TCIA DICOM in either layout, or the Kaggle JPEG export) → an ingested set.

A generic labels table (``labels.csv`` + PNG/JPEG/TIFF/PGM/PPM/DICOM images, `mammosynth.data.table`) is
read the same way, with the same guarantees.

The ingested set (docs/design.md) is ``index.csv`` (one row per abnormality image), ``images/``
(16-bit grayscale PNGs, de-identified by construction: no DICOM attribute is copied), ``rejects.csv``
(every CSV row that did not make it, with the reason), ``manifest.json`` (per-file sha256, counts)
and ``eda/``. Every CSV row ends up either in ``index.csv`` or in ``rejects.csv``; the run checks
that counts in = counts out + rejects.

Rows are processed one at a time (or by a small process pool), so memory stays bounded by one
image per worker whatever the size of the source.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from mammosynth import __version__
from mammosynth.atomic import write_bytes as _atomic_write_bytes
from mammosynth.data import cbis
from mammosynth.data import table as table_layout
from mammosynth.data.dicom import DicomError, DicomImage
from mammosynth.logs import setup_logging
from mammosynth.paths import UnsafePath, inside, safe_name

log = logging.getLogger(__name__)

INDEX_COLUMNS = [
    "image_id",
    "patient_id",
    "label",
    "label_id",
    "pathology",
    "official_split",
    "split",
    "abnormality_type",
    "abnormality_id",
    "view",
    "laterality",
    "breast_density",
    "subtlety",
    "mass_shape",
    "mass_margins",
    "calc_type",
    "calc_distribution",
    "assessment",
    "qc_flags",
    "height",
    "width",
    "bits_stored",
    "image_path",
    "source_path",
    "sha256",
]
REJECT_COLUMNS = ["source", "row", "path", "reason"]
IMAGE_KINDS = ("crop", "full")
LOG_EVERY = 100


def _csv_bytes(columns: list[str], rows: Iterable[dict[str, Any]]) -> bytes:
    buf = io.StringIO(newline="")
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue().encode("utf-8")


def to_png16(pixels: np.ndarray) -> np.ndarray:
    """Map decoded pixels to uint16 without losing range: uint16 kept, uint8 × 257, others rescaled."""
    arr = np.asarray(pixels)
    if arr.dtype == np.uint16:
        return arr
    if arr.dtype == np.uint8:
        return arr.astype(np.uint16) * 257
    if np.issubdtype(arr.dtype, np.integer) and arr.min() >= 0 and arr.max() <= 65535:
        return arr.astype(np.uint16)
    arr = arr.astype(np.float64)
    lo, hi = float(arr.min()), float(arr.max())
    return np.round((arr - lo) / max(hi - lo, 1e-12) * 65535.0).astype(np.uint16)


def encode_png16(pixels: np.ndarray) -> bytes:
    """16-bit grayscale PNG bytes with no text/metadata chunks (nothing but pixels leaves)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(to_png16(pixels)).save(buf, format="PNG", optimize=False, compress_level=3)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------- #
# Per-image work (runs in worker processes when workers > 1)
# ---------------------------------------------------------------------------------------------- #
_WORKER: dict[str, Any] = {}


def _init_worker(layout: cbis.Layout, out_dir: Path, image_kind: str) -> None:
    _WORKER.update(layout=layout, out_dir=out_dir, image_kind=image_kind)


def _choose(
    layout: cbis.Layout, cands: list[cbis.Candidate], image_kind: str
) -> tuple[cbis.Candidate, DicomImage]:
    """Decode candidates until one is the wanted image kind (never trusting file numbers).

    Raises:
        cbis.RowError: every readable candidate is a mask ("mask-only") or every one is unreadable.
    """
    lossy = isinstance(layout, cbis.KaggleJpegLayout)
    want = cbis.FULL_DESCRIPTION if image_kind == "full" else cbis.CROP_DESCRIPTION
    # Try files whose series description names the wanted kind first: fewer large masks decoded.
    ordered = sorted(
        cands, key=lambda c: (c.description.lower() != want, c.description.lower() == cbis.MASK_DESCRIPTION)
    )
    errors, masks = [], []
    images: list[tuple[cbis.Candidate, DicomImage]] = []
    for cand in ordered:
        try:
            img = layout.decode(cand)
        except DicomError as exc:
            errors.append(str(exc))
            continue
        if cbis.looks_like_mask(img, lossy=lossy):
            masks.append(layout.relative(cand.path))
            continue
        if image_kind == "crop" and img.series_description.lower() == cbis.FULL_DESCRIPTION:
            continue  # Kaggle/NBIA folders can hold the full view too; a crop was asked for
        images.append((cand, img))
        if image_kind == "crop" or img.series_description.lower() == cbis.FULL_DESCRIPTION:
            break
    if images:
        # For full images without a description, the largest non-mask image is the mammogram.
        return max(images, key=lambda ci: ci[1].pixels.size) if image_kind == "full" else images[0]
    if masks and not errors:
        raise cbis.RowError(f"mask-only: no {image_kind} image among {len(masks)} file(s), only ROI masks")
    if errors:
        raise cbis.RowError(f"unreadable DICOM: {errors[0]}")
    raise cbis.RowError(f"missing file: no {image_kind} image among {len(cands)} candidate file(s)")


def _process_job(job: tuple[str, cbis.CaseRecord]) -> dict[str, Any]:
    """Find, decode and write one image. Returns its facts or ``{"reject": reason, "path": ...}``.

    Never raises for one record's data: any failure (a path outside the source folder, an
    unreadable file, memory) becomes a reject with a reason, so the batch always finishes.
    """
    key, record = job
    try:
        return _process_record(key, record)
    except UnsafePath as exc:
        return {"reject": str(exc), "path": ""}
    except MemoryError:
        return {"reject": "unreadable image: too large to decode in memory", "path": ""}
    except Exception as exc:  # noqa: BLE001 - one record never kills the batch; its kind is recorded
        log.warning(
            "ingest: %s row %s: %s while reading the image", record.csv_file, record.row, type(exc).__name__
        )
        return {"reject": f"unreadable image: {type(exc).__name__} while reading it", "path": ""}


def _process_record(key: str, record: cbis.CaseRecord) -> dict[str, Any]:
    layout: cbis.Layout = _WORKER["layout"]
    image_kind: str = _WORKER["image_kind"]
    try:
        cands = layout.candidates(record, image_kind)
    except cbis.ImageNotFound as exc:
        return {"reject": "missing file", "path": str(exc).removeprefix("missing file").removeprefix(": ")}
    try:
        if isinstance(layout, table_layout.TableLayout):
            cand, img = cands[0], _decode_table_image(layout, cands[0])
        else:
            cand, img = _choose(layout, cands, image_kind)
    except cbis.RowError as exc:
        return {"reject": str(exc), "path": ";".join(layout.relative(c.path) for c in cands)}
    data = encode_png16(img.pixels)
    rel = f"images/{safe_name(key)}.png"
    out_dir = _WORKER["out_dir"]
    _atomic_write_bytes(inside(out_dir, rel, "path outside the output folder"), data)
    return {
        "image_path": rel,
        # A table's file names may carry identifiers: the index points at the table row instead.
        "source_path": (
            cand.description if isinstance(layout, table_layout.TableLayout) else layout.relative(cand.path)
        ),
        "sha256": hashlib.sha256(data).hexdigest(),
        "height": img.rows,
        "width": img.cols,
        "bits_stored": img.bits_stored,
    }


def _decode_table_image(layout: table_layout.TableLayout, cand: cbis.Candidate) -> DicomImage:
    """Decode a table row's one image; a file that cannot be used raises `cbis.RowError` (a reject)."""
    try:
        return layout.decode(cand)
    except DicomError as exc:
        raise cbis.RowError(f"unreadable image: {exc}") from exc


def _index_row(record: cbis.CaseRecord, facts: dict[str, Any]) -> dict[str, Any]:
    return {
        "image_id": record.image_id,
        "patient_id": record.patient_id,
        "label": record.label,
        "label_id": cbis.LABEL_IDS[record.label],
        "pathology": record.pathology,
        "official_split": record.official_split,
        "split": "",
        "abnormality_type": record.abnormality,
        "abnormality_id": record.abnormality_id,
        "view": record.view,
        "laterality": record.laterality,
        "breast_density": record.breast_density,
        "subtlety": record.subtlety,
        "mass_shape": record.descriptors.get("mass_shape", ""),
        "mass_margins": record.descriptors.get("mass_margins", ""),
        "calc_type": record.descriptors.get("calc_type", ""),
        "calc_distribution": record.descriptors.get("calc_distribution", ""),
        "assessment": record.assessment,
        "qc_flags": ";".join(record.qc_flags),
        **facts,
    }


def _check_source(source: str | os.PathLike) -> Path:
    text = os.fspath(source)
    if "://" in text and not text.startswith("file://"):
        scheme = text.split("://", 1)[0]
        raise ValueError(
            f"source {text!r}: scheme {scheme}:// is not readable by ingest directly; fetch it to a "
            "local directory with mammosynth.storage first and pass that path"
        )
    root = Path(text.removeprefix("file://")).expanduser()
    if not root.exists():
        raise FileNotFoundError(
            f"source directory {root} does not exist; "
            "pass a CBIS-DDSM download root or a folder with labels.csv"
        )
    if not root.is_dir():
        raise NotADirectoryError(
            f"source {root} is not a directory; pass the CBIS-DDSM download root or a folder with labels.csv"
        )
    return root


def run_ingest(
    source: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    abnormality: str = "mass",
    image_kind: str = "crop",
    workers: int = 1,
    log_every: int = LOG_EVERY,
    eda: bool = True,
    table: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Read a CBIS-DDSM copy, the phantom, or a generic ``labels.csv`` table into an ingested set.

    Args:
        source: local directory holding ``labels.csv`` (the table layout, `mammosynth.data.table`), or the
            CBIS-DDSM case-description CSVs (at the root or in ``csv/``) and the images in one of the
            supported layouts. ``labels.csv`` is looked for first.
        out_dir: ingested set directory to write.
        abnormality: ``mass``, ``calc`` or ``both`` (CBIS-DDSM layouts only).
        image_kind: ``crop`` (ROI crops) or ``full`` (full mammograms; one PNG shared by the rows
            of the same view). A table row always names one image.
        workers: processes decoding images in parallel (1 = in-process).
        log_every: log progress every this many images.
        eda: also write ``eda/`` figures and ``summary.md``.
        table: a table CSV to read instead of ``source/labels.csv`` (its paths are relative to its folder).

    Returns:
        The ``manifest.json`` content.

    Raises:
        FileNotFoundError / NotADirectoryError: the source is not a local directory, or ``table`` is missing.
        ValueError: unsupported scheme, no CSVs, a table lacking a required column, unknown abnormality/image
            kind, or no known layout.
    """
    if image_kind not in IMAGE_KINDS:
        raise ValueError(f"unknown image kind {image_kind!r}; choose crop or full")
    if workers < 1:
        raise ValueError(f"workers must be ≥ 1, got {workers}")
    t0 = time.perf_counter()
    if table:
        table = table_layout.find_table(Path(), os.fspath(table))  # a missing table file: one clear error
    # With a table and no source, the table's folder is the source (its image paths are relative to it).
    root = _check_source(source) if source else _check_source(Path(table or "").parent)
    layout, csvs, (records, rejects, rows_in) = _open_source(root, abnormality, table)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    log.info(
        "ingest: %s layout, %d CSV file(s), %s %s images", layout.name, len(csvs), abnormality, image_kind
    )
    index_rows = _process_all(records, rejects, layout, out, image_kind, workers, log_every)
    if rows_in != len(index_rows) + len(rejects):
        raise RuntimeError(
            f"ingest bookkeeping error: {rows_in} rows in, {len(index_rows)} out + {len(rejects)} rejected"
        )
    manifest = _write_set(out, root, layout, csvs, abnormality, image_kind, rows_in, index_rows, rejects)
    if eda and index_rows:
        import pandas as pd

        from mammosynth.eda import write_eda

        write_eda(pd.read_csv(out / "index.csv", dtype=str, keep_default_na=False), out / "eda")
    log.info(
        "ingest: %d rows → %d images, %d rejected (%s) in %.1fs",
        rows_in,
        len(index_rows),
        len(rejects),
        dict(Counter(r["reason"].split(":")[0] for r in rejects)),
        time.perf_counter() - t0,
    )
    return manifest


def _open_source(root: Path, abnormality: str, table: str | os.PathLike | None):
    """``(layout, csvs, (records, rejects, rows_in))``: the table layout if a table is found, else CBIS."""
    table_path = table_layout.find_table(root, os.fspath(table) if table else None)
    if table_path is not None:
        layout = table_layout.TableLayout(root, table_path)
        return layout, [(table_path, "table", "")], _read_table(table_path)
    csvs = cbis.find_case_csvs(root, abnormality)
    return cbis.detect_layout(root, csvs[0][0].parent), csvs, _read_records(csvs)


def _process_all(records, rejects, layout, out, image_kind, workers, log_every) -> list[dict[str, Any]]:
    """Decode and write every record's image; failures go to ``rejects``. Returns the index rows."""
    # One job per image file to write: a crop per row, or a full view shared by its rows.
    jobs: dict[str, list[Any]] = {}
    for record in records:
        jobs.setdefault(record.full_image_key if image_kind == "full" else record.image_id, []).append(record)
    job_items = [(key, recs[0]) for key, recs in jobs.items()]
    index_rows: list[dict[str, Any]] = []
    results = _run_jobs(job_items, layout, out, image_kind, workers)
    for n, ((key, _), facts) in enumerate(zip(job_items, results, strict=True), start=1):
        for record in jobs[key]:
            if "reject" in facts:
                rejects.append(_reject(record.csv_file, record.row, facts["path"], facts["reject"]))
            else:
                index_rows.append(_index_row(record, facts))
        if n % log_every == 0 or n == len(job_items):
            log.info(
                "ingest: %d/%d images processed, %d rejected rows so far", n, len(job_items), len(rejects)
            )
    return index_rows


def _write_set(out, root, layout, csvs, abnormality, image_kind, rows_in, index_rows, rejects) -> dict:
    """Write index.csv, rejects.csv and manifest.json (sorted, stale images removed); return the manifest."""
    index_rows.sort(key=lambda r: r["image_id"])
    # A re-run into the same directory must not leave images the index no longer names.
    keep = {r["image_path"] for r in index_rows}
    for stale in (out / "images").glob("*.png"):
        if f"images/{stale.name}" not in keep:
            stale.unlink()
    rejects.sort(key=lambda r: (r["source"], int(r["row"])))
    index_bytes = _csv_bytes(INDEX_COLUMNS, index_rows)
    rejects_bytes = _csv_bytes(REJECT_COLUMNS, rejects)
    _atomic_write_bytes(out / "index.csv", index_bytes)
    _atomic_write_bytes(out / "rejects.csv", rejects_bytes)
    manifest = _manifest(
        root, layout, csvs, abnormality, image_kind, rows_in, index_rows, rejects, index_bytes, rejects_bytes
    )
    _atomic_write_bytes(out / "manifest.json", json.dumps(manifest, indent=2).encode())
    return manifest


def _read_records(csvs) -> tuple[list[cbis.CaseRecord], list[dict[str, Any]], int]:
    """Clean every CSV row: ``(records, rejects, rows_in)``.

    Exact duplicates (same image id and pathology) keep the first row. Conflicting duplicates (same
    image id, different pathology) are *all* rejected with reason ``conflicting duplicate``: there is
    no way to tell which label is right.
    """
    rejects: list[dict[str, Any]] = []
    first: dict[str, cbis.CaseRecord] = {}
    conflicted: set[str] = set()
    rows_in = 0
    for path, kind, split in csvs:
        for number, raw in cbis.iter_case_rows(path):
            rows_in += 1
            try:
                record = cbis.clean_row(
                    raw, csv_file=path.name, row=number, abnormality=kind, official_split=split
                )
            except cbis.RowError as exc:
                rejects.append(_reject(path.name, number, raw.get("cropped_image_file_path", ""), str(exc)))
                continue
            seen = first.get(record.image_id)
            if seen is None:
                first[record.image_id] = record
                continue
            where = f"{seen.csv_file} row {seen.row}"
            if record.image_id in conflicted or record.pathology != seen.pathology:
                conflicted.add(record.image_id)
                reason = f"conflicting duplicate: same patient/side/view/abnormality as {where} with another pathology"
            else:
                reason = f"duplicate row: same patient/side/view/abnormality as {where}"
            rejects.append(_reject(path.name, number, record.cropped_image_file_path, reason))
    records = []
    for image_id, record in first.items():
        if image_id in conflicted:
            reason = "conflicting duplicate: a later row names the same image with another pathology"
            rejects.append(_reject(record.csv_file, record.row, record.cropped_image_file_path, reason))
        else:
            records.append(record)
    return records, rejects, rows_in


def _read_table(path: Path) -> tuple[list[table_layout.TableRecord], list[dict[str, Any]], int]:
    """Clean every table row: ``(records, rejects, rows_in)``.

    A second row naming the same image file or ``image_id`` is rejected (``duplicate image``); when the
    two rows disagree on the label, both are rejected (``conflicting duplicate``): no way to tell which
    label is right.

    Raises:
        ValueError: the header lacks a required column (one line naming it and the fix).
    """
    columns = table_layout.read_header(path)
    table_layout.check_header(path, columns)
    has_split = "split" in columns
    rejects: list[dict[str, Any]] = []
    first: dict[str, table_layout.TableRecord] = {}
    conflicted: set[str] = set()
    rows_in = 0
    for number, raw in cbis.iter_case_rows(path):
        rows_in += 1
        try:
            record = table_layout.clean_row(raw, csv_file=path.name, row=number, has_split=has_split)
        except cbis.RowError as exc:
            rejects.append(_reject(path.name, number, "", str(exc)))  # the row names it; no file name
            continue
        keys = [os.path.normpath(record.image_path), f"id:{record.image_id}"]
        seen = next((first[k] for k in keys if k in first), None)
        if seen is None:
            first.update(dict.fromkeys(keys, record))
            continue
        where = f"{seen.csv_file} row {seen.row}"
        if seen.label != record.label:
            conflicted.add(seen.image_id)
            reason = f"conflicting duplicate: same image as {where} with another label"
        else:
            reason = f"duplicate image: same image file or image_id as {where}"
        rejects.append(_reject(path.name, number, "", reason))
    records = []
    for record in {id(r): r for r in first.values()}.values():
        if record.image_id in conflicted:
            reason = "conflicting duplicate: a later row names the same image with another label"
            rejects.append(_reject(record.csv_file, record.row, "", reason))
        else:
            records.append(record)
    return records, rejects, rows_in


def _reject(source: str, row: int, path: str, reason: str) -> dict[str, Any]:
    return {"source": source, "row": row, "path": path, "reason": reason}


def _run_jobs(job_items, layout, out, image_kind, workers) -> Iterable[dict[str, Any]]:
    if workers == 1 or len(job_items) < 2:
        _init_worker(layout, out, image_kind)
        return [_process_job(job) for job in job_items]
    with ProcessPoolExecutor(
        max_workers=workers, initializer=_init_worker, initargs=(layout, out, image_kind)
    ) as pool:
        return list(pool.map(_process_job, job_items, chunksize=8))


def data_source_label(root: Path, layout: cbis.Layout) -> str:
    """What the ingested data is: ``phantom``, ``table`` or ``cbis-ddsm``.

    ``phantom`` when the source carries the phantom's marker file (wherever it was copied to), ``table`` for
    a generic labels table, else ``cbis-ddsm``.
    """
    from mammosynth.data.phantom import is_phantom

    if is_phantom(root):
        return "phantom"
    return "table" if isinstance(layout, table_layout.TableLayout) else "cbis-ddsm"


def _manifest(
    root, layout, csvs, abnormality, image_kind, rows_in, index_rows, rejects, index_bytes, rejects_bytes
) -> dict[str, Any]:
    files = {
        "index.csv": hashlib.sha256(index_bytes).hexdigest(),
        "rejects.csv": hashlib.sha256(rejects_bytes).hexdigest(),
    }
    for row in index_rows:
        files[row["image_path"]] = row["sha256"]
    by_split_label: dict[str, dict[str, int]] = {}
    for row in index_rows:
        counts = by_split_label.setdefault(row["official_split"], {"benign": 0, "malignant": 0})
        counts[row["label"]] += 1
    return {
        "kind": "mammosynth-ingested-set",
        "mammosynth_version": __version__,
        "source": str(root),
        "source_layout": layout.name,
        "data_source": data_source_label(root, layout),
        "abnormality": abnormality,
        "image_kind": image_kind,
        "csv_files": {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p, _, _ in csvs},
        "counts": {
            "rows_in": rows_in,
            "rows_out": len(index_rows),
            "rejected": len(rejects),
            "images": len({r["image_path"] for r in index_rows}),
            "patients": len({r["patient_id"] for r in index_rows}),
            "label": dict(Counter(r["label"] for r in index_rows)),
            "pathology": dict(Counter(r["pathology"] for r in index_rows)),
            "official_split": dict(Counter(r["official_split"] for r in index_rows)),
            "official_split_label": by_split_label,
            "qc_flags": dict(Counter(f for r in index_rows for f in r["qc_flags"].split(";") if f)),
            "reject_reasons": dict(Counter(r["reason"].split(":")[0] for r in rejects)),
        },
        "files": files,
    }


def main(argv: list[str] | None = None) -> int:
    """``mammosynth ingest``: read a CBIS-DDSM copy or a labels.csv table into an ingested set.

    Args:
        argv: command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        0 on success, after printing a one-line summary of the set written.
    """
    parser = argparse.ArgumentParser(
        prog="mammosynth ingest",
        description="Read CBIS-DDSM (TCIA DICOM, NBIA download or Kaggle JPEG) or a labels.csv table into an "
        "ingested set.",
    )
    parser.add_argument(
        "--source",
        default="",
        help="local source folder: labels.csv (generic table), or a CBIS-DDSM root (CSVs at root or in csv/)",
    )
    parser.add_argument(
        "--table", default=None, help="a labels table CSV to read (image paths relative to its folder)"
    )
    parser.add_argument("--out", required=True, help="ingested set directory to write")
    parser.add_argument("--abnormality", choices=["mass", "calc", "both"], default="mass")
    parser.add_argument("--image-kind", choices=list(IMAGE_KINDS), default="crop")
    parser.add_argument("--workers", type=int, default=1, help="decoding processes")
    parser.add_argument("--log-every", type=int, default=LOG_EVERY, help="progress line every N images")
    parser.add_argument("--no-eda", action="store_true", help="skip the eda/ figures")
    args = parser.parse_args(argv)
    if not args.source and not args.table:
        parser.error("give --source FOLDER (a labels.csv or CBIS-DDSM folder) or --table FILE")
    manifest = run_ingest(
        args.source,
        args.out,
        abnormality=args.abnormality,
        image_kind=args.image_kind,
        workers=args.workers,
        log_every=args.log_every,
        eda=not args.no_eda,
        table=args.table,
    )
    c = manifest["counts"]
    print(
        f"ingested set written to {args.out}: {c['rows_out']} images, {c['rejected']} rejected rows "
        f"({c['label']}); layout {manifest['source_layout']}"
    )
    return 0


if __name__ == "__main__":
    import sys

    setup_logging()
    sys.exit(main())

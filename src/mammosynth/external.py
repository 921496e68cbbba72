"""External validation set: a second test set (another site, scanner or population) prepared like the first.

`prepare_external` ingests an external source (a CBIS-DDSM layout, the phantom, or a ``labels.csv`` table)
with the same ingest code and settings, puts every row in its ``test`` split, and preprocesses it at the
internal prepared set's image size into an **external set**: a prepared set with the one split ``test``
plus, in ``meta.json``, an ``external`` record (where it came from, rows in/out/rejected, and how many of
its patients also sit in the internal set: they should be none). Every arm's seed models then predict it
beside the internal test split (`mammosynth.train.train_classifier` ``external_dir``) and
`mammosynth.evaluate` reports it in its own ``external`` block. Nothing about the external set ever
chooses a model or a hyperparameter.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from mammosynth import atomic

log = logging.getLogger(__name__)

EXTERNAL_KEY = "external"  # the record's key in meta.json
NONE_FILE = "external.json"  # written in place of a set when the study has no external source


def prepare_external(
    source: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    prepared_dir: str | os.PathLike,
    abnormality: str = "mass",
    image_kind: str = "crop",
    table: str | os.PathLike | None = None,
    label: str | None = None,
) -> dict[str, Any]:
    """Ingest and preprocess an external test set the way the internal set was.

    Args:
        source: local folder of the external data (either layout; `mammosynth.ingest.run_ingest`).
        out_dir: the external set to write (a prepared set with split ``test``).
        prepared_dir: the internal prepared set (its image size is used; its patients are checked).
        abnormality: as for the internal ingest.
        image_kind: as for the internal ingest.
        table: a table CSV instead of ``source/labels.csv``.
        label: how to name the source in the record (default: ``source``).

    Returns:
        The external set's ``meta.json`` content.

    Raises:
        ValueError: no usable image in the source, or the external set lacks a class (AUC needs both).
    """
    import pandas as pd

    from mammosynth.data import shards
    from mammosynth.ingest import run_ingest
    from mammosynth.preprocess import read_patients, run_preprocess

    out = Path(out_dir)
    image_size = int(shards.read_meta(prepared_dir)["image_size"])
    with tempfile.TemporaryDirectory(prefix="mammosynth-external-") as tmp:
        work = Path(tmp) / "ingested"
        manifest = run_ingest(
            source, work, abnormality=abnormality, image_kind=image_kind, eda=False, table=table
        )
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy2(work / "rejects.csv", out / "rejects.csv")
        atomic.write_text(out / "ingest_manifest.json", json.dumps(manifest, indent=2))
        index = pd.read_csv(work / "index.csv", dtype=str, keep_default_na=False)
        if set(index["label"]) != {"benign", "malignant"}:
            raise ValueError(
                f"external source {label or source}: {len(index)} usable image(s) with labels "
                f"{sorted(set(index['label']))}; an external test set needs benign and malignant cases "
                f"(see {out / 'rejects.csv'} for rows that were rejected)"
            )
        index["split"] = "test"
        atomic.write_text(work / "index.csv", index.to_csv(index=False, lineterminator="\n"))
        meta = run_preprocess(work, out, image_size=image_size, splits=("test",))
    record = {
        "source": str(label or source),
        "source_layout": manifest["source_layout"],
        "data_source": manifest.get("data_source"),
        "rows_in": manifest["counts"]["rows_in"],
        "rows_out": manifest["counts"]["rows_out"],
        "rejected": manifest["counts"]["rejected"],
        "patients": manifest["counts"]["patients"],
        "patients_also_internal": _shared_patients(read_patients(prepared_dir), read_patients(out)),
    }
    if record["patients_also_internal"]:
        log.warning(
            "external: %d patient(s) of the external set also sit in the internal set; the external "
            "estimate is then not independent",
            record["patients_also_internal"],
        )
    extra = {k: v for k, v in meta.items() if k not in ("image_size", "channels", "class_names", "counts")}
    meta = shards.write_meta(out, image_size, {**extra, EXTERNAL_KEY: record})
    log.info("external: %s → %s (%d rejected rows)", record["source"], meta["counts"], record["rejected"])
    return meta


def _shared_patients(internal: dict | None, external: dict | None) -> int | None:
    """How many external patients (hashed ids) appear in any internal split; None when either lacks ids."""
    if not internal or not external:
        return None
    inside = {h for s in internal.get("splits", {}).values() for h in s.get("patients", [])}
    outside = set((external.get("splits", {}).get("test") or {}).get("patients", []))
    return len(inside & outside)


def write_none(out_dir: str | os.PathLike) -> Path:
    """Mark ``out_dir`` as "no external test set" (the pipeline's default, ``external_source=""``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return atomic.write_text(out / NONE_FILE, json.dumps({"external_source": ""}) + "\n")


def external_dir_or_none(path: str | os.PathLike | None) -> str | None:
    """``path`` when it holds an external set (a ``meta.json`` with the external record), else None."""
    if not path:
        return None
    meta = Path(path) / "meta.json"
    if not meta.is_file():
        return None
    return os.fspath(path) if EXTERNAL_KEY in json.loads(meta.read_text()) else None

"""Provenance of a run's data: the one reader of ingest's ``data_source``, and the test set's name.

`test_set_name` is what a reader sees for the test set that data source implies (phantom data is called
phantom).

Ingest writes the field (`mammosynth.ingest.data_source_label`); this module only reads it back, and
imports nothing heavy, so the serving image (which shares `mammosynth.preprocess`) can use it without
ingest's dependencies.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

# Where ingest's ``data_source`` travels: ingest and split write ``manifest.json``, preprocess copies the
# field into ``meta.json`` and training into the saved model's ``model.json`` (under ``training``).
_RECORD_FILES = ("manifest.json", "meta.json", "model.json")


def _recorded(record: str | os.PathLike | Mapping[str, Any] | None) -> str | None:
    if record is None:
        return None
    if isinstance(record, Mapping):
        docs: Iterable[Any] = [record]
    else:
        docs = []
        for name in _RECORD_FILES:
            path = Path(record) / name
            try:
                docs.append(json.loads(path.read_text()) if path.is_file() else None)
            except (ValueError, OSError):
                docs.append(None)
    for doc in docs:
        if isinstance(doc, Mapping):
            training = doc.get("training")
            value = doc.get("data_source") or (
                training.get("data_source") if isinstance(training, Mapping) else None
            )
            if value:
                return str(value)
    return None


def data_source(
    source: str | None, record: str | os.PathLike | Mapping[str, Any] | None = None
) -> str | None:
    """What data a run uses, ``"phantom"``, ``"cbis-ddsm"`` or ``"table"``: the one reader of ingest's record.

    Ingest records ``data_source`` in ``manifest.json`` from what the source folder holds
    (`data_source_label`: the phantom's marker file, a labels table, else CBIS-DDSM); split copies the
    manifest, preprocess copies the field into ``meta.json`` and training into ``model.json``'s
    ``training``. Fallback order:

    1. what ``record`` holds: a folder's ``manifest.json`` (an ingested or split set), else its ``meta.json``
       (a prepared set), else its ``model.json`` (a saved model); in each, and in a mapping (such metadata
       already read), ``data_source``, else ``training.data_source``. The record wins, so a phantom
       uploaded to S3 under any name stays a phantom.
    2. else what the ``source`` name says: ``embedded`` (or ``phantom``) is the phantom, any other name (a
       folder, an s3:// prefix) ``cbis-ddsm``;
    3. else None (no record and no source name; sets made by an older version record nothing).

    Args:
        source: the study's ``source`` argument (``embedded``, a folder or an s3:// prefix), or None.
        record: a folder or metadata carrying ingest's record, or None.

    Returns:
        ``"phantom"``, ``"cbis-ddsm"``, ``"table"`` or None.
    """
    recorded = _recorded(record)
    if recorded:
        return recorded
    if not source:
        return None
    return "phantom" if source in ("embedded", "phantom") else "cbis-ddsm"


def test_set_name(data_source: str | None) -> str:
    """What to call the test set where a reader sees results: phantom data is called phantom.

    Args:
        data_source: ``"phantom"`` (the embedded data), ``"cbis-ddsm"`` (real scans) or None (unknown).

    Returns:
        ``"phantom test set"``, ``"real test set"`` or ``"shared test set"``.
    """
    if data_source == "phantom":
        return "phantom test set"
    return "real test set" if data_source else "shared test set"

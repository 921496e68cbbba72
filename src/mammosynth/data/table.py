"""The generic table layout: bring your own mammograms as ``labels.csv`` + image files.

A source folder holding ``labels.csv`` (or any CSV given with ``mammosynth ingest --table FILE``) is read
as one row per image:

* required: ``image_path`` (relative to the CSV's folder, and staying inside it), ``patient_id``, and
  ``label`` (``benign``/``malignant``, or ``0``/``1`` with 1 = malignant: the positive class; the
  original study used malignant = 0) or ``pathology`` (``MALIGNANT``, ``BENIGN``,
  ``BENIGN_WITHOUT_CALLBACK``);
* optional: ``split`` (``train``/``test``), ``image_id``, ``view``, ``laterality``, ``abnormality_type``,
  ``mass_shape``, ``mass_margins``, ``breast_density``, ``subtlety`` (``abnormality_type`` defaults to
  ``mass``; ingest's ``abnormality`` setting applies to the CBIS-DDSM layouts only).

Images may be PNG, JPEG, TIFF, PGM/PPM (8- or 16-bit; RGB converted to gray) or DICOM, sniffed by
content, decoded under the shared pixel budget (`mammosynth.data.images`). Patient ids are pseudonymised
on the way in (`pseudonym`): an in-house export may carry medical record numbers, so the ingested set
never holds the raw id. Without a ``split`` column the split stage draws a patient-level, label-
stratified test split (`mammosynth.data.split`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mammosynth.data import cbis
from mammosynth.data.dicom import DicomError, DicomImage, DicomTooLarge, decode_dicom
from mammosynth.data.images import ImageDecodeError, PixelBudgetExceeded, decode_pil
from mammosynth.paths import inside, safe_name

TABLE_FILE = "labels.csv"
REQUIRED = ("image_path", "patient_id")
LABEL_COLUMNS = ("label", "pathology")
OPTIONAL = (
    "split",
    "image_id",
    "view",
    "laterality",
    "abnormality_type",
    "mass_shape",
    "mass_margins",
    "breast_density",
    "subtlety",
)
LABEL_VALUES = {"benign": "benign", "malignant": "malignant", "0": "benign", "1": "malignant"}
LABEL_PATHOLOGY = {"benign": "BENIGN", "malignant": "MALIGNANT"}
SPLIT_VALUES = ("train", "test")
NO_SPLIT = ""  # official_split of a table without a split column: the split stage draws the test split
PIL_KINDS = ("png", "jpeg", "tiff", "pnm")


def pseudonym(patient_id: str) -> str:
    """The ingested set's id for a table's patient: ``pt-`` + 16 hex digits of a salted sha256.

    Stable (the same id always maps to the same pseudonym, so the patient-level split still groups a
    patient's images) and one-way: the raw id never reaches the ingested set.
    """
    return "pt-" + hashlib.sha256(f"mammosynth-table-patient:{patient_id}".encode()).hexdigest()[:16]


def find_table(root: Path, table: str | None = None) -> Path | None:
    """The table to read: ``table`` if given (must exist), else ``root/labels.csv`` if present, else None.

    Raises:
        FileNotFoundError: ``table`` is given but is not a file.
    """
    if table:
        path = Path(table).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"--table {table}: no such file; pass the path of your labels CSV")
        return path
    path = root / TABLE_FILE
    return path if path.is_file() else None


def check_header(path: Path, columns: list[str]) -> None:
    """Refuse a table that lacks a required column, in one line naming the column and the fix.

    Raises:
        ValueError: ``image_path``/``patient_id`` missing, or neither ``label`` nor ``pathology`` present.
    """
    for name in REQUIRED:
        if name not in columns:
            raise ValueError(
                f"{path.name}: required column {name!r} is missing "
                f"(header: {', '.join(columns) or 'empty'}); "
                f"add a {name} column (see README 'Bring your own data')"
            )
    if not any(c in columns for c in LABEL_COLUMNS):
        raise ValueError(
            f"{path.name}: required column 'label' (benign/malignant or 0/1, 1 = malignant) or 'pathology' "
            "(MALIGNANT/BENIGN/BENIGN_WITHOUT_CALLBACK) is missing; add one of them"
        )


def read_header(path: Path) -> list[str]:
    """The table's normalised column names (`mammosynth.data.cbis.normalise_column`)."""
    import csv

    with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as fh:
        header = next(csv.reader(fh), [])
    return [cbis.normalise_column(h) for h in header]


@dataclass
class TableRecord:
    """One cleaned table row (attribute names as in `mammosynth.data.cbis.CaseRecord`, which ingest reads)."""

    csv_file: str
    row: int
    image_path: str
    patient_id: str
    label: str
    pathology: str
    official_split: str
    image_id: str
    view: str = ""
    laterality: str = ""
    abnormality: str = "mass"
    breast_density: str = ""
    subtlety: str = ""
    descriptors: dict[str, str] = field(default_factory=dict)
    qc_flags: list[str] = field(default_factory=list)
    abnormality_id: str = "1"
    assessment: str = ""

    @property
    def cropped_image_file_path(self) -> str:
        """The row's image path (the name ingest's reject rows use for every layout)."""
        return self.image_path

    @property
    def full_image_key(self) -> str:
        """One image per row: the full-image key is the image id."""
        return self.image_id


def _label(raw: dict[str, str]) -> tuple[str, str]:
    """``(label, pathology)`` of a row. Raises `cbis.RowError` naming the unknown value."""
    if raw.get("pathology", ""):
        pathology = raw["pathology"].upper()
        if pathology not in cbis.PATHOLOGY_LABELS:
            raise cbis.RowError(
                f"unknown pathology: {raw['pathology']!r} "
                "(expected MALIGNANT, BENIGN or BENIGN_WITHOUT_CALLBACK)"
            )
        label = cbis.PATHOLOGY_LABELS[pathology]
        if raw.get("label", "") and LABEL_VALUES.get(raw["label"].lower()) not in (None, label):
            raise cbis.RowError(
                f"conflicting label: label {raw['label']!r} disagrees with pathology {pathology}"
            )
        return label, pathology
    text = raw.get("label", "")
    if not text:
        raise cbis.RowError("missing field: label (or pathology)")
    label = LABEL_VALUES.get(text.strip().lower())
    if label is None:
        raise cbis.RowError(f"unknown label: {text!r} (expected benign/malignant or 0/1 with 1 = malignant)")
    return label, LABEL_PATHOLOGY[label]


def clean_row(raw: dict[str, str], *, csv_file: str, row: int, has_split: bool) -> TableRecord:
    """Validate and normalise one table row.

    Raises:
        cbis.RowError: malformed row, an empty required field, an unknown label/pathology/split/view/side.
    """
    if cbis.MALFORMED in raw:
        raise cbis.RowError(raw[cbis.MALFORMED])
    missing = [f for f in REQUIRED if not raw.get(f, "")]
    if missing:
        raise cbis.RowError(f"missing field: {', '.join(missing)}")
    label, pathology = _label(raw)
    split = raw.get("split", "").lower() if has_split else NO_SPLIT
    if has_split and split not in SPLIT_VALUES:
        raise cbis.RowError(f"unknown split: {raw.get('split', '')!r} (expected train or test)")
    view, side = raw.get("view", "").upper(), raw.get("laterality", "").upper()
    side = {"L": "LEFT", "R": "RIGHT"}.get(side, side)
    if view and view not in ("CC", "MLO"):
        raise cbis.RowError(f"bad field: view = {raw['view']!r} (expected CC or MLO, or leave it empty)")
    if side and side not in ("LEFT", "RIGHT"):
        raise cbis.RowError(f"bad field: laterality = {raw['laterality']!r} (expected LEFT/RIGHT or L/R)")
    flags = [
        f
        for name, rng in (("breast_density", cbis.DENSITY_RANGE), ("subtlety", cbis.SUBTLETY_RANGE))
        if raw.get(name, "")
        for f in [cbis._range_flag(raw[name], name, *rng)]
        if f
    ]
    image_id = (
        raw.get("image_id", "") or "table-" + hashlib.sha256(raw["image_path"].encode()).hexdigest()[:12]
    )
    return TableRecord(
        csv_file=csv_file,
        row=row,
        image_path=raw["image_path"],
        patient_id=pseudonym(raw["patient_id"]),
        label=label,
        pathology=pathology,
        official_split=split,
        image_id=safe_name(image_id),
        view=view,
        laterality=side,
        abnormality=(raw.get("abnormality_type", "") or "mass").lower(),
        breast_density=raw.get("breast_density", ""),
        subtlety=raw.get("subtlety", ""),
        descriptors={c: raw.get(c, "") for c in ("mass_shape", "mass_margins")},
        qc_flags=flags,
    )


def sniff_kind(raw: bytes) -> str:
    """`mammosynth.data.images.sniff` plus PGM/PPM (``P2``/``P3``/``P5``/``P6`` magic): the image's kind."""
    from mammosynth.data.images import sniff

    kind = sniff(raw)
    if not kind and raw[:2] in (b"P2", b"P3", b"P5", b"P6") and raw[2:3].isspace():
        return "pnm"
    return kind


class TableLayout(cbis.Layout):
    """Images named by a table's ``image_path`` column, relative to the table's folder."""

    name = "table"

    def __init__(self, root: Path, table: Path):
        super().__init__(table.parent.resolve())
        self.table = table

    def candidates(self, record: TableRecord, image_kind: str) -> list[cbis.Candidate]:
        """The one file the row names (inside the table's folder).

        Raises:
            cbis.ImageNotFound: the file does not exist.
            mammosynth.paths.UnsafePath: the path leaves the table's folder.
        """
        path = inside(self.root, record.image_path)
        if not path.is_file():
            raise cbis.ImageNotFound("missing file")
        # Named by its table row in every message: file names may carry identifiers.
        return [cbis.Candidate(path, f"{record.csv_file} row {record.row}")]

    def decode(self, cand: cbis.Candidate) -> DicomImage:
        """Decode a PNG/JPEG/TIFF/PGM/PPM (8/16-bit, RGB → gray) or DICOM file to 2-D pixels.

        Raises:
            DicomTooLarge: over the pixel budget.
            DicomError: not a supported image, or undecodable.
        """
        name = cand.description or "image"
        raw = cand.path.read_bytes()
        kind = sniff_kind(raw)
        if kind == "dicom":
            return decode_dicom(raw, name=name)
        if kind not in PIL_KINDS:
            raise DicomError(f"{name}: not a PNG, JPEG, TIFF, PGM/PPM or DICOM file")
        try:
            arr = decode_pil(raw, name)
        except PixelBudgetExceeded as exc:
            raise DicomTooLarge(str(exc)) from exc
        except (ImageDecodeError, OSError) as exc:
            raise DicomError(str(exc)) from exc
        if arr.ndim != 2:
            raise DicomError(f"{name}: expected a 2-D image after gray conversion, got shape {arr.shape}")
        bits = 8 if arr.dtype == np.uint8 else 16
        return DicomImage(arr, "", bits, arr.shape[0], arr.shape[1], "MONOCHROME2", "MG")

    def relative(self, path: Path) -> str:
        """Never a file name: a table's reject rows and index name the table row instead."""
        return ""

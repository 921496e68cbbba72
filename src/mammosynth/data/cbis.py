"""CBIS-DDSM metadata and on-disk layouts.

Metadata cleaning is done here, in the open, once:

* the case-description CSVs are read with a real CSV parser (records end in CRLF and one quoted
  path per row carries a bare LF, which is stripped);
* ``N/A`` stays a category (pandas would turn it into NaN unless ``keep_default_na=False``);
* column names are normalised once (``breast density`` in calc files vs ``breast_density``);
* out-of-range values (density 0, subtlety 0) are *flagged*, never silently dropped;
* pathology maps to the study label: MALIGNANT → malignant, BENIGN / BENIGN_WITHOUT_CALLBACK →
  benign (the original value is kept in ``pathology``).

Three image layouts are supported, detected from the directory tree:

* ``tcia-old``: ``<PatientFolder>/<StudyUID>/<SeriesUID>/00000k.dcm`` exactly as the CSVs name them;
* ``tcia-current``: ``<PatientFolder>/<MM-DD-YYYY>-DDSM-<n>/<1|1.000000>-<series description>-<n>/*.dcm``
  (the NBIA downloader), matched through the patient folder name;
* ``kaggle-jpeg``: ``csv/`` + ``jpeg/<SeriesInstanceUID>/*.jpg`` mapped through ``csv/dicom_info.csv``.
"""

from __future__ import annotations

import csv
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mammosynth.data.dicom import (
    CROP_DESCRIPTION,
    FULL_DESCRIPTION,
    MASK_DESCRIPTION,
    DicomError,
    DicomImage,
    DicomTooLarge,
    decode_dicom,
    is_roi_mask,
)
from mammosynth.data.images import ImageDecodeError, PixelBudgetExceeded, decode_pil
from mammosynth.paths import inside

log = logging.getLogger(__name__)

ABNORMALITIES = ("mass", "calc")
SPLITS = ("train", "test")
PATHOLOGY_LABELS = {"MALIGNANT": "malignant", "BENIGN": "benign", "BENIGN_WITHOUT_CALLBACK": "benign"}
LABEL_IDS = {"benign": 0, "malignant": 1}
DENSITY_RANGE = (1, 4)
SUBTLETY_RANGE = (1, 5)

PATIENT_FOLDER_RE = re.compile(r"^(Mass|Calc)-(Training|Test)_P_\d+_(LEFT|RIGHT)_(CC|MLO)(_\d+)?$")
DATE_STUDY_RE = re.compile(r"^\d{2}-\d{2}-\d{4}-")
UID_RE = re.compile(r"^\d+(\.\d+)+$")
MALFORMED = "_malformed"
MAX_FIELD_CHARS = 4096  # the longest real CBIS-DDSM field is ~130 characters
REQUIRED_FIELDS = ("patient_id", "left_or_right_breast", "image_view", "abnormality_id", "pathology")


def csv_name(abnormality: str, split: str) -> str:
    """File name of an official case-description CSV, e.g. ``mass_case_description_train_set.csv``."""
    return f"{abnormality}_case_description_{split}_set.csv"


def normalise_column(name: str) -> str:
    """``'breast density'`` / ``'ROI mask file path'`` → ``'breast_density'`` / ``'roi_mask_file_path'``."""
    return re.sub(r"[^0-9a-z]+", "_", name.strip().lower()).strip("_")


def _decoded_lines(path: str | os.PathLike) -> Iterator[str]:
    """The file's text, UTF-8 (BOM dropped); undecodable bytes kept as surrogates for the row check."""
    with open(path, "rb") as fh:
        head = fh.read(3)
        if head != b"\xef\xbb\xbf":
            fh.seek(0)
        for line in fh:
            yield line.decode("utf-8", errors="surrogateescape")


def _row_problem(values: list[str], n_header: int) -> str | None:
    """Why a parsed CSV record cannot be used, or None."""
    if len(values) > n_header:
        return f"malformed row: {len(values)} fields, header has {n_header}"
    for i, value in enumerate(values):
        if "\0" in value:
            return f"malformed row: NUL byte in field {i + 1}"
        if any("\udc80" <= ch <= "\udcff" for ch in value):
            return f"malformed row: undecodable (non-UTF-8) bytes in field {i + 1}; re-save the CSV as UTF-8"
        if len(value) > MAX_FIELD_CHARS:
            return f"malformed row: field {i + 1} is {len(value)} characters, over {MAX_FIELD_CHARS}"
    return None


def iter_case_rows(path: str | os.PathLike) -> Iterator[tuple[int, dict[str, str]]]:
    """Stream a case-description CSV row by row; a bad row is yielded as a reject, never an abort.

    The file is read as UTF-8 (an optional BOM dropped). Stated fallback for damaged files: a row
    with undecodable (non-UTF-8) bytes, a NUL byte, more fields than the header, a field over the csv
    module's size limit or over `MAX_FIELD_CHARS` is yielded as ``{MALFORMED: reason}`` so that
    `clean_row` rejects just that row. An empty file (no header) yields nothing, with a warning.

    Yields:
        ``(row_number, row)``: 1-based data-row number and a dict with normalised column names and
        stripped values (embedded LFs in path fields removed; ``N/A`` kept as text).

    Raises:
        ValueError: the header itself is undecodable or malformed.
    """
    reader = csv.reader(_decoded_lines(path))
    try:
        header_values = next(reader)
    except StopIteration:
        log.warning("%s: empty CSV (no header, no rows); nothing to ingest from it", Path(path).name)
        return
    except csv.Error as exc:
        raise ValueError(f"{path}: unreadable CSV header ({exc}); expected the CBIS-DDSM header") from None
    if _row_problem(header_values, len(header_values)):
        raise ValueError(f"{path}: CSV header has undecodable bytes or NUL; re-save the file as UTF-8")
    header = [normalise_column(h) for h in header_values]
    number = 0
    while True:
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            number += 1
            yield number, {MALFORMED: f"malformed row: {exc}"}
            continue
        if not values or all(not v.strip() for v in values):
            number += 1
            continue
        number += 1
        problem = _row_problem(values, len(header))
        if problem:
            yield number, {MALFORMED: problem}
            continue
        values = values + [""] * (len(header) - len(values))
        yield number, {k: v.strip() for k, v in zip(header, values, strict=True)}


def read_case_csv(path: str | os.PathLike):
    """Read a whole case-description CSV into a DataFrame (strings; ``N/A`` kept; columns normalised)."""
    import pandas as pd

    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    df.columns = [normalise_column(c) for c in df.columns]
    return df.apply(lambda col: col.str.strip())


def find_case_csvs(root: Path, abnormality: str) -> list[tuple[Path, str, str]]:
    """Locate the official CSVs at the source root or in ``csv/``.

    Returns:
        ``(path, abnormality, official_split)`` for each CSV found (train before test).

    Raises:
        ValueError: ``abnormality`` unknown, or none of the expected CSVs exist.
    """
    kinds = ABNORMALITIES if abnormality == "both" else (abnormality,)
    if any(k not in ABNORMALITIES for k in kinds):
        raise ValueError(f"unknown abnormality {abnormality!r}; choose mass, calc or both")
    found = []
    for kind in kinds:
        for split in SPLITS:
            for folder in (root, root / "csv"):
                path = folder / csv_name(kind, split)
                if path.is_file():
                    found.append((path, kind, split))
                    break
    if not found:
        expected = ", ".join(csv_name(k, s) for k in kinds for s in SPLITS)
        raise ValueError(
            f"no CBIS-DDSM case-description CSVs under {root} or {root / 'csv'}: expected {expected} "
            "(download them from TCIA, or use the Kaggle export's csv/ folder)"
        )
    return found


class RowError(ValueError):
    """A CSV row that cannot become an index row; ``reason`` goes to rejects.csv."""


@dataclass
class CaseRecord:
    """One cleaned CSV row (one abnormality in one view)."""

    csv_file: str
    row: int
    abnormality: str
    official_split: str
    patient_id: str
    laterality: str
    view: str
    abnormality_id: str
    pathology: str
    label: str
    breast_density: str
    subtlety: str
    assessment: str
    descriptors: dict[str, str]
    image_file_path: str
    cropped_image_file_path: str
    roi_mask_file_path: str
    qc_flags: list[str] = field(default_factory=list)

    @property
    def folder(self) -> str:
        """Patient folder of the crop/mask (``Mass-Training_P_00001_LEFT_CC_1``)."""
        prefix = {"mass": "Mass", "calc": "Calc"}[self.abnormality]
        side = {"train": "Training", "test": "Test"}[self.official_split]
        return f"{prefix}-{side}_{self.patient_id}_{self.laterality}_{self.view}_{self.abnormality_id}"

    @property
    def full_folder(self) -> str:
        """Patient folder of the full mammogram: `folder` without the abnormality number."""
        return self.folder.rsplit("_", 1)[0]

    @property
    def image_id(self) -> str:
        """The abnormality's id (``mass-train-P_00001-LEFT-CC-1``): one crop, one ``images/`` file."""
        parts = (self.abnormality, self.official_split, self.patient_id, self.laterality, self.view)
        return "-".join(map(str, parts)) + f"-{self.abnormality_id}"

    @property
    def full_image_key(self) -> str:
        """The view's id (``mass-train-P_00001-LEFT-CC``), shared by the abnormalities of one full mammogram."""
        return f"{self.abnormality}-{self.official_split}-{self.patient_id}-{self.laterality}-{self.view}"


def _range_flag(value: str, name: str, lo: int, hi: int) -> str | None:
    try:
        number = int(value)
    except ValueError:
        return f"{name}_not_integer"
    return None if lo <= number <= hi else f"{name}_out_of_range"


def clean_row(
    raw: dict[str, str], *, csv_file: str, row: int, abnormality: str, official_split: str
) -> CaseRecord:
    """Validate and normalise one CSV row.

    Raises:
        RowError: a required field is empty or the pathology is unknown (reason names the field/value).
    """
    if MALFORMED in raw:
        raise RowError(raw[MALFORMED])
    missing = [f for f in REQUIRED_FIELDS if not raw.get(f, "")]
    if not (raw.get("cropped_image_file_path") or raw.get("image_file_path")):
        missing.append("cropped_image_file_path")
    if missing:
        raise RowError(f"missing field: {', '.join(missing)}")
    pathology = raw["pathology"].upper()
    if pathology not in PATHOLOGY_LABELS:
        raise RowError(
            f"unknown pathology: {raw['pathology']!r} (expected one of {', '.join(PATHOLOGY_LABELS)})"
        )
    laterality, view = raw["left_or_right_breast"].upper(), raw["image_view"].upper()
    if laterality not in ("LEFT", "RIGHT"):
        raise RowError(
            f"bad field: left or right breast = {raw['left_or_right_breast']!r} (expected LEFT/RIGHT)"
        )
    if view not in ("CC", "MLO"):
        raise RowError(f"bad field: image view = {raw['image_view']!r} (expected CC/MLO)")
    flags = [
        f
        for f in (
            _range_flag(raw.get("breast_density", ""), "breast_density", *DENSITY_RANGE),
            _range_flag(raw.get("subtlety", ""), "subtlety", *SUBTLETY_RANGE),
        )
        if f
    ]
    descriptor_cols = (
        ("mass_shape", "mass_margins") if abnormality == "mass" else ("calc_type", "calc_distribution")
    )
    return CaseRecord(
        csv_file=csv_file,
        row=row,
        abnormality=abnormality,
        official_split=official_split,
        patient_id=raw["patient_id"],
        laterality=laterality,
        view=view,
        abnormality_id=raw["abnormality_id"],
        pathology=pathology,
        label=PATHOLOGY_LABELS[pathology],
        breast_density=raw.get("breast_density", ""),
        subtlety=raw.get("subtlety", ""),
        assessment=raw.get("assessment", ""),
        descriptors={c: raw.get(c, "") for c in descriptor_cols},
        image_file_path=raw.get("image_file_path", ""),
        cropped_image_file_path=raw.get("cropped_image_file_path", ""),
        roi_mask_file_path=raw.get("roi_mask_file_path", ""),
        qc_flags=flags,
    )


# ---------------------------------------------------------------------------------------------- #
# Layouts
# ---------------------------------------------------------------------------------------------- #
class ImageNotFound(LookupError):
    """No file for a row exists in the layout; the message lists where it looked."""


@dataclass
class Candidate:
    """A file that may hold the row's image; ``description`` is the series description if known."""

    path: Path
    description: str = ""


class Layout:
    """Maps a case record to candidate image files and decodes them."""

    name = "layout"

    def __init__(self, root: Path):
        self.root = root

    def candidates(self, record: CaseRecord, image_kind: str) -> list[Candidate]:
        """Files that may hold the record's image, all resolved inside the source root.

        Raises:
            ImageNotFound: no file exists for the record.
            mammosynth.paths.UnsafePath: a CSV path or id resolves outside the source folder.
        """
        raise NotImplementedError

    def decode(self, cand: Candidate) -> DicomImage:
        """Decode one candidate DICOM (named by its path relative to the source root in errors)."""
        return decode_dicom(cand.path, name=self.relative(cand.path))

    def relative(self, path: Path) -> str:
        """``path`` relative to the source root (POSIX), or the path as is when it lies outside it."""
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return str(path)


def _header_description(path: Path) -> str:
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SeriesDescription"])
        return str(ds.get("SeriesDescription", "") or "").strip()
    except Exception:  # noqa: BLE001 - an unreadable header is reported when the file is decoded
        return ""


class TciaOldLayout(Layout):
    """``<PatientFolder>/<StudyUID>/<SeriesUID>/00000k.dcm`` exactly as the CSV paths say."""

    name = "tcia-old"

    def __init__(self, root: Path, base: Path):
        super().__init__(root)
        self.base = base

    def candidates(self, record: CaseRecord, image_kind: str) -> list[Candidate]:
        """Every DICOM in the series folders the CSV paths name (crop and mask numbers are unreliable)."""
        paths = (
            [record.image_file_path]
            if image_kind == "full"
            else [record.cropped_image_file_path, record.roi_mask_file_path]
        )
        # Crop and mask numbers in the CSV are unreliable, so look at both files of each series.
        found: list[Path] = []
        for rel in filter(None, paths):
            series_dir = inside(self.root, self.base / rel).parent
            for sibling in sorted(series_dir.glob("*.dcm")) if series_dir.is_dir() else []:
                if sibling not in found:
                    found.append(inside(self.root, sibling))
        if not found:
            raise ImageNotFound(f"missing file: {', '.join(p for p in paths if p)}")
        return [Candidate(p, _header_description(p)) for p in found]


class TciaCurrentLayout(Layout):
    """NBIA downloader layout, matched through the patient folder name."""

    name = "tcia-current"

    def __init__(self, root: Path, base: Path):
        super().__init__(root)
        self.base = base

    def candidates(self, record: CaseRecord, image_kind: str) -> list[Candidate]:
        """Every DICOM under the record's patient folder (``<folder>/<date>-DDSM-<n>/<series>/*.dcm``)."""
        folder = record.full_folder if image_kind == "full" else record.folder
        found = [
            inside(self.root, p) for p in sorted(inside(self.root, self.base / folder).glob("*/*/*.dcm"))
        ]
        if not found:
            raise ImageNotFound(f"missing file: {folder}/<date>-DDSM-<n>/<series>/*.dcm")
        return [Candidate(p, _header_description(p)) for p in found]


class KaggleJpegLayout(Layout):
    """Kaggle export: ``jpeg/<SeriesInstanceUID>/*.jpg`` described by ``csv/dicom_info.csv``."""

    name = "kaggle-jpeg"

    def __init__(self, root: Path, dicom_info: Path):
        super().__init__(root)
        self.by_series: dict[str, list[Candidate]] = {}
        self.by_patient_folder: dict[str, list[Candidate]] = {}
        for _, row in iter_case_rows(dicom_info):
            rel = row.get("image_path", "")
            if not rel:
                continue
            cand = Candidate(self._resolve(rel), row.get("seriesdescription", ""))
            self.by_series.setdefault(row.get("seriesinstanceuid", ""), []).append(cand)
            self.by_patient_folder.setdefault(row.get("patientid", ""), []).append(cand)

    def _resolve(self, rel: str) -> Path:
        rel = rel.strip()
        direct = self.root / rel
        if direct.exists():
            return direct
        parts = Path(rel).parts
        # dicom_info paths start with "CBIS-DDSM/"; the export may be unpacked without that folder.
        return self.root.joinpath(*parts[1:]) if parts and parts[0] == "CBIS-DDSM" else direct

    def candidates(self, record: CaseRecord, image_kind: str) -> list[Candidate]:
        """JPEGs of the series the CSV paths name, else of the record's patient folder, existing files only."""
        paths = (
            [record.image_file_path]
            if image_kind == "full"
            else [record.cropped_image_file_path, record.roi_mask_file_path]
        )
        uids = [Path(p).parts[2] for p in paths if p and len(Path(p).parts) >= 3]
        cands: list[Candidate] = []
        for uid in uids:
            cands += [c for c in self.by_series.get(uid, []) if c not in cands]
        if not cands:
            folder = record.full_folder if image_kind == "full" else record.folder
            cands = list(self.by_patient_folder.get(folder, []))
        for cand in cands:
            inside(self.root, cand.path)  # a dicom_info path leaving the source folder rejects the row
        cands = [c for c in cands if c.path.is_file()]
        if not cands:
            raise ImageNotFound(
                f"missing file: jpeg/<SeriesInstanceUID>/*.jpg for series {', '.join(uids) or '?'}"
            )
        return cands

    def decode(self, cand: Candidate) -> DicomImage:
        """Decode one JPEG with the pixel budget; errors are `DicomError`s so ingest treats both sources alike."""
        name = self.relative(cand.path)
        try:
            arr = decode_pil(cand.path.read_bytes(), name)
        except PixelBudgetExceeded as exc:
            raise DicomTooLarge(str(exc)) from exc
        except (ImageDecodeError, OSError) as exc:
            raise DicomError(f"{name}: unreadable JPEG ({exc})") from exc
        if arr.ndim != 2:
            raise DicomError(f"{name}: expected a 2-D grayscale JPEG, got shape {arr.shape}")
        return DicomImage(
            pixels=arr,
            series_description=cand.description,
            bits_stored=8 if arr.dtype == np.uint8 else 16,
            rows=arr.shape[0],
            cols=arr.shape[1],
            photometric="MONOCHROME2",
            modality="MG",
        )


def looks_like_mask(img: DicomImage, lossy: bool = False) -> bool:
    """`is_roi_mask`, tolerant of JPEG ringing for lossy exports (≥ 98% of pixels at 0 or 255)."""
    if not lossy:
        return is_roi_mask(img)
    desc = img.series_description.lower()
    if desc in (MASK_DESCRIPTION, CROP_DESCRIPTION, FULL_DESCRIPTION):
        return desc == MASK_DESCRIPTION
    px = img.pixels
    extreme = np.count_nonzero((px <= 10) | (px >= 245))
    return extreme >= 0.98 * px.size and np.count_nonzero(px >= 245) > 0


def detect_layout(root: Path, csv_dir: Path) -> Layout:
    """Work out which CBIS-DDSM layout ``root`` holds.

    Raises:
        ValueError: no known layout fits, naming what was expected.
    """
    bases = [root] + ([root / "CBIS-DDSM"] if (root / "CBIS-DDSM").is_dir() else [])
    dicom_info = csv_dir / "dicom_info.csv"
    if dicom_info.is_file() and any((b / "jpeg").is_dir() for b in bases):
        return KaggleJpegLayout(root, dicom_info)
    for base in bases:
        old = current = 0
        folders = sorted(e.name for e in os.scandir(base) if e.is_dir() and PATIENT_FOLDER_RE.match(e.name))
        for name in folders[:25]:
            for child in os.scandir(base / name):
                if child.is_dir() and DATE_STUDY_RE.match(child.name):
                    current += 1
                elif child.is_dir() and UID_RE.match(child.name):
                    old += 1
        if current or old:
            return TciaCurrentLayout(root, base) if current > old else TciaOldLayout(root, base)
    raise ValueError(
        f"no CBIS-DDSM image layout found under {root}: expected TCIA patient folders such as "
        "Mass-Training_P_00001_LEFT_CC_1/<StudyUID>/<SeriesUID>/000000.dcm (old TCIA) or "
        "Mass-Training_P_00001_LEFT_CC_1/<MM-DD-YYYY>-DDSM-<n>/<series>/1-1.dcm (NBIA downloader), "
        "or the Kaggle export's jpeg/ folder with csv/dicom_info.csv"
    )

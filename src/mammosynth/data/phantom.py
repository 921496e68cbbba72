"""The embedded phantom: a seeded, CBIS-DDSM-shaped dataset of mammogram-like mass ROI crops.

It stands in for CBIS-DDSM when no real copy is at hand, so it writes *the same on-disk layout*
as the TCIA original (``mass_case_description_{train,test}_set.csv`` with the real header, CRLF
records and the embedded-LF path quirk, plus 16-bit MONOCHROME2 DICOM crops and 8-bit ROI masks in
``<PatientFolder>/<StudyUID>/<SeriesUID>/00000k.dcm``). Ingest therefore exercises one code path
for the phantom and for real data.

Rendering follows the project notes on the phantom:

* Background: two power-law (1/f^β) fields, a steep one (β ≈ 4.4) laying out fat and
  fibroglandular tissue (softly mixed, share growing with BI-RADS density) and a β ≈ 2.8 one for
  the finer parenchyma, a broad thickness ramp, and curved Cooper's ligaments/ducts; then a film
  response (slight unsharpness, saturating shoulder, faint grain). `phantom_check` measures how
  close its β, intensity skewness/kurtosis and fine-scale roughness are to the real fixtures.
* Each lesion's (shape, margin, subtlety, density) is drawn from the class-conditional frequencies
  of the real mass training CSV, so the phantom inherits the real task's ambiguity (a third of
  lobulated masses are malignant, some spiculated ones benign) instead of a hand-tuned knob.
* Shape → radius function (round/oval, rounded lobes for lobulated, many harmonics for irregular,
  converging lines for distortion, asymmetries, lymph node hilum); margin → edge (sharp, blurred,
  partly hidden, microlobules, curved tapering spicules of lognormal length); subtlety → contrast;
  density → lower conspicuity.
* CC and MLO views of one lesion share its geometry but not its background, as in real pairs, so
  a split that is not patient-level leaks.
"""

from __future__ import annotations

import argparse
import csv
import functools
import io
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from mammosynth.atomic import write_bytes as _atomic_bytes
from mammosynth.logs import setup_logging

log = logging.getLogger(__name__)

CSV_HEADER = [
    "patient_id",
    "breast_density",
    "left or right breast",
    "image view",
    "abnormality id",
    "abnormality type",
    "mass shape",
    "mass margins",
    "assessment",
    "pathology",
    "subtlety",
    "image file path",
    "cropped image file path",
    "ROI mask file path",
]
CSV_NAMES = {"train": "mass_case_description_train_set.csv", "test": "mass_case_description_test_set.csv"}
FOLDER_PREFIX = {"train": "Mass-Training", "test": "Mass-Test"}

# Class-conditional counts from the real mass_case_description_train_set.csv (phantom-notes.md):
# (benign, malignant) rows per category.
SHAPE_COUNTS = {
    "IRREGULAR": (64, 287),
    "LOBULATED": (201, 104),
    "OVAL": (230, 91),
    "ARCHITECTURAL_DISTORTION": (28, 52),
    "IRREGULAR-ARCHITECTURAL_DISTORTION": (2, 43),
    "ROUND": (84, 39),
    "ASYMMETRIC_BREAST_TISSUE": (12, 8),
    "FOCAL_ASYMMETRIC_DENSITY": (14, 5),
    "LYMPH_NODE": (26, 0),
}
MARGIN_COUNTS = {
    "SPICULATED": (21, 260),
    "ILL_DEFINED": (103, 175),
    "MICROLOBULATED": (39, 69),
    "CIRCUMSCRIBED": (273, 32),
    "OBSCURED": (172, 25),
    "ILL_DEFINED-SPICULATED": (2, 23),
    "OBSCURED-ILL_DEFINED": (2, 17),
    "CIRCUMSCRIBED-ILL_DEFINED": (14, 13),
    "N/A": (34, 9),
}
SUBTLETY_COUNTS = {1: (11, 30), 2: (44, 56), 3: (156, 101), 4: (219, 156), 5: (249, 294)}
DENSITY_COUNTS = {1: (151, 136), 2: (301, 284), 3: (167, 170), 4: (62, 47)}

BENIGN_FRACTION = 0.55
TEST_FRACTION = 0.2
MASK_FRACTION = 0.35  # rows whose ROI mask is written next to the crop
MASK_OTHER_SERIES = 0.08  # of those, mask in its own series (104 of ~3500 real rows)

# Lesion contrast (background intensity units) per subtlety rating (1 = subtle). With these and the
# background amplitudes in `_background`, models.classifiers.build_simple_cnn at 64² (Adam 1e-3,
# 12 epochs, batch 32) trained on 460 crops reached test AUC 0.82 and 0.82 on 300 test crops (two
# model seeds, crops of render_view at 160², one lesion each): the previous cartoon phantom gave 0.71
# and 0.82 in the same harness. Learnable, far from 1.0, and data-hungry, so extra (synthetic) data
# can matter. The Bayes ceiling of the (shape, margin) descriptors alone is about 0.92.
SUBTLETY_CONTRAST = {1: 0.34, 2: 0.45, 3: 0.56, 4: 0.7, 5: 0.85}
GLAND_FRACTION = {1: 0.12, 2: 0.35, 3: 0.6, 4: 0.82}

SOP_CLASS_SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
UID_ROOT = "1.3.6.1.4.1.9590.100.1.2."  # the CBIS-DDSM root, so paths look like the real ones


@dataclass(frozen=True)
class Lesion:
    """Geometry and descriptors of one abnormality, shared by its CC and MLO views."""

    malignant: bool
    shape: str
    margin: str
    subtlety: int
    density: int
    radius_frac: float
    aspect: float
    harmonics: tuple[tuple[int, float, float], ...]  # (k, amplitude, phase) of the radius function
    lobes: tuple[tuple[float, float, float], ...]  # (angle, amplitude, angular width) bumps of it
    spicule_angles: tuple[float, ...]
    spicule_lengths: tuple[float, ...]


# --------------------------------------------------------------------------------------------- #
# Rendering
# --------------------------------------------------------------------------------------------- #
@functools.lru_cache(maxsize=64)
def _freq_radius(h: int, w: int) -> np.ndarray:
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    f = np.sqrt(fx * fx + fy * fy)
    f[0, 0] = 1.0 / max(h, w)  # avoid the DC singularity; the mean is removed afterwards
    return f


def power_law_texture(
    rng: np.random.Generator, shape: tuple[int, int], beta: float, blur: float = 0.0
) -> np.ndarray:
    """Zero-mean, unit-variance texture with power spectrum ∝ 1/f^β (white noise × f^(−β/2)).

    Args:
        rng: random generator.
        shape: (height, width).
        beta: power-law exponent.
        blur: optional Gaussian σ (px) applied in the Fourier domain: the system MTF that rolls
            the power law off at the finest scales, as film, screen and digitiser do.
    """
    h, w = shape
    f = _freq_radius(h, w)
    spec = np.fft.rfft2(rng.standard_normal(shape)) * f ** (-beta / 2.0)
    if blur > 0:
        spec *= np.exp(-2.0 * (np.pi * blur * f) ** 2)
    tex = np.fft.irfft2(spec, s=shape)
    tex -= tex.mean()
    return tex / (tex.std() + 1e-12)


def _background(
    rng: np.random.Generator, shape: tuple[int, int], density: int
) -> tuple[np.ndarray, np.ndarray]:
    """Fibroglandular background: power-law tissue (β ≈ 3 measured), soft fat/gland mix, linear structures.

    Returns:
        (background intensity, fibroglandular share in [0, 1]) of ``shape``.
    """
    h, w = shape
    side = min(h, w)
    # Two power-law fields: a steep one (β ≈ 4.4) lays out fat and fibroglandular regions over
    # centimetres, a shallower one (β ≈ 2.8) carries the finer parenchymal pattern inside both.
    coarse = power_law_texture(rng, shape, float(np.clip(rng.normal(4.4, 0.2), 4.0, 4.8)))
    tex = power_law_texture(rng, shape, float(np.clip(rng.normal(2.8, 0.2), 2.4, 3.2)))
    frac = float(np.clip(GLAND_FRACTION[density] + rng.normal(0, 0.06), 0.05, 0.95))
    thr = np.quantile(coarse, 1.0 - frac)
    # A wide logistic keeps the fat/gland transition smooth (no thresholded-blob look).
    gland = 1.0 / (1.0 + np.exp(-(coarse - thr) / 0.6))
    # Cooper's ligaments and ducts: long, gently curving thin lines running mostly one way
    # (towards the nipple), brighter where they cross fat than inside dense tissue.
    n = int(rng.integers(15, 40))
    orient = rng.uniform(0, np.pi)
    origins = np.stack([rng.uniform(-0.2, 1.2, n) * h, rng.uniform(-0.2, 1.2, n) * w], axis=1)
    angles = orient + rng.normal(0, 0.35, n) + np.pi * rng.integers(0, 2, n)
    lengths = rng.uniform(0.4, 1.3, n) * side
    lines = _curves(
        shape, rng, origins, angles, lengths, rng.uniform(0.15, 0.8, n), bend=0.02, width=1.1 * side / 160
    )
    # Breast thickness and density change over centimetres: a broad ramp across the crop.
    ramp_dir = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w]
    ramp = ((yy - h / 2) * np.sin(ramp_dir) + (xx - w / 2) * np.cos(ramp_dir)) / side
    bg = (
        0.3
        + 0.3 * gland
        + 0.065 * tex * (0.5 + gland)
        + 0.12 * lines * (1.0 - 0.5 * gland)
        + rng.uniform(0.3, 0.7) * ramp
    )
    return bg, gland


def _curves(shape, rng, origins, angles, lengths, weights, *, bend: float, width: float, taper: float = 0.0):
    """Smooth random curves (a heading random walk) splatted bilinearly, then drawn with a Gaussian.

    Each curve starts at ``origins[i]`` (y, x) heading ``angles[i]`` and runs ``lengths[i]`` px;
    its weight falls linearly to ``taper`` × ``weights[i]`` at the tip, which with the fixed blur
    width reads as a line thinning out (spicules, ligaments). Vectorised over curves and points.
    """
    h, w = shape
    out = np.zeros(h * w, np.float64)
    n = len(lengths)
    if n == 0:
        return out.reshape(shape)
    step = 0.7
    n_pts = int(np.max(lengths) / step) + 2
    heading = np.asarray(angles)[:, None] + np.cumsum(rng.normal(0.0, bend, (n, n_pts)), axis=1)
    y = np.asarray(origins)[:, 0, None] + np.cumsum(step * np.sin(heading), axis=1)
    x = np.asarray(origins)[:, 1, None] + np.cumsum(step * np.cos(heading), axis=1)
    frac = (np.arange(n_pts)[None, :] * step) / np.asarray(lengths)[:, None]
    wgt = np.asarray(weights)[:, None] * (1.0 - (1.0 - taper) * np.clip(frac, 0.0, 1.0)) * step
    keep = (frac <= 1.0) & (y >= 0) & (y < h - 1) & (x >= 0) & (x < w - 1)
    y, x, wgt = y[keep], x[keep], wgt[keep]
    y0, x0 = np.floor(y).astype(np.int64), np.floor(x).astype(np.int64)
    fy, fx = y - y0, x - x0
    for dy, dx, share in (
        (0, 0, (1 - fy) * (1 - fx)),
        (0, 1, (1 - fy) * fx),
        (1, 0, fy * (1 - fx)),
        (1, 1, fy * fx),
    ):
        out += np.bincount((y0 + dy) * w + (x0 + dx), wgt * share, minlength=h * w)
    # A line of unit weight per px drawn with a Gaussian of σ = width has peak 1/(√(2π)·width).
    return ndimage.gaussian_filter(out.reshape(shape), width) * (np.sqrt(2 * np.pi) * width)


_N_ANGLES = 1024  # radius functions are tabulated on this angular grid, then looked up per pixel


def _radius_table(lesion: Lesion) -> np.ndarray:
    """Radius function of the body on ``_N_ANGLES`` angles: harmonics plus Gaussian lobes."""
    grid = np.linspace(0.0, 2 * np.pi, _N_ANGLES, endpoint=False)
    table = np.ones(_N_ANGLES)
    for k, amp, phase in lesion.harmonics:
        table += amp * np.cos(k * grid + phase)
    for centre, amp, width in lesion.lobes:
        diff = np.angle(np.exp(1j * (grid - centre)))
        table += amp * np.exp(-0.5 * (diff / width) ** 2)
    return np.clip(table, 0.35, None)


def _edge_width(lesion: Lesion, radius: float, theta: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per-pixel border blur (px): sharp for circumscribed, wide for ill-defined, mixed for both."""
    margin = lesion.margin
    edge = {
        "CIRCUMSCRIBED": 1.2,
        "OBSCURED": 1.6,
        "MICROLOBULATED": 1.2,
        "SPICULATED": 0.12 * radius,
        "ILL_DEFINED": 0.3 * radius,
        "ILL_DEFINED-SPICULATED": 0.25 * radius,
        "OBSCURED-ILL_DEFINED": 0.25 * radius,
        "N/A": 0.12 * radius,
    }.get(margin, 0.6)
    if margin == "CIRCUMSCRIBED-ILL_DEFINED":
        return 0.6 + 0.3 * radius * (0.5 + 0.5 * np.cos(theta - rng.uniform(0, 2 * np.pi)))
    return np.full(theta.shape, edge)


def _spicules(lesion, rng, shape, cy, cx, radius, rot, distortion: bool) -> np.ndarray:
    """Curved, tapering spicules of varied length from the body's rim (or converging, for AD)."""
    angles = np.asarray(lesion.spicule_angles) + rot
    n = len(angles)
    if n == 0:
        return np.zeros(shape)
    r0 = (0.15 if distortion else 0.75) * radius
    origins = np.stack([cy + r0 * np.sin(angles), cx + r0 * np.cos(angles)], axis=1)
    lengths = np.asarray(lesion.spicule_lengths) * radius
    side = min(shape)
    return _curves(
        shape,
        rng,
        origins,
        angles,
        lengths,
        rng.uniform(0.3, 0.9, n),
        bend=0.05,
        width=rng.uniform(1.0, 1.5) * side / 160.0,
        taper=0.05,
    )


def render_view(
    lesion: Lesion, rng: np.random.Generator, shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Render one view of a lesion: tissue background, lesion body and margin, film response, noise.

    Returns:
        (image float32 in about [0, 1.3], binary lesion mask bool) of ``shape``.
    """
    h, w = shape
    bg, gland = _background(rng, shape, lesion.density)
    side = min(h, w)
    radius = lesion.radius_frac * side * rng.uniform(0.9, 1.1)
    cy = h / 2 + rng.normal(0, 0.04 * side)
    cx = w / 2 + rng.normal(0, 0.04 * side)
    rot = rng.uniform(0, 2 * np.pi)  # views see the lesion from another angle
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    dy, dx = yy - cy, xx - cx
    theta = np.arctan2(dy, dx) - rot
    u = dx * np.cos(rot) + dy * np.sin(rot)
    v = -dx * np.sin(rot) + dy * np.cos(rot)
    r_ell = np.sqrt(u * u + (v / lesion.aspect) ** 2)
    table = _radius_table(lesion)
    rad_fn = table[(np.mod(theta, 2 * np.pi) * (_N_ANGLES / (2 * np.pi))).astype(np.int64) % _N_ANGLES]
    d = r_ell / (radius * rad_fn)  # < 1 inside the body
    with np.errstate(over="ignore"):  # far outside the lesion exp overflows to inf: body is then 0
        body = 1.0 / (1.0 + np.exp(-(1.0 - d) * radius / _edge_width(lesion, radius, theta, rng)))
    # Flat-topped density with the tissue's own texture inside, as dense masses look on film.
    dome = body * (0.8 + 0.2 * np.sqrt(np.clip(1.0 - d * d, 0.0, 1.0))) * (0.85 + 0.15 * gland)

    shape_name, margin = lesion.shape, lesion.margin
    if shape_name in ("ASYMMETRIC_BREAST_TISSUE", "FOCAL_ASYMMETRIC_DENSITY"):
        dome = ndimage.gaussian_filter(dome, 0.35 * radius) * (0.6 + 0.4 * gland)
    if shape_name == "LYMPH_NODE":
        hy, hx = cy + 0.7 * radius * np.sin(rot), cx + 0.7 * radius * np.cos(rot)
        hilum = np.exp(-((yy - hy) ** 2 + (xx - hx) ** 2) / (2 * (0.35 * radius) ** 2))
        dome = dome * (1.0 - 0.8 * hilum)
    distortion = "ARCHITECTURAL_DISTORTION" in shape_name
    if shape_name == "ARCHITECTURAL_DISTORTION":
        dome = dome * 0.2  # converging lines without a clear mass
    if "OBSCURED" in margin:
        # Overlying dense tissue hides part of the border.
        sector = 0.5 + 0.5 * np.cos(theta - rng.uniform(0, 2 * np.pi))
        dome = dome * (
            1.0 - 0.75 * np.clip(gland * 0.6 + sector * 0.6, 0, 1) * np.clip((d - 0.4) / 0.5, 0.0, 1.0)
        )
    lines = np.zeros_like(dome)
    if "SPICULATED" in margin or distortion:
        lines = _spicules(lesion, rng, shape, cy, cx, radius, rot, distortion)

    contrast = SUBTLETY_CONTRAST[lesion.subtlety] * rng.uniform(0.8, 1.2)
    contrast *= 1.0 - 0.1 * (lesion.density - 1)  # dense breasts hide lesions
    exposure = bg + contrast * (dome + 0.8 * lines)
    return _film(exposure, rng), d < 1.0


def _film(exposure: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Screen-film response: unsharpness, a saturating shoulder, faint correlated grain."""
    img = ndimage.gaussian_filter(exposure, rng.uniform(0.1, 0.35))
    shoulder = rng.uniform(0.7, 1.1)
    img = shoulder * np.tanh(img / shoulder)  # dense tissue and masses crowd the top of the range
    grain = ndimage.gaussian_filter(rng.standard_normal(img.shape), 0.7)
    img = img + rng.uniform(0.001, 0.004) * grain
    return img.astype(np.float32)


def _draw(rng: np.random.Generator, table: dict, malignant: bool):
    keys = list(table)
    p = np.array([table[k][int(malignant)] for k in keys], dtype=float)
    return keys[rng.choice(len(keys), p=p / p.sum())]


def draw_lesion(rng: np.random.Generator, malignant: bool, density: int | None = None) -> Lesion:
    """Draw one lesion's descriptors from the class-conditional tables and its geometry."""
    shape = _draw(rng, SHAPE_COUNTS, malignant)
    margin = _draw(rng, MARGIN_COUNTS, malignant)
    subtlety = int(_draw(rng, SUBTLETY_COUNTS, malignant))
    density = int(density if density is not None else _draw(rng, DENSITY_COUNTS, malignant))
    aspect = {
        "ROUND": rng.uniform(0.85, 1.0),
        "OVAL": rng.uniform(0.5, 0.75),
        "LYMPH_NODE": rng.uniform(0.5, 0.7),
    }.get(shape, rng.uniform(0.65, 1.0))
    harmonics: list[tuple[int, float, float]] = []
    lobes: list[tuple[float, float, float]] = []
    if shape == "LOBULATED":
        # Three to six rounded lobes with notches between them, not a cosine ripple.
        n_lobes = int(rng.integers(3, 7))
        centres = np.sort(rng.uniform(0, 2 * np.pi, n_lobes))
        lobes += [(float(c), rng.uniform(0.12, 0.3), rng.uniform(0.25, 0.5)) for c in centres]
        harmonics += [(2, rng.uniform(0.0, 0.06), rng.uniform(0, 2 * np.pi))]
    elif "IRREGULAR" in shape or "ASYMMETRIC" in shape:
        harmonics += [(k, rng.uniform(0.0, 0.3) / k**0.8, rng.uniform(0, 2 * np.pi)) for k in range(2, 16)]
    else:
        harmonics += [(2, rng.uniform(0.0, 0.05), rng.uniform(0, 2 * np.pi))]
    if margin == "MICROLOBULATED":
        n_lobes = int(rng.integers(8, 16))
        lobes += [
            (float(c), rng.uniform(0.04, 0.09), rng.uniform(0.06, 0.12))
            for c in rng.uniform(0, 2 * np.pi, n_lobes)
        ]
    if "ILL_DEFINED" in margin or margin == "N/A":
        harmonics += [
            (k, rng.uniform(0.0, 0.08) / np.sqrt(k), rng.uniform(0, 2 * np.pi)) for k in range(5, 20)
        ]
    n_lines = 0
    if "SPICULATED" in margin:
        n_lines = int(rng.integers(15, 40))
    if "ARCHITECTURAL_DISTORTION" in shape:
        n_lines = max(n_lines, int(rng.integers(12, 30)))
    radius_frac = rng.uniform(0.2, 0.34)
    if "ASYMMETRIC" in shape:
        radius_frac = rng.uniform(0.28, 0.4)
    if "SPICULATED" in margin:
        radius_frac *= 0.75  # the spicules need room inside the crop
    return Lesion(
        malignant=malignant,
        shape=shape,
        margin=margin,
        subtlety=subtlety,
        density=density,
        radius_frac=float(radius_frac),
        aspect=float(aspect),
        harmonics=tuple(harmonics),
        lobes=tuple(lobes),
        spicule_angles=tuple(float(a) for a in rng.uniform(0, 2 * np.pi, n_lines)),
        # Lognormal lengths (body radii): many short spicules, a few long ones.
        spicule_lengths=tuple(float(v) for v in np.clip(rng.lognormal(0.35, 0.5, n_lines), 0.4, 3.5)),
    )


def to_uint16(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Map rendered intensities to a 16-bit detector range with per-image offset and gain."""
    lo = rng.uniform(4000, 22000)
    top = rng.uniform(56000, 65535)
    p_lo, p_hi = np.percentile(img, [0.1, 99.9])
    scaled = lo + (img - p_lo) * (top - lo) / max(p_hi - p_lo, 1e-6)
    return np.clip(np.round(scaled), 0, 65535).astype(np.uint16)


# --------------------------------------------------------------------------------------------- #
# DICOM + CSV writing
# --------------------------------------------------------------------------------------------- #
def _uid(rng: np.random.Generator) -> str:
    digits = "".join(str(int(d)) for d in rng.integers(0, 10, 38))
    return UID_ROOT + str(int(rng.integers(1, 10))) + digits.lstrip("0")


def dicom_bytes(
    pixels: np.ndarray,
    *,
    folder: str,
    series_description: str,
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    laterality: str,
    view: str,
) -> bytes:
    """Encode a 2-D uint8/uint16 array as an uncompressed MG DICOM like the CBIS-DDSM files.

    PatientID/PatientName hold the folder name, as in the real files (they are pseudonyms).
    """
    from pydicom.dataset import FileDataset, FileMetaDataset

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SOP_CLASS_SECONDARY_CAPTURE
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = IMPLICIT_VR_LITTLE_ENDIAN
    meta.ImplementationClassUID = UID_ROOT + "1"
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = SOP_CLASS_SECONDARY_CAPTURE
    ds.SOPInstanceUID = sop_uid
    ds.Modality = "MG"
    ds.ConversionType = "WSD"
    ds.SeriesDescription = series_description
    ds.PatientName = folder
    ds.PatientID = folder
    ds.BodyPartExamined = "BREAST"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "DDSM"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.PatientOrientation = view
    ds.Laterality = laterality[0]
    bits = 8 if pixels.dtype == np.uint8 else 16
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = (int(v) for v in pixels.shape)
    ds.BitsAllocated = bits
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, implicit_vr=True, little_endian=True, enforce_file_format=True)
    return buf.getvalue()


def _write_csv(path: Path, rows: list[list[str]]) -> None:
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(CSV_HEADER)
    writer.writerows(rows)
    _atomic_bytes(path, buf.getvalue().encode("ascii"))


PHANTOM_MARKER = "PHANTOM"  # written at the dataset root; ingest records data_source "phantom" from it


def is_phantom(root: str | os.PathLike) -> bool:
    """Whether a dataset folder is the phantom: it holds the `PHANTOM_MARKER` file `generate` writes.

    The marker travels with the folder (an upload to S3 and back keeps it), so the data source label does
    not depend on what the ``source`` argument was called.
    """
    path = Path(root) / PHANTOM_MARKER
    if not path.is_file():
        return False
    try:
        return json.loads(path.read_text()).get("kind") == "mammosynth-phantom"
    except (ValueError, OSError, AttributeError):
        return False


def generate(out_dir: str | os.PathLike, *, n_patients: int, seed: int, crop_size: int = 160) -> Path:
    """Write the phantom dataset in the TCIA CBIS-DDSM layout.

    Args:
        out_dir: dataset root to write (created; existing phantom files are overwritten).
        n_patients: number of patients (each with 1–3 masses, mostly seen in CC and MLO).
        seed: fixes every draw; the same seed gives byte-identical CSVs and pixels.
        crop_size: nominal crop side in pixels; each crop varies ±15% per side like real ROIs.

    Returns:
        The dataset root (what ``mammosynth ingest --source`` reads).

    Raises:
        ValueError: ``n_patients`` < 2 or ``crop_size`` < 32.
    """
    if n_patients < 2:
        raise ValueError(f"n_patients must be at least 2 (one train and one test patient), got {n_patients}")
    if crop_size < 32:
        raise ValueError(f"crop_size must be at least 32 px, got {crop_size}")
    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_test = max(1, int(round(TEST_FRACTION * n_patients)))
    test_patients = set(rng.choice(n_patients, n_test, replace=False).tolist())
    rows: dict[str, list[list[str]]] = {"train": [], "test": []}
    n_images = n_masks = 0
    for p in range(n_patients):
        split = "test" if p in test_patients else "train"
        patient_id = f"P_{p + 1:05d}"
        patient_malignant = bool(rng.random() >= BENIGN_FRACTION)
        density = int(_draw(rng, DENSITY_COUNTS, patient_malignant))
        n_abn = int(rng.choice([1, 2, 3], p=[0.7, 0.22, 0.08]))
        per_side: dict[str, int] = {}
        for _ in range(n_abn):
            malignant = patient_malignant if rng.random() < 0.9 else not patient_malignant
            lesion = draw_lesion(rng, malignant, density)
            side = "LEFT" if rng.random() < 0.5 else "RIGHT"
            per_side[side] = per_side.get(side, 0) + 1
            abn_id = per_side[side]
            views = ["CC", "MLO"] if rng.random() < 0.85 else [str(rng.choice(["CC", "MLO"]))]
            pathology = (
                "MALIGNANT" if malignant else ("BENIGN" if rng.random() < 0.85 else "BENIGN_WITHOUT_CALLBACK")
            )
            assessment = int(
                rng.choice([3, 4, 5], p=[0.05, 0.5, 0.45])
                if malignant
                else rng.choice([2, 3, 4, 5], p=[0.1, 0.3, 0.55, 0.05])
            )
            for view in views:
                row, wrote_mask = _write_case(
                    out, rng, lesion, split, patient_id, side, view, abn_id, pathology, assessment, crop_size
                )
                rows[split].append(row)
                n_images += 1
                n_masks += int(wrote_mask)
        if (p + 1) % 50 == 0:
            log.info("phantom: %d/%d patients, %d images", p + 1, n_patients, n_images)
    for split, name in CSV_NAMES.items():
        _write_csv(out / name, rows[split])
    marker = {"kind": "mammosynth-phantom", "seed": seed, "n_patients": n_patients, "crop_size": crop_size}
    _atomic_bytes(out / PHANTOM_MARKER, (json.dumps(marker, sort_keys=True) + "\n").encode())
    log.info(
        "phantom: %d patients, %d crops (%d train rows, %d test rows), %d ROI masks in %.1fs → %s",
        n_patients,
        n_images,
        len(rows["train"]),
        len(rows["test"]),
        n_masks,
        time.perf_counter() - t0,
        out,
    )
    return out


def _write_case(
    root: Path,
    rng: np.random.Generator,
    lesion: Lesion,
    split: str,
    patient_id: str,
    side: str,
    view: str,
    abn_id: int,
    pathology: str,
    assessment: int,
    crop_size: int,
) -> tuple[list[str], bool]:
    prefix = FOLDER_PREFIX[split]
    full_folder = f"{prefix}_{patient_id}_{side}_{view}"
    folder = f"{full_folder}_{abn_id}"
    h = int(round(crop_size * rng.uniform(0.85, 1.15)))
    w = int(round(crop_size * rng.uniform(0.85, 1.15)))
    img, mask = render_view(lesion, rng, (h, w))
    crop = to_uint16(img, rng)
    full_path = f"{full_folder}/{_uid(rng)}/{_uid(rng)}/000000.dcm"  # full mammograms are not written
    study, series = _uid(rng), _uid(rng)
    csv_crop = f"{folder}/{study}/{series}/000000.dcm"
    csv_mask = f"{folder}/{study}/{series}/000001.dcm"
    write_mask = rng.random() < MASK_FRACTION
    other_series = write_mask and rng.random() < MASK_OTHER_SERIES
    if other_series:
        csv_mask = f"{folder}/{study}/{_uid(rng)}/000000.dcm"
        crop_file, mask_file = csv_crop, csv_mask
    else:
        # As in the real data, the file numbers in the CSV do not reliably say which is which.
        swapped = rng.random() < 0.5
        crop_file, mask_file = (csv_mask, csv_crop) if swapped else (csv_crop, csv_mask)
    common = {"folder": folder, "study_uid": study, "laterality": side, "view": view}
    _atomic_bytes(
        root / crop_file,
        dicom_bytes(
            crop,
            series_description="cropped images",
            series_uid=crop_file.split("/")[2],
            sop_uid=_uid(rng),
            **common,
        ),
    )
    if write_mask:
        # Real masks are full-mammogram size; a canvas larger than the crop keeps that trait.
        canvas = np.zeros((int(h * 1.5), int(w * 1.5)), np.uint8)
        oy, ox = int(rng.integers(0, canvas.shape[0] - h + 1)), int(rng.integers(0, canvas.shape[1] - w + 1))
        canvas[oy : oy + h, ox : ox + w][mask] = 255
        _atomic_bytes(
            root / mask_file,
            dicom_bytes(
                canvas,
                series_description="ROI mask images",
                series_uid=mask_file.split("/")[2],
                sop_uid=_uid(rng),
                **common,
            ),
        )
    row = [
        patient_id,
        str(lesion.density),
        side,
        view,
        str(abn_id),
        "mass",
        lesion.shape,
        lesion.margin,
        str(assessment),
        pathology,
        str(lesion.subtlety),
        full_path,
        csv_crop,
        csv_mask + "\n",
    ]  # the real mass CSVs end this field with a bare LF inside quotes
    return row, write_mask


def main(argv: list[str] | None = None) -> int:
    """Run the command line (``python -m mammosynth.data.phantom``).

    Args:
        argv: arguments (default: ``sys.argv[1:]``).

    Returns:
        The process exit status.
    """
    from mammosynth.config import load_config

    defaults = load_config("embedded")
    parser = argparse.ArgumentParser(
        prog="mammosynth phantom",
        description="Write the embedded phantom dataset in the CBIS-DDSM (TCIA) layout.",
    )
    parser.add_argument(
        "--out", help="dataset root to write (with --self-check: folder for its JSON and figure)"
    )
    parser.add_argument(
        "--n-patients",
        type=int,
        default=defaults.phantom.n_patients,
        help="number of patients (default: embedded preset)",
    )
    parser.add_argument("--seed", type=int, default=defaults.seed, help="random seed")
    parser.add_argument(
        "--crop-size", type=int, default=defaults.phantom.crop_size, help="nominal crop side in pixels"
    )
    parser.add_argument(
        "--self-check",
        action="store_true",
        help="compare β, skewness, kurtosis and roughness of phantom crops with the real CBIS-DDSM "
        "fixtures; writes phantom_check.json/.png to --out (default ./phantom-check); exit 1 if out of band",
    )
    parser.add_argument("--n-crops", type=int, default=24, help="phantom crops for --self-check")
    args = parser.parse_args(argv)
    if args.self_check:
        from mammosynth.data.phantom_check import run_self_check

        return run_self_check(
            args.out or "phantom-check", n_phantom=args.n_crops, seed=args.seed, crop_size=args.crop_size
        )
    if not args.out:
        parser.error("--out is required (the dataset root to write), unless --self-check is given")
    root = generate(args.out, n_patients=args.n_patients, seed=args.seed, crop_size=args.crop_size)
    print(f"phantom dataset written to {root}")
    return 0


if __name__ == "__main__":
    import sys

    setup_logging()
    sys.exit(main())

"""Texture statistics that say how mammogram-like a crop is: the phantom's self-check.

Four numbers per crop, each computed on the same *normalised* crop so that a 160-px phantom crop
and a 400-px real CBIS-DDSM crop (50 µm film digitisation) are compared at one pixel scale:

1. **Normalisation** (`normalise_crop`): cast to float; window to the crop's own [0.5, 99.5]
   percentiles (clip, which removes single hot/dead pixels and film scratches); resample with an
   anti-alias Gaussian (σ = 0.5 × zoom⁻¹) and bilinear interpolation so that the *short* side is
   ``SIDE`` = 128 px (aspect kept); z-score (subtract the mean, divide by the standard deviation).
2. **β** (`power_law_beta`): the power-spectrum slope. Hann-window the z-scored crop, take
   |FFT|², average the power in 12 log-spaced radial-frequency bins over ``BETA_BAND`` = [1/32, 1/4]
   cycles/pixel (at 128 px on a ~20 mm real crop: about 0.2–1.6 cycles/mm, the band of Burgess et
   al. 2001), and fit log P = c − β log f by least squares; β is the negative slope. The
   anti-alias blur (σ = 0.5 px at the analysis scale, the same for every crop that is shrunk)
   steepens the top of the band, so a pure 1/f^3 texture shrunk 2× reads β ≈ 3.4; compare crops
   with one another under this definition, not with β values published for other bands.
3. **Skewness** and **excess kurtosis** of the z-scored pixel values (Fisher definitions, biased
   estimators, `scipy.stats.skew` / `scipy.stats.kurtosis`): the shape of the intensity histogram.
4. **Roughness**: the standard deviation of the 5-point Laplacian (`scipy.ndimage.laplace`) of
   the z-scored crop after a Gaussian blur of σ = 1 px: fine-scale (pixel-level) structure such
   as quantum noise and grain relative to the crop's overall contrast.

`real_fixture_crops` decodes the three real CBIS-DDSM crops vendored under
``tests/fixtures/cbis-ddsm/dicom``; `self_check` compares them with freshly rendered phantom
crops and `mammosynth phantom --self-check` prints the table and writes ``phantom_check.json``
(and, via `mammosynth.eda.write_phantom_check_figure`, a figure).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from scipy import ndimage, stats

from mammosynth.atomic import write_bytes as _atomic_bytes

SIDE = 128
WINDOW_PERCENTILES = (0.5, 99.5)
BETA_BAND = (1.0 / 32.0, 1.0 / 4.0)
ROUGHNESS_SIGMA = 1.0
METRICS = ("beta", "skewness", "excess_kurtosis", "roughness")


def _checkout_fixtures() -> Path:
    """The vendored real crops of the checkout this module runs from (``tests/fixtures/...``).

    Walks up from the package to the folder holding ``pyproject.toml``; an installed package (no
    checkout) gets a path that does not exist, and `real_fixture_crops` then says so.
    """
    for folder in Path(__file__).resolve().parents:
        if (folder / "pyproject.toml").is_file():
            return folder / "tests" / "fixtures" / "cbis-ddsm" / "dicom"
    return Path("tests") / "fixtures" / "cbis-ddsm" / "dicom"


FIXTURE_DICOM = _checkout_fixtures()


def normalise_crop(pixels: np.ndarray) -> np.ndarray:
    """Window, resample (short side ``SIDE``) and z-score one crop, as the module docstring says.

    Args:
        pixels: 2-D array of any numeric dtype, at least 16 px a side.

    Returns:
        float64 array, mean 0 and standard deviation 1 (or all zeros for a flat crop).

    Raises:
        ValueError: not 2-D or smaller than 16 px a side.
    """
    arr = np.asarray(pixels, dtype=np.float64)
    if arr.ndim != 2 or min(arr.shape) < 16:
        raise ValueError(f"expected a 2-D crop at least 16 px a side, got shape {arr.shape}")
    lo, hi = np.percentile(arr, WINDOW_PERCENTILES)
    arr = np.clip(arr, lo, hi)
    zoom = SIDE / min(arr.shape)
    if zoom < 1.0:
        arr = ndimage.gaussian_filter(arr, 0.5 / zoom)
    arr = ndimage.zoom(arr, zoom, order=1)
    std = arr.std()
    return (arr - arr.mean()) / std if std > 0 else np.zeros_like(arr)


def power_law_beta(z: np.ndarray) -> float:
    """β of P(f) ∝ 1/f^β over ``BETA_BAND`` (cycles/pixel) of a normalised crop; see the module."""
    h, w = z.shape
    power = np.abs(np.fft.fft2((z - z.mean()) * np.outer(np.hanning(h), np.hanning(w)))) ** 2
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(h), np.fft.fftfreq(w), indexing="ij"))
    lo, hi = BETA_BAND
    band = (f >= lo) & (f <= hi)
    edges = np.geomspace(lo, hi, 13)
    which = np.clip(np.digitize(f[band], edges) - 1, 0, 11)
    counts = np.bincount(which, minlength=12)
    keep = counts > 0
    mean_f = np.bincount(which, f[band], minlength=12)[keep] / counts[keep]
    mean_p = np.bincount(which, power[band], minlength=12)[keep] / counts[keep]
    slope = np.polyfit(np.log(mean_f), np.log(mean_p + 1e-30), 1)[0]
    return float(-slope)


def crop_stats(pixels: np.ndarray) -> dict[str, float]:
    """β, skewness, excess kurtosis and roughness of one crop (definitions in the module docstring).

    Args:
        pixels: 2-D crop (raw detector values, any dtype).

    Returns:
        ``{"beta", "skewness", "excess_kurtosis", "roughness"}`` as floats.
    """
    z = normalise_crop(pixels)
    lap = ndimage.laplace(ndimage.gaussian_filter(z, ROUGHNESS_SIGMA))
    return {
        "beta": power_law_beta(z),
        "skewness": float(stats.skew(z.ravel())),
        "excess_kurtosis": float(stats.kurtosis(z.ravel())),
        "roughness": float(lap.std()),
    }


def real_fixture_crops(root: str | os.PathLike = FIXTURE_DICOM) -> list[np.ndarray]:
    """Decode the real CBIS-DDSM crops (not ROI masks) under ``root``, sorted by path.

    Raises:
        FileNotFoundError: no crop under ``root`` (the fixtures ship with the repository).
    """
    from mammosynth.data.dicom import decode_dicom, is_roi_mask

    crops = []
    for path in sorted(Path(root).rglob("*.dcm")):
        img = decode_dicom(path)
        if not is_roi_mask(img):
            crops.append(img.pixels)
    if not crops:
        raise FileNotFoundError(f"no real CBIS-DDSM crops under {root}; expected the vendored fixtures")
    return crops


def phantom_crops(n: int, seed: int, crop_size: int = 160) -> list[np.ndarray]:
    """Render ``n`` phantom crops (uint16, as written to disk) from half benign, half malignant lesions."""
    from mammosynth.data import phantom

    rng = np.random.default_rng(seed)
    crops = []
    for i in range(n):
        lesion = phantom.draw_lesion(rng, malignant=bool(i % 2))
        h = int(round(crop_size * rng.uniform(0.85, 1.15)))
        w = int(round(crop_size * rng.uniform(0.85, 1.15)))
        img, _ = phantom.render_view(lesion, rng, (h, w))
        crops.append(phantom.to_uint16(img, rng))
    return crops


def summarise(rows: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Per metric: min, max, mean, median over crops."""
    return {
        m: {
            "min": float(np.min([r[m] for r in rows])),
            "max": float(np.max([r[m] for r in rows])),
            "mean": float(np.mean([r[m] for r in rows])),
            "median": float(np.median([r[m] for r in rows])),
        }
        for m in METRICS
    }


def self_check(n_phantom: int = 24, seed: int = 0, crop_size: int = 160) -> dict:
    """Statistics of phantom crops beside those of the real fixtures.

    Args:
        n_phantom: phantom crops to render.
        seed: phantom seed.
        crop_size: nominal phantom crop side.

    Returns:
        JSON-ready dict: ``definitions``, ``real`` and ``phantom`` (``per_crop`` lists and
        ``summary`` per metric), ``seed`` and ``n_phantom``.
    """
    real = [crop_stats(c) for c in real_fixture_crops()]
    fake = [crop_stats(c) for c in phantom_crops(n_phantom, seed, crop_size)]
    return {
        "definitions": {
            "side_px": SIDE,
            "window_percentiles": list(WINDOW_PERCENTILES),
            "beta_band_cycles_per_px": list(BETA_BAND),
            "roughness_sigma_px": ROUGHNESS_SIGMA,
            "doc": "mammosynth.data.phantom_check module docstring",
        },
        "seed": seed,
        "n_phantom": n_phantom,
        "crop_size": crop_size,
        "real": {"source": "tests/fixtures/cbis-ddsm/dicom", "per_crop": real, "summary": summarise(real)},
        "phantom": {"per_crop": fake, "summary": summarise(fake)},
    }


def format_table(result: dict) -> str:
    """A plain-text table: per metric, the real range and the phantom range and median."""
    real_head = f"real (n={len(result['real']['per_crop'])}) min..max"
    fake_head = f"phantom (n={result['n_phantom']}) min..max"
    lines = [f"{'metric':<16} {real_head:>24} {fake_head:>26} {'phantom median':>15}"]
    for m in METRICS:
        r, p = result["real"]["summary"][m], result["phantom"]["summary"][m]
        lines.append(
            f"{m:<16} {r['min']:>11.3f}..{r['max']:<11.3f} {p['min']:>12.3f}..{p['max']:<12.3f} {p['median']:>15.3f}"
        )
    return "\n".join(lines)


def write_json(result: dict, path: str | os.PathLike) -> Path:
    """Write ``result`` atomically as indented JSON."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    _atomic_bytes(out, (json.dumps(result, indent=2, sort_keys=True) + "\n").encode())
    return out


# With n = 3 real crops the sample range underestimates the population's spread: for a normal
# population the expected range of 3 draws is 1.69 σ while the central 90% spans 3.29 σ, about
# twice as much. The tolerance band therefore widens the real range by half its width each side.
TOLERANCE_FRACTION = 0.5


def tolerance_band(values: list[float], fraction: float = TOLERANCE_FRACTION) -> tuple[float, float]:
    """The real range widened by ``fraction`` × its width on each side (see TOLERANCE_FRACTION)."""
    lo, hi = float(np.min(values)), float(np.max(values))
    return lo - fraction * (hi - lo), hi + fraction * (hi - lo)


def verdicts(result: dict) -> dict[str, dict]:
    """Per metric: the tolerance band and whether the phantom median and quartiles lie inside it.

    Args:
        result: what `self_check` returns.

    Returns:
        ``{metric: {"band": [lo, hi], "median": m, "quartiles": [q1, q3], "ok": bool}}``;
        ``ok`` needs the median inside the band (the quartiles are reported, not required).
    """
    out = {}
    for m in METRICS:
        lo, hi = tolerance_band([r[m] for r in result["real"]["per_crop"]])
        values = [r[m] for r in result["phantom"]["per_crop"]]
        med = float(np.median(values))
        q1, q3 = (float(q) for q in np.percentile(values, [25, 75]))
        out[m] = {"band": [lo, hi], "median": med, "quartiles": [q1, q3], "ok": bool(lo <= med <= hi)}
    return out


def run_self_check(
    out_dir: str | os.PathLike, *, n_phantom: int = 24, seed: int = 0, crop_size: int = 160
) -> int:
    """`mammosynth phantom --self-check`: print the table, write JSON and figure, return an exit code.

    Args:
        out_dir: folder for ``phantom_check.json`` and ``phantom_check.png`` (created).
        n_phantom: phantom crops to render.
        seed: phantom seed.
        crop_size: nominal phantom crop side.

    Returns:
        0 when every metric's phantom median lies in its tolerance band, else 1.
    """
    from mammosynth.eda import write_phantom_check_figure

    result = self_check(n_phantom=n_phantom, seed=seed, crop_size=crop_size)
    result["verdicts"] = verdicts(result)
    out = Path(out_dir)
    write_json(result, out / "phantom_check.json")
    write_phantom_check_figure(
        result, real_fixture_crops(), phantom_crops(5, seed, crop_size), out / "phantom_check.png"
    )
    print("phantom self-check (phantom crops vs the real CBIS-DDSM fixtures; definitions: phantom_check)")
    print(format_table(result))
    for m, v in result["verdicts"].items():
        lo, hi = v["band"]
        status = "ok" if v["ok"] else "OUT OF BAND"
        print(f"  {m:<16} phantom median {v['median']:.3f} in tolerance band [{lo:.3f}, {hi:.3f}]: {status}")
    print(f"wrote {out / 'phantom_check.json'} and {out / 'phantom_check.png'}")
    return 0 if all(v["ok"] for v in result["verdicts"].values()) else 1

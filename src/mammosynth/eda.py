"""Exploratory figures and a markdown summary of an ingested (optionally split) set.

Called by ingest (class balance, descriptors, image sizes) and by split (per-split balance), so
every set carries a picture of what it contains next to its data.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from mammosynth import atomic

LABELS = ("benign", "malignant")
COLOURS = {"benign": "#4C72B0", "malignant": "#C44E52"}


def _save(fig, path: Path) -> Path:
    return atomic.write_with(path, lambda tmp: fig.savefig(tmp, dpi=100, bbox_inches="tight", format="png"))


def _by_label(index: pd.DataFrame, column: str) -> pd.DataFrame:
    table = pd.crosstab(index[column].replace("", "(empty)"), index["label"])
    for label in LABELS:
        if label not in table.columns:
            table[label] = 0
    table = table[list(LABELS)]
    return table.loc[table.sum(axis=1).sort_values(ascending=False).index]


def _md_table(table: pd.DataFrame, first: str) -> str:
    lines = [
        f"| {first} | " + " | ".join(map(str, table.columns)) + " |",
        "|---" * (len(table.columns) + 1) + "|",
    ]
    lines += [f"| {idx} | " + " | ".join(str(v) for v in row) + " |" for idx, row in table.iterrows()]
    return "\n".join(lines)


def write_eda(index: pd.DataFrame, out_dir: str | os.PathLike) -> list[Path]:
    """Write EDA figures (PNG) and ``summary.md`` for an ingested set's index.

    Args:
        index: the set's ``index.csv`` as a DataFrame (strings are fine).
        out_dir: directory for the figures (created).

    Returns:
        Paths written: ``pathology_counts.png``, ``<descriptor>_by_label.png`` for the descriptors
        present, ``image_sizes.png``, ``split_balance.png`` (when a split is filled), ``summary.md``.

    Raises:
        ValueError: the index lacks ``label`` or ``pathology``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    missing = {"label", "pathology"} - set(index.columns)
    if missing:
        raise ValueError(f"EDA needs columns {sorted(missing)} in the index; got {list(index.columns)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    summary = [
        "# Dataset summary",
        "",
        f"{len(index)} images, {index['patient_id'].nunique() if 'patient_id' in index else '?'} patients.",
        "",
    ]
    for section in (_pathology, _descriptors, _image_sizes, _split_balance, _quality_flags):
        paths, lines = section(index, out, plt)
        written += paths
        summary += lines
    summary_path = out / "summary.md"
    atomic.write_text(summary_path, "\n".join(summary))
    written.append(summary_path)
    return written


# Each section below returns (figures written, summary.md lines); `plt` is matplotlib.pyplot on Agg.
def _pathology(index: pd.DataFrame, out: Path, plt) -> tuple[list[Path], list[str]]:
    """Images per pathology: ``pathology_counts.png`` and its table."""
    counts = index["pathology"].value_counts()
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.bar(
        counts.index,
        counts.values,
        color=[COLOURS["malignant"] if p == "MALIGNANT" else COLOURS["benign"] for p in counts.index],
    )
    ax.set_ylabel("images")
    ax.set_title("Pathology")
    ax.tick_params(axis="x", labelsize=7)
    path = _save(fig, out / "pathology_counts.png")
    plt.close(fig)
    return [path], ["## Pathology", "", _md_table(counts.to_frame("images"), "pathology"), ""]


def _descriptors(index: pd.DataFrame, out: Path, plt) -> tuple[list[Path], list[str]]:
    """Each filled lesion descriptor by label: ``<descriptor>_by_label.png`` (top 15 values) and its table."""
    written: list[Path] = []
    summary: list[str] = []
    for column in ("mass_shape", "mass_margins", "calc_type", "calc_distribution"):
        if column not in index or not (index[column] != "").any():
            continue
        table = _by_label(index[index[column] != ""], column).head(15)
        fig, ax = plt.subplots(figsize=(6, 0.3 * len(table) + 1.2))
        left = pd.Series(0, index=table.index)
        for label in LABELS:
            ax.barh(table.index, table[label], left=left, color=COLOURS[label], label=label)
            left = left + table[label]
        ax.invert_yaxis()
        ax.tick_params(axis="y", labelsize=7)
        ax.set_xlabel("images")
        ax.set_title(f"{column.replace('_', ' ')} by label")
        ax.legend(fontsize=7)
        written.append(_save(fig, out / f"{column}_by_label.png"))
        plt.close(fig)
        summary += [f"## {column.replace('_', ' ')} by label", "", _md_table(table, column), ""]
    return written, summary


def _image_sizes(index: pd.DataFrame, out: Path, plt) -> tuple[list[Path], list[str]]:
    """Width against height per label (``image_sizes.png``) and the medians and ranges, when recorded."""
    if not {"height", "width"} <= set(index.columns):
        return [], []
    h = pd.to_numeric(index["height"], errors="coerce")
    w = pd.to_numeric(index["width"], errors="coerce")
    fig, ax = plt.subplots(figsize=(4, 4))
    for label in LABELS:
        sel = index["label"] == label
        ax.scatter(w[sel], h[sel], s=6, alpha=0.6, color=COLOURS[label], label=label)
    ax.set_xlabel("width (px)")
    ax.set_ylabel("height (px)")
    ax.set_title("Image sizes")
    ax.legend(fontsize=7)
    path = _save(fig, out / "image_sizes.png")
    plt.close(fig)
    return [path], [
        "## Image sizes",
        "",
        f"height median {h.median():.0f} px (range {h.min():.0f}–{h.max():.0f}), "
        f"width median {w.median():.0f} px (range {w.min():.0f}–{w.max():.0f}).",
        "",
    ]


def _split_balance(index: pd.DataFrame, out: Path, plt) -> tuple[list[Path], list[str]]:
    """Labels per split (ours when filled, else the official one): ``split_balance.png``, table, patients."""
    split_col = "split" if "split" in index and (index["split"] != "").any() else "official_split"
    if split_col not in index:
        return [], []
    table = pd.crosstab(index[split_col], index["label"]).reindex(columns=list(LABELS), fill_value=0)
    order = [s for s in ("train", "val", "test") if s in table.index]
    table = table.loc[order + [s for s in table.index if s not in order]]
    fig, ax = plt.subplots(figsize=(4.5, 3))
    bottom = pd.Series(0, index=table.index)
    for label in LABELS:
        ax.bar(table.index, table[label], bottom=bottom, color=COLOURS[label], label=label)
        bottom = bottom + table[label]
    ax.set_ylabel("images")
    ax.set_title(f"Class balance per {split_col.replace('_', ' ')}")
    ax.legend(fontsize=7)
    path = _save(fig, out / "split_balance.png")
    plt.close(fig)
    frac = (table["malignant"] / table.sum(axis=1)).round(3)
    summary = [
        f"## Class balance per {split_col.replace('_', ' ')}",
        "",
        _md_table(table.assign(malignant_fraction=frac), split_col),
        "",
    ]
    if "patient_id" in index:
        patients = index.groupby(split_col)["patient_id"].nunique()
        summary += ["Patients: " + ", ".join(f"{k} {v}" for k, v in patients.items()), ""]
    return [path], summary


def _quality_flags(index: pd.DataFrame, out: Path, plt) -> tuple[list[Path], list[str]]:
    """Images per QC flag (flags are kept, not dropped): a summary table only, no figure."""
    if "qc_flags" not in index or not (index["qc_flags"] != "").any():
        return [], []
    flags = index["qc_flags"][index["qc_flags"] != ""].str.split(";").explode().value_counts()
    return [], [
        "## Quality flags (kept, not dropped)",
        "",
        _md_table(flags.to_frame("images"), "flag"),
        "",
    ]


def write_phantom_check_figure(
    result: dict, real_crops: list, phantom_crops: list, path: str | os.PathLike
) -> Path:
    """Phantom self-check figure: real and phantom crops on top, one strip per texture metric below.

    Args:
        result: `mammosynth.data.phantom_check.self_check` output (with ``verdicts`` if present).
        real_crops: 2-D arrays of the real CBIS-DDSM fixture crops.
        phantom_crops: a few 2-D phantom crops to show beside them.
        path: PNG to write (its folder is created).

    Returns:
        The PNG path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from mammosynth.data.phantom_check import METRICS, tolerance_band

    n_cols = 2 * len(METRICS)  # the image row holds up to this many crops; each metric spans two
    crops = ([("real", c) for c in real_crops] + [("phantom", c) for c in phantom_crops])[:n_cols]
    fig = plt.figure(figsize=(1.6 * n_cols, 4.4))
    grid = fig.add_gridspec(2, n_cols, height_ratios=[1.2, 1], hspace=0.35, wspace=0.6)
    for i, (kind, crop) in enumerate(crops):
        ax = fig.add_subplot(grid[0, i])
        lo, hi = np.percentile(crop, [0.5, 99.5])
        ax.imshow(crop, cmap="gray", vmin=lo, vmax=hi)
        ax.set_title(
            f"{kind} {crop.shape[0]}×{crop.shape[1]}",
            fontsize=7,
            color=COLOURS["malignant"] if kind == "real" else "k",
        )
        ax.axis("off")
    for j, metric in enumerate(METRICS):
        ax = fig.add_subplot(grid[1, 2 * j : 2 * j + 2])
        real = [r[metric] for r in result["real"]["per_crop"]]
        fake = [r[metric] for r in result["phantom"]["per_crop"]]
        ax.axhspan(*tolerance_band(real), color="#DDDDDD", label="tolerance band")
        jitter = np.random.default_rng(0).uniform(-0.2, 0.2, len(fake))
        ax.scatter(jitter, fake, s=8, color=COLOURS["benign"], label="phantom crops")
        ax.scatter(
            np.zeros(len(real)), real, s=30, marker="D", color=COLOURS["malignant"], label="real crops"
        )
        ax.set_xticks([])
        ax.set_xlim(-0.5, 0.5)
        ax.set_title(metric.replace("_", " "), fontsize=8)
        ax.tick_params(labelsize=7)
        if j == 0:
            ax.legend(fontsize=6, loc="best")
    fig.suptitle(
        f"Phantom vs real CBIS-DDSM crops (phantom seed {result['seed']}, n={result['n_phantom']})",
        fontsize=9,
    )
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    written = _save(fig, out)
    plt.close(fig)
    return written

"""Figures of an evaluation: ROC curves, confusion matrices, ΔAUC forest plot, per-seed AUC strip.

Everything renders with matplotlib's Agg backend (no display needed) to PNGs with fixed file names
(`FIGURE_FILES`), so reports can link them and reruns overwrite rather than accumulate.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (backend must be chosen first)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

from mammosynth import atomic, stats  # noqa: E402

log = logging.getLogger(__name__)

FIGURE_FILES = {
    "roc": "roc_curves.png",
    "confusion": "confusion_matrices.png",
    "forest": "forest_auc_delta.png",
    "seed_auc": "seed_auc_strip.png",
}
DPI = 110


def _colours(n: int) -> list:
    cmap = plt.get_cmap("tab10")
    return [cmap(i % 10) for i in range(n)]


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_with(
        path,
        lambda tmp: fig.savefig(tmp, dpi=DPI, bbox_inches="tight", format="png", metadata={"Software": None}),
    )
    plt.close(fig)
    return path


def roc_figure(y: np.ndarray, probs: Mapping[str, Mapping[Any, np.ndarray]], path: str | os.PathLike) -> Path:
    """ROC curve per arm: thick line for the seed ensemble, thin lines for each seed.

    Args:
        y: 0/1 labels of the shared test set.
        probs: ``{arm: {seed: scores}}`` aligned with ``y``.
        path: output PNG.
    """
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for colour, (arm, by_seed) in zip(_colours(len(probs)), probs.items(), strict=True):
        for p in by_seed.values():
            fpr, tpr, _ = roc_curve(y, p)
            ax.plot(fpr, tpr, color=colour, lw=0.7, alpha=0.35)
        ens = stats.seed_ensemble(by_seed)
        fpr, tpr, _ = roc_curve(y, ens)
        auc = stats.binary_metrics(y, ens)["auc"]
        ax.plot(fpr, tpr, color=colour, lw=2.2, label=f"{arm} (ensemble AUC {auc:.3f}, {len(by_seed)} seeds)")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8)
    ax.set(
        xlabel="1 − specificity (false-positive rate)",
        ylabel="sensitivity (true-positive rate)",
        title="ROC on the real test set (thin: single seeds)",
        xlim=(0, 1),
        ylim=(0, 1.01),
    )
    ax.legend(loc="lower right", fontsize=7)
    return _save(fig, Path(path))


def confusion_figure(
    confusions: Mapping[str, Mapping[str, int]], path: str | os.PathLike, threshold: float = 0.5
) -> Path:
    """One 2×2 confusion matrix per arm (seed ensemble at ``threshold``), counts and row shares."""
    n = max(len(confusions), 1)
    cols = min(n, 4)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.0 * rows), squeeze=False)
    for ax in axes.flat[len(confusions) :]:
        ax.axis("off")
    for ax, (arm, c) in zip(axes.flat, confusions.items(), strict=False):
        mat = np.array([[c["tn"], c["fp"]], [c["fn"], c["tp"]]], dtype=float)
        share = mat / np.maximum(mat.sum(axis=1, keepdims=True), 1)
        ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        for i in range(2):
            for j in range(2):
                ax.text(
                    j,
                    i,
                    f"{int(mat[i, j])}\n{share[i, j]:.0%}",
                    ha="center",
                    va="center",
                    color="white" if share[i, j] > 0.6 else "black",
                    fontsize=9,
                )
        ax.set_xticks([0, 1], ["benign", "malignant"])
        ax.set_yticks([0, 1], ["benign", "malignant"])
        ax.set(xlabel="predicted", ylabel="true", title=arm)
    fig.suptitle(f"Confusion matrices (seed ensemble, threshold {threshold:g})", fontsize=10)
    fig.tight_layout()
    return _save(fig, Path(path))


def forest_figure(comparisons: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """ΔAUC per (arm vs baseline): DeLong CI on the seed ensemble, and the across-seed t-interval."""
    fig, ax = plt.subplots(figsize=(6.5, 0.6 * max(len(comparisons), 1) + 1.4))
    labels = []
    for i, comp in enumerate(comparisons):
        ypos = len(comparisons) - 1 - i
        lo, hi = comp["ci95"]
        ax.errorbar(
            comp["delta"],
            ypos + 0.12,
            xerr=[[comp["delta"] - lo], [hi - comp["delta"]]],
            fmt="o",
            color="C0",
            capsize=3,
            label="DeLong, seed ensemble" if i == 0 else None,
        )
        ps = comp.get("per_seed") or {}
        ci = ps.get("ci95") or [None, None]
        if ci[0] is not None:
            ax.errorbar(
                ps["delta"],
                ypos - 0.12,
                xerr=[[ps["delta"] - ci[0]], [ci[1] - ps["delta"]]],
                fmt="s",
                color="C1",
                capsize=3,
                label="across seeds (t)" if i == 0 else None,
            )
        labels.append(f"{comp['arm']} vs {comp['baseline']}")
    ax.axvline(0, color="grey", ls="--", lw=0.8)
    ax.set_yticks(range(len(comparisons)), labels[::-1])
    ax.set(xlabel="Δ AUC (arm − baseline), 95% CI", title="Does the arm beat its baseline?")
    if comparisons:
        ax.legend(fontsize=7, loc="best")
    else:
        ax.text(0.5, 0.5, "no comparisons (one arm only)", ha="center", transform=ax.transAxes)
    fig.tight_layout()
    return _save(fig, Path(path))


def seed_auc_figure(arms: Mapping[str, Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """Per-seed test AUC per arm (dots) with the mean and its across-seed 95% t-interval."""
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(arms) + 1.5), 4))
    rng = np.random.default_rng(0)  # fixed jitter: identical inputs give identical images
    for i, info in enumerate(arms.values()):
        aucs = [v["auc"] for v in info["per_seed"].values()]
        ax.scatter(i + rng.uniform(-0.08, 0.08, len(aucs)), aucs, s=18, color="C0", alpha=0.7, zorder=2)
        s = info["summary"]["auc"]
        lo, hi = s["ci95"]
        if lo is not None:
            ax.errorbar(
                i + 0.22,
                s["mean"],
                yerr=[[s["mean"] - lo], [hi - s["mean"]]],
                fmt="D",
                color="C3",
                capsize=3,
                zorder=3,
            )
        else:
            ax.scatter(i + 0.22, s["mean"], marker="D", color="C3", zorder=3)
    ax.set_xticks(range(len(arms)), list(arms), rotation=20, ha="right")
    ax.set(ylabel="test AUC", title="Test AUC per seed (red: mean ± 95% CI over seeds)")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _save(fig, Path(path))


def load_probs(predictions_csv: str | os.PathLike) -> tuple[np.ndarray, dict[str, dict[str, np.ndarray]]]:
    """Read evaluate's long ``test_predictions.csv`` back into ``(y, {arm: {seed: scores}})``."""
    path = Path(predictions_csv)
    if not path.exists():
        raise FileNotFoundError(f"{path} missing: run `mammosynth evaluate` first (it writes this file)")
    df = pd.read_csv(path, dtype={"image_id": str, "arm": str, "seed": str})
    probs: dict[str, dict[str, np.ndarray]] = {}
    y = None
    for arm, sub in df.groupby("arm", sort=False):
        for seed, rows in sub.groupby("seed", sort=False):
            rows = rows.sort_values("image_id", kind="stable")
            probs.setdefault(str(arm), {})[str(seed)] = rows["prob"].to_numpy(float)
            if y is None:
                y = rows["label_id"].to_numpy(int)
    if y is None:
        raise ValueError(f"{path}: no predictions")
    return y, probs


def render_all(
    metrics: Mapping[str, Any], out_dir: str | os.PathLike, predictions_csv: str | os.PathLike | None = None
) -> dict[str, str]:
    """Render every figure an evaluation supports into ``out_dir``.

    Args:
        metrics: evaluate's metrics dict.
        out_dir: folder for the PNGs (`FIGURE_FILES` names).
        predictions_csv: evaluate's ``test_predictions.csv``; without it the ROC figure is skipped
            (the others need only ``metrics``).

    Returns:
        ``{figure key: path}`` for the figures written.
    """
    out = Path(out_dir)
    arms = metrics.get("arms") or {}
    written: dict[str, str] = {}
    if predictions_csv is not None and Path(predictions_csv).exists():
        y, probs = load_probs(predictions_csv)
        order = {a: probs[a] for a in arms if a in probs} or probs
        written["roc"] = str(roc_figure(y, order, out / FIGURE_FILES["roc"]))
    else:
        log.warning("no test predictions given: ROC figure skipped")
    if arms:
        confusions = {a: v["ensemble"]["confusion"] for a, v in arms.items() if v.get("ensemble")}
        written["confusion"] = str(
            confusion_figure(
                confusions, out / FIGURE_FILES["confusion"], float(metrics.get("threshold", 0.5))
            )
        )
        written["seed_auc"] = str(seed_auc_figure(arms, out / FIGURE_FILES["seed_auc"]))
    if metrics.get("comparisons"):
        written["forest"] = str(forest_figure(metrics["comparisons"], out / FIGURE_FILES["forest"]))
    log.info("wrote %d figure(s) to %s", len(written), out)
    return written

"""Figures of an evaluation: ROC curves, confusion matrices, ΔAUC forest plot, per-seed AUC strip.

Everything renders with matplotlib's Agg backend (no display needed) to PNGs with fixed file names
(`FIGURE_FILES`), so reports can link them and reruns overwrite rather than accumulate.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (backend must be chosen first)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

from mammosynth import atomic, stats  # noqa: E402
from mammosynth.provenance import test_set_name  # noqa: E402

log = logging.getLogger(__name__)

FIGURE_FILES = {
    "roc": "roc_curves.png",
    "confusion": "confusion_matrices.png",
    "forest": "forest_auc_delta.png",
    "seed_auc": "seed_auc_strip.png",
}
# Rendered only when the run has an external test set (metrics.json `external`).
EXTERNAL_FIGURE_FILES = {"external_forest": "forest_auc_delta_external.png"}
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


def roc_figure(
    y: np.ndarray,
    probs: Mapping[str, Mapping[Any, np.ndarray]],
    path: str | os.PathLike,
    test_set: str = "test set",
) -> Path:
    """ROC curve per arm: thick line for the seed ensemble, thin lines for each seed.

    Args:
        y: 0/1 labels of the shared test set.
        test_set: what the test set is, for the title (``"phantom test set"`` on the embedded data).
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
        title=f"ROC on the {test_set} (thin: single seeds)",
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


def forest_figure(
    comparisons: Sequence[Mapping[str, Any]],
    path: str | os.PathLike,
    *,
    title: str = "Does the arm beat its baseline?",
) -> Path:
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
    ax.set(xlabel="Δ AUC (arm − baseline), 95% CI", title=title)
    # at most ~5 signed ticks (long CIs made the default ticks run together)
    ax.xaxis.set_major_locator(plt.MaxNLocator(nbins=5, symmetric=False))
    ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:+.2f}" if abs(v) > 1e-9 else "0"))
    if comparisons:  # in a strip of the figure below the x label, never on a whisker or the label
        fig.legend(fontsize=8, loc="lower center", ncol=2, frameon=False)
        fig.tight_layout(rect=(0, 0.1, 1, 1))
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
        test_set = test_set_name(metrics.get("data_source"))
        written["roc"] = str(roc_figure(y, order, out / FIGURE_FILES["roc"], test_set))
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
    external = (metrics.get("external") or {}).get("comparisons")
    if external:
        path = out / EXTERNAL_FIGURE_FILES["external_forest"]
        written["external_forest"] = str(
            forest_figure(external, path, title="External test set: Δ AUC vs baseline")
        )
    log.info("wrote %d figure(s) to %s", len(written), out)
    return written


# --------------------------------------------------------------------------- clinical figures
class Figure(NamedTuple):
    """A rendered figure and the caption a report prints under it (what it shows, which arms/seeds)."""

    path: Path
    caption: str


CLINICAL_FIGURE_FILES = {
    "roc_band": "roc_bootstrap_bands.png",
    "reliability": "reliability_diagram.png",
    "pr": "pr_curves.png",
    "subgroups": "subgroup_auc_forest.png",
    "learning_curves": "learning_curves.png",
    "gan_curves": "gan_training.png",
}


def _seeds_text(probs: Mapping[str, Mapping[Any, Any]]) -> str:
    return "; ".join(f"{arm}: seeds {', '.join(map(str, by_seed))}" for arm, by_seed in probs.items())


def caption(key: str, metrics: Mapping[str, Any]) -> str:
    """Caption of one of the evaluation figures in `FIGURE_FILES`, from evaluate's metrics dict.

    The test set is named from ``metrics["data_source"]`` (`mammosynth.provenance.test_set_name`: phantom
    data is called phantom).

    Raises:
        KeyError: ``key`` is not in `FIGURE_FILES`.
    """
    arms = metrics.get("arms") or {}
    seeds = "; ".join(f"{a}: {len(v.get('per_seed') or {})} seed(s)" for a, v in arms.items())
    n = (metrics.get("test_set") or {}).get("n")
    name = test_set_name(metrics.get("data_source"))
    on = f"the {name} ({n} images)" if n else f"the {name}"
    texts = {
        "roc": f"ROC curves on {on}: thick line = seed ensemble (probabilities averaged over seeds), "
        f"thin lines = single seeds ({seeds}).",
        "confusion": f"Confusion matrices of each arm's seed ensemble at threshold "
        f"{float(metrics.get('threshold', 0.5)):g} on {on}; counts and row shares ({seeds}).",
        "forest": f"Δ AUC of each arm against its matched baseline on {on} with 95% CIs: DeLong on the seed "
        f"ensemble (test-case variability) and the across-seed t-interval (training variability) ({seeds}).",
        "seed_auc": f"AUC on {on} of every seed (dots) and the mean over seeds with its 95% t-interval "
        f"({seeds}).",
    }
    return texts[key]


def roc_band_figure(
    y: np.ndarray,
    probs: Mapping[str, Mapping[Any, np.ndarray]],
    path: str | os.PathLike,
    *,
    n_boot: int = 500,
    seed: int = 0,
    data_source: str | None = None,
) -> Figure:
    """ROC of each arm's seed ensemble with a pointwise 95% bootstrap band (`clinical.roc_band`).

    Args:
        y: 0/1 labels of the shared test set.
        probs: ``{arm: {seed: scores}}`` aligned with ``y``.
        path: output PNG.
        n_boot: bootstrap resamples (stratified, seeded).
        seed: bootstrap RNG seed.
        data_source: the run's data source (metrics.json ``data_source``); names the test set in the caption
            (`mammosynth.provenance.test_set_name`).
    """
    from mammosynth import clinical

    fig, ax = plt.subplots(figsize=(5.8, 5.2))
    for colour, (arm, by_seed) in zip(_colours(len(probs)), probs.items(), strict=True):
        ens = stats.seed_ensemble(by_seed)
        band = clinical.roc_band(y, ens, n_boot=n_boot, seed=seed)
        auc = stats.binary_metrics(y, ens)["auc"]
        ax.fill_between(band["fpr"], band["lo"], band["hi"], color=colour, alpha=0.18, step="post", lw=0)
        ax.step(band["fpr"], band["tpr"], where="post", color=colour, lw=2, label=f"{arm} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8)
    ax.set(
        xlabel="1 − specificity",
        ylabel="sensitivity",
        xlim=(0, 1),
        ylim=(0, 1.01),
        title="ROC, seed ensemble, 95% bootstrap band",
    )
    ax.legend(loc="lower right", fontsize=7)
    text = (
        f"ROC of each arm's seed ensemble on the {test_set_name(data_source)} ({len(y)} images) with a "
        f"pointwise 95% stratified bootstrap band over test cases ({n_boot} resamples, seed {seed}); "
        f"{_seeds_text(probs)}."
    )
    return Figure(_save(fig, Path(path)), text)


def reliability_figure(readouts: Mapping[str, Mapping[str, Any]], path: str | os.PathLike) -> Figure:
    """Reliability diagram of each arm's seed ensemble, with the cases per bin underneath.

    Args:
        readouts: ``{arm: clinical.arm_readout(...)}``.
        path: output PNG.
    """
    fig, (ax, hist) = plt.subplots(
        2, 1, figsize=(5.8, 6.2), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8, label="perfect calibration")
    width = 1.0 / max(len(readouts), 1)
    for i, (colour, (arm, r)) in enumerate(zip(_colours(len(readouts)), readouts.items(), strict=True)):
        cal = r["ensemble"]["calibration"]
        bins = [b for b in cal["reliability"] if b["n"]]
        ax.plot(
            [b["mean_prob"] for b in bins],
            [b["frac_malignant"] for b in bins],
            "o-",
            color=colour,
            label=f"{arm} (Brier {cal['brier']:.3f}, ECE {cal['ece']:.3f})",
        )
        all_bins = cal["reliability"]
        step = all_bins[0]["hi"] - all_bins[0]["lo"]
        hist.bar(
            [b["lo"] + step * width * (i + 0.5) for b in all_bins],
            [b["n"] for b in all_bins],
            width=step * width,
            color=colour,
        )
    ax.set(ylabel="share malignant", xlim=(0, 1), ylim=(0, 1), title="Reliability (seed ensemble)")
    ax.legend(fontsize=7, loc="upper left")
    hist.set(xlabel="predicted P(malignant)", ylabel="cases")
    fig.tight_layout()
    first = next(iter(readouts.values()), {})
    binning = (first.get("ensemble") or {}).get("calibration", {}).get("ece_binning", "")
    seeds = "; ".join(f"{a}: seeds {', '.join(r['seeds'])}" for a, r in readouts.items())
    text = (
        "Reliability diagram: share of malignant cases against the mean predicted probability per bin "
        f"({binning}), for each arm's seed ensemble; bars give the cases per bin; {seeds}."
    )
    return Figure(_save(fig, Path(path)), text)


def pr_figure(
    y: np.ndarray,
    probs: Mapping[str, Mapping[Any, np.ndarray]],
    path: str | os.PathLike,
    *,
    data_source: str | None = None,
) -> Figure:
    """Precision–recall curve of each arm's seed ensemble with its average precision.

    Args:
        y: 0/1 labels of the shared test set.
        probs: ``{arm: {seed: scores}}`` aligned with ``y``.
        path: output PNG.
        data_source: the run's data source (metrics.json ``data_source``); names the test set in the caption
            (`mammosynth.provenance.test_set_name`).
    """
    from mammosynth import clinical

    fig, ax = plt.subplots(figsize=(5.8, 5.0))
    prevalence = float(np.mean(y))
    for colour, (arm, by_seed) in zip(_colours(len(probs)), probs.items(), strict=True):
        pr = clinical.pr_curve(y, stats.seed_ensemble(by_seed))
        ax.step(
            pr["recall"],
            pr["precision"],
            where="post",
            color=colour,
            lw=2,
            label=f"{arm} (AP {pr['average_precision']:.3f})",
        )
    ax.axhline(prevalence, ls="--", color="grey", lw=0.8, label=f"chance (prevalence {prevalence:.2f})")
    ax.set(
        xlabel="recall (sensitivity)",
        ylabel="precision (PPV)",
        xlim=(0, 1),
        ylim=(0, 1.02),
        title="Precision–recall",
    )
    ax.legend(fontsize=7, loc="lower left")
    text = (
        f"Precision–recall curves of each arm's seed ensemble on the {test_set_name(data_source)} "
        f"({len(y)} images, {prevalence:.0%} malignant); AP = step-wise average precision; "
        f"{_seeds_text(probs)}."
    )
    return Figure(_save(fig, Path(path)), text)


def subgroup_figure(subgroups: Mapping[str, Sequence[Mapping[str, Any]]], path: str | os.PathLike) -> Figure:
    """Forest plot of subgroup AUCs (95% bootstrap CI) per arm; ``too_small`` levels greyed, not hidden.

    Args:
        subgroups: ``{arm: clinical.subgroup_auc(...) rows}`` (same factors/levels for every arm).
        path: output PNG.
    """
    arms = list(subgroups)
    rows = list(next(iter(subgroups.values()), []))
    fig, ax = plt.subplots(figsize=(7.0, 0.32 * max(len(rows), 1) + 1.6))
    offsets = np.linspace(-0.25, 0.25, len(arms)) if len(arms) > 1 else [0.0]
    for colour, off, arm in zip(_colours(len(arms)), offsets, arms, strict=True):
        for i, r in enumerate(subgroups[arm]):
            ypos = len(rows) - 1 - i + off
            if r["auc"] is None:
                continue
            lo, hi = r["ci95"]
            if lo is None:
                ax.plot(r["auc"], ypos, "o", mfc="white", color="lightgrey", ms=4)
            else:
                ax.errorbar(
                    r["auc"],
                    ypos,
                    xerr=[[r["auc"] - lo], [hi - r["auc"]]],
                    fmt="o",
                    ms=4,
                    color=colour,
                    capsize=2,
                )
        ax.plot([], [], "o", color=colour, label=arm)
    ax.plot([], [], "o", mfc="white", color="lightgrey", label="too small: no CI")
    labels = []
    for r in rows:
        mark = " — too small" if r["too_small"] else ""
        labels.append(f"{r['factor']}={r['level']} (n={r['n']}, {r['n_malignant']} mal.){mark}")
    ax.set_yticks(range(len(rows)), labels[::-1], fontsize=7)
    for tick, r in zip(ax.get_yticklabels(), rows[::-1], strict=True):
        if r["too_small"]:
            tick.set_color("grey")
    lows = [
        v for r in (x for a in arms for x in subgroups[a]) for v in (r["ci95"][0], r["auc"]) if v is not None
    ]
    left = max(0.0, min(lows, default=0.0) - 0.05)
    if left < 0.5:
        ax.axvline(0.5, color="grey", ls="--", lw=0.8)
    for i in range(1, len(rows)):  # a rule between factors
        if rows[i]["factor"] != rows[i - 1]["factor"]:
            ax.axhline(len(rows) - i - 0.5, color="lightgrey", lw=0.6)
    ax.set(xlabel="AUC (seed ensemble), 95% bootstrap CI", xlim=(left, 1.0), title="AUC by subgroup")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    small = sum(r["too_small"] for r in rows)
    text = (
        f"AUC of each arm's seed ensemble within each subgroup level ({', '.join(arms)}), 95% stratified "
        f"bootstrap CIs; n = images in the level; {small} level(s) below the minimum size are greyed "
        "(AUC shown where both classes occur, no CI)."
    )
    return Figure(_save(fig, Path(path)), text)


def load_histories(arm_dir: str | os.PathLike) -> dict[str, list[dict[str, float]]]:
    """Per-epoch Keras logs of every seed of an arm dir: ``{seed: [{"loss", "val_auc", ...}, ...]}``.

    Raises:
        FileNotFoundError: the arm dir holds no ``seed-*/history.json``.
    """
    import json

    root = Path(arm_dir)
    out = {}
    for f in sorted(root.glob("seed-*/history.json")):
        out[f.parent.name.removeprefix("seed-")] = json.loads(f.read_text())
    if not out:
        raise FileNotFoundError(f"{root}: no seed-*/history.json (written by `mammosynth train`)")
    return out


def _curve_band(by_seed: Mapping[str, Sequence[Mapping[str, float]]], key: str):
    """Per-epoch mean, min and max over the seeds that ran that epoch (early stopping ends some sooner)."""
    n = max((len(h) for h in by_seed.values()), default=0)
    cols = [[h[e][key] for h in by_seed.values() if e < len(h) and key in h[e]] for e in range(n)]
    keep = [e for e in range(n) if cols[e]]
    if not keep:
        return None
    return (
        np.array(keep) + 1,
        np.array([np.mean(cols[e]) for e in keep]),
        np.array([np.min(cols[e]) for e in keep]),
        np.array([np.max(cols[e]) for e in keep]),
    )


def learning_curves_figure(
    histories: Mapping[str, Mapping[str, Sequence[Mapping[str, float]]]], path: str | os.PathLike
) -> Figure:
    """Train/val loss and AUC per epoch per arm: mean over seeds, shaded min–max range.

    Args:
        histories: ``{arm: load_histories(arm_dir)}``.
        path: output PNG.
    """
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.0))
    for colour, (arm, by_seed) in zip(_colours(len(histories)), histories.items(), strict=True):
        for ax, metric in zip(axes, ("loss", "auc"), strict=True):
            for key, ls, lab in ((metric, "--", "train"), (f"val_{metric}", "-", "val")):
                band = _curve_band(by_seed, key)
                if band is None:
                    continue
                ep, mean, lo, hi = band
                ax.fill_between(ep, lo, hi, color=colour, alpha=0.15, lw=0)
                ax.plot(ep, mean, ls=ls, color=colour, lw=1.6, label=f"{arm} {lab} ({len(by_seed)} seeds)")
    axes[0].set(xlabel="epoch", ylabel="binary cross-entropy", title="Loss")
    axes[1].set(xlabel="epoch", ylabel="AUC", title="AUC")
    for ax in axes:
        ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    fig.tight_layout()
    seeds = "; ".join(f"{a}: seeds {', '.join(s)}" for a, s in histories.items())
    text = (
        "Learning curves per arm: training (dashed) and validation (solid) loss and AUC per epoch, mean "
        "over seeds with the min–max range shaded; an epoch averages only the seeds that reached it "
        f"(early stopping); {seeds}."
    )
    return Figure(_save(fig, Path(path)), text)


def _png_aspect(path: Path) -> float:
    from PIL import Image

    with Image.open(path) as im:
        return im.height / max(im.width, 1)


def gan_figure(gan_dir: str | os.PathLike, path: str | os.PathLike, *, max_samples: int = 6) -> Figure:
    """GAN training figure: losses and discriminator outputs per step, and a strip of sample grids.

    The curves come from ``losses.csv``; the strip shows the fixed-noise sample grids
    ``samples/step-*.png`` (evenly spaced, last step included).

    Args:
        gan_dir: the GAN run dir written by `mammosynth.gan.train_gan`.
        path: output PNG.
        max_samples: most sample grids in the strip.

    Raises:
        FileNotFoundError: no ``losses.csv`` in ``gan_dir``.
    """
    from PIL import Image

    root = Path(gan_dir)
    if not (root / "losses.csv").exists():
        raise FileNotFoundError(f"{root}/losses.csv missing: is this a `mammosynth train-gan` output dir?")
    losses = pd.read_csv(root / "losses.csv")
    grids = sorted(root.glob("samples/step-*.png"))
    if len(grids) > max_samples:
        grids = [grids[i] for i in np.unique(np.linspace(0, len(grids) - 1, max_samples).round().astype(int))]
    d_out = [c for c in ("d_real", "d_fake") if c in losses]
    loss_cols = [c for c in losses.columns if c != "step" and c not in d_out]
    n_top = 2 if d_out else 1
    # the strip: two grids per row, each as tall as its aspect needs (a grid is 2 rows x many columns)
    cols = min(len(grids), 2)
    strip_rows = -(-len(grids) // cols) if grids else 0
    aspect = _png_aspect(grids[0]) if grids else 0.0
    strip_h = strip_rows * (10 / max(cols, 1)) * aspect + 0.35 * strip_rows
    fig = plt.figure(figsize=(10, 3.6 + strip_h + (0.4 if grids else 0)))
    ratios = [3.6, strip_h] if grids else [1]
    top = fig.add_gridspec(2 if grids else 1, n_top, height_ratios=ratios, hspace=0.3)
    ax = fig.add_subplot(top[0, 0])
    for c in loss_cols:
        ax.plot(losses["step"], losses[c], lw=1.3, label=c)
    ax.set(xlabel="step", ylabel="loss", title="Losses")
    ax.legend(fontsize=7)
    if d_out:
        ax2 = fig.add_subplot(top[0, 1])
        for c in d_out:
            ax2.plot(losses["step"], losses[c], lw=1.3, label=c)
        values = np.concatenate([np.asarray(losses[c], float) for c in d_out])
        if np.nanmin(values) >= 0 and np.nanmax(values) <= 1:  # probabilities (BCE discriminator)
            ax2.axhline(0.5, color="grey", ls="--", lw=0.8)
            ax2.set(ylim=(0, 1), ylabel="mean D output (probability)")
        else:  # raw scores (hinge / projection discriminator): the sign is the decision
            ax2.axhline(0.0, color="grey", ls="--", lw=0.8)
            ax2.set(ylabel="mean D output (raw score)")
        ax2.set(xlabel="step", title="Discriminator on real / fake")
        ax2.legend(fontsize=7)
    if grids:
        strip = top[1, :].subgridspec(strip_rows, cols, wspace=0.04, hspace=0.35)
        for k, g in enumerate(grids):
            sub = fig.add_subplot(strip[k // cols, k % cols])
            sub.imshow(np.asarray(Image.open(g).convert("L")), cmap="gray", vmin=0, vmax=255)
            sub.set_xticks([])
            sub.set_yticks([])
            sub.set_title(f"step {int(g.stem.rsplit('-', 1)[-1])}", fontsize=8)
    text = (
        f"GAN training ({root.name}): {', '.join(loss_cols)} per logged step"
        + (f", mean discriminator output on real and fake batches ({', '.join(d_out)})" if d_out else "")
        + (
            f"; fixed-noise samples at {len(grids)} steps (rows: benign, malignant)"
            if grids
            else "; no sample grids found"
        )
        + "."
    )
    return Figure(_save(fig, Path(path)), text)


def render_clinical(
    out_dir: str | os.PathLike,
    predictions_csv: str | os.PathLike,
    readout: Mapping[str, Any],
    *,
    arm_dirs: Sequence[str | os.PathLike] = (),
    gan_dir: str | os.PathLike | None = None,
    n_boot: int = 500,
    seed: int = 0,
    data_source: str | None = None,
) -> dict[str, Figure]:
    """Render the clinical figures (`CLINICAL_FIGURE_FILES`) an evaluation supports into ``out_dir``.

    Args:
        out_dir: folder for the PNGs.
        predictions_csv: evaluate's ``test_predictions.csv``.
        readout: `mammosynth.clinical.evaluation_readout` of the same evaluation.
        arm_dirs: arm dirs whose ``seed-*/history.json`` give learning curves (arm name = ``arm.json``'s
            ``arm``, else the folder name); none: no learning curves.
        gan_dir: the GAN run dir (``losses.csv``, ``samples/``); ``None``: no GAN figure.
        n_boot: bootstrap resamples of the ROC band.
        seed: bootstrap seed.
        data_source: the run's data source (metrics.json ``data_source``); names the test set in the
            captions (`mammosynth.provenance.test_set_name`: phantom data is called phantom).

    Returns:
        ``{figure key: Figure(path, caption)}`` for the figures written.
    """
    import json

    from mammosynth import clinical

    out = Path(out_dir)
    _, y, probs = clinical.load_predictions(predictions_csv)
    arms = {a: probs[a] for a in readout["arms"] if a in probs}
    files = CLINICAL_FIGURE_FILES
    figs = {
        "roc_band": roc_band_figure(
            y, arms, out / files["roc_band"], n_boot=n_boot, seed=seed, data_source=data_source
        ),
        "reliability": reliability_figure(readout["arms"], out / files["reliability"]),
        "pr": pr_figure(y, arms, out / files["pr"], data_source=data_source),
    }
    subs = {a: r["subgroups"] for a, r in readout["arms"].items() if r.get("subgroups")}
    if subs:
        figs["subgroups"] = subgroup_figure(subs, out / files["subgroups"])
    histories = {}
    for d in arm_dirs:
        arm_json = Path(d) / "arm.json"
        name = (
            json.loads(arm_json.read_text()).get("arm", Path(d).name) if arm_json.exists() else Path(d).name
        )
        try:
            histories[name] = load_histories(d)
        except FileNotFoundError as err:
            log.warning("learning curves: %s", err)
    if histories:
        figs["learning_curves"] = learning_curves_figure(histories, out / files["learning_curves"])
    if gan_dir is not None:
        figs["gan_curves"] = gan_figure(gan_dir, out / files["gan_curves"])
    return figs

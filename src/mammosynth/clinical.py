"""Clinical read-outs of a classifier arm: operating points, calibration, PR curve, subgroups, warnings.

Everything here takes plain arrays — labels ``y`` (1 = malignant) and scores ``p`` = P(malignant) on
the shared real test set — plus, for subgroups, a per-image metadata table aligned with them (the
ingested set's ``index.csv`` columns ``mass_shape, mass_margins, breast_density, subtlety, view``;
`load_metadata`). Definitions, stated once so a reader can recompute every number:

* **Sensitivity at 90 % specificity**: over every threshold of the empirical ROC (each distinct
  score, plus "call nothing malignant"), the highest sensitivity among thresholds whose specificity
  is at least the target; no interpolation between ROC points. Specificity at 90 % sensitivity is
  the mirror. CIs: stratified percentile bootstrap over test cases (`stats.bootstrap_ci`, seeded).
* **Sensitivity / specificity at the threshold** (P ≥ threshold is called malignant): Wilson score
  95 % intervals on the counts (closed form; exact enough at these sizes and never outside [0, 1]).
* **Brier score**: mean of ``(p − y)²``. **ECE**: ``n_bins`` equal-width bins on [0, 1] (the last
  closed), ``Σ_b (n_b / N)·|mean p_b − share malignant_b|`` over non-empty bins; the reliability
  diagram plots the same bins.
* **Average precision**: scikit-learn's step-wise ``Σ (R_k − R_{k−1}) P_k`` (no interpolation).
* **Subgroups**: AUC with a stratified bootstrap CI within each level of each factor; a level with
  fewer than ``min_size`` images or fewer than ``min_per_class`` of either class is kept and marked
  ``too_small`` (AUC shown where defined, no CI).

`arm_readout` applies all of it to one arm: the seed ensemble (per-case probabilities averaged over
seeds) with CIs, plus each seed's values and their mean. `warnings` turns an evaluation into the
short list of problems a reader must see first.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from mammosynth import stats

TARGET = 0.9
N_BINS = 10
SUBGROUP_COLUMNS = ("mass_shape", "mass_margins", "breast_density", "subtlety", "view")
MIN_SUBGROUP_SIZE = 20
MIN_SUBGROUP_PER_CLASS = 5
MISSING_LEVEL = "(missing)"
THRESHOLD_CI_METHOD = "Wilson score 95% interval on the counts"
BOOTSTRAP_METHOD = "stratified percentile bootstrap over test cases"


def _arrays(y: Any, p: Any) -> tuple[np.ndarray, np.ndarray]:
    yb, pb = stats._as_labels_scores(y, p)
    return yb.astype(int), pb


def _roc_points(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sensitivity, specificity) at every empirical threshold, "call nothing malignant" included."""
    pos, neg = np.sort(p[y == 1]), np.sort(p[y == 0])
    thresholds = np.concatenate([[np.inf], np.unique(p)[::-1]])
    sens = 1.0 - np.searchsorted(pos, thresholds, side="left") / len(pos)
    spec = np.searchsorted(neg, thresholds, side="left") / len(neg)
    return sens, spec


def sensitivity_at_specificity(y: Any, p: Any, target: float = TARGET) -> float:
    """Highest sensitivity of any empirical threshold with specificity ≥ ``target`` (no interpolation).

    Args:
        y: 0/1 labels (1 = malignant).
        p: scores, higher = more likely malignant.
        target: minimum specificity in (0, 1].

    Returns:
        The sensitivity (0.0 when only "call nothing malignant" reaches the target).
    """
    yb, pb = _arrays(y, p)
    sens, spec = _roc_points(yb, pb)
    return float(sens[spec >= target - 1e-12].max())


def specificity_at_sensitivity(y: Any, p: Any, target: float = TARGET) -> float:
    """Highest specificity of any empirical threshold with sensitivity ≥ ``target`` (no interpolation)."""
    yb, pb = _arrays(y, p)
    sens, spec = _roc_points(yb, pb)
    ok = sens >= target - 1e-12
    # the lowest threshold calls every case malignant (sensitivity 1), so ``ok`` is never empty
    return float(spec[ok].max())


def wilson_interval(successes: int, n: int, level: float = 0.95) -> list[float | None]:
    """Wilson score interval of a proportion ``successes / n``.

    Returns:
        ``[lo, hi]``, or ``[None, None]`` when ``n`` is 0.
    """
    if n == 0:
        return [None, None]
    z = float(sps.norm.ppf(0.5 + level / 2))
    phat = successes / n
    denom = 1 + z * z / n
    centre = (phat + z * z / (2 * n)) / denom
    half = z * math.sqrt(phat * (1 - phat) / n + z * z / (4 * n * n)) / denom
    return [max(0.0, centre - half), min(1.0, centre + half)]


def threshold_point(y: Any, p: Any, threshold: float = 0.5) -> dict[str, Any]:
    """Sensitivity and specificity at ``threshold`` (P ≥ threshold = malignant) with Wilson CIs."""
    yb, pb = _arrays(y, p)
    c = stats.confusion(yb, pb, threshold)
    n_pos, n_neg = c["tp"] + c["fn"], c["tn"] + c["fp"]
    return {
        "threshold": float(threshold),
        "sensitivity": c["tp"] / n_pos,
        "sensitivity_ci95": wilson_interval(c["tp"], n_pos),
        "specificity": c["tn"] / n_neg,
        "specificity_ci95": wilson_interval(c["tn"], n_neg),
        "confusion": c,
        "method": THRESHOLD_CI_METHOD,
    }


def operating_points(
    y: Any, p: Any, *, target: float = TARGET, threshold: float = 0.5, n_boot: int = 2000, seed: int = 0
) -> dict[str, Any]:
    """Clinical operating points of one score vector, each with a 95 % CI.

    Args:
        y: 0/1 labels.
        p: scores.
        target: the fixed specificity / sensitivity (0.9 = 90 %).
        threshold: the decision threshold for the thresholded pair.
        n_boot: bootstrap resamples for the fixed-specificity / fixed-sensitivity CIs.
        seed: bootstrap RNG seed (same seed, same intervals).

    Returns:
        ``{"sens_at_spec": {"target", "estimate", "ci", "method"}, "spec_at_sens": {...},
        "at_threshold": threshold_point(...)}``.
    """
    yb, pb = _arrays(y, p)
    out: dict[str, Any] = {}
    for key, fn in (
        ("sens_at_spec", sensitivity_at_specificity),
        ("spec_at_sens", specificity_at_sensitivity),
    ):
        boot = stats.bootstrap_ci(yb, pb, lambda a, b, fn=fn: fn(a, b, target), n_boot=n_boot, seed=seed)
        out[key] = {
            "target": target,
            "estimate": boot["estimate"],
            "ci": boot["ci"],
            "n_boot": n_boot,
            "seed": seed,
            "method": BOOTSTRAP_METHOD + "; empirical ROC, no interpolation",
        }
    out["at_threshold"] = threshold_point(yb, pb, threshold)
    return out


def reliability(y: Any, p: Any, n_bins: int = N_BINS) -> list[dict[str, Any]]:
    """Reliability-diagram data: equal-width bins on [0, 1] (last bin closed), empty bins included.

    Returns:
        One row per bin: ``{"lo", "hi", "n", "mean_prob", "frac_malignant"}`` (``None`` means for
        empty bins).
    """
    yb, pb = _arrays(y, p)
    if pb.min() < 0.0 or pb.max() > 1.0:
        raise ValueError(f"reliability: probabilities must lie in [0, 1], got {pb.min():.3g}..{pb.max():.3g}")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # floor(p·n) rather than searching the edges: 0.3 lands in [0.3, 0.4) as a reader expects
    which = np.clip(np.floor(pb * n_bins).astype(int), 0, n_bins - 1)
    rows = []
    for b in range(n_bins):
        m = which == b
        n = int(m.sum())
        rows.append(
            {
                "lo": float(edges[b]),
                "hi": float(edges[b + 1]),
                "n": n,
                "mean_prob": float(pb[m].mean()) if n else None,
                "frac_malignant": float(yb[m].mean()) if n else None,
            }
        )
    return rows


def calibration(y: Any, p: Any, n_bins: int = N_BINS) -> dict[str, Any]:
    """Brier score, expected calibration error and the reliability bins of one score vector."""
    yb, pb = _arrays(y, p)
    bins = reliability(yb, pb, n_bins)
    ece = sum(b["n"] * abs(b["mean_prob"] - b["frac_malignant"]) for b in bins if b["n"]) / len(yb)
    return {
        "brier": float(np.mean((pb - yb) ** 2)),
        "ece": float(ece),
        "ece_binning": f"{n_bins} equal-width bins on [0, 1], weighted by bin size",
        "reliability": bins,
    }


def pr_curve(y: Any, p: Any) -> dict[str, Any]:
    """Precision–recall curve and average precision (scikit-learn's step-wise definition)."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    yb, pb = _arrays(y, p)
    precision, recall, _ = precision_recall_curve(yb, pb)
    return {
        "precision": precision.tolist(),
        "recall": recall.tolist(),
        "average_precision": float(average_precision_score(yb, pb)),
        "prevalence": float(yb.mean()),
    }


def roc_band(
    y: Any, p: Any, *, n_boot: int = 500, seed: int = 0, grid: int = 101, alpha: float = 0.05
) -> dict[str, list[float]]:
    """ROC curve on a fixed FPR grid with a pointwise percentile bootstrap band (stratified, seeded).

    Returns:
        ``{"fpr", "tpr", "lo", "hi"}``: sensitivity of the full sample and the band's bounds at each
        false-positive rate of ``grid`` evenly spaced points on [0, 1] (step-wise ROC, upper envelope).
    """
    yb, pb = _arrays(y, p)
    fpr_grid = np.linspace(0.0, 1.0, grid)

    def tpr_on_grid(yy: np.ndarray, pp: np.ndarray) -> np.ndarray:
        sens, spec = _roc_points(yy, pp)
        fpr = 1.0 - spec  # non-decreasing along the thresholds
        idx = np.searchsorted(fpr, fpr_grid, side="right") - 1
        return np.maximum.accumulate(sens)[idx]

    idx = stats._stratified_indices(yb.astype(bool), n_boot, seed)
    boots = np.stack([tpr_on_grid(yb[i], pb[i]) for i in idx])
    lo, hi = np.quantile(boots, [alpha / 2, 1 - alpha / 2], axis=0)
    return {
        "fpr": fpr_grid.tolist(),
        "tpr": tpr_on_grid(yb, pb).tolist(),
        "lo": lo.tolist(),
        "hi": hi.tolist(),
    }


# --------------------------------------------------------------------------- subgroups
def load_metadata(index_csv: str | Path, image_ids: Sequence[str]) -> pd.DataFrame:
    """Per-image metadata from an ingested (or split) set's ``index.csv``, in ``image_ids`` order.

    Args:
        index_csv: the set's ``index.csv`` (columns ``image_id`` and `SUBGROUP_COLUMNS`).
        image_ids: the test images in prediction order (e.g. ``predictions.csv``'s ``image_id``).

    Returns:
        A frame with ``image_id`` and the subgroup columns, one row per id, empty values as
        `MISSING_LEVEL`.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a missing column, or test images the index does not list.
    """
    path = Path(index_csv)
    if not path.exists():
        raise FileNotFoundError(f"{path} missing: pass the ingested set's index.csv")
    index = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = {"image_id", *SUBGROUP_COLUMNS} - set(index.columns)
    if missing:
        raise ValueError(f"{path} lacks column(s) {sorted(missing)}; is this an ingested set's index.csv?")
    table = index.drop_duplicates("image_id").set_index("image_id")
    ids = [str(i) for i in image_ids]
    unknown = [i for i in ids if i not in table.index]
    if unknown:
        raise ValueError(
            f"{len(unknown)} of {len(ids)} test image(s) not in {path} (first: {unknown[0]!r}); "
            "use the index of the set the predictions were made on"
        )
    out = table.loc[ids, list(SUBGROUP_COLUMNS)].reset_index()
    return out.replace({c: {"": MISSING_LEVEL} for c in SUBGROUP_COLUMNS})


def _group_row(y: np.ndarray, p: np.ndarray, min_size: int, min_per_class: int, n_boot: int, seed: int):
    n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
    row: dict[str, Any] = {"n": int(len(y)), "n_malignant": n_pos, "n_benign": n_neg}
    row["too_small"] = len(y) < min_size or min(n_pos, n_neg) < min_per_class
    row["auc"], row["ci95"] = None, [None, None]
    if n_pos and n_neg:
        row["auc"] = float(stats.binary_metrics(y, p)["auc"])
        if not row["too_small"]:
            row["ci95"] = stats.bootstrap_ci(y, p, "auc", n_boot=n_boot, seed=seed)["ci"]
    return row


def subgroup_auc(
    y: Any,
    p: Any,
    metadata: pd.DataFrame,
    *,
    columns: Sequence[str] = SUBGROUP_COLUMNS,
    min_size: int = MIN_SUBGROUP_SIZE,
    min_per_class: int = MIN_SUBGROUP_PER_CLASS,
    n_boot: int = 1000,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """AUC with a stratified bootstrap CI per level of each metadata factor; small levels marked.

    Args:
        y: 0/1 labels.
        p: scores (e.g. an arm's seed ensemble).
        metadata: one row per case, aligned with ``y`` (`load_metadata`).
        columns: the factors.
        min_size: levels with fewer images are ``too_small``.
        min_per_class: levels with fewer cases of either class are ``too_small``.
        n_boot: bootstrap resamples per level.
        seed: bootstrap RNG seed.

    Returns:
        Rows ``{"factor", "level", "n", "n_malignant", "n_benign", "too_small", "auc", "ci95"}``
        (every level kept; ``auc`` is ``None`` when a level holds one class only, ``ci95`` is
        ``[None, None]`` for ``too_small`` levels). Sorted by factor, then level.

    Raises:
        ValueError: ``metadata`` length differs from ``y`` or lacks a column.
    """
    yb, pb = _arrays(y, p)
    if len(metadata) != len(yb):
        raise ValueError(
            f"metadata has {len(metadata)} rows for {len(yb)} cases; align it with load_metadata"
        )
    absent = [c for c in columns if c not in metadata.columns]
    if absent:
        raise ValueError(f"metadata lacks column(s) {absent}")
    rows = []
    for factor in columns:
        levels = metadata[factor].astype(str).to_numpy()
        for level in sorted(set(levels)):
            m = levels == level
            rows.append(
                {
                    "factor": factor,
                    "level": level,
                    **_group_row(yb[m], pb[m], min_size, min_per_class, n_boot, seed),
                }
            )
    return rows


def subgroup_delta(
    y: Any,
    p_arm: Any,
    p_baseline: Any,
    metadata: pd.DataFrame,
    *,
    columns: Sequence[str] = SUBGROUP_COLUMNS,
    min_size: int = MIN_SUBGROUP_SIZE,
    min_per_class: int = MIN_SUBGROUP_PER_CLASS,
    n_boot: int = 1000,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Per-subgroup AUC of an arm and its matched baseline, with the paired bootstrap ΔAUC CI.

    Returns:
        `subgroup_auc` rows of the arm, each with ``auc_baseline``, ``baseline_ci95`` and ``delta``,
        ``delta_ci95`` (`stats.paired_bootstrap_auc`; ``None`` for ``too_small`` levels).
    """
    kw = {
        "columns": columns,
        "min_size": min_size,
        "min_per_class": min_per_class,
        "n_boot": n_boot,
        "seed": seed,
    }
    arm_rows = subgroup_auc(y, p_arm, metadata, **kw)
    base_rows = subgroup_auc(y, p_baseline, metadata, **kw)
    yb, pa = _arrays(y, p_arm)
    _, pb = _arrays(y, p_baseline)
    out = []
    for a, b in zip(arm_rows, base_rows, strict=True):
        row = {
            **a,
            "auc_baseline": b["auc"],
            "baseline_ci95": b["ci95"],
            "delta": None,
            "delta_ci95": [None, None],
        }
        if a["auc"] is not None:
            row["delta"] = a["auc"] - b["auc"]
        if not a["too_small"]:
            m = metadata[a["factor"]].astype(str).to_numpy() == a["level"]
            row["delta_ci95"] = stats.paired_bootstrap_auc(yb[m], pa[m], pb[m], n_boot=n_boot, seed=seed)[
                "ci95"
            ]
        out.append(row)
    return out


# --------------------------------------------------------------------------- one arm
def arm_readout(
    y: Any,
    probs_by_seed: Mapping[Any, Any],
    *,
    metadata: pd.DataFrame | None = None,
    threshold: float = 0.5,
    target: float = TARGET,
    n_boot: int = 2000,
    seed: int = 0,
    n_bins: int = N_BINS,
) -> dict[str, Any]:
    """Operating points, calibration, PR curve (and subgroups) of one arm.

    Args:
        y: 0/1 labels of the shared test set.
        probs_by_seed: ``{seed: scores}`` aligned with ``y``.
        metadata: per-case metadata for subgroups (`load_metadata`); ``None`` skips them.
        threshold: decision threshold.
        target: fixed specificity / sensitivity.
        n_boot: bootstrap resamples.
        seed: bootstrap RNG seed.
        n_bins: ECE / reliability bins.

    Returns:
        ``{"seeds", "ensemble": {"operating_points", "calibration", "pr"}, "per_seed": {seed:
        {"sens_at_spec", "spec_at_sens", "sensitivity", "specificity", "brier", "ece",
        "average_precision"}}, "mean_over_seeds": {same keys}, "subgroups": [...] or None}``.
    """
    yb, _ = _arrays(y, next(iter(probs_by_seed.values())))
    ens = stats.seed_ensemble(probs_by_seed)
    per_seed = {}
    for s, p in probs_by_seed.items():
        pt = threshold_point(yb, p, threshold)
        cal = calibration(yb, p, n_bins)
        per_seed[str(s)] = {
            "sens_at_spec": sensitivity_at_specificity(yb, p, target),
            "spec_at_sens": specificity_at_sensitivity(yb, p, target),
            "sensitivity": pt["sensitivity"],
            "specificity": pt["specificity"],
            "brier": cal["brier"],
            "ece": cal["ece"],
            "average_precision": pr_curve(yb, p)["average_precision"],
            "prob_std": float(np.std(np.asarray(p, dtype=float))),
        }
    keys = next(iter(per_seed.values())).keys()
    return {
        "seeds": [str(s) for s in probs_by_seed],
        "threshold": threshold,
        "target": target,
        "ensemble": {
            "operating_points": operating_points(
                yb, ens, target=target, threshold=threshold, n_boot=n_boot, seed=seed
            ),
            "calibration": calibration(yb, ens, n_bins),
            "pr": pr_curve(yb, ens),
        },
        "per_seed": per_seed,
        "mean_over_seeds": {k: float(np.mean([v[k] for v in per_seed.values()])) for k in keys},
        "subgroups": None
        if metadata is None
        else subgroup_auc(yb, ens, metadata, n_boot=min(n_boot, 1000), seed=seed),
    }


# --------------------------------------------------------------------------- warnings
COLLAPSE_TOL = 0.02
PROB_STD_TOL = 1e-3
MIN_SEEDS = 3
FAR_FACTOR = 3.0
PHANTOM_SOURCES = ("embedded",)


def _warning(kind: str, message: str, **where: Any) -> dict[str, Any]:
    return {"kind": kind, "message": message, **where}


def _collapsed_seeds(
    metrics: Mapping[str, Any], probs: Mapping[str, Mapping[Any, Any]] | None, tol: float, std_tol: float
) -> list[dict[str, Any]]:
    out = []
    for arm, info in (metrics.get("arms") or {}).items():
        for seed, m in (info.get("per_seed") or {}).items():
            why = [
                f"{k} {m[k]:.3f}"
                for k in ("sensitivity", "specificity")
                if m.get(k) is not None and m[k] <= tol
            ]
            scores = ((probs or {}).get(arm) or {}).get(seed)
            if scores is None and probs:  # seeds may be keyed by int in caller-built mappings
                scores = {str(k): v for k, v in probs.get(arm, {}).items()}.get(str(seed))
            if scores is not None and float(np.std(np.asarray(scores, dtype=float))) < std_tol:
                why.append(f"probability SD {float(np.std(np.asarray(scores, dtype=float))):.2g}")
            if why:
                out.append(
                    _warning(
                        "collapsed_seed",
                        f"arm {arm}, seed {seed} looks collapsed ({', '.join(why)} at threshold "
                        f"{metrics.get('threshold', 0.5):g}): it predicts (nearly) one class; its AUC and the "
                        "arm's mean over seeds include a degenerate run",
                        arm=arm,
                        seed=str(seed),
                    )
                )
    return out


def _memorisation(card: Mapping[str, Any]) -> list[dict[str, Any]]:
    mem = card.get("memorisation") or {}
    if not mem.get("memorisation_suspected"):
        fired = mem.get("fired") or []
        if not fired:
            return []
        return [
            _warning(
                "memorisation_one_audit",
                f"memorisation audit in {fired[0]} fired, the other did not: not called suspected "
                "(both must agree); judge the closest-pairs figures",
            )
        ]
    share = mem.get("share_flagged")
    fired = mem.get("fired")
    which = f"; fired: {', '.join(fired)}" if fired else ""
    share_txt = (  # a card without the share still warns (formatting None raised here)
        f"{share:.1%} of synthetic images flagged (expected {mem.get('expected_share', 0.05):.0%})"
        if share is not None
        else "flagged"
    )
    return [
        _warning(
            "memorisation_suspected",
            f"memorisation suspected: {share_txt}{which}; "
            "check the closest-pairs figure before trusting the synthetic arms",
        )
    ]


def _far_from_floor(card: Mapping[str, Any], factor: float) -> list[dict[str, Any]]:
    overall = card.get("overall") or {}
    found = []
    for name, syn_key, floor_key in (
        ("FID", "fid_synthetic_vs_heldout", "fid_floor_heldout_halves"),
        ("KID", "kid_synthetic_vs_heldout", "kid_floor_heldout_halves"),
    ):
        syn, floor = overall.get(syn_key), overall.get(floor_key)
        if syn is None or floor is None:
            continue
        if syn > factor * max(floor, 1e-6):
            found.append(f"{name} {syn:.3g} vs real-vs-real floor {floor:.3g}")
    if not found:
        return []
    return [
        _warning(
            "generator_far_from_floor",
            f"generator far from the real floor ({'; '.join(found)}; rule: more than {factor:g}× the "
            "floor): the synthetic images are distinguishable from real ones",
        )
    ]


def warnings(
    metrics: Mapping[str, Any],
    *,
    report_card: Mapping[str, Any] | None = None,
    probs: Mapping[str, Mapping[Any, Any]] | None = None,
    phantom: bool | None = None,
    min_seeds: int = MIN_SEEDS,
    collapse_tol: float = COLLAPSE_TOL,
    prob_std_tol: float = PROB_STD_TOL,
    far_factor: float = FAR_FACTOR,
) -> list[dict[str, Any]]:
    """The problems a reader must see before the results, as ``{"kind", "message", ...}`` rows.

    Kinds and rules:

    * ``phantom_data``: ``phantom`` is true (``None``: inferred from ``metrics["source"]`` being
      one of `PHANTOM_SOURCES`).
    * ``too_few_seeds``: an arm has fewer than ``min_seeds`` seeds (one row naming the arms).
    * ``collapsed_seed``: a seed's sensitivity or specificity at the threshold is ≤ ``collapse_tol``,
      or (with ``probs``) the SD of its probabilities is below ``prob_std_tol``; one row per seed.
    * ``memorisation_suspected``: the report card's ``memorisation.memorisation_suspected`` (which
      audit fired is named when the card says, see `mammosynth.quality.combine_memorisation`);
      ``memorisation_one_audit`` when only one of the pixel / feature audits fired.
    * ``generator_far_from_floor``: the card's overall FID or KID (synthetic vs held-out real) is
      more than ``far_factor`` times its real-vs-real floor.

    Args:
        metrics: evaluate's metrics dict (``arms.*.per_seed``, ``arms.*.n_seeds``, ``threshold``).
        report_card: the generator's report card (`mammosynth.quality.report_card`), if any.
        probs: ``{arm: {seed: scores}}`` for the probability-spread check.
        phantom: whether the data are the embedded phantom.
        min_seeds: fewest seeds per arm for an across-seed interval worth reading.
        collapse_tol: sensitivity/specificity at or below this count as collapsed.
        prob_std_tol: probability SD below this counts as collapsed.
        far_factor: FID/KID ratio to the floor above which the generator is "far".

    Returns:
        Warning rows in display order (empty list: nothing to warn about).
    """
    out: list[dict[str, Any]] = []
    if phantom is None:
        phantom = str(metrics.get("source", "")).strip().lower() in PHANTOM_SOURCES
    if phantom:
        out.append(
            _warning(
                "phantom_data",
                "these results come from the embedded synthetic-looking phantom, not "
                "from CBIS-DDSM; they test the pipeline, not the clinical question",
            )
        )
    arms = metrics.get("arms") or {}
    few = {a: int(v.get("n_seeds") or len(v.get("per_seed") or {})) for a, v in arms.items()}
    few = {a: n for a, n in few.items() if n < min_seeds}
    if few:
        listed = ", ".join(f"{a} ({n})" for a, n in few.items())
        out.append(
            _warning(
                "too_few_seeds",
                f"too few seeds (fewer than {min_seeds}): {listed}; across-seed intervals are wide or missing",
                arms=sorted(few),
            )
        )
    out += _collapsed_seeds(metrics, probs, collapse_tol, prob_std_tol)
    if report_card:
        out += _memorisation(report_card)
        out += _far_from_floor(report_card, far_factor)
    return out


# --------------------------------------------------------------------------- from evaluate's outputs
def load_predictions(
    predictions_csv: str | Path,
) -> tuple[list[str], np.ndarray, dict[str, dict[str, np.ndarray]]]:
    """Read evaluate's long ``test_predictions.csv`` into ``(image_ids, y, {arm: {seed: scores}})``.

    Rows are ordered by ``image_id`` (as `mammosynth.figures.load_probs` does), so ids, labels and
    every arm's scores line up.

    Raises:
        FileNotFoundError: no such file.
        ValueError: no rows, or arms/seeds that do not share the same images.
    """
    path = Path(predictions_csv)
    if not path.exists():
        raise FileNotFoundError(f"{path} missing: run `mammosynth evaluate` first (it writes this file)")
    df = pd.read_csv(path, dtype={"image_id": str, "arm": str, "seed": str})
    if df.empty:
        raise ValueError(f"{path}: no predictions")
    ids, y, probs = None, None, {}
    for (arm, seed), rows in df.groupby(["arm", "seed"], sort=False):
        rows = rows.sort_values("image_id", kind="stable")
        these = rows["image_id"].tolist()
        if ids is None:
            ids, y = these, rows["label_id"].to_numpy(int)
        elif these != ids:
            raise ValueError(f"{path}: arm {arm} seed {seed} was scored on other images than the first arm")
        probs.setdefault(str(arm), {})[str(seed)] = rows["prob"].to_numpy(float)
    return ids, y, probs


def evaluation_readout(
    metrics: Mapping[str, Any],
    predictions_csv: str | Path,
    *,
    index_csv: str | Path | None = None,
    report_card: Mapping[str, Any] | None = None,
    phantom: bool | None = None,
    n_boot: int | None = None,
    seed: int | None = None,
) -> dict[str, Any]:
    """Everything this module computes for one evaluation, ready for the report.

    Args:
        metrics: evaluate's metrics dict (arms, comparisons, threshold, n_bootstrap, bootstrap_seed).
        predictions_csv: evaluate's ``test_predictions.csv``.
        index_csv: the ingested set's ``index.csv`` for subgroups (``None``: no subgroups).
        report_card: the generator's report card, for the warnings.
        phantom: embedded phantom data (``None``: inferred from ``metrics["source"]``).
        n_boot: bootstrap resamples (default: ``metrics["n_bootstrap"]``).
        seed: bootstrap seed (default: ``metrics["bootstrap_seed"]``).

    Returns:
        ``{"arms": {arm: arm_readout(...)}, "subgroup_comparisons": [{"arm", "baseline", "rows":
        subgroup_delta(...)}], "warnings": warnings(...), "min_subgroup_size", "n_boot", "seed"}``.
    """
    ids, y, probs = load_predictions(predictions_csv)
    threshold = float(metrics.get("threshold", 0.5))
    n_boot = int(n_boot if n_boot is not None else metrics.get("n_bootstrap", 2000))
    seed = int(seed if seed is not None else metrics.get("bootstrap_seed", 0))
    meta = load_metadata(index_csv, ids) if index_csv is not None else None
    order = [a for a in (metrics.get("arms") or {}) if a in probs] or list(probs)
    arms = {
        a: arm_readout(y, probs[a], metadata=meta, threshold=threshold, n_boot=n_boot, seed=seed)
        for a in order
    }
    subgroup_comparisons = []
    if meta is not None:
        for comp in metrics.get("comparisons") or []:
            a, b = comp["arm"], comp["baseline"]
            if a in probs and b in probs:
                rows = subgroup_delta(
                    y,
                    stats.seed_ensemble(probs[a]),
                    stats.seed_ensemble(probs[b]),
                    meta,
                    n_boot=min(n_boot, 1000),
                    seed=seed,
                )
                subgroup_comparisons.append({"arm": a, "baseline": b, "rows": rows})
    return {
        "arms": arms,
        "subgroup_comparisons": subgroup_comparisons,
        "warnings": warnings(metrics, report_card=report_card, probs=probs, phantom=phantom),
        "min_subgroup_size": MIN_SUBGROUP_SIZE,
        "n_boot": n_boot,
        "seed": seed,
    }

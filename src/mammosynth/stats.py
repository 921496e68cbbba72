"""Statistics for comparing classifier arms honestly: metrics, CIs and paired tests.

The study this project reproduces reported single runs and its best trial. Here every number comes
with its uncertainty, from two different sources that answer different questions:

* **test-case sampling** (which 300-odd masses happened to land in the test set): stratified
  percentile bootstrap CIs, DeLong's test for two correlated AUCs on the same cases, and a paired
  bootstrap of the AUC difference;
* **training randomness** (initialisation, shuffling, augmentation, which synthetic images):
  mean, SD and a t-interval over seeds, and a paired t-test of per-seed AUC differences.

`compare_arms` combines both for one arm-vs-baseline comparison and says which test produced each
number (the ``test`` field), so a reader can never mistake one kind of interval for the other.

All functions take ``y`` as 0/1 labels (1 = malignant, the positive class) and ``p`` as
P(malignant) scores; they raise ``ValueError`` naming the offending input on bad data.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
from scipy import stats as sps

METRICS = ("auc", "accuracy", "sensitivity", "specificity", "f1", "balanced_accuracy")

TEST_DELONG_ENSEMBLE = "DeLong (seed-ensemble: per-case probabilities averaged over seeds)"
TEST_PAIRED_T_SEEDS = "paired t-test over seeds (per-seed ΔAUC, seeds matched by number)"
TEST_WELCH_SEEDS = "Welch t-test over seeds (per-seed AUCs, seeds not matched)"
TEST_PAIRED_BOOTSTRAP = "paired stratified bootstrap of ΔAUC (seed-ensemble)"


def _as_labels_scores(y: Any, p: Any, name: str = "p") -> tuple[np.ndarray, np.ndarray]:
    y_arr = np.asarray(y)
    p_arr = np.asarray(p, dtype=np.float64)
    if y_arr.ndim != 1 or p_arr.ndim != 1:
        raise ValueError(f"expected 1-D labels and scores, got shapes y{y_arr.shape} {name}{p_arr.shape}")
    if y_arr.shape != p_arr.shape:
        raise ValueError(f"labels and {name} differ in length: {y_arr.shape[0]} vs {p_arr.shape[0]}")
    values = set(np.unique(y_arr).tolist())
    if not values <= {0, 1}:
        raise ValueError(f"labels must be 0 (benign) or 1 (malignant), got values {sorted(values)[:5]}")
    if values != {0, 1}:
        raise ValueError(
            f"need both benign (0) and malignant (1) cases to compute AUC, got only {sorted(values)}"
        )
    if not np.isfinite(p_arr).all():
        raise ValueError(f"{name} contains NaN or infinite scores ({int((~np.isfinite(p_arr)).sum())} cases)")
    return y_arr.astype(bool), p_arr


def _metrics_rows(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, np.ndarray]:
    """All `METRICS` for each row of (B, N) boolean labels and scores (vectorised for bootstraps).

    AUC is the Mann–Whitney statistic from midranks, so ties count one half — the same value
    as ``sklearn.metrics.roc_auc_score``.
    """
    n_pos = y.sum(axis=1).astype(np.float64)
    n_neg = y.shape[1] - n_pos
    ranks = sps.rankdata(p, axis=1, method="average")
    auc = ((ranks * y).sum(axis=1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    pred = p >= threshold
    tp = (pred & y).sum(axis=1)
    tn = (~pred & ~y).sum(axis=1)
    fp = (pred & ~y).sum(axis=1)
    fn = (~pred & y).sum(axis=1)
    sens = tp / n_pos
    spec = tn / n_neg
    denom = 2 * tp + fp + fn
    # With a malignant case present denom > 0; the guard keeps F1 defined (0) for callers that
    # pass rows without one instead of emitting divide-by-zero warnings.
    f1 = np.divide(2 * tp, denom, out=np.zeros(len(denom)), where=denom > 0)
    return {
        "auc": auc,
        "accuracy": (tp + tn) / y.shape[1],
        "sensitivity": sens,
        "specificity": spec,
        "f1": f1,
        "balanced_accuracy": (sens + spec) / 2,
    }


def binary_metrics(y: Any, p: Any, threshold: float = 0.5) -> dict[str, float]:
    """Threshold-free and thresholded metrics of one set of predictions.

    Args:
        y: 0/1 labels (1 = malignant).
        p: P(malignant) scores.
        threshold: a case is called malignant when ``p >= threshold``.

    Returns:
        ``{auc, accuracy, sensitivity, specificity, f1, balanced_accuracy}`` as floats.

    Raises:
        ValueError: shapes differ, labels not 0/1, only one class present, or non-finite scores.
    """
    yb, pb = _as_labels_scores(y, p)
    rows = _metrics_rows(yb[None, :], pb[None, :], threshold)
    return {k: float(v[0]) for k, v in rows.items()}


def confusion(y: Any, p: Any, threshold: float = 0.5) -> dict[str, int]:
    """Confusion counts ``{tn, fp, fn, tp}`` with malignant as the positive class."""
    yb, pb = _as_labels_scores(y, p)
    pred = pb >= threshold
    return {
        "tn": int((~pred & ~yb).sum()),
        "fp": int((pred & ~yb).sum()),
        "fn": int((~pred & yb).sum()),
        "tp": int((pred & yb).sum()),
    }


def _stratified_indices(y: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, N) resampling indices that keep the benign/malignant counts of the test set.

    Stratifying keeps every resample's AUC defined and matches how the test set was drawn
    (a fixed number of each pathology), which slightly narrows intervals versus naive resampling.
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    rng = np.random.default_rng(seed)
    pos = np.flatnonzero(y)
    neg = np.flatnonzero(~y)
    return np.concatenate(
        [
            pos[rng.integers(0, len(pos), (n_boot, len(pos)))],
            neg[rng.integers(0, len(neg), (n_boot, len(neg)))],
        ],
        axis=1,
    )


def _percentile_ci(samples: np.ndarray, alpha: float) -> list[float]:
    lo, hi = np.quantile(samples, [alpha / 2, 1 - alpha / 2])
    return [float(lo), float(hi)]


def bootstrap_ci(
    y: Any,
    p: Any,
    metric: str | Callable[[np.ndarray, np.ndarray], float] = "auc",
    n_boot: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
    threshold: float = 0.5,
) -> dict[str, Any]:
    """Stratified percentile bootstrap CI of a metric over test cases.

    Args:
        y: 0/1 labels.
        p: scores.
        metric: a name in `METRICS` (vectorised) or a callable ``(y, p) -> float``.
        n_boot: number of resamples.
        seed: RNG seed (same seed, same interval).
        alpha: 1 - confidence level.
        threshold: decision threshold for the thresholded metrics.

    Returns:
        ``{"estimate", "ci": [lo, hi], "level", "se", "n_boot", "method"}``.

    Raises:
        ValueError: bad inputs or an unknown metric name.
    """
    yb, pb = _as_labels_scores(y, p)
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    idx = _stratified_indices(yb, n_boot, seed)
    if isinstance(metric, str):
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
        estimate = binary_metrics(yb.astype(int), pb, threshold)[metric]
        samples = _metrics_rows(yb[idx], pb[idx], threshold)[metric]
    else:
        estimate = float(metric(yb.astype(int), pb))
        samples = np.array([float(metric(yb[i].astype(int), pb[i])) for i in idx])
    return {
        "estimate": float(estimate),
        "ci": _percentile_ci(samples, alpha),
        "level": 1 - alpha,
        "se": float(np.std(samples, ddof=1)) if n_boot > 1 else 0.0,
        "n_boot": int(n_boot),
        "method": "stratified percentile bootstrap over test cases",
    }


def bootstrap_cis(
    y: Any, p: Any, n_boot: int = 2000, seed: int = 0, alpha: float = 0.05, threshold: float = 0.5
) -> dict[str, list[float]]:
    """Percentile CIs of every metric in `METRICS` from one set of stratified resamples.

    Same resamples (and so the same intervals) as calling `bootstrap_ci` per metric with this
    seed, at a sixth of the cost.

    Returns:
        ``{metric: [lo, hi]}``.
    """
    yb, pb = _as_labels_scores(y, p)
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    idx = _stratified_indices(yb, n_boot, seed)
    rows = _metrics_rows(yb[idx], pb[idx], threshold)
    return {k: _percentile_ci(v, alpha) for k, v in rows.items()}


def _midrank(x: np.ndarray) -> np.ndarray:
    return sps.rankdata(x, method="average")


class DeLongResult(NamedTuple):
    """DeLong comparison of AUC(a) − AUC(b) on the same cases."""

    delta_auc: float
    se: float
    z: float
    p_value: float
    ci95: tuple[float, float]


def delong_components(y: Any, scores: Sequence[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AUCs and DeLong structural-component covariances for k classifiers (Sun & Xu 2014).

    Args:
        y: 0/1 labels.
        scores: k score vectors on the same cases.

    Returns:
        ``(aucs (k,), S10 (k,k), S01 (k,k))``; ``var(AUC) = S10/m + S01/n`` with m malignant and n
        benign cases.
    """
    arrays = [_as_labels_scores(y, s, name=f"scores[{i}]") for i, s in enumerate(scores)]
    yb = arrays[0][0]
    pos = np.stack([a[1][yb] for a in arrays])
    neg = np.stack([a[1][~yb] for a in arrays])
    m, n = pos.shape[1], neg.shape[1]
    k = len(arrays)
    tx = np.stack([_midrank(pos[r]) for r in range(k)])
    ty = np.stack([_midrank(neg[r]) for r in range(k)])
    tz = np.stack([_midrank(np.concatenate([pos[r], neg[r]])) for r in range(k)])
    aucs = (tz[:, :m].sum(axis=1) - m * (m + 1) / 2) / (m * n)
    v10 = (tz[:, :m] - tx) / n  # per malignant case: share of benign cases it outranks
    v01 = 1.0 - (tz[:, m:] - ty) / m  # per benign case: share of malignant cases outranking it
    s10 = np.atleast_2d(np.cov(v10)) if m > 1 else np.zeros((k, k))
    s01 = np.atleast_2d(np.cov(v01)) if n > 1 else np.zeros((k, k))
    return aucs, s10, s01


def delong_test(y: Any, p_a: Any, p_b: Any) -> DeLongResult:
    """DeLong's test for two correlated ROC AUCs on the same test cases (fast midrank version).

    Args:
        y: 0/1 labels.
        p_a: scores of classifier a.
        p_b: scores of classifier b, same cases in the same order.

    Returns:
        `DeLongResult` ``(delta_auc = AUC(a) − AUC(b), se, z, p_value (two-sided), ci95)``.
        Identical predictions give ``se = 0, z = 0, p = 1``.
    """
    aucs, s10, s01 = delong_components(y, [p_a, p_b])
    yb = np.asarray(y).astype(bool)
    m, n = int(yb.sum()), int((~yb).sum())
    contrast = np.array([1.0, -1.0])
    var = float(contrast @ s10 @ contrast / m + contrast @ s01 @ contrast / n)
    delta = float(aucs[0] - aucs[1])
    se = math.sqrt(max(var, 0.0))
    if se <= 1e-15:
        # No case-level variability in the difference: equal AUCs are not evidence of anything.
        z, p_value = (0.0, 1.0) if abs(delta) < 1e-12 else (math.copysign(math.inf, delta), 0.0)
        se = 0.0
    else:
        z = delta / se
        p_value = float(2 * sps.norm.sf(abs(z)))
    q = float(sps.norm.ppf(0.975))
    return DeLongResult(delta, se, float(z), float(p_value), (delta - q * se, delta + q * se))


def paired_bootstrap_auc(
    y: Any, p_a: Any, p_b: Any, n_boot: int = 2000, seed: int = 0, alpha: float = 0.05
) -> dict[str, Any]:
    """Paired stratified bootstrap of AUC(a) − AUC(b): both arms are scored on the same resample.

    Returns:
        ``{"delta", "se", "ci95" (percentile, level 1-alpha), "p_value", "n_boot", "test"}``; the
        two-sided p-value is twice the smaller tail share of resampled differences at or beyond 0
        (with the +1 correction, so never exactly 0).
    """
    yb, pa = _as_labels_scores(y, p_a, "p_a")
    _, pb = _as_labels_scores(y, p_b, "p_b")
    idx = _stratified_indices(yb, n_boot, seed)
    auc_a = _metrics_rows(yb[idx], pa[idx], 0.5)["auc"]
    auc_b = _metrics_rows(yb[idx], pb[idx], 0.5)["auc"]
    d = auc_a - auc_b
    full = _metrics_rows(np.stack([yb, yb]), np.stack([pa, pb]), 0.5)["auc"]
    tail = min(((d <= 0).sum() + 1) / (n_boot + 1), ((d >= 0).sum() + 1) / (n_boot + 1))
    return {
        "delta": float(full[0] - full[1]),
        "se": float(np.std(d, ddof=1)) if n_boot > 1 else 0.0,
        "ci95": _percentile_ci(d, alpha),
        "p_value": float(min(1.0, 2 * tail)),
        "n_boot": int(n_boot),
        "test": TEST_PAIRED_BOOTSTRAP,
    }


def summarise(
    values: Sequence[float], level: float = 0.95, bounds: tuple[float, float] | None = None
) -> dict[str, Any]:
    """Mean, SD and t-interval of a metric across seeds.

    Args:
        values: one value per seed (``None`` entries are dropped, e.g. a missing train accuracy).
        level: confidence level of the interval.
        bounds: the metric's range (e.g. (0, 1) for AUC); the interval is truncated to it, since
            with few seeds a t-interval can reach values the metric cannot take.

    Returns:
        ``{"mean", "sd", "ci95": [lo, hi], "n"}``. With one value, ``sd`` and the interval are
        ``None`` — a single run says nothing about run-to-run spread. With none, everything is
        ``None``.
    """
    arr = np.array([float(v) for v in values if v is not None], dtype=np.float64)
    if not np.isfinite(arr).all():
        raise ValueError(f"summarise: non-finite values {arr.tolist()}")
    k = len(arr)
    if k == 0:
        return {"mean": None, "sd": None, "ci95": [None, None], "n": 0}
    mean = float(arr.mean())
    if k == 1:
        return {"mean": mean, "sd": None, "ci95": [None, None], "n": 1}
    sd = float(arr.std(ddof=1))
    half = float(sps.t.ppf(0.5 + level / 2, k - 1)) * sd / math.sqrt(k)
    lo, hi = mean - half, mean + half
    if bounds is not None:
        lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
    return {"mean": mean, "sd": sd, "ci95": [lo, hi], "n": k}


def seed_ensemble(probs_by_seed: Mapping[Any, Any]) -> np.ndarray:
    """Average per-case probabilities over seeds (cases must be aligned across seeds)."""
    if not probs_by_seed:
        raise ValueError("seed_ensemble: no seeds given")
    stacked = np.stack([np.asarray(v, dtype=np.float64) for v in probs_by_seed.values()])
    return stacked.mean(axis=0)


def per_seed_delta(
    y: Any, probs_a: Mapping[Any, Any], probs_b: Mapping[Any, Any], level: float = 0.95
) -> dict[str, Any]:
    """Per-seed AUC differences summarised across seeds, with a t-test.

    Seeds present in both arms are paired by seed number (same seed, same split/initialisation
    stream); with fewer than two shared seeds the arms' per-seed AUCs are compared unpaired
    (Welch). The ``test`` field says which.

    Returns:
        ``{"delta" (mean), "sd", "ci95", "p_value", "n_seeds", "deltas": {seed: Δ}, "test"}``;
        ``ci95``/``p_value`` are ``None`` when there are too few seeds for a test.
    """
    auc_a = {s: binary_metrics(y, p)["auc"] for s, p in probs_a.items()}
    auc_b = {s: binary_metrics(y, p)["auc"] for s, p in probs_b.items()}
    shared = [s for s in auc_a if s in auc_b]
    if len(shared) >= 2:
        deltas = {s: auc_a[s] - auc_b[s] for s in shared}
        summ = summarise(list(deltas.values()), level, bounds=(-1.0, 1.0))
        d = np.array(list(deltas.values()))
        p_value = 1.0 if np.allclose(d, d[0]) and abs(d[0]) < 1e-12 else float(sps.ttest_1samp(d, 0.0).pvalue)
        if not math.isfinite(p_value):  # all deltas identical and non-zero: no spread to test
            p_value = 0.0
        return {
            "delta": summ["mean"],
            "sd": summ["sd"],
            "ci95": summ["ci95"],
            "p_value": p_value,
            "n_seeds": len(shared),
            "deltas": {str(s): float(v) for s, v in deltas.items()},
            "test": TEST_PAIRED_T_SEEDS,
        }
    a, b = np.array(list(auc_a.values())), np.array(list(auc_b.values()))
    delta = float(a.mean() - b.mean())
    if len(a) < 2 or len(b) < 2:
        return {
            "delta": delta,
            "sd": None,
            "ci95": [None, None],
            "p_value": None,
            "n_seeds": min(len(a), len(b)),
            "deltas": {},
            "test": "none (fewer than two seeds per arm: no across-seed test possible)",
        }
    res = sps.ttest_ind(a, b, equal_var=False)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1)) if se > 0 else len(a) + len(b) - 2
    half = float(sps.t.ppf(0.5 + level / 2, dof)) * se
    return {
        "delta": delta,
        "sd": None,
        "ci95": [delta - half, delta + half],
        "p_value": float(res.pvalue) if math.isfinite(res.pvalue) else 1.0,
        "n_seeds": min(len(a), len(b)),
        "deltas": {},
        "test": TEST_WELCH_SEEDS,
    }


def compare_arms(
    y: Any,
    probs_a: Mapping[Any, Any],
    probs_b: Mapping[Any, Any],
    *,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Compare arm a with arm b on AUC, combining seeds in two complementary ways.

    Primary (the ``delta``/``ci95``/``p_value``/``test`` fields): average each arm's per-case
    probabilities over its seeds (a seed ensemble) and run DeLong's test — this uses test-case
    variability. Secondary (``per_seed``): per-seed ΔAUC summarised across seeds with a t-test —
    this uses training variability. A paired bootstrap of the ensemble ΔAUC (``bootstrap``) is a
    distribution-free cross-check of DeLong.

    Args:
        y: 0/1 labels of the shared test set.
        probs_a: ``{seed: scores}`` of arm a, cases aligned with ``y``.
        probs_b: ``{seed: scores}`` of arm b.
        n_boot: bootstrap resamples.
        seed: bootstrap RNG seed.

    Returns:
        ``{"metric": "auc", "delta", "ci95", "p_value", "test", "se", "z", "auc_arm",
        "auc_baseline", "per_seed": {...}, "bootstrap": {...}}`` (AUCs of the ensembles).
    """
    ens_a, ens_b = seed_ensemble(probs_a), seed_ensemble(probs_b)
    res = delong_test(y, ens_a, ens_b)
    aucs = delong_components(y, [ens_a, ens_b])[0]
    return {
        "metric": "auc",
        "delta": res.delta_auc,
        "ci95": [float(res.ci95[0]), float(res.ci95[1])],
        "p_value": res.p_value,
        "test": TEST_DELONG_ENSEMBLE,
        "se": res.se,
        "z": res.z if math.isfinite(res.z) else None,
        "auc_arm": float(aucs[0]),
        "auc_baseline": float(aucs[1]),
        "per_seed": per_seed_delta(y, probs_a, probs_b),
        "bootstrap": paired_bootstrap_auc(y, ens_a, ens_b, n_boot=n_boot, seed=seed),
    }


def is_significant_gain(comparison: Mapping[str, Any], alpha: float = 0.05) -> bool:
    """A gain counts only when the ensemble DeLong test *and* the across-seed interval agree.

    DeLong alone ignores training randomness (the study's best-trial AUC 0.89 was exactly that
    kind of luck); the across-seed interval alone ignores which cases were tested. Requiring both
    is conservative on purpose.
    """
    lo, _ = comparison["ci95"]
    if not (comparison["delta"] > 0 and comparison["p_value"] < alpha and lo > 0):
        return False
    per_seed = comparison.get("per_seed") or {}
    seed_lo = (per_seed.get("ci95") or [None, None])[0]
    return seed_lo is None or seed_lo > 0


def is_significant_loss(comparison: Mapping[str, Any], alpha: float = 0.05) -> bool:
    """Mirror of `is_significant_gain` for a significant drop in AUC."""
    _, hi = comparison["ci95"]
    if not (comparison["delta"] < 0 and comparison["p_value"] < alpha and hi < 0):
        return False
    per_seed = comparison.get("per_seed") or {}
    seed_hi = (per_seed.get("ci95") or [None, None])[1]
    return seed_hi is None or seed_hi < 0


def holm_adjust(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm–Bonferroni step-down adjusted p-values (family-wise error control), in input order.

    Sort the m p-values ascending; the i-th smallest (i from 0) becomes ``max_{j<=i} min(1, (m-j) p_(j))``.
    ``None`` entries (no test possible) stay ``None`` and do not count towards m.

    Args:
        p_values: raw p-values of one family of comparisons.

    Returns:
        The adjusted p-values, aligned with ``p_values``.

    Raises:
        ValueError: a p-value outside [0, 1].
    """
    idx = [i for i, p in enumerate(p_values) if p is not None]
    for i in idx:
        if not 0.0 <= float(p_values[i]) <= 1.0:
            raise ValueError(f"holm_adjust: p-value {p_values[i]!r} at position {i} is outside [0, 1]")
    order = sorted(idx, key=lambda i: float(p_values[i]))
    m = len(order)
    out: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * float(p_values[i])))
        out[i] = running
    return out

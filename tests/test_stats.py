"""mammosynth.stats: metrics against sklearn, DeLong against the O(n²) definition, CI coverage."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, recall_score, roc_auc_score

from mammosynth import stats


def _psi(x: float, y: float) -> float:
    return 1.0 if x > y else 0.5 if x == y else 0.0


def delong_reference(y, p_a, p_b):
    """DeLong, DeLong & Clarke-Pearson (1988) straight from the structural components, O(m·n)."""
    y = np.asarray(y)
    out = []
    for p in (np.asarray(p_a, float), np.asarray(p_b, float)):
        xs, ys = p[y == 1], p[y == 0]
        v10 = np.array([np.mean([_psi(x, yy) for yy in ys]) for x in xs])
        v01 = np.array([np.mean([_psi(x, yy) for x in xs]) for yy in ys])
        out.append((np.mean(v10), v10, v01))
    (auc_a, v10a, v01a), (auc_b, v10b, v01b) = out
    m, n = len(v10a), len(v01a)

    def cov(u, v):
        return np.sum((u - u.mean()) * (v - v.mean())) / (len(u) - 1)

    var = (cov(v10a, v10a) + cov(v10b, v10b) - 2 * cov(v10a, v10b)) / m + (
        cov(v01a, v01a) + cov(v01b, v01b) - 2 * cov(v01a, v01b)
    ) / n
    z = (auc_a - auc_b) / math.sqrt(var)
    return auc_a, auc_b, auc_a - auc_b, math.sqrt(var), z, 2 * (1 - sps.norm.cdf(abs(z)))


# Small fixed example with ties within and across classes and across the two classifiers.
Y = np.array([1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
PA = np.array([0.9, 0.8, 0.8, 0.7, 0.55, 0.4, 0.3, 0.8, 0.6, 0.5, 0.5, 0.4, 0.3, 0.2, 0.2, 0.1, 0.05])
PB = np.array([0.7, 0.9, 0.4, 0.6, 0.5, 0.2, 0.35, 0.6, 0.7, 0.3, 0.5, 0.5, 0.1, 0.2, 0.3, 0.4, 0.1])


def test_delong_matches_structural_components_definition():
    auc_a, auc_b, delta, se, z, p = delong_reference(Y, PA, PB)
    assert auc_a == pytest.approx(roc_auc_score(Y, PA), abs=1e-12)
    assert auc_b == pytest.approx(roc_auc_score(Y, PB), abs=1e-12)
    res = stats.delong_test(Y, PA, PB)
    assert res.delta_auc == pytest.approx(delta, abs=1e-12)
    assert res.se == pytest.approx(se, rel=1e-10)
    assert res.z == pytest.approx(z, rel=1e-10)
    assert res.p_value == pytest.approx(p, rel=1e-8)
    assert res.ci95[0] == pytest.approx(delta - 1.959963984540054 * se, rel=1e-9)
    d_ab, d_ba = stats.delong_test(Y, PA, PB), stats.delong_test(Y, PB, PA)
    assert d_ab.delta_auc == pytest.approx(-d_ba.delta_auc) and d_ab.p_value == pytest.approx(d_ba.p_value)


def test_delong_random_cases_match_reference():
    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, 40)
    y[:2] = [0, 1]
    pa = np.round(rng.random(40) + 0.5 * y, 1)  # rounding forces ties
    pb = np.round(0.6 * pa + 0.4 * rng.random(40), 1)
    _, _, delta, se, _, p = delong_reference(y, pa, pb)
    res = stats.delong_test(y, pa, pb)
    assert (res.delta_auc, res.se, res.p_value) == pytest.approx((delta, se, p), rel=1e-9)


def test_delong_identical_predictions_is_not_significant():
    res = stats.delong_test(Y, PA, PA)
    assert res.delta_auc == 0 and res.se == 0 and res.p_value == 1.0


def test_binary_metrics_match_sklearn():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 200)
    p = np.clip(rng.normal(0.4 + 0.2 * y, 0.2), 0, 1)
    m = stats.binary_metrics(y, p, threshold=0.5)
    pred = (p >= 0.5).astype(int)
    assert m["auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert m["sensitivity"] == pytest.approx(recall_score(y, pred))
    assert m["specificity"] == pytest.approx(recall_score(y, pred, pos_label=0))
    assert m["f1"] == pytest.approx(f1_score(y, pred))
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
    c = stats.confusion(y, p)
    assert c["tp"] + c["fn"] == y.sum() and c["tn"] + c["fp"] == (1 - y).sum()


@pytest.mark.parametrize(
    ("y", "p", "match"),
    [
        ([0, 0, 0], [0.1, 0.2, 0.3], "both benign"),
        ([0, 1, 2], [0.1, 0.2, 0.3], "0 \\(benign\\) or 1"),
        ([0, 1], [0.1], "differ in length"),
        ([0, 1], [0.1, float("nan")], "NaN"),
    ],
)
def test_bad_inputs_are_named(y, p, match):
    with pytest.raises(ValueError, match=match):
        stats.binary_metrics(y, p)


def _binormal(rng, n_pos, n_neg, d):
    y = np.r_[np.ones(n_pos, int), np.zeros(n_neg, int)]
    return y, np.r_[rng.normal(d, 1, n_pos), rng.normal(0, 1, n_neg)]


def test_bootstrap_ci_covers_true_auc_in_simulation():
    # Binormal scores: true AUC = Φ(d/√2). A 95% interval should cover it about 95% of the time.
    d = 1.0
    true_auc = sps.norm.cdf(d / math.sqrt(2))
    rng = np.random.default_rng(0)
    reps, covered, widths = 150, 0, []
    for r in range(reps):
        y, p = _binormal(rng, 40, 60, d)
        res = stats.bootstrap_ci(y, p, "auc", n_boot=300, seed=r)
        lo, hi = res["ci"]
        covered += lo <= true_auc <= hi
        widths.append(hi - lo)
        assert lo <= res["estimate"] <= hi
    coverage = covered / reps
    assert 0.88 <= coverage <= 0.99, coverage
    assert 0.1 < np.mean(widths) < 0.3


def test_bootstrap_ci_is_deterministic_and_accepts_callables():
    rng = np.random.default_rng(3)
    y, p = _binormal(rng, 20, 30, 1.0)
    a = stats.bootstrap_ci(y, p, "accuracy", n_boot=200, seed=5)
    b = stats.bootstrap_ci(y, p, lambda yy, pp: float(np.mean((pp >= 0.5) == yy)), n_boot=200, seed=5)
    assert a == stats.bootstrap_ci(y, p, "accuracy", n_boot=200, seed=5)
    assert a["ci"] == pytest.approx(b["ci"])  # same resamples, same metric
    with pytest.raises(ValueError, match="unknown metric"):
        stats.bootstrap_ci(y, p, "ppv", n_boot=10)


def test_bootstrap_cis_equals_per_metric_calls():
    rng = np.random.default_rng(8)
    y, p = _binormal(rng, 25, 35, 0.8)
    p = 1 / (1 + np.exp(-p))
    all_cis = stats.bootstrap_cis(y, p, n_boot=150, seed=2)
    for metric in stats.METRICS:
        assert all_cis[metric] == stats.bootstrap_ci(y, p, metric, n_boot=150, seed=2)["ci"]


def test_delong_type_one_error_and_paired_bootstrap_agree():
    # Two classifiers equally good but imperfectly correlated: DeLong should reject ~5% of the time.
    rng = np.random.default_rng(11)
    rejections, reps = 0, 300
    for _ in range(reps):
        y, base = _binormal(rng, 30, 50, 1.0)
        pa, pb = base + rng.normal(0, 0.7, 80), base + rng.normal(0, 0.7, 80)
        rejections += stats.delong_test(y, pa, pb).p_value < 0.05
    assert rejections / reps < 0.1
    y, base = _binormal(rng, 60, 90, 1.0)
    pa, pb = base + rng.normal(0, 0.3, 150), base + rng.normal(0, 1.5, 150)
    dl = stats.delong_test(y, pa, pb)
    bs = stats.paired_bootstrap_auc(y, pa, pb, n_boot=1000, seed=0)
    assert bs["delta"] == pytest.approx(dl.delta_auc)
    assert bs["se"] == pytest.approx(dl.se, rel=0.25)
    assert dl.p_value < 0.05 and bs["p_value"] < 0.05 and bs["ci95"][0] > 0


def test_summarise_t_interval():
    s = stats.summarise([0.70, 0.72, 0.74, 0.76])
    assert s["mean"] == pytest.approx(0.73) and s["n"] == 4
    assert s["sd"] == pytest.approx(np.std([0.70, 0.72, 0.74, 0.76], ddof=1))
    half = sps.t.ppf(0.975, 3) * s["sd"] / 2
    assert s["ci95"] == pytest.approx([0.73 - half, 0.73 + half])
    one = stats.summarise([0.7, None])
    assert one["mean"] == 0.7 and one["sd"] is None and one["ci95"] == [None, None]
    assert stats.summarise([])["mean"] is None


def test_summarise_coverage_over_seeds():
    rng = np.random.default_rng(2)
    hits = sum(
        lo <= 0.75 <= hi
        for lo, hi in (stats.summarise(rng.normal(0.75, 0.02, 5))["ci95"] for _ in range(400))
    )
    assert 0.91 <= hits / 400 <= 0.98


def test_compare_arms_combines_seeds_and_names_tests():
    rng = np.random.default_rng(4)
    y, base = _binormal(rng, 50, 70, 0.8)
    strong = {s: base + 2.0 * y + rng.normal(0, 0.5, 120) for s in range(3)}
    weak = {s: base + rng.normal(0, 0.5, 120) for s in range(3)}
    comp = stats.compare_arms(y, strong, weak, n_boot=300, seed=0)
    ens = stats.delong_test(y, stats.seed_ensemble(strong), stats.seed_ensemble(weak))
    assert comp["delta"] == pytest.approx(ens.delta_auc) and comp["test"] == stats.TEST_DELONG_ENSEMBLE
    assert comp["per_seed"]["test"] == stats.TEST_PAIRED_T_SEEDS and comp["per_seed"]["n_seeds"] == 3
    deltas = [roc_auc_score(y, strong[s]) - roc_auc_score(y, weak[s]) for s in range(3)]
    assert comp["per_seed"]["delta"] == pytest.approx(np.mean(deltas))
    assert stats.is_significant_gain(comp) and not stats.is_significant_loss(comp)
    unpaired = stats.per_seed_delta(y, {0: strong[0], 1: strong[1]}, {5: weak[0], 6: weak[1]})
    assert unpaired["test"] == stats.TEST_WELCH_SEEDS


def test_holm_adjust_matches_a_hand_computation():
    # p sorted: 0.01 (x4 = 0.04), 0.02 (x3 = 0.06), 0.03 (x2 = 0.06 -> running max 0.06), 0.04 (x1 -> 0.06).
    p = [0.03, 0.01, 0.04, 0.02]
    assert stats.holm_adjust(p) == pytest.approx([0.06, 0.04, 0.06, 0.06])
    # None (no test possible) is kept and not counted in m; the result is capped at 1.
    assert stats.holm_adjust([0.5, None, 0.4]) == pytest.approx([0.8, None, 0.8])
    assert stats.holm_adjust([0.9, 0.8]) == pytest.approx([1.0, 1.0])
    with pytest.raises(ValueError, match="outside"):
        stats.holm_adjust([1.5])

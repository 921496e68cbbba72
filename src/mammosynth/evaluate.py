"""Evaluate stage: statistics over arms and seeds on the shared real test set.

Reads one **arm dir** per arm (written by ``mammosynth.train.train_arm``)::

    <arm dir>/arm.json                      {"arm", "seeds", "spec", "metrics": {seed: {...}}}
    <arm dir>/seed-<s>/predictions.csv      image_id,label_id,prob   (label_id 1 = malignant)
    <arm dir>/seed-<s>/train_metrics.json   train_accuracy, val_auc, ... (optional)

and writes ``metrics.json`` (the contract below), ``test_predictions.csv`` (long format
``arm,seed,image_id,label_id,prob`` that the report stage draws ROC curves from) and
``conclusion.md``.

``metrics.json``::

    {"arms": {arm: {"accuracy", "auc", "train_accuracy"   (means over seeds — never the best seed),
                    "per_seed": {seed: {auc, accuracy, sensitivity, specificity, f1,
                                        balanced_accuracy, train_accuracy, val_auc, ...}},
                    "summary": {metric: {"mean", "sd", "ci95": [lo, hi], "n"}},
                    "ensemble": {"metrics", "ci95", "confusion", "method"}, "n_seeds", ...}},
     "comparisons": [{"arm", "baseline", "metric": "auc", "delta", "ci95", "p_value", "test",
                      "per_seed": {...}, "bootstrap": {...}, ...}],
     "test_set": {"n", "n_malignant", "n_benign", "ids_sha256"}, "seeds": [...],
     "threshold", "n_bootstrap", "bootstrap_seed", "alpha", "conclusion", "verdict",
     "external": null | {"test_set", "arms", "comparisons", "baselines", "verdict", "conclusion",
                         "agreement": {"agree", "internal", "external", "comparisons", "sentence"}},
     ...context}

``external`` is computed the same way (same functions, same bootstrap seed) from
``seed-<s>/external_predictions.csv`` when the arm dirs hold them (a study run with an
``external_source``); it is null otherwise.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mammosynth import arms as armlib
from mammosynth import stats
from mammosynth.arms import ARM_FILE, PREDICTION_COLUMNS, PREDICTIONS_FILE, TRAIN_METRICS_FILE, load_arm
from mammosynth.atomic import write_text as write_text_atomic
from mammosynth.provenance import test_set_name

log = logging.getLogger(__name__)

__all__ = [
    "ARM_FILE",
    "PREDICTIONS_FILE",
    "PREDICTION_COLUMNS",
    "TRAIN_METRICS_FILE",
    "load_arm",
    "run_evaluate",
]

METRICS_FILE = "metrics.json"
TEST_PREDICTIONS_FILE = "test_predictions.csv"
CONCLUSION_FILE = "conclusion.md"
ALPHA = 0.05
# Keys the evaluate stage owns in metrics.json; context keys never overwrite them.
CONTRACT_KEYS = (
    "arms",
    "comparisons",
    "test_set",
    "seeds",
    "threshold",
    "n_bootstrap",
    "bootstrap_seed",
    "alpha",
    "baselines",
    "conclusion",
    "statistics",
    "provenance",
    "verdict",
    "data_source",
    "external",
)
EXTERNAL_TEST_SET = "external test set"


def _json_safe(obj: Any) -> Any:
    """Turn numpy scalars/arrays and non-finite floats into strict-JSON values (NaN → null)."""
    if isinstance(obj, Mapping):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [_json_safe(v) for v in obj.tolist()]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json_atomic(path: str | os.PathLike, data: Any) -> Path:
    return write_text_atomic(path, json.dumps(_json_safe(data), indent=2, allow_nan=False) + "\n")


def _seed_key(seed: Any) -> str:
    return str(seed)


def _check_same_test_set(arms: Sequence[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """All arms and seeds must score the same test images with the same labels.

    Returns the reference ``(image_ids, labels)``. Error messages give counts, not ids: CBIS-DDSM
    image ids embed patient ids, which must not end up in logs.
    """
    ref_arm, ref_seed = arms[0]["arm"], arms[0]["seeds"][0]
    ref = arms[0]["predictions"][ref_seed]
    ref_ids = ref["image_id"].to_numpy()
    ref_set = set(ref_ids)
    for arm in arms:
        for seed, df in arm["predictions"].items():
            ids = df["image_id"].to_numpy()
            if len(ids) != len(ref_ids) or not np.array_equal(ids, ref_ids):
                ids_set = set(ids)
                raise ValueError(
                    f"arm {arm['arm']!r} seed {seed} ({arm['dir']}) was not tested on the same images as "
                    f"arm {ref_arm!r} seed {ref_seed}: {len(ref_set - ids_set)} test image(s) missing, "
                    f"{len(ids_set - ref_set)} extra (ids not shown: they embed patient ids). "
                    "Every arm must predict the one shared real test split; re-run train_arm on the same "
                    "prepared set."
                )
            if not np.array_equal(df["label_id"].to_numpy(), ref["label_id"].to_numpy()):
                n_diff = int((df["label_id"].to_numpy() != ref["label_id"].to_numpy()).sum())
                raise ValueError(
                    f"arm {arm['arm']!r} seed {seed} ({arm['dir']}): label_id differs from arm {ref_arm!r} "
                    f"seed {ref_seed} for {n_diff} test image(s); the arms read different label files"
                )
    return ref_ids, ref["label_id"].to_numpy()


def _provenance() -> dict[str, Any]:
    """Versions of everything that shapes the numbers, so a rerun can be matched exactly."""
    import platform
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for dist in ("mammosynth", "numpy", "scipy", "scikit-learn", "pandas"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return {"versions": versions, "stage": "mammosynth evaluate"}


def _float_or_none(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _comparison_pairs(arm_names: Sequence[str], baselines: Sequence[str]) -> list[tuple[str, str]]:
    """(arm, baseline) pairs: every arm against every present baseline, each pair once."""
    pairs: list[tuple[str, str]] = []
    seen: set[frozenset[str]] = set()
    for base in baselines:
        if base not in arm_names:
            continue
        for arm in arm_names:
            key = frozenset((arm, base))
            if arm == base or key in seen:
                continue
            seen.add(key)
            pairs.append((arm, base))
    return pairs


def _load_arms(arm_dirs: Sequence[str | os.PathLike]) -> tuple[list[dict[str, Any]], list[str], Any]:
    """Load the arm dirs and check them: distinct names, one shared test set with both classes."""
    if not arm_dirs:
        raise ValueError("run_evaluate: no arm dirs given")
    arms = [load_arm(d) for d in arm_dirs]
    names = [a["arm"] for a in arms]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(
            f"arm name(s) {dupes} given more than once ({[str(d) for d in arm_dirs]}); pass one dir per arm"
        )
    ids, y = _check_same_test_set(arms)
    _check_both_classes(y, "test set")
    return arms, ids, y


def _check_both_classes(y: Any, what: str) -> None:
    if len(set(y.tolist())) < 2:
        raise ValueError(
            f"the {what} has only {'malignant' if y[0] else 'benign'} cases; "
            "AUC and sensitivity/specificity need both"
        )


def _test_set(ids: Any, y: Any) -> dict[str, Any]:
    return {
        "n": int(len(y)),
        "n_malignant": int(y.sum()),
        "n_benign": int((1 - y).sum()),
        "ids_sha256": hashlib.sha256("\n".join(ids).encode()).hexdigest(),
    }


def _external_block(
    arms: Sequence[dict[str, Any]], baselines: Sequence[str], n_bootstrap: int, seed: int, threshold: float
) -> dict[str, Any] | None:
    """The ``external`` block: every arm's seed models on the external test set, judged as the internal one.

    Returns None when no arm dir holds external predictions.

    Raises:
        ValueError: some arms have external predictions and others not, or they disagree on the images.
    """
    have = [a["arm"] for a in arms if a.get("external_predictions")]
    if not have:
        return None
    if len(have) != len(arms):
        missing = [a["arm"] for a in arms if not a.get("external_predictions")]
        raise ValueError(
            f"arm(s) {missing} have no external predictions while {have} do; train every arm with the same "
            "external set (or none)"
        )
    ext = [
        dict(a, predictions=a["external_predictions"], predictions_sha256=a["external_predictions_sha256"])
        for a in arms
    ]
    ids, y = _check_same_test_set(ext)
    _check_both_classes(y, EXTERNAL_TEST_SET)
    names = [a["arm"] for a in ext]
    log.info("external: %d arm(s) on %d external test images (%d malignant)", len(ext), len(y), int(y.sum()))
    probs = {a["arm"]: {s: df["prob"].to_numpy() for s, df in a["predictions"].items()} for a in ext}
    comparisons = _comparisons(names, baselines, y, probs, n_bootstrap, seed)
    kw = {"threshold": threshold, "n_bootstrap": n_bootstrap, "seed": seed}
    block = {
        "test_set": _test_set(ids, y),
        "arms": {a["arm"]: _arm_entry(a, y, probs[a["arm"]], **kw) for a in ext},
        "comparisons": comparisons,
        "baselines": [b for b in baselines if b in names],
        "verdict": build_verdict(comparisons),
    }
    block["conclusion"] = "\n\n".join(_verdict_lines(block["verdict"], EXTERNAL_TEST_SET))
    return block


def _arm_entry(
    arm: Mapping[str, Any], y: Any, probs: Mapping[Any, Any], *, threshold: float, n_bootstrap: int, seed: int
) -> dict[str, Any]:
    """One arm's metrics.json entry: per-seed metrics, the across-seed summary and the seed ensemble."""
    name = arm["arm"]
    per_seed: dict[str, dict[str, Any]] = {}
    for s in arm["seeds"]:
        m = stats.binary_metrics(y, probs[s], threshold)
        tm = arm["train_metrics"].get(s, {})
        m.update({k: _float_or_none(tm.get(k)) for k in ("train_accuracy", "val_auc", "val_accuracy")})
        for k in ("epochs_run", "n_train_real", "n_train_synthetic"):
            if tm.get(k) is not None:
                m[k] = tm[k]
        per_seed[_seed_key(s)] = m
    summary = {
        k: stats.summarise([ps.get(k) for ps in per_seed.values()], bounds=(0.0, 1.0))
        for k in (*stats.METRICS, "train_accuracy", "val_auc")
    }
    ens = stats.seed_ensemble(probs)
    ens_metrics = stats.binary_metrics(y, ens, threshold)
    ens_ci = stats.bootstrap_cis(y, ens, n_bootstrap, seed, ALPHA, threshold)
    first = per_seed[_seed_key(arm["seeds"][0])]
    out = {
        "accuracy": summary["accuracy"]["mean"],
        "auc": summary["auc"]["mean"],
        "train_accuracy": summary["train_accuracy"]["mean"],
        "per_seed": per_seed,
        "summary": summary,
        "ensemble": {
            "metrics": ens_metrics,
            "ci95": ens_ci,
            "confusion": stats.confusion(y, ens, threshold),
            "method": "per-case probabilities averaged over seeds; "
            "CIs by stratified percentile bootstrap over test cases",
        },
        "n_seeds": len(arm["seeds"]),
        "seeds": list(arm["seeds"]),
        "n_train_real": first.get("n_train_real"),
        "n_train_synthetic": first.get("n_train_synthetic"),
        "spec": arm["spec"],
        "predictions_sha256": arm["predictions_sha256"],
        "dir": arm["dir"],
    }
    log.info(
        "arm %s: AUC %.3f ± %s over %d seed(s)",
        name,
        out["auc"],
        "n/a" if summary["auc"]["sd"] is None else f"{summary['auc']['sd']:.3f}",
        len(arm["seeds"]),
    )

    return out


def _comparisons(
    names: Sequence[str],
    baselines: Sequence[str],
    y: Any,
    probs: Mapping[str, Any],
    n_bootstrap: int,
    seed: int,
) -> list[dict[str, Any]]:
    """Every arm against every baseline present (paired DeLong, across-seed t, paired bootstrap)."""
    comparisons = []
    for arm_name, base in _comparison_pairs(names, list(baselines)):
        comp = stats.compare_arms(y, probs[arm_name], probs[base], n_boot=n_bootstrap, seed=seed)
        matched = armlib.matched_control(arm_name) == base
        comparisons.append({"arm": arm_name, "baseline": base, "matched": matched, **comp})
        log.info(
            "%s vs %s: ΔAUC %+.3f (95%% CI %.3f..%.3f, p=%.3g, %s)",
            arm_name,
            base,
            comp["delta"],
            comp["ci95"][0],
            comp["ci95"][1],
            comp["p_value"],
            comp["test"],
        )

    return comparisons


STATISTICS_NOTES = {
    "headline": "mean over seeds (never the best seed)",
    "across_seeds": "mean, SD and Student-t 95% interval over seeds",
    "per_arm_ci": "stratified percentile bootstrap over test cases on the seed-ensemble",
    "primary_test": stats.TEST_DELONG_ENSEMBLE,
    "secondary_test": stats.TEST_PAIRED_T_SEEDS,
    "cross_check": stats.TEST_PAIRED_BOOTSTRAP,
    "significance": "a gain is called significant only when the Holm-adjusted DeLong p < 0.05 "
    "and the across-seed 95% CI of ΔAUC excludes 0 (matched comparisons; the others are "
    "descriptive with raw p)",
    "label_convention": "malignant = 1 is the positive class (the original study used malignant = 0)",
}


def _write_outputs(out: Path, arms: Sequence[Mapping[str, Any]], metrics: Mapping[str, Any]) -> None:
    """test_predictions.csv (every arm and seed), conclusion.md and metrics.json, each atomically."""
    rows = [
        pd.DataFrame(
            {
                "arm": a["arm"],
                "seed": s,
                "image_id": df["image_id"],
                "label_id": df["label_id"],
                "prob": df["prob"],
            }
        )
        for a in arms
        for s, df in a["predictions"].items()
    ]
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / TEST_PREDICTIONS_FILE, pd.concat(rows, ignore_index=True).to_csv(index=False))
    write_text_atomic(out / CONCLUSION_FILE, metrics["conclusion"] + "\n")
    write_json_atomic(out / METRICS_FILE, metrics)


def run_evaluate(
    arm_dirs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    baselines: Sequence[str] = ("real", "real+aug"),
    n_bootstrap: int = 2000,
    seed: int = 0,
    threshold: float = 0.5,
    context: Mapping[str, Any] | None = None,
    data_source: str | None = None,
) -> dict[str, Any]:
    """Compute per-arm metrics over seeds and paired arm-vs-baseline tests; write metrics.json.

    Args:
        arm_dirs: one arm dir per arm (distinct arm names).
        out_dir: where ``metrics.json``, ``test_predictions.csv`` and ``conclusion.md`` go.
        baselines: arms every other arm is compared against (those absent are skipped).
        n_bootstrap: bootstrap resamples for CIs and the paired bootstrap.
        seed: bootstrap RNG seed.
        threshold: P(malignant) at or above which a case is called malignant.
        context: extra top-level keys for metrics.json (config, input hashes, versions...).
        data_source: ``"phantom"``, ``"cbis-ddsm"`` or ``"table"`` (`mammosynth.provenance.data_source`); names
            the test set in the text.

    Returns:
        The metrics dict written to ``metrics.json``.

    Raises:
        ValueError: no arms, duplicate arm names, or arms not sharing the same test images/labels.
    """
    arms, ids, y = _load_arms(arm_dirs)
    names = [a["arm"] for a in arms]
    log.info("evaluating %d arm(s) on %d test images (%d malignant)", len(arms), len(y), int(y.sum()))

    probs = {a["arm"]: {s: df["prob"].to_numpy() for s, df in a["predictions"].items()} for a in arms}
    arms_out = {
        a["arm"]: _arm_entry(a, y, probs[a["arm"]], threshold=threshold, n_bootstrap=n_bootstrap, seed=seed)
        for a in arms
    }
    comparisons = _comparisons(names, baselines, y, probs, n_bootstrap, seed)

    all_seeds = sorted({s for a in arms for s in a["seeds"]}, key=lambda s: (str(type(s)), s))
    metrics: dict[str, Any] = {}
    overridden = sorted(set(context or {}) & set(CONTRACT_KEYS))
    if overridden:
        log.warning("context key(s) %s clash with evaluate's own fields and are ignored", overridden)
    metrics.update({k: v for k, v in (context or {}).items() if k not in CONTRACT_KEYS})
    metrics.update(
        {
            "arms": arms_out,
            "comparisons": comparisons,
            "test_set": _test_set(ids, y),
            "seeds": all_seeds,
            "baselines": [b for b in baselines if b in names],
            "threshold": threshold,
            "n_bootstrap": n_bootstrap,
            "bootstrap_seed": seed,
            "alpha": ALPHA,
            "statistics": dict(STATISTICS_NOTES),
        }
    )
    metrics["provenance"] = _provenance()
    metrics["data_source"] = data_source
    metrics["verdict"] = build_verdict(comparisons)
    metrics["external"] = _external_block(arms, baselines, n_bootstrap, seed, threshold)
    if metrics["external"]:
        agreement = verdict_agreement(metrics["verdict"], metrics["external"]["verdict"])
        metrics["external"]["agreement"] = agreement
    metrics["conclusion"] = conclusion(metrics)
    metrics = _json_safe(metrics)

    out = Path(out_dir)
    _write_outputs(out, arms, metrics)
    log.info("wrote %s", out / METRICS_FILE)
    return metrics


def _fmt(x: float | None, digits: int = 3, signed: bool = False) -> str:
    if x is None:
        return "n/a"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def _fmt_p(p: float | None) -> str:
    if p is None:
        return "n/a"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def describe_comparison(comp: Mapping[str, Any]) -> str:
    """The evidence behind a verdict: CI, p, which test, and the across-seed view."""
    lo, hi = comp["ci95"]
    text = (
        f"(95% CI {_fmt(lo, signed=True)} to {_fmt(hi, signed=True)}, {_fmt_p(comp['p_value'])}, "
        f"{comp['test']})"
    )
    ps = comp.get("per_seed") or {}
    if ps.get("ci95") and ps["ci95"][0] is not None:
        text += (
            f"; across {ps['n_seeds']} seeds the mean per-seed ΔAUC is {_fmt(ps['delta'], signed=True)} "
            f"(95% CI {_fmt(ps['ci95'][0], signed=True)} to {_fmt(ps['ci95'][1], signed=True)}, "
            f"{_fmt_p(ps.get('p_value'))})"
        )
    else:
        text += "; too few seeds for an across-seed interval"
    return text


def verdict(comp: Mapping[str, Any]) -> str:
    """One plain-language sentence for an arm-vs-baseline comparison (raw, unadjusted p)."""
    arm, base, delta = comp["arm"], comp["baseline"], _fmt(comp["delta"], signed=True)
    if stats.is_significant_gain(comp):
        return f"{arm} vs {base}: significant gain of {delta} AUC {describe_comparison(comp)}."
    if stats.is_significant_loss(comp):
        return f"{arm} vs {base}: significantly worse, {delta} AUC {describe_comparison(comp)}."
    why = (
        "the test-set difference does not hold up across training seeds"
        if comp["p_value"] < ALPHA
        else "the 95% interval includes zero"
    )
    return f"{arm} vs {base}: no significant gain — {why}; ΔAUC {delta} {describe_comparison(comp)}."


VERDICT_METHOD = (
    "Each synthetic arm is judged against its matched control (real+synthetic@r vs real, "
    "real+aug+synthetic vs real+aug, tstr vs real as the separate question 'can synthetic replace real?'). "
    "Holm step-down adjustment of the DeLong p-values (seed ensembles) across this family of matched "
    "comparisons. A comparison is significant only when ΔAUC > 0, the adjusted p < {alpha} and the "
    "across-seed 95% interval of the per-seed ΔAUC excludes zero. synthetic_helps is true when any "
    "real+…+synthetic arm is significant, false when none is, null when there are no synthetic arms or "
    "fewer than 2 seeds (not enough seeds to say)."
)


def build_verdict(comparisons: Sequence[Mapping[str, Any]], alpha: float = ALPHA) -> dict[str, Any]:
    """The structured answer to "does synthetic data help?" from the matched comparisons only.

    Args:
        comparisons: the ``comparisons`` entries (``arm``, ``baseline``, ``delta``, ``ci95``, ``p_value``,
            ``per_seed``); those that are not a synthetic arm against its matched control are ignored.
        alpha: family-wise significance level.

    Returns:
        ``{"synthetic_helps": True|False|None, "comparisons": [{"arm", "control", "question", "delta",
        "ci95", "p_value", "p_adjusted", "seed_ci95", "n_seeds", "significant"}], "method"}``.
    """
    matched = [c for c in comparisons if armlib.matched_control(c["arm"]) == c["baseline"]]
    adjusted = stats.holm_adjust([c["p_value"] for c in matched])
    entries = []
    for c, p_adj in zip(matched, adjusted, strict=True):
        ps = c.get("per_seed") or {}
        seed_ci = list(ps.get("ci95") or [None, None])
        n_seeds = int(ps.get("n_seeds") or 0)
        significant = bool(
            n_seeds >= 2
            and c["delta"] > 0
            and p_adj is not None
            and p_adj < alpha
            and seed_ci[0] is not None
            and seed_ci[0] > 0
        )
        entries.append(
            {
                "arm": c["arm"],
                "control": c["baseline"],
                "question": armlib.question(c["arm"]),
                "delta": c["delta"],
                "ci95": list(c["ci95"]),
                "p_value": c["p_value"],
                "p_adjusted": p_adj,
                "seed_ci95": seed_ci,
                "n_seeds": n_seeds,
                "significant": significant,
            }
        )
    helps = [e for e in entries if e["question"] == armlib.QUESTION_HELPS]
    if not helps or min(e["n_seeds"] for e in helps) < 2:
        answer = None
    else:
        answer = any(e["significant"] for e in helps)
    return {"synthetic_helps": answer, "comparisons": entries, "method": VERDICT_METHOD.format(alpha=alpha)}


def _helps_text(helps: bool) -> str:
    return "synthetic data helps" if helps else "no significant gain from synthetic data"


def verdict_agreement(internal: Mapping[str, Any], external: Mapping[str, Any]) -> dict[str, Any]:
    """Whether the internal and external verdicts (`build_verdict`) give the same answer.

    Returns:
        ``{"agree": True|False|None, "internal": helps, "external": helps, "comparisons": [{"arm",
        "control", "internal_significant", "external_significant", "internal_delta", "external_delta",
        "same_call", "same_direction"}], "sentence"}``; ``agree`` is None when either verdict is
        undecided (no synthetic arm, or fewer than 2 seeds).
    """
    ext = {(e["arm"], e["control"]): e for e in external.get("comparisons") or []}
    rows = []
    for e in internal.get("comparisons") or []:
        x = ext.get((e["arm"], e["control"]))
        if x is None:
            continue
        rows.append(
            {
                "arm": e["arm"],
                "control": e["control"],
                "internal_significant": e["significant"],
                "external_significant": x["significant"],
                "internal_delta": e["delta"],
                "external_delta": x["delta"],
                "same_call": e["significant"] == x["significant"],
                "same_direction": (e["delta"] > 0) == (x["delta"] > 0),
            }
        )
    a, b = internal.get("synthetic_helps"), external.get("synthetic_helps")
    agree = None if a is None or b is None else a == b
    if agree is None:
        sentence = (
            "Internal and external verdicts cannot be compared: "
            f"{'the internal' if a is None else 'the external'} verdict is undecided (too few seeds or no "
            "synthetic arm)."
        )
    elif agree:
        differ = [f"{r['arm']} vs {r['control']}" for r in rows if not r["same_call"]]
        both = "synthetic data helps on both" if a else "no significant gain from synthetic data on either"
        sentence = f"Internal and external test sets agree: {both}." + (
            f" Individual calls differ for {', '.join(differ)}." if differ else ""
        )
    else:
        sentence = (
            f"Internal and external test sets disagree: internal says {_helps_text(a)}, external says "
            f"{_helps_text(b)}."
        )
    return {"agree": agree, "internal": a, "external": b, "comparisons": rows, "sentence": sentence}


def _is_worse(entry: Mapping[str, Any], alpha: float = ALPHA) -> bool:
    hi = entry["seed_ci95"][1]
    return (
        bool(
            entry["n_seeds"] >= 2
            and entry["delta"] < 0
            and (entry["p_adjusted"] or 1.0) < alpha
            and hi is not None
        )
        and hi < 0
    )


def _describe_entry(e: Mapping[str, Any]) -> str:
    lo, hi = e["seed_ci95"]
    seeds = (
        f"across-seed 95% CI {_fmt(lo, signed=True)} to {_fmt(hi, signed=True)} over {e['n_seeds']} seeds"
        if lo is not None
        else "no across-seed interval (fewer than 2 seeds)"
    )
    return (
        f"{e['arm']} vs {e['control']}: ΔAUC {_fmt(e['delta'], signed=True)} "
        f"(95% CI {_fmt(e['ci95'][0], signed=True)} to {_fmt(e['ci95'][1], signed=True)}, "
        f"{_fmt_p(e['p_value'])}, Holm-adjusted {_fmt_p(e['p_adjusted'])}; {seeds})"
    )


def _verdict_lines(v: Mapping[str, Any], test_set: str) -> list[str]:
    """Plain-language sentences generated from the structured verdict."""
    helps = [e for e in v["comparisons"] if e["question"] == armlib.QUESTION_HELPS]
    tstr = [e for e in v["comparisons"] if e["question"] == armlib.QUESTION_REPLACES]
    lines = []
    if helps:
        detail = "; ".join(_describe_entry(e) for e in helps)
        if v["synthetic_helps"] is None:
            head = (
                "Does synthetic data help? Not enough seeds to say (an across-seed interval needs ≥ 2 seeds)."
            )
        elif v["synthetic_helps"]:
            gains = ", ".join(e["arm"] for e in helps if e["significant"])
            head = f"Does synthetic data help? Yes, on the {test_set}, for {gains} over its matched control."
        else:
            head = (
                f"Does synthetic data help? No significant gain on the {test_set} for "
                f"{'the synthetic arm' if len(helps) == 1 else 'any synthetic arm'} over its matched control."
            )
        worse = [f"{e['arm']} is significantly worse than {e['control']}" for e in helps if _is_worse(e)]
        tail = f" It hurts: {'; '.join(worse)}." if worse else ""
        lines.append(f"{head}{tail} Matched comparisons: {detail}.")
    for e in tstr:
        if _is_worse(e):
            answer = "No: training on synthetic images only is significantly worse than on real ones"
        elif e["significant"]:
            answer = "Synthetic-only training beats real training here"
        else:
            answer = "No significant difference from real training (which is not evidence of equivalence)"
        lines.append(f"Can synthetic data replace real data (TSTR)? {answer}: {_describe_entry(e)}.")
    return lines


def conclusion(metrics: Mapping[str, Any]) -> str:
    """Plain-language conclusion of an evaluation, generated from the structured verdict.

    The answer uses the matched comparisons only (each synthetic arm against the same recipe without
    synthetic data), Holm-adjusted; headline numbers are means over seeds, never the best seed. Every
    other pairwise comparison follows as descriptive detail with its raw p-value.
    """
    arms = metrics.get("arms") or {}
    comps = metrics.get("comparisons") or []
    if not arms:
        return "No arms were evaluated, so there is nothing to conclude."
    test_set = test_set_name(metrics.get("data_source"))
    v = metrics.get("verdict") or build_verdict(comps, metrics.get("alpha", ALPHA))
    lines = _verdict_lines(v, test_set)
    external = metrics.get("external") or {}
    if external.get("conclusion"):
        n_ext = (external.get("test_set") or {}).get("n")
        lines.append(f"External test set ({n_ext} images): {external['conclusion']}")
    if external.get("agreement"):
        lines.append(external["agreement"]["sentence"])
    n_test = (metrics.get("test_set") or {}).get("n")
    headline = []
    for name, arm in arms.items():
        s = arm["summary"]["auc"]
        ci = s.get("ci95") or [None, None]
        spread = (
            (
                f"mean AUC {_fmt(s['mean'])} ± {_fmt(s['sd'])} SD over {arm['n_seeds']} seeds "
                f"(95% CI {_fmt(ci[0])}–{_fmt(ci[1])})"
            )
            if s.get("sd") is not None
            else f"AUC {_fmt(s['mean'])} from a single seed (no run-to-run spread available)"
        )
        headline.append(f"{name}: {spread}, mean test accuracy {_fmt(arm['accuracy'])}")
    lines.append(
        f"On the {test_set} ({n_test} masses; malignant = 1 is the positive class, the original study "
        "used malignant = 0): " + "; ".join(headline) + "."
    )
    if not comps:
        lines.append("Only one arm was evaluated, so no comparison between arms is possible.")
    elif v["comparisons"]:
        lines.append(
            "All pairwise comparisons (descriptive, raw p-values; the answer above uses the matched ones):"
        )
    for base in metrics.get("baselines") or []:
        lines.extend(verdict(c) for c in comps if c["baseline"] == base)
    lines.append(
        "All headline numbers are means over seeds; no single best seed or trial is reported as the result."
    )
    return "\n\n".join(lines)


def _parse_context(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    path = Path(text)
    raw = path.read_text() if not text.lstrip().startswith("{") and path.exists() else text
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise SystemExit(
            f"--context: expected a JSON object or a path to one, got {text[:80]!r} ({exc})"
        ) from exc
    if not isinstance(data, dict):
        raise SystemExit(f"--context: expected a JSON object, got {type(data).__name__}")
    return data


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mammosynth evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--arm-dirs", nargs="+", required=True, help="one arm dir per arm (train_arm output)")
    p.add_argument("--out-dir", required=True, help="where metrics.json is written")
    p.add_argument("--baselines", default="real,real+aug", help="comma-separated baseline arms")
    p.add_argument("--n-bootstrap", type=int, default=2000, help="bootstrap resamples")
    p.add_argument("--seed", type=int, default=0, help="bootstrap RNG seed")
    p.add_argument("--threshold", type=float, default=0.5, help="P(malignant) decision threshold")
    p.add_argument("--context", default=None, help="JSON object (or path to one) merged into metrics.json")
    p.add_argument(
        "--data-source",
        default=None,
        choices=["phantom", "cbis-ddsm", "table"],
        help="what the test set is (names it 'phantom test set' or 'real test set' in the text)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    metrics = run_evaluate(
        args.arm_dirs,
        args.out_dir,
        baselines=tuple(b for b in args.baselines.split(",") if b),
        n_bootstrap=args.n_bootstrap,
        seed=args.seed,
        threshold=args.threshold,
        context=_parse_context(args.context),
        data_source=args.data_source,
    )
    print(metrics["conclusion"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

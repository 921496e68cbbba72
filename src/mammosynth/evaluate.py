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
     "threshold", "n_bootstrap", "bootstrap_seed", "alpha", "conclusion", ...context}
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

from mammosynth import stats
from mammosynth.atomic import write_text as write_text_atomic
from mammosynth.config import parse_arm

log = logging.getLogger(__name__)

ARM_FILE = "arm.json"
PREDICTIONS_FILE = "predictions.csv"
TRAIN_METRICS_FILE = "train_metrics.json"
METRICS_FILE = "metrics.json"
TEST_PREDICTIONS_FILE = "test_predictions.csv"
CONCLUSION_FILE = "conclusion.md"
PREDICTION_COLUMNS = ("image_id", "label_id", "prob")
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
)


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


def _read_predictions(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise FileNotFoundError(f"{path} missing: every seed of an arm needs its test predictions")
    df = pd.read_csv(path, dtype={"image_id": str})
    missing = [c for c in PREDICTION_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; expected columns {list(PREDICTION_COLUMNS)}")
    if df.empty:
        raise ValueError(f"{path}: no predictions")
    if df["image_id"].duplicated().any():
        raise ValueError(
            f"{path}: {int(df['image_id'].duplicated().sum())} duplicated image_id rows; "
            "write one prediction per test image"
        )
    bad_label = ~df["label_id"].isin([0, 1])
    if bad_label.any():
        raise ValueError(
            f"{path}: label_id must be 0 (benign) or 1 (malignant), found "
            f"{sorted(set(df.loc[bad_label, 'label_id'].astype(str)))[:5]}"
        )
    prob = pd.to_numeric(df["prob"], errors="coerce")
    bad_prob = ~(np.isfinite(prob) & (prob >= 0) & (prob <= 1))
    if bad_prob.any():
        raise ValueError(
            f"{path}: column prob must hold probabilities in [0, 1]; "
            f"{int(bad_prob.sum())} row(s) do not (e.g. {df.loc[bad_prob, 'prob'].iloc[0]!r})"
        )
    df = df.assign(prob=prob.astype(np.float64), label_id=df["label_id"].astype(int))
    # Sorting by id aligns cases across arms and seeds whatever order training wrote them in.
    return df.sort_values("image_id", kind="stable").reset_index(drop=True)


def load_arm(arm_dir: str | os.PathLike) -> dict[str, Any]:
    """Read one arm dir.

    Returns:
        ``{"arm", "dir", "spec", "seeds": [seed...], "predictions": {seed: DataFrame},
        "train_metrics": {seed: dict}}`` with predictions sorted by ``image_id``.

    Raises:
        FileNotFoundError: arm.json or a seed's predictions.csv is missing.
        ValueError: malformed arm.json or predictions, or an unknown arm name.
    """
    root = Path(arm_dir)
    arm_path = root / ARM_FILE
    if not arm_path.exists():
        raise FileNotFoundError(f"{arm_path} missing: {root} is not an arm dir (written by train_arm)")
    try:
        arm_meta = json.loads(arm_path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{arm_path}: not valid JSON ({exc})") from exc
    name = arm_meta.get("arm")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{arm_path}: field 'arm' must be the arm name (e.g. 'real'), got {name!r}")
    parse_arm(name)  # raises with the list of valid arm forms
    seeds = arm_meta.get("seeds")
    if seeds is None:
        seeds = sorted(int(p.name.split("-", 1)[1]) for p in root.glob("seed-*") if p.is_dir())
    if not isinstance(seeds, list) or not seeds:
        raise ValueError(f"{arm_path}: field 'seeds' must be a non-empty list of seeds, got {seeds!r}")
    recorded = arm_meta.get("metrics") or {}
    predictions: dict[Any, pd.DataFrame] = {}
    train_metrics: dict[Any, dict[str, Any]] = {}
    hashes: dict[str, str] = {}
    for seed in seeds:
        seed_dir = root / f"seed-{seed}"
        predictions[seed] = _read_predictions(seed_dir / PREDICTIONS_FILE)
        hashes[_seed_key(seed)] = hashlib.sha256((seed_dir / PREDICTIONS_FILE).read_bytes()).hexdigest()
        tm_path = seed_dir / TRAIN_METRICS_FILE
        if tm_path.exists():
            try:
                train_metrics[seed] = json.loads(tm_path.read_text())
            except json.JSONDecodeError as exc:
                raise ValueError(f"{tm_path}: not valid JSON ({exc})") from exc
        else:
            train_metrics[seed] = dict(recorded.get(str(seed)) or recorded.get(seed) or {})
    return {
        "arm": name,
        "dir": str(root),
        "spec": arm_meta.get("spec") or {},
        "seeds": list(seeds),
        "predictions": predictions,
        "train_metrics": train_metrics,
        "predictions_sha256": hashes,
    }


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


def run_evaluate(
    arm_dirs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    baselines: Sequence[str] = ("real", "real+aug"),
    n_bootstrap: int = 2000,
    seed: int = 0,
    threshold: float = 0.5,
    context: Mapping[str, Any] | None = None,
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

    Returns:
        The metrics dict written to ``metrics.json``.

    Raises:
        ValueError: no arms, duplicate arm names, or arms not sharing the same test images/labels.
    """
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
    if len(set(y.tolist())) < 2:
        raise ValueError(
            f"the test set has only {'malignant' if y[0] else 'benign'} cases; "
            "AUC and sensitivity/specificity need both"
        )
    log.info("evaluating %d arm(s) on %d test images (%d malignant)", len(arms), len(y), int(y.sum()))

    probs = {a["arm"]: {s: df["prob"].to_numpy() for s, df in a["predictions"].items()} for a in arms}
    arms_out: dict[str, Any] = {}
    for arm in arms:
        name = arm["arm"]
        per_seed: dict[str, dict[str, Any]] = {}
        for s in arm["seeds"]:
            m = stats.binary_metrics(y, probs[name][s], threshold)
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
        ens = stats.seed_ensemble(probs[name])
        ens_metrics = stats.binary_metrics(y, ens, threshold)
        ens_ci = stats.bootstrap_cis(y, ens, n_bootstrap, seed, ALPHA, threshold)
        first = per_seed[_seed_key(arm["seeds"][0])]
        arms_out[name] = {
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
            arms_out[name]["auc"],
            "n/a" if summary["auc"]["sd"] is None else f"{summary['auc']['sd']:.3f}",
            len(arm["seeds"]),
        )

    comparisons = []
    for arm_name, base in _comparison_pairs(names, list(baselines)):
        comp = stats.compare_arms(y, probs[arm_name], probs[base], n_boot=n_bootstrap, seed=seed)
        comparisons.append({"arm": arm_name, "baseline": base, **comp})
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
            "test_set": {
                "n": int(len(y)),
                "n_malignant": int(y.sum()),
                "n_benign": int((1 - y).sum()),
                "ids_sha256": hashlib.sha256("\n".join(ids).encode()).hexdigest(),
            },
            "seeds": all_seeds,
            "baselines": [b for b in baselines if b in names],
            "threshold": threshold,
            "n_bootstrap": n_bootstrap,
            "bootstrap_seed": seed,
            "alpha": ALPHA,
            "statistics": {
                "headline": "mean over seeds (never the best seed)",
                "across_seeds": "mean, SD and Student-t 95% interval over seeds",
                "per_arm_ci": "stratified percentile bootstrap over test cases on the seed-ensemble",
                "primary_test": stats.TEST_DELONG_ENSEMBLE,
                "secondary_test": stats.TEST_PAIRED_T_SEEDS,
                "cross_check": stats.TEST_PAIRED_BOOTSTRAP,
                "significance": "a gain is called significant only when the DeLong 95% CI excludes 0 "
                "(p < 0.05) and the across-seed 95% CI of ΔAUC excludes 0",
            },
        }
    )
    metrics["provenance"] = _provenance()
    metrics["conclusion"] = conclusion(metrics)
    metrics = _json_safe(metrics)

    out = Path(out_dir)
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
    """One plain-language sentence for an arm-vs-baseline comparison."""
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


def conclusion(metrics: Mapping[str, Any]) -> str:
    """Plain-language conclusion of an evaluation, built only from means over seeds.

    Says "no significant gain" whenever an interval crosses 0 or p ≥ 0.05 (on either the ensemble
    DeLong test or the across-seed interval), names the effect size and its interval otherwise,
    and never uses the best seed as the headline.
    """
    arms = metrics.get("arms") or {}
    comps = metrics.get("comparisons") or []
    if not arms:
        return "No arms were evaluated, so there is nothing to conclude."
    lines = []
    first_base = (metrics.get("baselines") or [None])[0]
    synth = [
        c for c in comps if c["baseline"] == first_base and ("synthetic" in c["arm"] or c["arm"] == "tstr")
    ]
    if synth:
        gains = [c for c in synth if stats.is_significant_gain(c)]
        if gains:
            lines.append(
                "Does synthetic data help? Yes, for "
                + "; ".join(
                    f"{c['arm']} ({_fmt(c['delta'], signed=True)} AUC over {first_base}, 95% CI "
                    f"{_fmt(c['ci95'][0], signed=True)} to {_fmt(c['ci95'][1], signed=True)})"
                    for c in gains
                )
                + (
                    f". No significant gain for {', '.join(c['arm'] for c in synth if c not in gains)}."
                    if len(gains) < len(synth)
                    else "."
                )
            )
        else:
            lines.append(
                f"Does synthetic data help? No significant gain over {first_base} for "
                f"{'the synthetic arm' if len(synth) == 1 else 'any synthetic arm'} "
                f"({', '.join(c['arm'] for c in synth)})."
            )
        losses = [c for c in synth if stats.is_significant_loss(c)]
        if losses:
            lines[-1] += (
                " It hurts: "
                + "; ".join(
                    f"{c['arm']} is significantly worse ({_fmt(c['delta'], signed=True)} AUC vs {first_base}, "
                    f"95% CI {_fmt(c['ci95'][0], signed=True)} to {_fmt(c['ci95'][1], signed=True)})"
                    for c in losses
                )
                + "."
            )
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
    lines.append(f"On the shared real test set ({n_test} masses): " + "; ".join(headline) + ".")
    if not comps:
        lines.append("Only one arm was evaluated, so no comparison between arms is possible.")
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
    )
    print(metrics["conclusion"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What the Kubeflow UI shows of a study: Metrics scalars and labelled ClassificationMetrics.

The KFP components stay glue: they hand a KFP artifact and the values built here to `log_metrics` or
`log_classification`, which only call the artifact's public methods (``log_metric``,
``log_roc_curve``, ``log_confusion_matrix``) and fill ``metadata`` — so this module needs no kfp.

Names a reader sees:

- scalars: ``AUC <arm>`` and ``accuracy <arm>`` (means over seeds), and for each matched comparison
  of the structured verdict (`mammosynth.evaluate.build_verdict`) ``dAUC <arm> vs <control>``, its test-set
  95% CI (``... CI95 lo`` / ``... CI95 hi``), its across-seed 95% CI (``... seed CI95 lo/hi``) and the
  Holm-adjusted p (``p Holm <arm> vs <control>``);
- ClassificationMetrics carry ``metadata["display_name"]``, which the KFP backend keeps as the artifact's
  name in the UI (it only fills in the output name when none is set: kubeflow/pipelines
  backend/src/v2/metadata/client.go), plus the label convention: malignant = 1 is the positive class
  (the original study used malignant = 0).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mammosynth import arms as armlib
from mammosynth import stats
from mammosynth.config import CLASS_NAMES, LABEL_CONVENTION

# ROC curves are downsampled to at most this many points so the run page stays fast.
MAX_ROC_POINTS = 200
THRESHOLD = 0.5


def _finite(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _put(out: dict[str, float], name: str, value: Any) -> None:
    """Add ``name`` when ``value`` is a finite number (a missing CI or p is left out, not logged as 0)."""
    number = _finite(value)
    if number is not None:
        out[name] = number


def scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The Metrics scalars of an evaluation: per-arm AUC/accuracy and each matched comparison's answer.

    Args:
        metrics: evaluate's ``metrics.json`` content (``arms`` and the structured ``verdict``).

    Returns:
        ``{name: value}`` in a stable order: per arm ``AUC <arm>``, ``accuracy <arm>``; per matched
        comparison ``dAUC <arm> vs <control>``, ``... CI95 lo``, ``... CI95 hi``, ``... seed CI95 lo``,
        ``... seed CI95 hi``, ``p Holm <arm> vs <control>``; and ``synthetic helps (1 yes, 0 no)`` when the
        verdict has an answer. Values that are missing or not finite are left out.
    """
    out: dict[str, float] = {}
    for name, arm in (metrics.get("arms") or {}).items():
        _put(out, f"AUC {name}", arm.get("auc"))
        _put(out, f"accuracy {name}", arm.get("accuracy"))
    verdict = metrics.get("verdict") or {}
    for entry in verdict.get("comparisons") or []:
        pair = f"{entry['arm']} vs {entry['control']}"
        ci = list(entry.get("ci95") or [None, None])
        seed_ci = list(entry.get("seed_ci95") or [None, None])
        _put(out, f"dAUC {pair}", entry.get("delta"))
        _put(out, f"dAUC {pair} CI95 lo", ci[0])
        _put(out, f"dAUC {pair} CI95 hi", ci[1])
        _put(out, f"dAUC {pair} seed CI95 lo", seed_ci[0])
        _put(out, f"dAUC {pair} seed CI95 hi", seed_ci[1])
        _put(out, f"p Holm {pair}", entry.get("p_adjusted"))
    if verdict.get("synthetic_helps") is not None:
        out["synthetic helps (1 yes, 0 no)"] = float(bool(verdict["synthetic_helps"]))
    return out


def roc_points(
    y: Any, p: Any, max_points: int = MAX_ROC_POINTS
) -> tuple[list[float], list[float], list[float]]:
    """ROC curve ``(fpr, tpr, thresholds)`` with at most ``max_points`` points, both ends kept.

    Args:
        y: 0/1 labels (1 = malignant).
        p: P(malignant) scores.
        max_points: the most points returned (at least 2).

    Returns:
        Three equally long lists; thresholds are clipped to [0, 1] (sklearn's first one is +inf).

    Raises:
        ValueError: ``max_points`` < 2, or the labels hold a single class.
    """
    from sklearn.metrics import roc_curve

    if max_points < 2:
        raise ValueError(f"max_points must be at least 2 (the curve's two ends), got {max_points}")
    labels = np.asarray(y).astype(int)
    if len(set(labels.tolist())) < 2:
        raise ValueError(
            "an ROC curve needs both benign (0) and malignant (1) cases; the labels hold one class"
        )
    fpr, tpr, thr = roc_curve(labels, np.asarray(p, dtype=np.float64))
    if len(fpr) > max_points:
        keep = np.unique(np.linspace(0, len(fpr) - 1, max_points).round().astype(int))
        fpr, tpr, thr = fpr[keep], tpr[keep], thr[keep]
    return fpr.tolist(), tpr.tolist(), np.clip(thr, 0.0, 1.0).tolist()


def classification(y: Any, p: Any, *, display_name: str, **metadata: Any) -> dict[str, Any]:
    """ROC and confusion matrix (at P(malignant) >= 0.5) of one set of predictions, labelled for the UI.

    Args:
        y: 0/1 labels (1 = malignant).
        p: P(malignant) scores.
        display_name: the artifact's name in the Kubeflow UI.
        **metadata: more scalar facts to record on the artifact (arm, seeds, ...).

    Returns:
        ``{"roc": (fpr, tpr, thresholds), "confusion": (categories, matrix), "metadata": {...}}``; the
        matrix's rows are the true class and its columns the predicted class, in `CLASS_NAMES` order.
    """
    counts = stats.confusion(y, p, THRESHOLD)
    matrix = [[counts["tn"], counts["fp"]], [counts["fn"], counts["tp"]]]
    labels = np.asarray(y).astype(int)
    meta = {
        "display_name": display_name,
        "label_convention": LABEL_CONVENTION,
        "threshold": THRESHOLD,
        "n_test": int(labels.size),
        "n_malignant": int(labels.sum()),
        "auc": float(stats.binary_metrics(labels, p, THRESHOLD)["auc"]),
        **metadata,
    }
    return {"roc": roc_points(labels, p), "confusion": (list(CLASS_NAMES), matrix), "metadata": meta}


def _labels_and_probs(arm: Mapping[str, Any], seeds: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    frames = [arm["predictions"][s] for s in seeds]
    ref = frames[0]
    for seed, df in zip(seeds, frames, strict=True):
        if not np.array_equal(df["image_id"].to_numpy(), ref["image_id"].to_numpy()):
            raise ValueError(
                f"arm {arm['arm']!r} ({arm['dir']}): seed {seed} was not tested on the same images as seed "
                f"{seeds[0]}; re-run train_arm so every seed predicts the one shared test split"
            )
    ensemble = stats.seed_ensemble({s: df["prob"].to_numpy() for s, df in zip(seeds, frames, strict=True)})
    return ref["label_id"].to_numpy(), ensemble


def arm_classification(arm_dir: str | os.PathLike, test_set: str = "shared test set") -> dict[str, Any]:
    """The seed-ensemble ROC and confusion of one trained arm on the test set, labelled with the arm.

    Args:
        arm_dir: an arm dir written by `mammosynth.train.train_arm`.
        test_set: what to call the test set (`mammosynth.provenance.test_set_name`: phantom data is called
            phantom).

    Returns:
        `classification`'s dict; the display name reads ``ROC <arm>: mean of N seeds, <test set>``.
    """
    arm = armlib.load_arm(arm_dir)
    seeds = list(arm["seeds"])
    y, p = _labels_and_probs(arm, seeds)
    name = f"ROC {arm['arm']}: mean of {len(seeds)} seed{'s' if len(seeds) != 1 else ''}, {test_set}"
    return classification(y, p, display_name=name, arm=arm["arm"], seeds=",".join(map(str, seeds)))


def deployed_classification(
    arm_dir: str | os.PathLike, seed: Any, test_set: str = "shared test set"
) -> dict[str, Any]:
    """The ROC and confusion of the deployed model (one seed of the final arm) on the test set.

    Args:
        arm_dir: the final arm's dir.
        seed: the deployed seed (`mammosynth.study.deployed_seed`).
        test_set: what to call the test set (phantom data is called phantom).

    Returns:
        `classification`'s dict; the display name reads ``ROC deployed model: <arm> seed <s>, <test set>``.
    """
    arm = armlib.load_arm(arm_dir)
    key = next((s for s in arm["predictions"] if str(s) == str(seed)), None)
    if key is None:
        raise ValueError(f"arm {arm['arm']!r} ({arm_dir}) has no seed {seed!r}; it has seeds {arm['seeds']}")
    y, p = _labels_and_probs(arm, [key])
    name = f"ROC deployed model: {arm['arm']} seed {seed}, {test_set}"
    return classification(y, p, display_name=name, arm=arm["arm"], seed=str(seed))


def log_metrics(artifact: Any, values: Mapping[str, float], display_name: str | None = None) -> None:
    """Log ``values`` on a KFP ``Metrics`` artifact (``log_metric`` per value), optionally naming it."""
    for name, value in values.items():
        artifact.log_metric(name, float(value))
    if display_name:
        artifact.metadata["display_name"] = display_name


def log_classification(artifact: Any, ui: Mapping[str, Any]) -> None:
    """Log `classification`'s ROC, confusion matrix and metadata on a KFP ``ClassificationMetrics``."""
    artifact.log_roc_curve(*ui["roc"])
    artifact.log_confusion_matrix(*ui["confusion"])
    artifact.metadata.update(ui["metadata"])

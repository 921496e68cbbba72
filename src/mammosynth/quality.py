"""Generator report card: is the synthetic set realistic, diverse, class-faithful and not copied?

`report_card` compares a synthetic set with the GAN's real training images and with real images
the GAN never saw (held-out), per class:

* **FID / KID** synthetic vs held-out real, next to the real-vs-real floor (two disjoint halves of
  the held-out set, same sample sizes), so a number is read against what real data itself scores.
  FID and KID are biased by sample size; all comparisons use equal sizes.
* **Precision / recall** (k-NN manifolds, Kynkäänniemi et al. 2019) and **density / coverage**
  (Naeem et al. 2020): fidelity (synthetic on the real manifold) and diversity (real covered).
* **Memorisation audit** in pixel space: each synthetic image's distance to its nearest GAN-training
  image vs the distance a genuinely new real image (held-out) has to its nearest training image.
  Under no copying, about ``alpha`` of synthetic images fall below the held-out floor's
  ``alpha``-quantile; the excess (binomial test) and the closest pairs are reported.
* **Diversity**: mean pairwise SSIM within class (higher = less diverse; mode collapse → near 1),
  synthetic next to real.

Features: ImageNet InceptionV3 when its weights file is given (they cannot be downloaded in every
environment), else a given feature function (e.g. our classifier's penultimate layer, see
`classifier_features`), else a fixed, seeded random-convolution + intensity-statistics extractor.
The chosen extractor is named in the output: FID values are only comparable under one extractor.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mammosynth import atomic
from mammosynth.config import CLASS_NAMES
from mammosynth.logs import setup_logging

log = logging.getLogger(__name__)

FeatureFn = Callable[[np.ndarray], np.ndarray]


# --------------------------------------------------------------------------- feature extractors
def random_conv_features(images: np.ndarray, seed: int = 0, batch_size: int = 256) -> np.ndarray:
    """Fixed random-convolution features + intensity statistics (no trained weights needed).

    Three seeded random 3×3 conv + ReLU + stride-2 layers (16/32/64 channels, He-scaled), each
    pooled to mean and standard deviation, plus a 16-bin intensity histogram and gradient-energy
    statistics: 240 dimensions sensitive to texture, contrast and structure. Random conv features
    are a known, if weaker, stand-in for trained ones in FID-type metrics (they rank gross
    failures correctly but are less sensitive to semantics).
    """
    import tensorflow as tf

    x_all = _as_gray(images)
    rng = np.random.default_rng(seed)
    kernels, c_in = [], 1
    for c_out in (16, 32, 64):
        kernels.append(rng.standard_normal((3, 3, c_in, c_out)).astype(np.float32) * np.sqrt(2 / (9 * c_in)))
        c_in = c_out
    feats = []
    for start in range(0, len(x_all), batch_size):
        x = tf.constant(x_all[start : start + batch_size] * 2.0 - 1.0)
        parts = []
        h = x
        for k in kernels:
            h = tf.nn.relu(tf.nn.conv2d(h, k, strides=2, padding="SAME"))
            parts += [tf.reduce_mean(h, axis=[1, 2]), tf.math.reduce_std(h, axis=[1, 2])]
        feats.append(tf.concat(parts, axis=1).numpy())
    conv = np.concatenate(feats)
    return np.concatenate([conv, pixel_statistics(x_all)], axis=1)


def pixel_statistics(images: np.ndarray) -> np.ndarray:
    """16-bin intensity histogram, mean/std, and gradient energy mean/std per image."""
    x = _as_gray(images)[..., 0]
    hist = np.stack([np.histogram(im, bins=16, range=(0.0, 1.0))[0] for im in x]).astype(np.float32)
    hist /= x[0].size
    gy, gx = np.gradient(x, axis=(1, 2))
    grad = np.sqrt(gx**2 + gy**2).reshape(len(x), -1)
    flat = x.reshape(len(x), -1)
    return np.concatenate(
        [
            hist,
            flat.mean(1, keepdims=True),
            flat.std(1, keepdims=True),
            grad.mean(1, keepdims=True),
            grad.std(1, keepdims=True),
        ],
        axis=1,
    )


def inception_features(weights_path: str | os.PathLike) -> FeatureFn:
    """ImageNet InceptionV3 pool features (the standard FID extractor) from a local weights file.

    The file is Keras' ``inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5``.

    Raises:
        FileNotFoundError: the weights file is missing.
    """
    import keras
    import tensorflow as tf

    path = Path(weights_path)
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: InceptionV3 no-top weights not found; download them where "
            "network access exists, or omit to use another extractor"
        )
    net = keras.applications.InceptionV3(
        include_top=False, pooling="avg", weights=str(path), input_shape=(299, 299, 3)
    )

    def fn(images: np.ndarray) -> np.ndarray:
        out = []
        for start in range(0, len(images), 32):
            x = tf.image.resize(_as_gray(images[start : start + 32]), (299, 299))
            x = tf.repeat(x, 3, axis=-1) * 2.0 - 1.0  # inception preprocessing: [-1,1]
            out.append(net(x, training=False).numpy())
        return np.concatenate(out)

    return fn


def classifier_features(model_dir: str | os.PathLike) -> FeatureFn:
    """Penultimate-layer features of a trained mammosynth classifier (`mammosynth.models.io`)."""
    import keras

    from mammosynth.models.io import load_classifier

    model, _ = load_classifier(model_dir)
    penultimate = keras.Model(model.inputs, model.layers[-2].output)

    def fn(images: np.ndarray) -> np.ndarray:
        out = penultimate.predict(_as_gray(images), batch_size=64, verbose=0)
        return np.asarray(out, np.float32).reshape(len(images), -1)

    return fn


def resolve_features(
    feature_fn: FeatureFn | None = None,
    feature_name: str | None = None,
    *,
    inception_weights: str | os.PathLike | None = None,
    classifier_dir: str | os.PathLike | None = None,
) -> tuple[FeatureFn, str]:
    """Pick the feature extractor and its name.

    ImageNet weights if given, else a feature function / classifier, else the fixed random-conv
    extractor.

    Returns:
        ``(fn, name)``.
    """
    if inception_weights:
        return inception_features(inception_weights), "inception-v3-imagenet"
    if feature_fn is not None:
        return feature_fn, feature_name or getattr(feature_fn, "__name__", "custom")
    if classifier_dir:
        return classifier_features(classifier_dir), f"classifier-penultimate:{Path(classifier_dir).name}"
    return random_conv_features, "random-conv+pixel-stats (seed 0)"


def _as_gray(images: np.ndarray) -> np.ndarray:
    x = np.asarray(images, np.float32)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise ValueError(f"expected images (N,S,S,1|3), got shape {x.shape}")
    if x.shape[-1] == 3:
        x = x.mean(axis=-1, keepdims=True)
    return x


# --------------------------------------------------------------------------- distribution metrics
def fid(feat_a: np.ndarray, feat_b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (Heusel et al. 2017).

    ``Tr sqrt(C_a C_b)`` is computed as the sum of square roots of the eigenvalues of the
    symmetric PSD matrix ``C_a^½ C_b C_a^½`` (two symmetric eigendecompositions): exact for
    covariance matrices, stable when they are singular (fewer samples than features), and much
    faster than a general matrix square root.
    """
    a, b = np.asarray(feat_a, np.float64), np.asarray(feat_b, np.float64)
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"FID needs ≥ 2 samples per set, got {len(a)} and {len(b)}")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"FID feature sizes differ: {a.shape[1]} vs {b.shape[1]}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    w, v = np.linalg.eigh(cov_a)
    root_a = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    inner = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
    tr_covmean = np.sqrt(np.clip(inner, 0.0, None)).sum()
    value = float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * tr_covmean)
    return max(value, 0.0)


def kid(
    feat_a: np.ndarray, feat_b: np.ndarray, n_subsets: int = 20, subset_size: int = 200, seed: int = 0
) -> tuple[float, float]:
    """Kernel Inception Distance (Bińkowski et al. 2018), mean and std over random subsets.

    Unbiased MMD² with the cubic polynomial kernel, so ≈ 0 (can be < 0) for equal distributions.
    """
    a, b = np.asarray(feat_a, np.float64), np.asarray(feat_b, np.float64)
    m = min(subset_size, len(a), len(b))
    if m < 2:
        raise ValueError(f"KID needs ≥ 2 samples per set, got {len(a)} and {len(b)}")
    d = a.shape[1]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_subsets):
        x = a[rng.choice(len(a), m, replace=False)]
        y = b[rng.choice(len(b), m, replace=False)]
        kxx = (x @ x.T / d + 1) ** 3
        kyy = (y @ y.T / d + 1) ** 3
        kxy = (x @ y.T / d + 1) ** 3
        mmd = ((kxx.sum() - np.trace(kxx)) + (kyy.sum() - np.trace(kyy))) / (m * (m - 1)) - 2 * kxy.mean()
        values.append(mmd)
    return float(np.mean(values)), float(np.std(values))


def _pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    sq = (a**2).sum(1)[:, None] + (b**2).sum(1)[None, :] - 2 * a @ b.T
    return np.sqrt(np.maximum(sq, 0.0))


def manifold_metrics(real: np.ndarray, fake: np.ndarray, k: int = 3) -> dict[str, float]:
    """Precision / recall (Kynkäänniemi 2019) and density / coverage (Naeem 2020) with k-NN balls."""
    if len(real) <= k or len(fake) <= k:
        raise ValueError(
            f"manifold metrics need more than k={k} samples, got {len(real)} real and {len(fake)} synthetic"
        )
    d_rr = _pairwise(real, real)
    d_ff = _pairwise(fake, fake)
    d_rf = _pairwise(real, fake)  # (R, F)
    r_real = np.sort(d_rr, axis=1)[:, k]  # column 0 is the point itself
    r_fake = np.sort(d_ff, axis=1)[:, k]
    inside_real = d_rf <= r_real[:, None]  # fake j inside real i's ball
    return {
        "precision": float(inside_real.any(axis=0).mean()),
        "recall": float((d_rf <= r_fake[None, :]).any(axis=1).mean()),
        "density": float(inside_real.sum() / (k * len(fake))),
        "coverage": float(inside_real.any(axis=1).mean()),
        "k": k,
    }


def ssim(x: np.ndarray, y: np.ndarray, sigma: float = 1.5) -> np.ndarray:
    """Per-image SSIM (Wang et al. 2004) of two (N,S,S,1) batches in [0,1].

    Gaussian window σ=1.5 (≈ the usual 11×11), reflected borders.
    """
    from scipy.ndimage import gaussian_filter

    x, y = _as_gray(x)[..., 0].astype(np.float64), _as_gray(y)[..., 0].astype(np.float64)

    def g(a):
        return gaussian_filter(a, sigma=(0, sigma, sigma), truncate=3.5, mode="reflect")

    c1, c2 = 0.01**2, 0.03**2
    mx, my = g(x), g(y)
    sxx, syy, sxy = g(x * x) - mx * mx, g(y * y) - my * my, g(x * y) - mx * my
    num = (2 * mx * my + c1) * (2 * sxy + c2)
    den = (mx * mx + my * my + c1) * (sxx + syy + c2)
    return (num / den).mean(axis=(1, 2))


def mean_pairwise_ssim(images: np.ndarray, n_pairs: int = 200, seed: int = 0) -> float:
    """Mean SSIM over random distinct pairs (diversity: 1 = identical images)."""
    x = _as_gray(images)
    if len(x) < 2:
        return float("nan")
    rng = np.random.default_rng(seed)
    i = rng.integers(0, len(x), n_pairs)
    j = (i + rng.integers(1, len(x), n_pairs)) % len(x)
    return float(ssim(x[i], x[j]).mean())


# --------------------------------------------------------------------------- memorisation
def memorisation_audit(
    train: np.ndarray,
    heldout: np.ndarray,
    synthetic: np.ndarray,
    alpha: float = 0.05,
    size: int = 32,
    seed: int = 0,
) -> dict[str, Any]:
    """Is the generator copying its training images?

    Pixel-space L2 distances on images resized to ``size``. For every synthetic image: distance to
    the nearest training image (``d_train``) and to the nearest held-out image (``d_heldout``).
    The floor is what a genuinely new real image scores: each held-out image's distance to its
    nearest training image. A synthetic image is *flagged* when its ``d_train`` is below the
    floor's ``alpha``-quantile; without copying about ``alpha`` of them are. Pixel L2 favours
    blurry, average-looking samples (close to everything), so a modest excess with blurry samples
    is not copying; the closest-pairs figure tells the two apart.

    Returns:
        Summary (share flagged, expected share, binomial p-value, medians, indices of flagged
        synthetic images and, per synthetic image, its nearest training image index).
    """

    def prep(x):
        import tensorflow as tf

        g = _as_gray(x)
        if g.shape[1] != size:
            g = tf.image.resize(g, (size, size), antialias=True).numpy()
        return g.reshape(len(g), -1)

    tr, ho, sy = prep(train), prep(heldout), prep(synthetic)
    return _audit(tr, ho, sy, alpha, seed, f"pixels {size}x{size}, L2")


def _audit(
    tr: np.ndarray, ho: np.ndarray, sy: np.ndarray, alpha: float, seed: int, space: str
) -> dict[str, Any]:
    """The audit both spaces share: nearest-training distances against the held-out floor.

    Args:
        tr: (N, D) vectors of the GAN's training images.
        ho: (M, D) vectors of held-out real images.
        sy: (K, D) vectors of the synthetic images.
        alpha: quantile of the held-out floor below which a synthetic image is flagged.
        seed: seed of the size-matched training subset.
        space: what the vectors are, for the output.

    Returns:
        The audit dict (see `memorisation_audit`).
    """
    from scipy import stats

    d_st = _pairwise(sy, tr)
    d_train, nearest_train = d_st.min(axis=1), d_st.argmin(axis=1)
    d_heldout = _pairwise(sy, ho).min(axis=1)
    floor = _pairwise(ho, tr).min(axis=1)
    # Size-matched comparison: nearest of as many training images as there are held-out ones, so
    # "closer to train than to held-out" is a coin flip (0.5) for a generator that does not copy.
    matched = np.random.default_rng(seed).choice(len(tr), min(len(tr), len(ho)), replace=False)
    threshold = float(np.quantile(floor, alpha))
    flagged = np.flatnonzero(d_train < threshold)
    share = len(flagged) / len(sy)
    test = stats.binomtest(len(flagged), len(sy), alpha, alternative="greater")
    return {
        "space": space,
        "alpha": alpha,
        "threshold": threshold,
        "share_flagged": float(share),
        "expected_share": alpha,
        "p_value": float(test.pvalue),
        "memorisation_suspected": bool(test.pvalue < 0.01 and share > 2 * alpha),
        "n_flagged": int(len(flagged)),
        "flagged_indices": flagged.tolist(),
        "median_d_train": float(np.median(d_train)),
        "median_d_heldout": float(np.median(d_heldout)),
        "median_floor": float(np.median(floor)),
        "share_closer_to_train_size_matched": float((d_st[:, matched].min(axis=1) < d_heldout).mean()),
        "expected_share_closer_size_matched": 0.5,
        "_d_train": d_train,
        "_nearest_train": nearest_train,
    }


MEMORISATION_RULE = (
    "an audit fires when its binomial test of the flagged share against alpha gives p < 0.01 and the share "
    "exceeds 2*alpha; memorisation is 'suspected' only when the pixel and the feature audit both fire "
    "(one alone is reported as 'fired' for a reader to judge from the closest pairs)"
)


def memorisation_audit_features(
    f_train: np.ndarray,
    f_heldout: np.ndarray,
    f_synthetic: np.ndarray,
    alpha: float = 0.05,
    seed: int = 0,
    space: str = "features",
) -> dict[str, Any]:
    """The memorisation audit of `memorisation_audit`, in a feature space instead of pixels.

    Features are z-scored with the training images' mean and SD (so no dimension dominates by
    scale), then the same floor, threshold and binomial test apply. Pixel L2 calls two blurry blobs
    close and a blob and a spiculated star of similar brightness close too; features (the report
    card's) see shape and texture, so the two audits fail in different ways.

    Args:
        f_train: (N, D) features of the GAN's training images.
        f_heldout: (N, D) features of held-out real images (the GAN never saw them).
        f_synthetic: (N, D) features of the synthetic images.
        alpha: quantile of the held-out floor below which a synthetic image is flagged.
        seed: seed of the size-matched training subset.
        space: name of the extractor, for the output.

    Returns:
        Same keys as `memorisation_audit` (``_d_train``/``_nearest_train`` private).
    """
    mu, sd = f_train.mean(axis=0), f_train.std(axis=0)
    sd = np.where(sd > 1e-8, sd, 1.0)
    tr, ho, sy = ((np.asarray(f, np.float64) - mu) / sd for f in (f_train, f_heldout, f_synthetic))
    return _audit(tr, ho, sy, alpha, seed, f"{space}, z-scored by the training images, L2")


def combine_memorisation(pixel: dict[str, Any], feature: dict[str, Any]) -> dict[str, Any]:
    """One memorisation verdict from the pixel and the feature audit (rule: `MEMORISATION_RULE`).

    Returns:
        The pixel audit's fields, with ``memorisation_suspected`` = both fired, ``pixel_suspected``,
        ``feature_suspected``, ``fired`` (names of the audits that fired), ``decision_rule``,
        ``feature_space`` (the feature audit's public fields) and its private arrays as
        ``_feature_d_train`` / ``_feature_nearest_train``.
    """
    fired = [n for n, a in (("pixels", pixel), ("features", feature)) if a["memorisation_suspected"]]
    return {
        **pixel,
        "memorisation_suspected": len(fired) == 2,
        "pixel_suspected": bool(pixel["memorisation_suspected"]),
        "feature_suspected": bool(feature["memorisation_suspected"]),
        "fired": fired,
        "decision_rule": MEMORISATION_RULE,
        "feature_space": {k: v for k, v in feature.items() if not k.startswith("_")},
        "_feature_d_train": feature["_d_train"],
        "_feature_nearest_train": feature["_nearest_train"],
    }


# --------------------------------------------------------------------------- the card
def _check(name: str, images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = _as_gray(images)
    y = np.asarray(labels).astype(np.int64)
    if len(x) != len(y):
        raise ValueError(f"{name}: {len(x)} images but {len(y)} labels")
    return x, y


def _halves(n: int, groups: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask of half A: a random half of the patients (or images when ``groups`` is None).

    Patients are taken in random order until half A holds about half of the images, so no
    patient has an image on both sides.
    """
    if groups is None:
        mask = np.zeros(n, bool)
        mask[rng.permutation(n)[: n // 2]] = True
        return mask
    patients = np.unique(groups)
    rng.shuffle(patients)
    mask, count = np.zeros(n, bool), 0
    for patient in patients:
        if count >= n // 2:
            break
        members = groups == patient
        mask |= members
        count += int(members.sum())
    return mask


def _prior_matched(sy_y: np.ndarray, ho_y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Mask of synthetic images whose class mix equals the held-out set's (as many as possible)."""
    prior = np.array([(ho_y == c).mean() for c in range(len(CLASS_NAMES))])
    available = np.array([(sy_y == c).sum() for c in range(len(CLASS_NAMES))])
    with np.errstate(divide="ignore"):
        total = int(np.floor(np.min(np.where(prior > 0, available / prior, np.inf))))
    mask = np.zeros(len(sy_y), bool)
    for c, share in enumerate(prior):
        idx = np.flatnonzero(sy_y == c)
        take = min(len(idx), int(round(share * total)))
        mask[rng.choice(idx, take, replace=False)] = True
    return mask


def report_card(
    real_train: np.ndarray,
    train_labels: np.ndarray,
    real_heldout: np.ndarray,
    heldout_labels: np.ndarray,
    synthetic: np.ndarray,
    synthetic_labels: np.ndarray,
    *,
    feature_fn: FeatureFn | None = None,
    feature_name: str | None = None,
    inception_weights: str | os.PathLike | None = None,
    classifier_dir: str | os.PathLike | None = None,
    k: int = 3,
    alpha: float = 0.05,
    seed: int = 0,
    heldout_groups: np.ndarray | None = None,
) -> dict[str, Any]:
    """Score a synthetic set against real images (see the module docstring).

    Floors are honest by construction: the held-out set is halved **by patient** (``heldout_groups``;
    the CC and MLO views of one mass never land in both halves), and every synthetic-vs-real number
    is computed at the floor's sample sizes — the synthetic side is subsampled to half A's size and
    compared with half B, exactly as half A is for the floor. The ``overall`` block subsamples the
    (class-balanced) synthetic set to the held-out set's class prior, so it compares like with like.

    Args:
        real_train: the GAN's training images (N,S,S,1) in [0,1].
        train_labels: their labels, 0 = benign, 1 = malignant (the positive class).
        real_heldout: real images the GAN never saw.
        heldout_labels: their labels (0/1 as above).
        synthetic: the synthetic set's images.
        synthetic_labels: the classes they were generated for (0/1 as above).
        feature_fn: images → (N,D) features; used unless ``inception_weights`` is given.
        feature_name: name of ``feature_fn`` for the output.
        inception_weights: local InceptionV3 no-top weights file (preferred extractor).
        classifier_dir: a mammosynth model dir whose penultimate layer gives features.
        k: neighbourhood size of the manifold metrics.
        alpha: memorisation-audit quantile.
        seed: seed of the random halves / subsets.
        heldout_groups: patient (hashed) id per held-out image; the halves are drawn by patient.
            None: by image, and the card says so (``floor_halves``).

    Returns:
        JSON-ready dict: ``features``, ``overall`` and ``per_class`` blocks (FID, KID, floors,
        precision/recall/density/coverage, SSIM diversity), ``memorisation``.
    """
    tr_x, tr_y = _check("real_train", real_train, train_labels)
    ho_x, ho_y = _check("real_heldout", real_heldout, heldout_labels)
    sy_x, sy_y = _check("synthetic", synthetic, synthetic_labels)
    fn, name = resolve_features(
        feature_fn, feature_name, inception_weights=inception_weights, classifier_dir=classifier_dir
    )
    f_tr, f_ho, f_sy = _extract(fn, name, tr_x, ho_x, sy_x)
    rng = np.random.default_rng(seed)
    groups = _check_groups(heldout_groups, len(ho_x))

    def block(mask_tr, mask_ho, mask_sy, cls_seed) -> dict[str, Any]:
        g = None if groups is None else groups[mask_ho]
        return _distribution_block(f_tr[mask_tr], f_ho[mask_ho], f_sy[mask_sy], g, rng, k, cls_seed)

    everything = np.ones(len(tr_x), bool), np.ones(len(ho_x), bool), _prior_matched(sy_y, ho_y, rng)
    card: dict[str, Any] = {
        "features": name,
        "feature_dim": int(f_tr.shape[1]),
        "counts": {"train": int(len(tr_x)), "heldout": int(len(ho_x)), "synthetic": int(len(sy_x))},
        "overall": block(*everything, seed),
        "per_class": {},
    }
    for c, cname in enumerate(CLASS_NAMES):
        real_c = np.concatenate([tr_x[tr_y == c], ho_x[ho_y == c]])
        card["per_class"][cname] = {
            **block(tr_y == c, ho_y == c, sy_y == c, seed + c + 1),
            "ssim_diversity_synthetic": mean_pairwise_ssim(sy_x[sy_y == c], seed=seed),
            "ssim_diversity_real": mean_pairwise_ssim(real_c, seed=seed),
        }
    card["memorisation"] = combine_memorisation(
        memorisation_audit(tr_x, ho_x, sy_x, alpha=alpha, seed=seed),
        memorisation_audit_features(f_tr, f_ho, f_sy, alpha=alpha, seed=seed, space=name),
    )
    return card


def _extract(fn: FeatureFn, name: str, tr_x: np.ndarray, ho_x: np.ndarray, sy_x: np.ndarray):
    """Features of the training, held-out and synthetic images (logged with the set sizes)."""
    log.info(
        "report card: %d train, %d held-out, %d synthetic; features %s", len(tr_x), len(ho_x), len(sy_x), name
    )
    return fn(tr_x), fn(ho_x), fn(sy_x)


def _check_groups(heldout_groups: np.ndarray | None, n_heldout: int) -> np.ndarray | None:
    groups = None if heldout_groups is None else np.asarray(heldout_groups)
    if groups is not None and len(groups) != n_heldout:
        raise ValueError(f"heldout_groups has {len(groups)} entries for {n_heldout} held-out images")
    return groups


def _distribution_block(
    tr: np.ndarray,
    ho: np.ndarray,
    sy: np.ndarray,
    groups: np.ndarray | None,
    rng: np.random.Generator,
    k: int,
    seed: int,
) -> dict[str, Any]:
    """FID, KID and manifold metrics of one block (overall or a class) against the held-out floor.

    Args:
        tr: training features of the block.
        ho: held-out features of the block, halved (by ``groups`` when given) into A and B.
        sy: synthetic features of the block, subsampled to half A's size.
        groups: patient id per held-out row, or None to halve by image.
        rng: the card's generator (halves and subsets, drawn in a fixed order).
        k: neighbourhood size of the manifold metrics.
        seed: KID's subset seed for this block.
    """
    out: dict[str, Any] = {"n_train": int(len(tr)), "n_heldout": int(len(ho)), "n_synthetic": int(len(sy))}
    if len(ho) < 4 or len(sy) < 2:
        out["note"] = "too few images for distribution metrics"
        return out
    in_a = _halves(len(ho), groups, rng)
    half_a, half_b = ho[in_a], ho[~in_a]
    if min(len(half_a), len(half_b)) < 2:
        out["note"] = "too few held-out patients for a real-vs-real floor"
        return out
    n = len(half_a)
    sy_n = sy[rng.choice(len(sy), min(n, len(sy)), replace=False)]
    out["floor_halves"] = "by patient" if groups is not None else "by image (no patient ids)"
    out["sample_sizes"] = {"half_a": int(n), "half_b": int(len(half_b)), "synthetic": int(len(sy_n))}
    tr_n = tr[rng.choice(len(tr), min(n, len(tr)), replace=False)] if len(tr) >= 2 else None
    out["fid_synthetic_vs_heldout"] = fid(sy_n, half_b)
    out["fid_floor_heldout_halves"] = fid(half_a, half_b)
    if tr_n is not None:
        out["fid_train_vs_heldout"] = fid(tr_n, half_b)
    out["fid_sample_size"] = int(min(n, len(sy)))
    if out["fid_sample_size"] <= ho.shape[1]:
        out["fid_note"] = (
            f"{out['fid_sample_size']} samples per side for {ho.shape[1]} feature "
            "dimensions: FID is noisy here; read it against the floor, and prefer KID"
        )
    kid_syn = kid(sy_n, half_b, seed=seed)  # same sizes as the floor below
    kid_floor = kid(half_a, half_b, seed=seed)
    out["kid_synthetic_vs_heldout"], out["kid_synthetic_vs_heldout_std"] = kid_syn
    out["kid_floor_heldout_halves"], out["kid_floor_std"] = kid_floor
    if min(len(half_a), len(half_b), len(sy_n)) > k:
        # k-NN radii shrink with more points: synthetic (half A's size) vs half B, like the floor
        out["manifold"] = manifold_metrics(half_b, sy_n, k=k)
        out["manifold_floor_heldout_halves"] = manifold_metrics(half_b, half_a, k=k)
    return out


def _public(card: dict[str, Any]) -> dict[str, Any]:
    """Drop the private per-image arrays the figures use."""
    mem = {k: v for k, v in card["memorisation"].items() if not k.startswith("_")}
    return {**card, "memorisation": mem}


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)


def _savefig(fig, path: Path) -> None:
    atomic.write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight"))


def _mosaic_figure(
    plt,
    rows: list[list[np.ndarray]],
    names: list[str],
    size: int,
    n_cols: int,
    title: str,
    col_labels: list[str] | None = None,
):
    gap = max(1, size // 16)
    canvas = np.ones((len(rows) * (size + gap) - gap, n_cols * (size + gap) - gap), np.float32)
    for r, row in enumerate(rows):
        for c, img in enumerate(row[:n_cols]):
            canvas[r * (size + gap) : r * (size + gap) + size, c * (size + gap) : c * (size + gap) + size] = (
                img
            )
    fig, ax = plt.subplots(figsize=(1.1 * n_cols + 1, 1.1 * len(rows) + 0.4))
    ax.imshow(canvas, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_yticks([r * (size + gap) + size / 2 for r in range(len(rows))], names, fontsize=7)
    if col_labels:
        ax.set_xticks([c * (size + gap) + size / 2 for c in range(len(col_labels))], col_labels, fontsize=7)
    else:
        ax.set_xticks([])
    ax.set_title(title, fontsize=8)
    return fig


def write_report_card(
    real_train: np.ndarray,
    train_labels: np.ndarray,
    real_heldout: np.ndarray,
    heldout_labels: np.ndarray,
    synthetic: np.ndarray,
    synthetic_labels: np.ndarray,
    out_dir: str | os.PathLike,
    *,
    n_show: int = 8,
    **kwargs: Any,
) -> dict[str, Any]:
    """`report_card`, written with its figures to ``out_dir``.

    Writes ``report_card.json``, ``samples_per_class.png`` (real vs synthetic rows per class) and
    ``closest_pairs.png`` (synthetic images nearest to a training image, next to it).

    Returns:
        The card as written to JSON, with ``figures`` (file names).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    card = report_card(
        real_train, train_labels, real_heldout, heldout_labels, synthetic, synthetic_labels, **kwargs
    )
    tr_x, tr_y = _check("real_train", real_train, train_labels)
    ho_x, ho_y = _check("real_heldout", real_heldout, heldout_labels)
    sy_x, sy_y = _check("synthetic", synthetic, synthetic_labels)
    rng = np.random.default_rng(0)

    real_all = np.concatenate([tr_x, ho_x])
    real_y = np.concatenate([tr_y, ho_y])
    rows, names = [], []
    for c, cname in enumerate(CLASS_NAMES):
        for src, lab, kind in ((real_all, real_y, "real"), (sy_x, sy_y, "synthetic")):
            pool = np.flatnonzero(lab == c)
            pick = rng.choice(pool, min(n_show, len(pool)), replace=False) if len(pool) else []
            rows.append([src[i, ..., 0] for i in pick])
            names.append(f"{cname}\n{kind}")
    # One mosaic per figure: a single imshow renders far faster than a grid of axes.
    fig = _mosaic_figure(plt, rows, names, tr_x.shape[1], n_show, "real vs synthetic per class")
    _savefig(fig, out / "samples_per_class.png")
    plt.close(fig)

    mem = card["memorisation"]
    order = np.argsort(mem["_d_train"])[:n_show]
    pair_rows = [[sy_x[i, ..., 0] for i in order], [tr_x[mem["_nearest_train"][i], ..., 0] for i in order]]
    dists = [f"d={mem['_d_train'][i]:.2f}" for i in order]
    title = f"closest synthetic/training pairs (flagged below d={mem['threshold']:.2f})"
    fig = _mosaic_figure(
        plt, pair_rows, ["synthetic", "nearest\ntrain"], tr_x.shape[1], n_show, title, col_labels=dists
    )
    _savefig(fig, out / "closest_pairs.png")
    plt.close(fig)
    figs = ["samples_per_class.png", "closest_pairs.png"]
    if "_feature_d_train" in mem:  # the same pairs view in the feature space, for a human to judge
        order = np.argsort(mem["_feature_d_train"])[:n_show]
        rows = [
            [sy_x[i, ..., 0] for i in order],
            [tr_x[mem["_feature_nearest_train"][i], ..., 0] for i in order],
        ]
        dists = [f"d={mem['_feature_d_train'][i]:.1f}" for i in order]
        threshold = mem["feature_space"]["threshold"]
        title = f"closest pairs in {card['features']} features (flagged below d={threshold:.1f})"
        fig = _mosaic_figure(
            plt, rows, ["synthetic", "nearest\ntrain"], tr_x.shape[1], n_show, title, col_labels=dists
        )
        _savefig(fig, out / "closest_pairs_features.png")
        plt.close(fig)
        figs.append("closest_pairs_features.png")

    public = {**_public(card), "figures": figs}
    atomic.write_text(out / "report_card.json", json.dumps(public, indent=2))
    return public


def run_quality(
    prepared_dir: str | os.PathLike,
    synthetic_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    heldout_split: str = "val",
    classifier_dir: str | os.PathLike | None = None,
    inception_weights: str | os.PathLike | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Report card from directories (see `write_report_card`).

    GAN training = ``train`` of the prepared set, held-out = ``heldout_split`` (default ``val``; the
    GAN never sees it), synthetic = the synthetic set.
    """
    from mammosynth.data import shards

    tr_x, tr_y, _ = shards.read_split(prepared_dir, "train")
    ho_x, ho_y, ho_ids = shards.read_split(prepared_dir, heldout_split)
    groups = _patient_groups(prepared_dir, heldout_split, ho_ids)
    sy_x, sy_y, _ = shards.read_split(synthetic_dir, "train")
    if sy_x.shape[1:] != tr_x.shape[1:]:
        raise ValueError(
            f"{synthetic_dir}: synthetic images {sy_x.shape[1:]} differ from real "
            f"{tr_x.shape[1:]} in {prepared_dir}; sample at the prepared image size"
        )
    return write_report_card(
        tr_x,
        tr_y,
        ho_x,
        ho_y,
        sy_x,
        sy_y,
        out_dir,
        classifier_dir=classifier_dir,
        inception_weights=inception_weights,
        seed=seed,
        heldout_groups=groups,
    )


def _patient_groups(prepared_dir, split: str, image_ids: np.ndarray) -> np.ndarray | None:
    """Hashed patient id per image of ``split`` from the prepared set's ``patients.json`` (or None)."""
    from mammosynth.preprocess import read_patients

    patients = read_patients(prepared_dir) or {}
    mapping = patients.get("image_patient", {}).get(split)
    if not mapping or any(str(i) not in mapping for i in image_ids):
        log.warning("report card: no patient ids for the %s split; floor halves drawn by image", split)
        return None
    return np.array([mapping[str(i)] for i in image_ids])


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mammosynth quality", description=__doc__.splitlines()[0])
    p.add_argument("--prepared-dir", required=True, help="real prepared set (train = GAN training)")
    p.add_argument("--synthetic-dir", required=True, help="synthetic set from `mammosynth synthesize`")
    p.add_argument("--out-dir", required=True, help="where report_card.json and figures go")
    p.add_argument("--heldout-split", default="val")
    p.add_argument("--classifier-dir", default=None, help="classifier whose penultimate layer gives features")
    p.add_argument("--inception-weights", default=None, help="local InceptionV3 no-top weights (.h5)")
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the command line (``python -m mammosynth.quality``).

    Args:
        argv: arguments (default: ``sys.argv[1:]``).

    Returns:
        The process exit status.
    """
    args = _parser().parse_args(argv)
    setup_logging()
    card = run_quality(
        args.prepared_dir,
        args.synthetic_dir,
        args.out_dir,
        heldout_split=args.heldout_split,
        classifier_dir=args.classifier_dir,
        inception_weights=args.inception_weights,
        seed=args.seed,
    )
    print(
        json.dumps(
            {
                "features": card["features"],
                "overall": card["overall"],
                "memorisation_suspected": card["memorisation"]["memorisation_suspected"],
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


def _summarise_leaves(values: list[Any]) -> Any:
    first = values[0]
    if isinstance(first, dict):
        return {k: _summarise_leaves([v.get(k) for v in values if isinstance(v, dict)]) for k in first}
    nums = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if len(nums) == len(values) and nums:
        return {"mean": float(np.mean(nums)), "min": float(min(nums)), "max": float(max(nums))}
    return first


def summarise_cards(cards: list[dict[str, Any]], out_dir: str | os.PathLike) -> dict[str, Any]:
    """One report card per generator summarised: each number as mean and range over the generators.

    Args:
        cards: the per-generator cards (`run_quality` results), in generator order.
        out_dir: where ``report_card.json`` is written (the per-generator cards sit in ``gan-seed-<g>/``).

    Returns:
        ``{"n_generators", "summary": {block: {metric: {"mean", "min", "max"}}}, "per_generator": [...],
        **the first generator's card}`` (the first card's keys keep existing readers working).
    """
    summary = {
        k: _summarise_leaves([c.get(k) for c in cards]) for k in ("overall", "per_class") if k in cards[0]
    }
    card = {**cards[0], "n_generators": len(cards), "summary": summary, "per_generator": cards}
    from mammosynth.atomic import write_text

    write_text(Path(out_dir) / "report_card.json", json.dumps(card, indent=2, default=str) + "\n")
    return card

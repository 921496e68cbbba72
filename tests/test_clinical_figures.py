"""The clinical figures render on small generated data, and every one comes with a caption."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mammosynth import clinical, figures, stats
from mammosynth.gan import _grid_png

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def study():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 40)
    probs = {
        arm: {str(s): 1 / (1 + np.exp(-(rng.normal(0, 1, 80) + sep * (2 * y - 1)))) for s in range(2)}
        for arm, sep in (("real", 0.5), ("real+gan", 0.7))
    }
    meta = pd.DataFrame(
        {
            "mass_shape": rng.choice(["OVAL", "IRREGULAR"], 80, p=[0.9, 0.1]),
            "mass_margins": rng.choice(["SPICULATED", "CIRCUMSCRIBED"], 80),
            "breast_density": rng.choice(["2", "3"], 80),
            "subtlety": rng.choice(["3", "5"], 80),
            "view": rng.choice(["CC", "MLO"], 80),
        }
    )
    return y, probs, meta


def _ok(fig, tmp_path, *words):
    assert isinstance(fig, figures.Figure)
    assert fig.path.parent == tmp_path and fig.path.read_bytes()[:8] == PNG and fig.path.stat().st_size > 2000
    for w in words:
        assert w in fig.caption, (w, fig.caption)


def test_roc_band_pr_reliability_subgroups(study, tmp_path):
    y, probs, meta = study
    _ok(
        figures.roc_band_figure(y, probs, tmp_path / "roc.png", n_boot=50),
        tmp_path,
        "real+gan: seeds 0, 1",
        "bootstrap",
    )
    _ok(figures.pr_figure(y, probs, tmp_path / "pr.png"), tmp_path, "80 images", "50% malignant")
    readouts = {a: clinical.arm_readout(y, p, metadata=meta, n_boot=50) for a, p in probs.items()}
    _ok(
        figures.reliability_figure(readouts, tmp_path / "rel.png"),
        tmp_path,
        "10 equal-width bins",
        "real: seeds 0, 1",
    )
    subs = {a: r["subgroups"] for a, r in readouts.items()}
    n_small = sum(r["too_small"] for r in subs["real"])
    assert n_small >= 1  # IRREGULAR holds ~8 images: kept, marked
    _ok(
        figures.subgroup_figure(subs, tmp_path / "sub.png"),
        tmp_path,
        f"{n_small} level(s) below the minimum size",
    )


def test_learning_curves_from_history_files(tmp_path):
    for s, epochs in (("0", 5), ("1", 3)):  # seed 1 early-stopped
        d = tmp_path / "arm" / f"seed-{s}"
        d.mkdir(parents=True)
        hist = [
            {"loss": 1 / (e + 1), "auc": 0.5 + e / 20, "val_loss": 1.2 / (e + 1), "val_auc": 0.5 + e / 30}
            for e in range(epochs)
        ]
        (d / "history.json").write_text(json.dumps(hist))
    hists = figures.load_histories(tmp_path / "arm")
    assert sorted(hists) == ["0", "1"] and len(hists["1"]) == 3
    ep, mean, lo, hi = figures._curve_band(hists, "val_auc")
    assert ep.tolist() == [1, 2, 3, 4, 5] and mean[4] == pytest.approx(0.5 + 4 / 30) and lo[0] == hi[0]
    out = tmp_path / "lc"
    out.mkdir()
    _ok(
        figures.learning_curves_figure({"real": hists}, out / "lc.png"),
        out,
        "real: seeds 0, 1",
        "early stopping",
    )
    with pytest.raises(FileNotFoundError, match="history.json"):
        figures.load_histories(tmp_path / "nowhere")


def test_gan_figure_reads_losses_and_sample_grids(tmp_path):
    gan = tmp_path / "gan"
    gan.mkdir()
    steps = np.arange(0, 101, 10)
    pd.DataFrame(
        {
            "step": steps,
            "d_loss": 1.3 - steps / 500,
            "g_loss": 0.7 + steps / 500,
            "d_real": 0.6,
            "d_fake": 0.4,
        }
    ).to_csv(gan / "losses.csv", index=False)
    rng = np.random.default_rng(1)
    for st in (20, 40, 60, 80, 100):
        _grid_png(rng.uniform(0, 1, (8, 16, 16, 1)), 2, gan / "samples" / f"step-{st:06d}.png")
    out = tmp_path / "figs"
    out.mkdir()
    fig = figures.gan_figure(gan, out / "gan.png", max_samples=3)
    _ok(fig, out, "d_loss, g_loss", "d_real, d_fake", "samples at 3 steps")
    with pytest.raises(FileNotFoundError, match="losses.csv"):
        figures.gan_figure(tmp_path / "figs", out / "x.png")


def test_every_evaluation_figure_has_a_caption(study):
    _, probs, _ = study
    metrics = {
        "threshold": 0.5,
        "test_set": {"n": 80},
        "arms": {a: {"per_seed": {s: {} for s in p}} for a, p in probs.items()},
    }
    for key in figures.FIGURE_FILES:
        text = figures.caption(key, metrics)
        assert "real: 2 seed(s)" in text and "real+gan" in text and "80 images" in text
    assert "threshold 0.5" in figures.caption("confusion", metrics)
    with pytest.raises(KeyError):
        figures.caption("nope", metrics)


@pytest.mark.parametrize(
    "data_source, name",
    [
        ("phantom", "phantom test set"),
        ("cbis-ddsm", "real test set"),
        ("table", "real test set"),
        (None, "shared test set"),
    ],
)
def test_captions_name_the_test_set_from_the_data_source(study, tmp_path, data_source, name):
    """Every caption that names the test set builds the name from the run's data source (no fixed 'real')."""
    y, probs, _ = study
    metrics = {
        "test_set": {"n": 80},
        "arms": {a: {"per_seed": {}} for a in probs},
        "data_source": data_source,
    }
    texts = [figures.caption(key, metrics) for key in figures.FIGURE_FILES]
    texts.append(
        figures.roc_band_figure(y, probs, tmp_path / "roc.png", n_boot=20, data_source=data_source).caption
    )
    texts.append(figures.pr_figure(y, probs, tmp_path / "pr.png", data_source=data_source).caption)
    others = {"phantom test set", "real test set", "shared test set"} - {name}
    for text in texts:
        assert f"on the {name}" in text and not [o for o in others if o in text], text


def test_forest_figure_still_renders(study, tmp_path):
    y, probs, _ = study
    comps = [
        {
            "arm": "real+gan",
            "baseline": "real",
            **stats.compare_arms(y, probs["real+gan"], probs["real"], n_boot=50),
        }
    ]
    path = figures.forest_figure(comps, tmp_path / "forest.png")
    assert path.read_bytes()[:8] == PNG


def test_render_clinical_from_evaluate_files(study, tmp_path):
    y, probs, meta = study
    ids = [f"img-{i:03d}" for i in range(len(y))]
    rows = [
        {"arm": a, "seed": s, "image_id": i, "label_id": t, "prob": q}
        for a, by_seed in probs.items()
        for s, p in by_seed.items()
        for i, t, q in zip(ids, y, p, strict=True)
    ]
    pd.DataFrame(rows).to_csv(tmp_path / "test_predictions.csv", index=False)
    meta.assign(image_id=ids).to_csv(tmp_path / "index.csv", index=False)
    arm_dir = tmp_path / "arms" / "real"
    for s in ("0", "1"):
        (arm_dir / f"seed-{s}").mkdir(parents=True)
        (arm_dir / f"seed-{s}" / "history.json").write_text(
            json.dumps([{"loss": 0.7, "val_loss": 0.8, "auc": 0.6, "val_auc": 0.55}] * 3)
        )
    (arm_dir / "arm.json").write_text(json.dumps({"arm": "real"}))
    metrics = {
        "arms": {a: {"n_seeds": 2, "per_seed": {}} for a in probs},
        "n_bootstrap": 50,
        "comparisons": [],
    }
    readout = clinical.evaluation_readout(
        metrics, tmp_path / "test_predictions.csv", index_csv=tmp_path / "index.csv"
    )
    figs = figures.render_clinical(
        tmp_path / "figs", tmp_path / "test_predictions.csv", readout, arm_dirs=[arm_dir], n_boot=50
    )
    assert set(figs) == set(figures.CLINICAL_FIGURE_FILES) - {"gan_curves"}
    for key, fig in figs.items():
        assert (
            fig.path.name == figures.CLINICAL_FIGURE_FILES[key]
            and fig.path.read_bytes()[:8] == PNG
            and fig.caption
        )

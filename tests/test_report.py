"""mammosynth.report / figures: every section renders for a tiny run; missing inputs say so."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_evaluate import write_arm_dirs  # the arm-dir fixture generator (tests/ is on sys.path)

from mammosynth import evaluate, figures, report

SECTIONS = [
    "Headline",
    "Results per arm",
    "Paired comparisons",
    "ROC curves and per-seed AUC",
    "Confusion matrices",
    "Synthetic samples next to real ones",
    "Generator report card",
    "Data, seeds and how to re-run",
    "The study's published numbers (context, not our result)",
    "Statistical methods",
]


@pytest.fixture(scope="module")
def eval_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("report")
    dirs = write_arm_dirs(
        root / "arms", {"real": 0.4, "real+aug": 0.5, "real+synthetic@0.5": 0.6}, seeds=(0, 1), n_test=60
    )
    evaluate.run_evaluate(
        dirs,
        root / "eval",
        n_bootstrap=100,
        seed=0,
        context={
            "preset": "tiny",
            "split": {"val_fraction": 0.15, "seed": 2026, "level": "patient"},
            "inputs": {"prepared_set": {"sha256": "ab" * 32, "n_train": 120}},
            "config": {"seeds": [0, 1], "classifier": {"model": "simple_cnn", "epochs": 2}},
        },
    )
    return root / "eval"


def _grid(path: Path, value: int) -> str:
    Image.fromarray(np.full((32, 64), value, np.uint8)).save(path)
    return str(path)


def test_report_renders_every_section(eval_dir, tmp_path):
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    figs = figures.render_all(metrics, tmp_path / "out" / "figures", eval_dir / "test_predictions.csv")
    assert set(figs) == set(figures.FIGURE_FILES)
    assert all(
        Path(p).name == figures.FIGURE_FILES[k] and Path(p).stat().st_size > 1000 for k, p in figs.items()
    )
    grids = {
        "benign": {"real": _grid(tmp_path / "rb.png", 50), "synthetic": _grid(tmp_path / "sb.png", 90)},
        "malignant": {"real": _grid(tmp_path / "rm.png", 150), "synthetic": _grid(tmp_path / "sm.png", 200)},
    }
    card = {
        "fid": {"synthetic_vs_real": 41.2, "real_vs_real_floor": 12.5},
        "kid": 0.031,
        "precision": 0.62,
        "recall": 0.41,
        "memorisation_share": 0.0,
        "per_class": {
            "benign": {"fid": 40.1, "diversity": 0.3},
            "malignant": {"fid": 44.0, "diversity": 0.28},
        },
    }
    context = {k: v for k, v in metrics.items() if k not in evaluate.CONTRACT_KEYS}
    out = tmp_path / "out"
    res = report.write_report(
        out, metrics=metrics, context=context, figures=figs, sample_grids=grids, report_card=card
    )
    md = Path(res["markdown"]).read_text()
    html = Path(res["html"]).read_text()
    for title in SECTIONS:
        assert f"## {title}" in md or f"### {title}" in md, title
        assert title.replace("'", "&#x27;") in html, title
    # Every image the markdown references exists next to it; the HTML embeds them all.
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(links) == 4 + 4  # four figures + four sample grids
    assert all((out / link).is_file() for link in links)
    assert html.count("src='data:image/png;base64,") == len(links)
    # The study-style table: per-arm train/test accuracy and AUC as mean ± SD, and Δ vs both baselines.
    arm = metrics["arms"]["real+synthetic@0.5"]
    assert f"{arm['summary']['auc']['mean']:.3f} ± {arm['summary']['auc']['sd']:.3f}" in md
    comp = next(
        c for c in metrics["comparisons"] if c["arm"] == "real+synthetic@0.5" and c["baseline"] == "real"
    )
    assert f"{comp['delta']:+.3f}" in md and comp["test"] in md
    # Report card, context and the published numbers are rendered generically.
    assert "real_vs_real_floor" in md and "memorisation_share" in md and "diversity" in md
    assert "ab" * 32 in md and "simple_cnn" in md and "val_fraction" in md
    assert "scikit-learn" in md and metrics["arms"]["real"]["predictions_sha256"]["0"][:12] in md
    assert "0.89" in md and "cherry-picked" in md and "not our result" in md.lower()
    assert metrics["conclusion"].split("\n\n")[0] in md


def test_report_without_optional_inputs_says_not_available(eval_dir, tmp_path):
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    res = report.write_report(
        tmp_path, metrics=metrics, context={}, figures=None, sample_grids=None, report_card=None
    )
    md = Path(res["markdown"]).read_text()
    assert md.count("not available") >= 5  # 4 figures, sample grids, report card, context
    assert Path(res["html"]).exists()
    # A sample grid pointing at a missing file degrades the same way.
    md2 = Path(
        report.write_report(
            tmp_path / "b", metrics=metrics, context={}, sample_grids={"benign": str(tmp_path / "nope.png")}
        )["markdown"]
    ).read_text()
    assert "benign: not available" in md2


def test_report_main_from_eval_dir(eval_dir, tmp_path, capsys):
    card = tmp_path / "card.json"
    card.write_text(json.dumps({"fid": 33.0}))
    out = tmp_path / "r"
    assert report.main(["--eval-dir", str(eval_dir), "--out-dir", str(out), "--report-card", str(card)]) == 0
    md = (out / "report.md").read_text()
    assert all((out / "figures" / name).is_file() for name in figures.FIGURE_FILES.values())
    assert "figures/roc_curves.png" in md and "| fid | 33.000" in md and "preset" in md
    assert "report.html" in capsys.readouterr().out


@pytest.mark.parametrize("arms", [{"real": 0.5}, {"real": 0.5, "real+synthetic": 0.9}])
def test_single_seed_and_single_arm_runs_render(tmp_path, arms):
    dirs = write_arm_dirs(tmp_path / "arms", arms, seeds=(0,), n_test=40)
    evaluate.run_evaluate(dirs, tmp_path / "eval", n_bootstrap=50)
    assert report.main(["--eval-dir", str(tmp_path / "eval")]) == 0
    md = (tmp_path / "eval" / "report.md").read_text()
    assert "from a single seed" in md and "(1 seed)" in md
    if len(arms) == 1:
        assert "no comparison between arms is possible" in md and "Comparisons: not available" in md
    else:
        assert "too few seeds for an across-seed interval" in md


def test_external_test_set_section_beside_the_internal_one(tmp_path):
    from test_evaluate import add_external

    dirs = write_arm_dirs(
        tmp_path / "arms", {"real": 0.4, "real+synthetic@0.5": 1.8}, seeds=(0, 1, 2, 3), n_test=200
    )
    add_external(dirs, {"real": 0.6, "real+synthetic@0.5": 0.6})
    metrics = evaluate.run_evaluate(dirs, tmp_path / "eval", n_bootstrap=100)
    metrics["external"]["set"] = {
        "source": "s3://site-b/labels",
        "data_source": "table",
        "patients_also_internal": 0,
    }
    res = report.write_report(tmp_path / "out", metrics=metrics)
    md = Path(res["markdown"]).read_text()
    html = Path(res["html"]).read_text()
    assert res["sections"].index("External test set") == res["sections"].index("Results") + 1
    ext_auc = metrics["external"]["arms"]["real+synthetic@0.5"]["summary"]["auc"]["mean"]
    section = md.split("## External test set", 1)[1].split("\n## ", 1)[0]
    assert f"{ext_auc:.3f}" in section and "160 images (80 malignant" in section
    assert "s3://site-b/labels" in section and "None of its patients sit in the internal set" in section
    sentence = metrics["external"]["agreement"]["sentence"]
    assert "disagree" in sentence and sentence in section
    verdict = md.split("## Verdict", 1)[1].split("\n## ", 1)[0]
    assert sentence in verdict  # the headline says whether internal and external agree
    assert "id='external-table'" in html or 'id="external-table"' in html
    # With the figures rendered, the section shows the external forest plot (the internal one stays apart).
    rendered = figures.render_all(metrics, tmp_path / "figs")
    assert Path(rendered["external_forest"]).name == figures.EXTERNAL_FIGURE_FILES["external_forest"]
    md2 = Path(
        report.write_report(tmp_path / "out3", metrics=metrics, figures=rendered)["markdown"]
    ).read_text()
    section2 = md2.split("## External test set", 1)[1].split("\n## ", 1)[0]
    assert "on the external test set, with 95% CIs" in section2 and "![" in section2
    # Without external predictions there is no such section.
    plain = evaluate.run_evaluate(
        write_arm_dirs(tmp_path / "b", {"real": 0.4, "real+synthetic@0.5": 1.8}),
        tmp_path / "e2",
        n_bootstrap=100,
    )
    assert "External test set" not in report.write_report(tmp_path / "out2", metrics=plain)["sections"]


@pytest.mark.parametrize("source, name", [("phantom", "phantom test set"), ("cbis-ddsm", "real test set")])
def test_every_figure_caption_names_the_test_set_of_the_run(eval_dir, tmp_path, source, name):
    """Phantom data is called phantom in every caption (clinical figures included): the figures name it."""
    from mammosynth import clinical

    metrics = {**json.loads((eval_dir / "metrics.json").read_text()), "data_source": source}
    metrics["conclusion"] = evaluate.conclusion(metrics)  # as the report step rewrites it
    preds = eval_dir / "test_predictions.csv"
    readout = clinical.evaluation_readout(metrics, preds, phantom=source == "phantom", n_boot=50)
    clinical_figs = figures.render_clinical(tmp_path / "figs", preds, readout, n_boot=50, data_source=source)
    eval_figs = figures.render_all(metrics, tmp_path / "figs", preds)
    _, captions = report._place_all(eval_figs, clinical_figs, metrics, tmp_path)
    naming = [c for c in captions.values() if "test set" in c]
    assert len(naming) >= 6 and all(f"the {name}" in c for c in naming), naming
    out = report.write_report(
        tmp_path / "out", metrics=metrics, figures=eval_figs, readout=readout, clinical_figures=clinical_figs
    )
    md = Path(out["markdown"]).read_text()
    other = {"phantom test set", "real test set", "shared test set"} - {name}
    assert f"the {name}" in md and not [o for o in other if o in md]


def test_the_report_keeps_figure_captions_as_the_figures_wrote_them(tmp_path):
    """No rewriting in the report: a Figure's caption is printed as given, whatever the data source."""
    png = Path(_grid(tmp_path / "f.png", 80))
    clinical = {"roc_band": figures.Figure(png, "ROC on the real test set (60 images)")}
    _, captions = report._place_all({}, clinical, {"data_source": "phantom", "arms": {}}, tmp_path)
    assert captions["roc_band"] == "ROC on the real test set (60 images)"

"""The report as a reader sees it: first screen (verdict, warnings, results table, forest) in a real
headless Chromium, clinical sections below, report-card figure names = files in assets/."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from browser_check import element_boxes, find_chromium
from PIL import Image
from test_evaluate import write_arm_dirs

from mammosynth import clinical, evaluate, figures, report

FIRST_SCREEN_PX = 1200
FIRST_SCREEN_IDS = ["verdict", "results-table", "warnings"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A constructed run folder written through the same functions the report step uses."""
    root = tmp_path_factory.mktemp("first-screen")
    dirs = write_arm_dirs(root / "arms", {"real": 0.4, "real+synthetic": 0.6}, seeds=(0, 1), n_test=60)
    evaluate.run_evaluate(dirs, root / "eval", n_bootstrap=100, seed=0)
    metrics = json.loads((root / "eval" / "metrics.json").read_text())
    metrics["data_source"] = "phantom"
    card = {
        "fid": 40.0,
        "fid_floor": 2.0,
        "memorisation": {"memorisation_suspected": True, "fired": ["pixel", "feature"]},
        "figures": ["closest_pairs_features.png"],
    }
    card_dir = root / "card"
    card_dir.mkdir()
    Image.fromarray(np.full((32, 64), 120, np.uint8)).save(card_dir / "closest_pairs_features.png")
    preds = root / "eval" / "test_predictions.csv"
    readout = clinical.evaluation_readout(metrics, preds, report_card=card, phantom=True, n_boot=50)
    out = root / "run"
    report.write_report(
        out,
        metrics=metrics,
        figures=figures.render_all(metrics, out / "figures", preds),
        sample_grids=report._card_figures(card, card_dir, out),
        report_card=card,
        readout=readout,
        clinical_figures=figures.render_clinical(
            out / "figures", preds, readout, n_boot=50, data_source=metrics["data_source"]
        ),
    )
    return out


def test_first_screen_order_and_sections(run_dir):
    md = (run_dir / "report.md").read_text()
    heads = re.findall(r"^##+ (.+)$", md, flags=re.M)
    assert heads[:4] == ["Verdict", "Warnings", "Results", "Matched comparisons"]
    for title in ("Clinical operating points", "Calibration and precision–recall", "Training curves"):
        assert title in heads
    assert "phantom data" in md and "memorisation suspected" in md
    assert "sensitivity at 90% specificity" in md and "Brier (ensemble)" in md
    html = (run_dir / "report.html").read_text()
    assert "id='results-table'" in html and "<details" in html
    # one self-contained file: no image is linked, every one is a data URI
    assert "<img" in html and not re.search(r"<img[^>]+src='(?!data:)", html)


def test_report_card_figures_keep_their_names(run_dir):
    assert (run_dir / "assets" / "closest_pairs_features.png").is_file()
    assert "assets/closest_pairs_features.png" in (run_dir / "report.md").read_text()


@pytest.mark.skipif(
    find_chromium() is None,
    reason="headless Chromium not installed (run .ci/install-chromium, or set $CHROMIUM): browser check skipped",
)
def test_first_screen_in_chromium(run_dir, tmp_path):
    res = element_boxes(run_dir / "report.html", FIRST_SCREEN_IDS, screenshot=tmp_path / "shot.png")
    for key in FIRST_SCREEN_IDS:
        box = res["boxes"][key]
        assert box is not None, f"#{key} missing from the rendered report"
        assert box["height"] > 0 and box["bottom"] <= FIRST_SCREEN_PX, (key, box)
    assert (tmp_path / "shot.png").stat().st_size > 1000

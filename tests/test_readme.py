"""`make readme`: the README's results block is generated from a run's files, never typed."""

from __future__ import annotations

import json

import pytest

from mammosynth import readme

METRICS = {
    "preset": "embedded",
    "seed": 2026,
    "seeds": [0, 1],
    "split_sizes": {"train": {"benign": 10, "malignant": 9}, "test": {"benign": 4, "malignant": 3}},
    "test_set": {"n": 7, "n_malignant": 3, "n_benign": 4},
    "arms": {
        "real": {"auc": 0.7421, "accuracy": 0.66, "summary": {"auc": {"ci95": [0.701, 0.783]}}},
        "real+synthetic": {"auc": 0.7689, "accuracy": 0.7, "summary": {"auc": {"ci95": [0.72, 0.81]}}},
    },
    "comparisons": [
        {
            "arm": "real+synthetic",
            "baseline": "real",
            "delta": 0.0268,
            "ci95": [-0.01, 0.06],
            "p_value": 0.119,
            "test": "DeLong",
        }
    ],
}
VERDICT = {
    "synthetic_helps": False,
    "method": "Holm-adjusted DeLong",
    "comparisons": [
        {
            "arm": "real+synthetic",
            "control": "real",
            "delta": 0.0268,
            "ci95": [-0.01, 0.06],
            "p_value": 0.119,
            "p_adjusted": 0.238,
            "seed_ci95": [-0.02, 0.07],
            "significant": False,
        }
    ],
}
RUN = {
    "run_id": "20261201-1200-embedded",
    "source": "embedded",
    "commit": "abc1234",
    "finished_at": "2026-12-01 12:00 UTC",
    "study_seconds": 169.0,
    "stages": {
        "ingest": {"seconds": 18.0, "share": 0.1065},
        "train-arm": {"seconds": 151.0, "share": 0.8935},
    },
}
CARD = {
    "features": "random-conv",
    "overall": {
        "fid_synthetic_vs_heldout": 0.43,
        "fid_floor_heldout_halves": 0.21,
        "kid_synthetic_vs_heldout": 0.0123,
        "kid_floor_heldout_halves": 0.001,
        "manifold": {"precision": 0.11, "recall": 0.18},
        "manifold_floor_heldout_halves": {"precision": 0.92, "recall": 0.95},
    },
}


def _run_folder(tmp_path, metrics, run=RUN, card=CARD):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    (run_dir / "run.json").write_text(json.dumps(run))
    if card:
        (run_dir / "report_card.json").write_text(json.dumps(card))
    doc = tmp_path / "README.md"
    doc.write_text(f"# t\n\nintro\n{readme.BEGIN}\nold typed numbers 0.683\n{readme.END}\n\n## next\n")
    return run_dir, doc


@pytest.mark.parametrize("with_verdict", [False, True])
def test_make_readme_rewrites_only_the_marked_block(tmp_path, with_verdict):
    metrics = {**METRICS, **({"verdict": VERDICT} if with_verdict else {})}
    run_dir, doc = _run_folder(tmp_path, metrics)
    assert readme.main(["--run", str(run_dir), "--readme", str(doc)]) == 0
    text = doc.read_text()
    assert text.startswith("# t\n\nintro\n") and text.endswith(f"{readme.END}\n\n## next\n")
    assert "0.683" not in text
    for needle in [
        "preset `embedded`",
        "commit `abc1234`",
        "2026-12-01 12:00 UTC",
        "**phantom**",
        "[0, 1]",
        "Split seed 2026",
        "| `real+synthetic` | 0.769 | [0.720, 0.810] |",
        "test set n = 7",
        "precision 0.11 / recall 0.18",
        "0.92 / 0.95",
        "FID 0.43",
        "study 169 s",
        "ingest 18 s (11%)",
    ]:
        assert needle in text, needle
    if with_verdict:
        assert "Does synthetic data help? no**" in text and "Holm-adjusted p 0.238" in text
    else:
        assert "`real+synthetic` vs `real`: ΔAUC 0.027" in text and "p = 0.119 (DeLong)" in text
    # Idempotent: a second run gives the same file.
    readme.main(["--run", str(run_dir), "--readme", str(doc)])
    assert doc.read_text() == text


def test_readme_without_stage_times_or_card_says_so(tmp_path):
    run_dir, doc = _run_folder(tmp_path, METRICS, run={"source": "/data/cbis", "wall_time_s": 300}, card=None)
    readme.main(["--run", str(run_dir), "--readme", str(doc)])
    text = doc.read_text()
    assert "per-stage times not recorded" in text and "report card: not in this run" in text
    assert "**phantom**" not in text


def test_missing_markers_or_run_name_the_fix(tmp_path):
    with pytest.raises(ValueError, match="results:begin"):
        readme.rewrite("no markers", "x")
    with pytest.raises(FileNotFoundError, match="make run"):
        readme.main(["--run", str(tmp_path / "absent"), "--readme", str(tmp_path / "R.md")])


def test_repository_readme_has_the_results_markers():
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert text.count(readme.BEGIN) == 1 and text.count(readme.END) == 1
    assert text.index(readme.BEGIN) < text.index(readme.END)

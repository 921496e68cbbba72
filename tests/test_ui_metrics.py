"""What the Kubeflow UI shows: ΔAUC/CI/Holm-p scalars, labelled ClassificationMetrics, embedded figures."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score
from test_evaluate import write_arm_dirs  # the arm-dir fixture generator (tests/ is on sys.path)

from mammosynth import evaluate, figures, report, stats, study, ui_metrics

ARMS = {"real": 0.4, "real+aug": 0.5, "real+synthetic@1.0": 0.8, "real+aug+synthetic": 0.6}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ui")
    dirs = write_arm_dirs(root / "arms", ARMS, seeds=(0, 1, 2), n_test=80)
    metrics = evaluate.run_evaluate(dirs, root / "eval", n_bootstrap=100, seed=0)
    return dirs, metrics, root


def test_scalars_carry_each_matched_comparisons_answer(run):
    _, metrics, _ = run
    values = ui_metrics.scalars(metrics)
    entries = metrics["verdict"]["comparisons"]
    assert {(e["arm"], e["control"]) for e in entries} == {
        ("real+synthetic@1.0", "real"),
        ("real+aug+synthetic", "real+aug"),
    }
    for e in entries:
        pair = f"{e['arm']} vs {e['control']}"
        assert values[f"dAUC {pair}"] == pytest.approx(e["delta"])
        assert [values[f"dAUC {pair} CI95 lo"], values[f"dAUC {pair} CI95 hi"]] == pytest.approx(e["ci95"])
        seed_ci = [values[f"dAUC {pair} seed CI95 lo"], values[f"dAUC {pair} seed CI95 hi"]]
        assert seed_ci == pytest.approx(e["seed_ci95"])
        assert values[f"p Holm {pair}"] == pytest.approx(e["p_adjusted"])
    assert "dAUC real+synthetic@1.0 vs real" in values  # the readable name the UI lists
    for arm, entry in metrics["arms"].items():
        assert values[f"AUC {arm}"] == pytest.approx(entry["auc"])
        assert values[f"accuracy {arm}"] == pytest.approx(entry["accuracy"])
    helps = metrics["verdict"]["synthetic_helps"]
    assert values["synthetic helps (1 yes, 0 no)"] == float(helps)
    # Only the matched comparisons: the descriptive real+aug vs real pair is not a UI answer.
    assert not [k for k in values if "real+aug vs real" in k]
    assert all(isinstance(v, float) and np.isfinite(v) for v in values.values())


def test_scalars_leave_out_what_is_missing():
    metrics = {
        "arms": {"real": {"auc": 0.6, "accuracy": None}},
        "verdict": {
            "synthetic_helps": None,
            "comparisons": [
                {
                    "arm": "real+synthetic@1.0",
                    "control": "real",
                    "delta": 0.01,
                    "ci95": [-0.02, 0.04],
                    "seed_ci95": [None, None],
                    "p_adjusted": float("nan"),
                }
            ],
        },
    }
    assert ui_metrics.scalars(metrics) == {
        "AUC real": 0.6,
        "dAUC real+synthetic@1.0 vs real": 0.01,
        "dAUC real+synthetic@1.0 vs real CI95 lo": -0.02,
        "dAUC real+synthetic@1.0 vs real CI95 hi": 0.04,
    }


def test_roc_points_are_downsampled_with_both_ends_kept():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 5000)
    p = np.clip(0.3 * y + rng.normal(0.35, 0.25, y.size), 0, 1)
    fpr, tpr, thr = ui_metrics.roc_points(y, p)
    assert 100 < len(fpr) <= ui_metrics.MAX_ROC_POINTS and len(fpr) == len(tpr) == len(thr)
    assert (fpr[0], tpr[0]) == (0.0, 0.0) and (fpr[-1], tpr[-1]) == (1.0, 1.0)
    assert all(0.0 <= t <= 1.0 for t in thr) and np.all(np.diff(fpr) >= 0)
    # Few enough points to stay fast, enough to keep the curve: the area barely moves.
    assert np.trapezoid(tpr, fpr) == pytest.approx(roc_auc_score(y, p), abs=0.005)
    assert len(ui_metrics.roc_points(y[:20], p[:20])[0]) <= 21  # small curves are left whole
    with pytest.raises(ValueError, match="both benign"):
        ui_metrics.roc_points(np.ones(5), np.linspace(0, 1, 5))


def test_train_arm_roc_is_the_labelled_seed_ensemble(run):
    from kfp.dsl import ClassificationMetrics

    dirs, metrics, _ = run
    arm_dir = dirs[2]
    artifact = ClassificationMetrics(name="roc")
    ui_metrics.log_classification(artifact, study.arm_roc_step(arm_dir, source="embedded"))
    meta = artifact.metadata
    assert meta["display_name"] == "ROC real+synthetic@1.0: mean of 3 seeds, phantom test set"
    real = study.arm_roc_step(arm_dir, source="s3://bucket/cbis-ddsm")["metadata"]["display_name"]
    assert real == "ROC real+synthetic@1.0: mean of 3 seeds, real test set"
    assert "malignant = 1 is the positive class" in meta["label_convention"]
    ensemble = metrics["arms"]["real+synthetic@1.0"]["ensemble"]
    assert meta["auc"] == pytest.approx(ensemble["metrics"]["auc"])
    cm = meta["confusionMatrix"]
    assert [a["displayName"] for a in cm["annotationSpecs"]] == ["benign", "malignant"]
    counts = ensemble["confusion"]
    assert [r["row"] for r in cm["rows"]] == [[counts["tn"], counts["fp"]], [counts["fn"], counts["tp"]]]
    assert 2 <= len(meta["confidenceMetrics"]) <= ui_metrics.MAX_ROC_POINTS


def test_deployed_model_roc_names_arm_seed_and_phantom(run):
    dirs, _, _ = run
    chosen = study.final_arm(dirs)
    arm = json.loads((Path(chosen) / "arm.json").read_text())["arm"]
    ui = study.deployed_roc_step(dirs, source="embedded")
    assert ui["metadata"]["display_name"] == f"ROC deployed model: {arm} seed 0, phantom test set"
    assert study.deployed_roc_step(dirs, source="s3://bucket/cbis")["metadata"]["display_name"].endswith(
        "real test set"
    )
    # One seed's predictions, not the ensemble.
    pred = __import__("pandas").read_csv(Path(chosen) / "seed-0" / "predictions.csv")
    want = stats.binary_metrics(pred["label_id"].to_numpy(), pred["prob"].to_numpy())["auc"]
    assert ui["metadata"]["auc"] == pytest.approx(want)
    with pytest.raises(ValueError, match="has no seed 7"):
        ui_metrics.deployed_classification(chosen, 7)


def test_evaluate_step_returns_the_ui_scalars(run, tmp_path):
    dirs, _, _ = run
    out = study.evaluate_step(dirs, str(tmp_path / "eval"), preset="tiny")
    written = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert out == {"scalars": ui_metrics.scalars(written)}
    assert "dAUC real+synthetic@1.0 vs real" in out["scalars"]


# ---- report artifacts with embedded figures --------------------------------------------------------

_ANY_IMAGE = re.compile(r"!\[[^\]]*\]\(([^)]*)\)|<img\b[^>]*\bsrc=['\"]([^'\"]*)['\"]")


def _image_sources(text: str) -> list[str]:
    return [a or b for a, b in _ANY_IMAGE.findall(text)]


def _png(path: Path, size: int, seed: int = 0) -> Path:
    noise = np.random.default_rng(seed).integers(0, 255, (size, size), dtype=np.uint8)  # incompressible
    Image.fromarray(noise).save(path)
    return path


def test_embed_figures_makes_every_image_a_data_uri(tmp_path):
    (tmp_path / "figures").mkdir()
    a = _png(tmp_path / "figures" / "a.png", 16)
    _png(tmp_path / "figures" / "b.png", 16, 1)
    (tmp_path / "figures" / "notes.txt").write_text("x")
    (tmp_path.parent / "outside.png").write_bytes(a.read_bytes())
    md = (
        "# r\n\n![ROC](figures/a.png)\n\ntext\n\n![Forest](figures/b.png)\n\n![gone](figures/missing.png)\n"
        "![text](figures/notes.txt) ![escape](../outside.png)\n"
    )
    out, info = report.embed_figures(md, tmp_path, html_doc=False)
    sources = _image_sources(out)
    assert len(sources) == 2 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert base64.b64decode(sources[0].split(",", 1)[1]) == a.read_bytes()
    assert info["embedded"] == 2 and info["omitted"] == [
        "figures/missing.png",
        "figures/notes.txt",
        "../outside.png",
    ]
    assert "*Figure 'gone' is not embedded here (figures/missing.png is not a file in the run folder)" in out
    assert "![ROC](data:image/png;base64," in out and "text" in out


def test_embed_figures_keeps_within_the_size_budget(tmp_path):
    for i in range(3):
        _png(tmp_path / f"f{i}.png", 200, i)  # ~40 KB each
    size = (tmp_path / "f0.png").stat().st_size
    md = "\n".join(f"![fig {i}](f{i}.png)" for i in range(3))
    out, info = report.embed_figures(md, tmp_path, html_doc=False, max_bytes=int(2.5 * size))
    assert info["embedded"] == 2 and info["omitted"] == ["f2.png"] and info["bytes"] <= 2.5 * size
    assert len(_image_sources(out)) == 2 and all(s.startswith("data:") for s in _image_sources(out))
    assert "Figure 'fig 2' is not embedded here (its" in out and "see f2.png in the run folder" in out
    # HTML already holding data URIs: they count against the budget too.
    html_doc = "".join(
        f"<figure><img alt='fig {i}' src='data:image/png;base64,"
        f"{base64.b64encode((tmp_path / f'f{i}.png').read_bytes()).decode()}'></figure>"
        for i in range(3)
    )
    out, info = report.embed_figures(html_doc, tmp_path, html_doc=True, max_bytes=int(1.5 * size))
    assert info["embedded"] == 1 and len(_image_sources(out)) == 1
    assert "<em>Figure &#x27;fig 1&#x27; is not embedded here" in out


def test_report_artifacts_embed_every_figure_and_the_run_folder_keeps_links(run, tmp_path):
    _, metrics, root = run
    out = tmp_path / "run"
    figs = figures.render_all(metrics, out / "figures", root / "eval" / "test_predictions.csv")
    report.write_report(out, metrics=metrics, figures=figs)
    on_disk = (out / "report.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", on_disk)
    assert links and all((out / link).is_file() for link in links)  # relative, for README/GitHub
    info = report.write_ui_artifacts(out, tmp_path / "ui" / "report.md", tmp_path / "ui" / "report.html")
    md = (tmp_path / "ui" / "report.md").read_text()
    html_doc = (tmp_path / "ui" / "report.html").read_text()
    for text in (md, html_doc):
        sources = _image_sources(text)
        assert len(sources) == len(links), "every figure is embedded"
        assert all(s.startswith("data:image/png;base64,") for s in sources)
    assert info["markdown"]["omitted"] == [] and info["markdown"]["embedded"] == len(links)
    total = sum((out / link).stat().st_size for link in links)
    assert info["markdown"]["bytes"] == total < report.ARTIFACT_IMAGE_BUDGET
    assert (out / "report.md").read_text() == on_disk  # the run folder's copy is untouched


def test_evaluate_component_logs_the_named_scalars(run, tmp_path):
    """The component body (glue) puts the core's scalars on its Metrics artifact, under a display name."""
    pytest.importorskip("kfp")
    from kfp.dsl import Dataset, Metrics, Model

    from components.experiment import evaluate as evaluate_component

    dirs, _, _ = run
    evaluation, metrics = Dataset(uri=str(tmp_path / "evaluation")), Metrics(uri=str(tmp_path / "metrics"))
    arm_results = [Model(uri=d) for d in dirs]
    from mammosynth.config import resolve, stage_view

    view = stage_view(resolve("tiny"), "evaluate")
    evaluate_component.python_func(
        evaluation=evaluation, metrics=metrics, arm_results=arm_results, config=view
    )
    written = json.loads((tmp_path / "evaluation" / "metrics.json").read_text())
    logged = {k: v for k, v in metrics.metadata.items() if k != "display_name"}
    assert logged == ui_metrics.scalars(written) and "dAUC real+synthetic@1.0 vs real" in logged
    assert metrics.metadata["display_name"] == "dAUC, CIs and Holm p per comparison"


def test_roc_names_follow_what_ingest_recorded_not_the_source_string(tmp_path):
    """A phantom uploaded to S3 is still called phantom: the arm's saved model records ingest's data source."""
    from mammosynth import arms as armlib
    from mammosynth.models.io import META_FILE

    (arm_dir,) = write_arm_dirs(tmp_path / "arms", {"real": 0.5}, seeds=(0, 1), n_test=40)
    model_dir = armlib.seed_dir(arm_dir, 0) / armlib.MODEL_DIR
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / META_FILE).write_text(json.dumps({"training": {"data_source": "phantom"}}))
    name = study.arm_roc_step(arm_dir, source="s3://mammosynth/cbis-ddsm")["metadata"]["display_name"]
    assert name.endswith("phantom test set")
    deployed = study.deployed_roc_step([arm_dir], source="s3://mammosynth/cbis-ddsm")["metadata"][
        "display_name"
    ]
    assert deployed.endswith("phantom test set")

"""mammosynth.evaluate: metrics.json contract on fixture arm dirs, id checks, plain-language conclusion."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from mammosynth import evaluate, stats


def write_arm_dirs(
    root: Path,
    signals: dict[str, float],
    seeds=(0, 1, 2),
    n_test: int = 80,
    data_seed: int = 0,
    seed_noise: float = 0.6,
) -> list[str]:
    """Write arm dirs as `mammosynth.train.train_arm` does, with seeded random predictions.

    Each arm's score is ``signal·(2y−1) + case effect + per-seed noise``; the case effect is
    shared by all arms (some masses are just hard), which is what makes the comparisons paired.
    """
    rng = np.random.default_rng(data_seed)
    y = np.r_[np.ones(n_test // 2 - 5, int), np.zeros(n_test - (n_test // 2 - 5), int)]
    ids = np.array([f"case-{i:04d}" for i in range(n_test)])
    case_effect = rng.normal(0, 1.0, n_test)
    dirs = []
    for a_i, (arm, signal) in enumerate(signals.items()):
        arm_dir = root / arm.replace("+", "_").replace("@", "-")
        metrics = {}
        for s in seeds:
            srng = np.random.default_rng([data_seed, a_i, s])
            logit = signal * (2 * y - 1) + case_effect + srng.normal(0, seed_noise, n_test)
            prob = 1 / (1 + np.exp(-logit))
            order = srng.permutation(n_test)  # evaluate must align by id, not by row order
            seed_dir = arm_dir / f"seed-{s}"
            seed_dir.mkdir(parents=True)
            pd.DataFrame({"image_id": ids[order], "label_id": y[order], "prob": prob[order]}).to_csv(
                seed_dir / "predictions.csv", index=False
            )
            tm = {
                "train_accuracy": float(0.8 + 0.01 * s),
                "val_auc": float(0.6 + 0.01 * s),
                "val_accuracy": 0.6,
                "val_loss": 0.7,
                "epochs_run": 2,
                "n_train_real": 120,
                "n_train_synthetic": 60 if "synthetic" in arm else 0,
                "seed": s,
                "params": {"lr": 1e-3},
            }
            (seed_dir / "train_metrics.json").write_text(json.dumps(tm))
            metrics[str(s)] = tm
        (arm_dir / "arm.json").write_text(
            json.dumps({"arm": arm, "seeds": list(seeds), "spec": {"name": arm}, "metrics": metrics})
        )
        dirs.append(str(arm_dir))
    return dirs


ARMS = {"real": 0.5, "real+aug": 0.55, "real+synthetic@0.5": 0.5}


def test_run_evaluate_writes_the_contract(tmp_path):
    dirs = write_arm_dirs(tmp_path / "arms", ARMS)
    out = tmp_path / "eval"
    m = evaluate.run_evaluate(
        dirs, out, n_bootstrap=200, seed=1, context={"preset": "tiny", "config": {"a": 1}}
    )
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk == m
    assert (out / "test_predictions.csv").exists() and (out / "conclusion.md").exists()
    assert list(m["arms"]) == list(ARMS)
    assert m["test_set"] == {
        "n": 80,
        "n_malignant": 35,
        "n_benign": 45,
        "ids_sha256": m["test_set"]["ids_sha256"],
    }
    assert m["seeds"] == [0, 1, 2] and m["preset"] == "tiny" and m["config"] == {"a": 1}
    for arm in ARMS:
        a = m["arms"][arm]
        assert a["n_seeds"] == 3 and set(a["per_seed"]) == {"0", "1", "2"}
        for key in (
            "auc",
            "accuracy",
            "sensitivity",
            "specificity",
            "f1",
            "balanced_accuracy",
            "train_accuracy",
            "val_auc",
        ):
            assert isinstance(a["per_seed"]["0"][key], float)
            assert set(a["summary"][key]) >= {"mean", "sd", "ci95"}
        # Headline is the mean over seeds, recomputed independently here.
        df = pd.read_csv(Path(dirs[list(ARMS).index(arm)]) / "seed-1" / "predictions.csv")
        assert a["per_seed"]["1"]["auc"] == pytest.approx(roc_auc_score(df.label_id, df.prob))
        assert a["auc"] == pytest.approx(np.mean([v["auc"] for v in a["per_seed"].values()]))
        assert a["accuracy"] == pytest.approx(np.mean([v["accuracy"] for v in a["per_seed"].values()]))
        assert a["train_accuracy"] == pytest.approx(0.81)
        lo, hi = a["summary"]["auc"]["ci95"]
        assert lo < a["auc"] < hi
        assert a["auc"] < max(v["auc"] for v in a["per_seed"].values())  # mean, not the best seed
    pairs = {(c["arm"], c["baseline"]) for c in m["comparisons"]}
    assert pairs == {("real+aug", "real"), ("real+synthetic@0.5", "real"), ("real+synthetic@0.5", "real+aug")}
    for c in m["comparisons"]:
        assert c["metric"] == "auc" and c["test"] == stats.TEST_DELONG_ENSEMBLE
        assert c["ci95"][0] < c["delta"] < c["ci95"][1] and 0 <= c["p_value"] <= 1
        assert c["per_seed"]["test"] == stats.TEST_PAIRED_T_SEEDS


def test_run_evaluate_rejects_mismatched_test_ids(tmp_path):
    dirs = write_arm_dirs(tmp_path / "arms", {"real": 0.5, "real+synthetic": 0.5})
    pred = Path(dirs[1]) / "seed-2" / "predictions.csv"
    df = pd.read_csv(pred)
    df.loc[0, "image_id"] = "some-other-case"
    df.to_csv(pred, index=False)
    with pytest.raises(
        ValueError, match=r"arm 'real\+synthetic' seed 2 .*1 test image\(s\) missing, 1 extra"
    ):
        evaluate.run_evaluate(dirs, tmp_path / "eval", n_bootstrap=50)


def test_run_evaluate_rejects_bad_inputs(tmp_path):
    dirs = write_arm_dirs(tmp_path / "arms", {"real": 0.5}, seeds=(0, 1))
    with pytest.raises(ValueError, match="given more than once"):
        evaluate.run_evaluate([dirs[0], dirs[0]], tmp_path / "e1", n_bootstrap=20)
    pred = Path(dirs[0]) / "seed-0" / "predictions.csv"
    df = pd.read_csv(pred)
    df.loc[3, "prob"] = 1.5
    df.to_csv(pred, index=False)
    with pytest.raises(ValueError, match="prob must hold probabilities"):
        evaluate.run_evaluate(dirs, tmp_path / "e2", n_bootstrap=20)
    with pytest.raises(FileNotFoundError, match="arm.json missing"):
        evaluate.run_evaluate([tmp_path], tmp_path / "e3", n_bootstrap=20)


def test_conclusion_null_and_strong_effects(tmp_path):
    null = evaluate.run_evaluate(
        write_arm_dirs(tmp_path / "null", {"real": 0.6, "real+synthetic": 0.6}),
        tmp_path / "e_null",
        n_bootstrap=200,
    )
    text = null["conclusion"]
    comp = null["comparisons"][0]
    assert comp["p_value"] >= 0.05 or comp["per_seed"]["ci95"][0] <= 0
    assert "no significant gain" in text and "best seed" in text
    strong = evaluate.run_evaluate(
        write_arm_dirs(tmp_path / "strong", {"real": 0.3, "real+synthetic": 1.5}),
        tmp_path / "e_strong",
        n_bootstrap=200,
    )
    comp = strong["comparisons"][0]
    assert stats.is_significant_gain(comp)
    assert "no significant gain" not in strong["conclusion"]
    assert "significant gain" in strong["conclusion"] and f"{comp['delta']:+.3f}" in strong["conclusion"]
    # The headline names means over seeds, never the largest single-seed AUC.
    best = max(v["auc"] for v in strong["arms"]["real+synthetic"]["per_seed"].values())
    assert (
        f"{best:.3f}" not in strong["conclusion"].split("\n\n")[0]
        or f"{best:.3f}" == f"{strong['arms']['real+synthetic']['auc']:.3f}"
    )


def test_main_cli(tmp_path, capsys):
    dirs = write_arm_dirs(tmp_path / "arms", {"real": 0.5, "real+aug": 0.5}, seeds=(0, 1))
    rc = evaluate.main(
        [
            "--arm-dirs",
            *dirs,
            "--out-dir",
            str(tmp_path / "e"),
            "--n-bootstrap",
            "50",
            "--context",
            '{"run": "cli"}',
        ]
    )
    assert rc == 0 and "real+aug vs real:" in capsys.readouterr().out
    assert json.loads((tmp_path / "e" / "metrics.json").read_text())["run"] == "cli"


def test_conclusion_says_when_synthetic_data_hurts(tmp_path):
    harm = evaluate.run_evaluate(
        write_arm_dirs(tmp_path / "harm", {"real": 1.5, "real+synthetic": 0.3}),
        tmp_path / "e_harm",
        n_bootstrap=200,
    )
    comp = harm["comparisons"][0]
    assert stats.is_significant_loss(comp)
    headline = harm["conclusion"].split("\n\n")[0]
    assert "No significant gain" in headline and "real+synthetic is significantly worse" in headline


# ------------------------------------------------------------------ verdict (issue 14 items 1, 2, 8)
def test_verdict_augmentation_only_gain_is_not_credited_to_synthetic(tmp_path):
    # aug gives a large gain over real; synthetic adds nothing on top of aug.
    m = evaluate.run_evaluate(
        write_arm_dirs(
            tmp_path / "a",
            {"real": 0.5, "real+aug": 1.6, "real+aug+synthetic": 1.6},
            seeds=(0, 1, 2, 3),
            n_test=200,
        ),
        tmp_path / "e",
        n_bootstrap=200,
    )
    v = m["verdict"]
    assert v["synthetic_helps"] is False
    (entry,) = v["comparisons"]
    assert (entry["arm"], entry["control"]) == ("real+aug+synthetic", "real+aug")
    assert set(entry) >= {
        "arm",
        "control",
        "delta",
        "ci95",
        "p_value",
        "p_adjusted",
        "seed_ci95",
        "significant",
    }
    # The unmatched comparison against real is large and stays in the tables...
    vs_real = next(
        c for c in m["comparisons"] if c["arm"] == "real+aug+synthetic" and c["baseline"] == "real"
    )
    assert stats.is_significant_gain(vs_real) and vs_real["matched"] is False
    # ...but the headline does not say yes.
    assert m["conclusion"].startswith("Does synthetic data help? No significant gain")


def test_verdict_genuine_synthetic_gain_across_seeds(tmp_path):
    m = evaluate.run_evaluate(
        write_arm_dirs(
            tmp_path / "a",
            {"real": 0.4, "real+synthetic@0.5": 1.8, "real+aug": 0.4, "real+aug+synthetic": 0.45},
            seeds=(0, 1, 2, 3),
            n_test=200,
        ),
        tmp_path / "e",
        n_bootstrap=200,
    )
    v = m["verdict"]
    by_arm = {e["arm"]: e for e in v["comparisons"]}
    assert v["synthetic_helps"] is True
    assert by_arm["real+synthetic@0.5"]["control"] == "real" and by_arm["real+synthetic@0.5"]["significant"]
    assert (
        by_arm["real+aug+synthetic"]["control"] == "real+aug"
        and not by_arm["real+aug+synthetic"]["significant"]
    )
    assert m["conclusion"].startswith("Does synthetic data help? Yes")
    assert "real+synthetic@0.5" in m["conclusion"].split("\n\n")[0]


def test_verdict_one_seed_is_null_never_yes(tmp_path):
    m = evaluate.run_evaluate(
        write_arm_dirs(tmp_path / "a", {"real": 0.3, "real+synthetic": 2.0}, seeds=(0,), n_test=200),
        tmp_path / "e",
        n_bootstrap=200,
    )
    assert m["verdict"]["synthetic_helps"] is None
    assert m["verdict"]["comparisons"][0]["significant"] is False
    assert "Not enough seeds to say" in m["conclusion"].split("\n\n")[0]
    assert json.loads((tmp_path / "e" / "metrics.json").read_text())["verdict"]["synthetic_helps"] is None


def test_verdict_holm_adjusts_the_matched_family_and_tstr_is_its_own_question(tmp_path):
    m = evaluate.run_evaluate(
        write_arm_dirs(
            tmp_path / "a",
            {"real": 1.0, "real+synthetic@0.5": 1.1, "real+synthetic@1.0": 0.9, "tstr": 0.2},
            seeds=(0, 1, 2),
        ),
        tmp_path / "e",
        n_bootstrap=200,
        data_source="phantom",
    )
    entries = m["verdict"]["comparisons"]
    raw = [e["p_value"] for e in entries]
    assert [e["p_adjusted"] for e in entries] == pytest.approx(stats.holm_adjust(raw))
    tstr = next(e for e in entries if e["arm"] == "tstr")
    assert tstr["control"] == "real" and tstr["question"] == "can synthetic data replace real data?"
    assert "Can synthetic data replace real data (TSTR)?" in m["conclusion"]
    assert m["data_source"] == "phantom" and "phantom test set" in m["conclusion"]
    assert "real test set" not in m["conclusion"]
    assert "malignant = 1" in m["conclusion"]


def test_test_set_name_follows_the_data_source():
    from mammosynth.provenance import data_source, test_set_name

    assert test_set_name(data_source("embedded")) == "phantom test set"
    assert test_set_name(data_source("s3://bucket/cbis")) == "real test set"
    assert test_set_name(data_source(None, {"data_source": "table"})) == "real test set"
    assert test_set_name(None) == "shared test set"


def add_external(
    dirs: list[str], signals: dict[str, float], seeds=(0, 1, 2, 3), n: int = 160, data_seed: int = 7
):
    """Write seed-<s>/external_predictions.csv into arm dirs (another population: other ids and effects)."""
    rng = np.random.default_rng(data_seed)
    y = np.r_[np.ones(n // 2, int), np.zeros(n - n // 2, int)]
    ids = np.array([f"ext-{i:04d}" for i in range(n)])
    case_effect = rng.normal(0, 1.0, n)
    by_name = {json.loads((Path(d) / "arm.json").read_text())["arm"]: d for d in dirs}
    truth = {}
    for a_i, (arm, signal) in enumerate(signals.items()):
        for s in seeds:
            srng = np.random.default_rng([data_seed, a_i, s, 99])
            prob = 1 / (1 + np.exp(-(signal * (2 * y - 1) + case_effect + srng.normal(0, 0.6, n))))
            path = Path(by_name[arm]) / f"seed-{s}" / "external_predictions.csv"
            pd.DataFrame({"image_id": ids, "label_id": y, "prob": prob}).to_csv(path, index=False)
            truth.setdefault(arm, []).append(roc_auc_score(y, prob))
    return truth


GAIN = {"real": 0.4, "real+synthetic@0.5": 1.8}


def test_external_block_uses_the_same_statistics_and_says_when_verdicts_disagree(tmp_path):
    dirs = write_arm_dirs(tmp_path / "a", GAIN, seeds=(0, 1, 2, 3), n_test=200)
    truth = add_external(dirs, {"real": 0.6, "real+synthetic@0.5": 0.6})  # the gain does not transfer
    m = evaluate.run_evaluate(dirs, tmp_path / "e", n_bootstrap=200)
    ext = m["external"]
    assert m["verdict"]["synthetic_helps"] is True and ext["verdict"]["synthetic_helps"] is False
    assert ext["test_set"]["n"] == 160 and ext["test_set"]["n_malignant"] == 80
    for arm, aucs in truth.items():
        assert ext["arms"][arm]["auc"] == pytest.approx(np.mean(aucs))
        assert (
            ext["arms"][arm]["summary"]["auc"]["ci95"][0]
            < np.mean(aucs)
            < ext["arms"][arm]["summary"]["auc"]["ci95"][1]
        )
    (entry,) = ext["verdict"]["comparisons"]
    assert (
        entry["arm"] == "real+synthetic@0.5"
        and entry["control"] == "real"
        and entry["p_adjusted"] is not None
    )
    assert (
        ext["comparisons"][0]["ci95"][0] < ext["comparisons"][0]["delta"] < ext["comparisons"][0]["ci95"][1]
    )
    assert ext["agreement"]["agree"] is False
    assert "disagree" in ext["agreement"]["sentence"]
    assert (
        "External test set (160 images)" in m["conclusion"]
        and ext["agreement"]["sentence"] in m["conclusion"]
    )
    # The internal numbers are untouched by the external set.
    plain = evaluate.run_evaluate(
        write_arm_dirs(tmp_path / "b", GAIN, seeds=(0, 1, 2, 3), n_test=200), tmp_path / "f", n_bootstrap=200
    )
    assert plain["external"] is None and plain["arms"]["real"]["auc"] == m["arms"]["real"]["auc"]
    assert (
        json.loads((tmp_path / "e" / "metrics.json").read_text())["external"]["agreement"]["agree"] is False
    )


def test_external_agreement_when_the_gain_holds(tmp_path):
    dirs = write_arm_dirs(tmp_path / "a", GAIN, seeds=(0, 1, 2, 3), n_test=200)
    add_external(dirs, {"real": 0.4, "real+synthetic@0.5": 1.8})
    m = evaluate.run_evaluate(dirs, tmp_path / "e", n_bootstrap=200)
    assert m["external"]["agreement"]["agree"] is True
    assert m["external"]["agreement"]["sentence"].startswith(
        "Internal and external test sets agree: synthetic data helps"
    )


def test_external_predictions_must_cover_every_arm_and_seed(tmp_path):
    dirs = write_arm_dirs(tmp_path / "a", GAIN, seeds=(0, 1))
    add_external(dirs, {"real": 0.5}, seeds=(0, 1))
    with pytest.raises(ValueError, match="no external predictions"):
        evaluate.run_evaluate(dirs, tmp_path / "e", n_bootstrap=200)
    add_external(dirs, {"real+synthetic@0.5": 0.5}, seeds=(0,))
    with pytest.raises(ValueError, match="lack external_predictions.csv"):
        evaluate.run_evaluate(dirs, tmp_path / "e", n_bootstrap=200)

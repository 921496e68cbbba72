"""Clinical read-outs against hand computations on a small fixed example, and the warnings."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mammosynth import clinical

# 5 benign, 5 malignant. Hand computations for every number below are in the test comments.
NEG = [0.1, 0.2, 0.3, 0.4, 0.6]
POS = [0.35, 0.5, 0.7, 0.8, 0.9]
Y = np.array([0] * 5 + [1] * 5)
P = np.array(NEG + POS)


def test_sensitivity_at_specificity_by_hand():
    # spec >= 0.8 needs 4 of 5 benign below the threshold: t in (0.4, 0.6] -> t = 0.5 -> 4/5 malignant
    assert clinical.sensitivity_at_specificity(Y, P, 0.8) == pytest.approx(0.8)
    # spec >= 0.9 needs all 5 benign below: t = 0.7 -> 3/5 malignant
    assert clinical.sensitivity_at_specificity(Y, P, 0.9) == pytest.approx(0.6)
    # a perfect ranker reaches sensitivity 1 at specificity 1
    assert clinical.sensitivity_at_specificity([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9], 1.0) == 1.0


def test_specificity_at_sensitivity_by_hand():
    # sens >= 0.9 needs all 5 malignant called: t = 0.35 -> benign below: 0.1, 0.2, 0.3 -> 3/5
    assert clinical.specificity_at_sensitivity(Y, P, 0.9) == pytest.approx(0.6)
    # sens >= 0.8: t = 0.5 -> 4 benign below -> 0.8
    assert clinical.specificity_at_sensitivity(Y, P, 0.8) == pytest.approx(0.8)


def test_threshold_point_wilson_by_hand():
    pt = clinical.threshold_point(Y, P, 0.5)  # 0.5 counts as malignant (P >= threshold)
    assert pt["confusion"] == {"tn": 4, "fp": 1, "fn": 1, "tp": 4}
    assert pt["sensitivity"] == pytest.approx(0.8) and pt["specificity"] == pytest.approx(0.8)
    # Wilson 4/5, z = 1.96: centre 1.18415/1.76829 = 0.66966, half 0.29414 -> [0.3755, 0.9638]
    assert pt["sensitivity_ci95"] == pytest.approx([0.3755, 0.9638], abs=1e-4)
    assert "Wilson" in pt["method"]
    assert clinical.wilson_interval(0, 10) == pytest.approx([0.0, 0.2775], abs=1e-4)
    assert clinical.wilson_interval(0, 0) == [None, None]


def test_operating_points_bootstrap_is_seeded_and_brackets_the_estimate():
    rng = np.random.default_rng(3)
    y = np.repeat([0, 1], 60)
    p = np.clip(rng.normal(0.4 + 0.2 * y, 0.15), 0, 1)
    a = clinical.operating_points(y, p, n_boot=300, seed=7)
    b = clinical.operating_points(y, p, n_boot=300, seed=7)
    assert a == b
    for key in ("sens_at_spec", "spec_at_sens"):
        lo, hi = a[key]["ci"]
        assert lo <= a[key]["estimate"] <= hi and hi - lo > 0
        assert "bootstrap" in a[key]["method"]
    assert a["sens_at_spec"]["estimate"] == clinical.sensitivity_at_specificity(y, p, 0.9)


def test_calibration_by_hand():
    cal = clinical.calibration(Y, P)
    # Brier: benign 0.01+0.04+0.09+0.16+0.36 = 0.66, malignant 0.4225+0.25+0.09+0.04+0.01 = 0.8125
    assert cal["brier"] == pytest.approx(1.4725 / 10)
    # ECE: bins [0.3,0.4) hold 0.3 (benign) and 0.35 (malignant): |0.325 - 0.5| = 0.175 (n=2);
    # the others hold one case each: 0.1+0.2+0.4+0.5+0.6+0.3+0.2+0.1 -> (2.4 + 2*0.175)/10
    assert cal["ece"] == pytest.approx(0.275)
    bins = cal["reliability"]
    assert len(bins) == 10 and [b["n"] for b in bins] == [0, 1, 1, 2, 1, 1, 1, 1, 1, 1]
    assert bins[3]["mean_prob"] == pytest.approx(0.325) and bins[3]["frac_malignant"] == 0.5
    assert bins[0]["mean_prob"] is None
    assert clinical.calibration([0, 1], [0.0, 1.0])["ece"] == 0.0  # p = 1.0 goes to the last bin
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        clinical.calibration([0, 1], [0.2, 1.5])


def test_pr_curve_average_precision_by_hand():
    pr = clinical.pr_curve(Y, P)
    # ranked: 0.9 0.8 0.7 (malignant) 0.6 (benign) 0.5 (mal) 0.4 (ben) 0.35 (mal)
    # precision at each malignant: 1, 1, 1, 4/5, 5/7 -> AP = (3.8 + 5/7) / 5
    assert pr["average_precision"] == pytest.approx((3.8 + 5 / 7) / 5)
    assert pr["prevalence"] == 0.5 and len(pr["precision"]) == len(pr["recall"])


def test_roc_band_by_hand():
    band = clinical.roc_band(Y, P, n_boot=200, seed=1, grid=11)
    assert band["fpr"][0] == 0.0 and band["tpr"][0] == pytest.approx(0.6)  # t = 0.7: 3/5, no false positive
    assert band["tpr"][2] == pytest.approx(0.8)  # fpr 0.2: t = 0.5
    assert band["tpr"][-1] == 1.0
    assert all(lo <= t <= hi for lo, t, hi in zip(band["lo"], band["tpr"], band["hi"], strict=True))


def _meta():
    return pd.DataFrame(
        {
            "mass_shape": ["OVAL"] * 3 + ["IRREGULAR"] * 7,
            "mass_margins": ["CIRCUMSCRIBED"] * 10,
            "breast_density": ["2"] * 10,
            "subtlety": ["3"] * 5 + ["5"] * 5,
            "view": ["CC", "MLO"] * 5,
        }
    )


def test_subgroup_auc_sizes_and_too_small():
    rows = clinical.subgroup_auc(Y, P, _meta(), min_size=6, min_per_class=2, n_boot=200)
    by = {(r["factor"], r["level"]): r for r in rows}
    assert {r["factor"] for r in rows} == set(clinical.SUBGROUP_COLUMNS)
    oval = by[("mass_shape", "OVAL")]  # cases 0-2: all benign -> AUC undefined, kept and marked
    assert (oval["n"], oval["n_malignant"], oval["too_small"], oval["auc"]) == (3, 0, True, None)
    irr = by[("mass_shape", "IRREGULAR")]  # benign 0.4, 0.6 vs all five malignant: 7 of 10 pairs
    assert (irr["n"], irr["n_benign"], irr["too_small"]) == (7, 2, False)
    assert irr["auc"] == pytest.approx(0.7) and irr["ci95"][0] <= 0.7 <= irr["ci95"][1]
    whole = by[("mass_margins", "CIRCUMSCRIBED")]
    assert whole["n"] == 10 and whole["auc"] == pytest.approx(22 / 25)
    assert by[("subtlety", "3")]["too_small"] and by[("subtlety", "3")]["ci95"] == [None, None]


def test_subgroup_delta_against_itself_is_zero():
    rows = clinical.subgroup_delta(Y, P, P, _meta(), min_size=6, min_per_class=2, n_boot=100)
    big = [r for r in rows if not r["too_small"]]
    assert big and all(r["delta"] == 0 and r["delta_ci95"] == [0.0, 0.0] for r in big)


def test_load_metadata_aligns_and_names_missing_ids(tmp_path):
    idx = tmp_path / "index.csv"
    pd.DataFrame(
        {
            "image_id": ["a", "b", "c"],
            "mass_shape": ["OVAL", "", "ROUND"],
            "mass_margins": ["X"] * 3,
            "breast_density": ["1", "2", "3"],
            "subtlety": ["4"] * 3,
            "view": ["CC", "MLO", "CC"],
        }
    ).to_csv(idx, index=False)
    meta = clinical.load_metadata(idx, ["c", "b"])
    assert meta["image_id"].tolist() == ["c", "b"]
    assert meta["mass_shape"].tolist() == ["ROUND", clinical.MISSING_LEVEL]
    with pytest.raises(ValueError, match="1 of 2 test image.*'zz'"):
        clinical.load_metadata(idx, ["a", "zz"])


def test_load_metadata_on_the_vendored_fixture_columns():
    """The ingest index really carries the subgroup columns (guards against a renamed column)."""
    from mammosynth.ingest import INDEX_COLUMNS

    assert set(clinical.SUBGROUP_COLUMNS) <= set(INDEX_COLUMNS)


def test_arm_readout_keys_and_mean_over_seeds():
    out = clinical.arm_readout(Y, {"0": P, "1": 1 - P}, metadata=_meta(), n_boot=100)
    assert out["seeds"] == ["0", "1"]
    assert out["per_seed"]["0"]["sens_at_spec"] == pytest.approx(0.6)
    mean_brier = np.mean([out["per_seed"][s]["brier"] for s in ("0", "1")])
    assert out["mean_over_seeds"]["brier"] == pytest.approx(mean_brier)
    assert out["ensemble"]["calibration"]["brier"] == pytest.approx(0.25)  # ensemble is 0.5 everywhere
    assert out["subgroups"] and "too_small" in out["subgroups"][0]


def _metrics(per_seed, n_seeds=3, source="cbis-ddsm"):
    return {
        "source": source,
        "threshold": 0.5,
        "arms": {"real+aug": {"n_seeds": n_seeds, "per_seed": per_seed}},
    }


def test_warning_collapsed_seed():
    healthy = {"sensitivity": 0.7, "specificity": 0.72}
    per_seed = {"0": {"sensitivity": 0.0, "specificity": 1.0}, "1": healthy, "2": healthy}
    w = clinical.warnings(_metrics(per_seed))
    assert [x["kind"] for x in w] == ["collapsed_seed"]
    assert w[0]["arm"] == "real+aug" and w[0]["seed"] == "0" and "sensitivity 0.000" in w[0]["message"]
    assert clinical.warnings(_metrics({"0": healthy, "1": healthy, "2": healthy})) == []
    flat = {"real+aug": {"1": np.full(10, 0.51), "0": P, "2": P}}
    w = clinical.warnings(_metrics({"0": healthy, "1": healthy, "2": healthy}), probs=flat)
    assert [(x["kind"], x["seed"]) for x in w] == [("collapsed_seed", "1")] and "SD" in w[0]["message"]


def test_warning_memorisation_far_floor_phantom_and_seeds():
    healthy = {"sensitivity": 0.7, "specificity": 0.72}
    card = {
        "memorisation": {
            "memorisation_suspected": True,
            "share_flagged": 0.175,
            "fired": ["pixels", "features"],
        },
        "overall": {"fid_synthetic_vs_heldout": 90.0, "fid_floor_heldout_halves": 20.0},
    }
    w = clinical.warnings(_metrics({"0": healthy}, n_seeds=1, source="embedded"), report_card=card)
    kinds = [x["kind"] for x in w]
    assert kinds == ["phantom_data", "too_few_seeds", "memorisation_suspected", "generator_far_from_floor"]
    assert "17.5%" in w[2]["message"] and "pixels, features" in w[2]["message"]
    assert "FID 90 vs real-vs-real floor 20" in w[3]["message"]
    calm = {
        "memorisation": {"memorisation_suspected": False},
        "overall": {"fid_synthetic_vs_heldout": 25.0, "fid_floor_heldout_halves": 20.0},
    }
    assert clinical.warnings(_metrics({"0": healthy}), report_card=calm, phantom=False) == []


def test_warning_when_only_one_memorisation_audit_fired():
    card = {"memorisation": {"memorisation_suspected": False, "fired": ["pixels"]}}
    w = clinical.warnings(
        _metrics({"0": {"sensitivity": 0.7, "specificity": 0.7}}, n_seeds=3), report_card=card
    )
    assert [x["kind"] for x in w] == ["memorisation_one_audit"] and "pixels fired" in w[0]["message"]


def test_evaluation_readout_from_evaluate_files(tmp_path):
    rng = np.random.default_rng(4)
    n = 60
    ids = [f"img-{i:03d}" for i in range(n)]
    y = np.repeat([0, 1], n // 2)
    rows = []
    for arm in ("real", "real+gan"):
        for seed in ("0", "1", "2"):
            p = np.clip(rng.normal(0.4 + 0.2 * y, 0.15), 0, 1)
            rows += [
                {"arm": arm, "seed": seed, "image_id": i, "label_id": t, "prob": q}
                for i, t, q in zip(ids, y, p, strict=True)
            ]
    pred = pd.DataFrame(rows).sample(frac=1, random_state=0)  # row order must not matter
    pred.to_csv(tmp_path / "test_predictions.csv", index=False)
    meta = _meta().sample(n, replace=True, random_state=1).reset_index(drop=True)
    meta.insert(0, "image_id", ids)
    meta.to_csv(tmp_path / "index.csv", index=False)
    per_seed = {s: {"sensitivity": 0.6, "specificity": 0.6} for s in ("0", "1", "2")}
    metrics = {
        "source": "embedded",
        "threshold": 0.5,
        "n_bootstrap": 100,
        "bootstrap_seed": 0,
        "arms": {
            "real": {"n_seeds": 3, "per_seed": per_seed},
            "real+gan": {"n_seeds": 3, "per_seed": per_seed},
        },
        "comparisons": [{"arm": "real+gan", "baseline": "real"}],
    }
    out = clinical.evaluation_readout(
        metrics, tmp_path / "test_predictions.csv", index_csv=tmp_path / "index.csv"
    )
    assert list(out["arms"]) == ["real", "real+gan"] and out["arms"]["real"]["seeds"] == ["0", "1", "2"]
    ids_back, y_back, probs = clinical.load_predictions(tmp_path / "test_predictions.csv")
    assert ids_back == sorted(ids) and y_back.tolist() == y.tolist()
    est = out["arms"]["real"]["ensemble"]["operating_points"]["sens_at_spec"]["estimate"]
    ens = np.mean([probs["real"][s] for s in ("0", "1", "2")], axis=0)
    assert est == clinical.sensitivity_at_specificity(y_back, ens)
    sub = out["subgroup_comparisons"][0]
    assert (sub["arm"], sub["baseline"]) == ("real+gan", "real") and {"n", "too_small", "delta"} <= set(
        sub["rows"][0]
    )
    assert [w["kind"] for w in out["warnings"]] == ["phantom_data"]


def test_subgroups_on_the_real_cbis_ddsm_mass_test_rows(tmp_path):
    """The vendored CBIS-DDSM mass test CSV (378 rows): every factor's levels cover every image,
    rare mass shapes are kept and marked too_small."""
    from pathlib import Path

    from mammosynth.data import cbis

    csv = Path(__file__).parent / "fixtures" / "cbis-ddsm" / "csv" / "mass_case_description_test_set.csv"
    recs = []
    for row, raw in cbis.iter_case_rows(csv):
        try:
            recs.append(
                cbis.clean_row(raw, csv_file=csv.name, row=row, abnormality="mass", official_split="test")
            )
        except cbis.RowError:
            continue
    index = pd.DataFrame(
        {
            "image_id": [r.image_id for r in recs],
            "label_id": [int(r.label == "malignant") for r in recs],
            "breast_density": [r.breast_density for r in recs],
            "subtlety": [r.subtlety for r in recs],
            "view": [r.view for r in recs],
            **{c: [r.descriptors[c] for r in recs] for c in ("mass_shape", "mass_margins")},
        }
    ).drop_duplicates("image_id")
    index.to_csv(tmp_path / "index.csv", index=False)
    ids = index["image_id"].tolist()
    meta = clinical.load_metadata(tmp_path / "index.csv", ids)
    y = index["label_id"].to_numpy()
    p = np.clip(0.35 + 0.2 * y + np.random.default_rng(0).normal(0, 0.2, len(y)), 0, 1)
    rows = clinical.subgroup_auc(y, p, meta, n_boot=100)
    assert len(ids) > 300
    for factor in clinical.SUBGROUP_COLUMNS:
        mine = [r for r in rows if r["factor"] == factor]
        assert sum(r["n"] for r in mine) == len(ids), factor  # no image dropped from any factor
    shapes = {r["level"]: r for r in rows if r["factor"] == "mass_shape"}
    assert {"OVAL", "IRREGULAR"} <= set(shapes) and any(r["too_small"] for r in shapes.values())
    assert {r["level"] for r in rows if r["factor"] == "view"} == {"CC", "MLO"}

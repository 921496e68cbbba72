"""Generator report card: FID/KID sanity, manifold metrics, memorisation audit, written card."""

from __future__ import annotations

import json

import numpy as np
import pytest


def _blobs(n, size=32, seed=0):
    """Class-dependent blurred blobs on textured background; labels alternate."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    labels = np.arange(n) % 2
    out = []
    for lab in labels:
        cy, cx = rng.uniform(size * 0.3, size * 0.7, 2)
        r = size * (0.12 + 0.1 * lab) * rng.uniform(0.7, 1.3)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
        out.append(np.clip(0.25 + 0.55 * blob + 0.06 * rng.standard_normal((size, size)), 0, 1))
    return np.asarray(out, np.float32)[..., None], labels


def test_fid_and_kid_sanity():
    from mammosynth.quality import fid, kid, random_conv_features

    x, _ = _blobs(120, seed=1)
    noise = np.random.default_rng(2).uniform(0, 1, x.shape).astype(np.float32)
    f_x, f_noise = random_conv_features(x), random_conv_features(noise)
    assert f_x.shape[0] == 120
    assert fid(f_x, f_x) == pytest.approx(0.0, abs=1e-3)
    against_noise = fid(f_x, f_noise)
    x2, _ = _blobs(120, seed=3)  # same distribution, other draw
    same_dist = fid(f_x, random_conv_features(x2))
    assert against_noise > 10 * same_dist
    kid_same, _ = kid(f_x, random_conv_features(x2), subset_size=60)
    kid_noise, _ = kid(f_x, f_noise, subset_size=60)
    assert kid_noise > 10 * abs(kid_same)


def test_manifold_metrics_detect_collapse():
    from mammosynth.quality import manifold_metrics

    rng = np.random.default_rng(0)
    real = rng.standard_normal((200, 8))
    assert manifold_metrics(real, rng.standard_normal((200, 8)))["recall"] > 0.8
    collapsed = np.repeat(real[:1], 200, axis=0) + 0.01 * rng.standard_normal((200, 8))
    m = manifold_metrics(real, collapsed)
    assert m["precision"] > 0.9 and m["recall"] < 0.1 and m["coverage"] < 0.1


def test_memorisation_audit_flags_planted_copies():
    from mammosynth.quality import memorisation_audit

    train, _ = _blobs(80, seed=10)
    heldout, _ = _blobs(40, seed=11)
    novel, _ = _blobs(60, seed=12)
    clean = memorisation_audit(train, heldout, novel)
    assert not clean["memorisation_suspected"] and clean["share_flagged"] < 0.2
    assert 0.2 < clean["share_closer_to_train_size_matched"] < 0.8

    planted = novel.copy()
    planted[:20] = train[:20] + 0.002  # near-exact copies of training images
    audit = memorisation_audit(train, heldout, planted)
    assert audit["memorisation_suspected"]
    assert set(range(20)) <= set(audit["flagged_indices"])
    assert audit["_nearest_train"][:20].tolist() == list(range(20))
    copies = memorisation_audit(train, heldout, train[:30] + 0.002)
    assert copies["share_flagged"] == 1.0 and copies["share_closer_to_train_size_matched"] > 0.5


def test_write_report_card(tmp_path):
    from mammosynth.quality import write_report_card

    tr_x, tr_y = _blobs(60, seed=20)
    ho_x, ho_y = _blobs(40, seed=21)
    sy_x, sy_y = _blobs(40, seed=22)
    card = write_report_card(tr_x, tr_y, ho_x, ho_y, sy_x, sy_y, tmp_path / "card")
    on_disk = json.loads((tmp_path / "card" / "report_card.json").read_text())
    assert on_disk["features"].startswith("random-conv")
    assert set(on_disk["per_class"]) == {"benign", "malignant"}
    overall = on_disk["overall"]
    for key in ("fid_synthetic_vs_heldout", "fid_floor_heldout_halves", "kid_synthetic_vs_heldout"):
        assert np.isfinite(overall[key])
    for cls in on_disk["per_class"].values():
        assert 0 < cls["ssim_diversity_synthetic"] < 1 and 0 <= cls["manifold"]["precision"] <= 1
    assert (tmp_path / "card" / "samples_per_class.png").stat().st_size > 1000
    assert (tmp_path / "card" / "closest_pairs.png").stat().st_size > 1000
    assert card["memorisation"]["n_flagged"] == on_disk["memorisation"]["n_flagged"]
    assert "_d_train" not in on_disk["memorisation"]


def test_quality_cli_from_directories(tmp_path, capsys):
    from mammosynth.data import shards
    from mammosynth.quality import main

    real = tmp_path / "prepared"
    for split, seed, n in (("train", 30, 40), ("val", 31, 24)):
        x, y = _blobs(n, seed=seed)
        shards.write_split(real, split, x, y, [f"{split}-{i}" for i in range(n)])
    shards.write_meta(real, 32)
    syn = tmp_path / "synthetic"
    x, y = _blobs(20, seed=32)
    shards.write_split(syn, "train", x, y, [f"synthetic-{i}" for i in range(20)])
    shards.write_meta(syn, 32, {"lineage": {"kind": "test"}})
    assert (
        main(["--prepared-dir", str(real), "--synthetic-dir", str(syn), "--out-dir", str(tmp_path / "card")])
        == 0
    )
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["memorisation_suspected"] is False
    assert (tmp_path / "card" / "report_card.json").exists()

    wrong = tmp_path / "wrong-size"
    shards.write_split(wrong, "train", np.zeros((4, 16, 16, 1), np.float32), [0, 1, 0, 1], list("abcd"))
    shards.write_meta(wrong, 16)
    with pytest.raises(ValueError, match="differ from real"):
        main(["--prepared-dir", str(real), "--synthetic-dir", str(wrong), "--out-dir", str(tmp_path / "x")])


def test_ssim_identity_and_difference():
    from mammosynth.quality import mean_pairwise_ssim, ssim

    x, _ = _blobs(6, seed=40)
    np.testing.assert_allclose(ssim(x, x), 1.0, atol=1e-6)
    noise = np.random.default_rng(0).uniform(0, 1, x.shape)
    assert ssim(x, noise).max() < 0.5
    assert mean_pairwise_ssim(np.repeat(x[:1], 5, axis=0)) == pytest.approx(1.0)


def test_feature_memorisation_audit_flags_planted_copies():
    from mammosynth.quality import memorisation_audit_features

    rng = np.random.default_rng(5)
    scale = np.array([1.0, 100.0, 0.01, 10.0] * 4)  # z-scoring keeps one dimension from dominating
    train, heldout, novel = (rng.standard_normal((n, 16)) * scale for n in (80, 40, 60))
    clean = memorisation_audit_features(train, heldout, novel, space="toy")
    assert not clean["memorisation_suspected"] and clean["space"].startswith("toy, z-scored")
    planted = novel.copy()
    planted[:20] = train[:20] * (1 + 1e-4)
    audit = memorisation_audit_features(train, heldout, planted)
    assert audit["memorisation_suspected"] and set(range(20)) <= set(audit["flagged_indices"])
    assert audit["_nearest_train"][:20].tolist() == list(range(20))


def test_memorisation_suspected_only_when_pixels_and_features_agree():
    from mammosynth.quality import MEMORISATION_RULE, combine_memorisation

    def audit(fired):
        return {
            "memorisation_suspected": fired,
            "share_flagged": 0.175,
            "threshold": 1.0,
            "_d_train": [0.1],
            "_nearest_train": [0],
        }

    both = combine_memorisation(audit(True), audit(True))
    assert both["memorisation_suspected"] and both["fired"] == ["pixels", "features"]
    pixel_only = combine_memorisation(audit(True), audit(False))  # e.g. a blob "closest" to a spiculated star
    assert not pixel_only["memorisation_suspected"] and pixel_only["fired"] == ["pixels"]
    assert pixel_only["pixel_suspected"] and not pixel_only["feature_suspected"]
    assert pixel_only["decision_rule"] == MEMORISATION_RULE and "_d_train" not in pixel_only["feature_space"]
    assert combine_memorisation(audit(False), audit(False))["fired"] == []


def test_report_card_shows_feature_space_pairs(tmp_path):
    from mammosynth.quality import write_report_card

    tr_x, tr_y = _blobs(40, seed=40)
    ho_x, ho_y = _blobs(24, seed=41)
    card = write_report_card(tr_x, tr_y, ho_x, ho_y, tr_x[:20] + 0.002, tr_y[:20], tmp_path / "card")
    mem = card["memorisation"]
    assert mem["fired"] == ["pixels", "features"] and mem["memorisation_suspected"]  # real copies: both agree
    assert "closest_pairs_features.png" in card["figures"]
    assert (tmp_path / "card" / "closest_pairs_features.png").stat().st_size > 1000
    on_disk = json.loads((tmp_path / "card" / "report_card.json").read_text())
    assert (
        "_feature_d_train" not in on_disk["memorisation"]
        and on_disk["memorisation"]["feature_space"]["n_flagged"] == 20
    )


def test_floor_halves_are_drawn_by_patient_and_sizes_match():
    """Issue 14: no patient in both floor halves; synthetic scored at the floor's sample sizes."""
    from mammosynth import quality
    from mammosynth.quality import _halves, _prior_matched

    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(30), 2)  # CC + MLO views of each mass
    for seed in range(5):
        in_a = _halves(len(groups), groups, np.random.default_rng(seed))
        assert not set(groups[in_a]) & set(groups[~in_a])
        assert abs(in_a.sum() - len(groups) / 2) <= 2
    sy_y = np.array([0] * 40 + [1] * 40)
    ho_y = np.array([0] * 30 + [1] * 10)
    mask = _prior_matched(sy_y, ho_y, rng)
    n0, n1 = (sy_y[mask] == 0).sum(), (sy_y[mask] == 1).sum()
    assert n0 == 40 and abs(n0 / (n0 + n1) - 0.75) < 0.02  # the held-out prior, as many as available

    x = rng.random((60, 16, 16, 1)).astype("float32")
    y = np.tile([0, 1], 30)
    feats = lambda im: im.reshape(len(im), -1)[:, :8]  # noqa: E731
    card = quality.report_card(
        x[:20], y[:20], x, y, x[:40], y[:40], feature_fn=feats, feature_name="pix", heldout_groups=groups
    )
    block = card["overall"]
    assert block["floor_halves"] == "by patient"
    sizes = block["sample_sizes"]
    assert sizes["synthetic"] == sizes["half_a"] == block["fid_sample_size"]
    with pytest.raises(ValueError, match="heldout_groups"):
        quality.report_card(x[:20], y[:20], x, y, x[:40], y[:40], feature_fn=feats, heldout_groups=groups[:5])

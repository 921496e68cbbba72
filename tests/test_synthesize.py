"""run_synthesize: N images per class, a valid synthetic prepared set with lineage."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mammosynth.data import shards


@pytest.fixture(scope="module")
def generator_dir(tmp_path_factory):
    from mammosynth.gan import save_generator
    from mammosynth.models.cgan import build_gan

    model = build_gan("stable-cgan", 32, 8, seed=1)
    meta = {
        "kind": "stable-cgan",
        "image_size": 32,
        "latent_dim": 8,
        "channels": 1,
        "steps": 0,
        "seed": 1,
        "train_counts": {"benign": 7, "malignant": 4},
    }
    return save_generator(model, tmp_path_factory.mktemp("gan") / "generator", meta)


def test_writes_exactly_n_per_class_with_lineage(generator_dir, tmp_path):
    from mammosynth.synthesize import run_synthesize

    meta = run_synthesize(generator_dir, tmp_path / "syn", n_per_class={"benign": 5, "malignant": 3}, seed=11)
    assert meta["counts"] == {"train": {"benign": 5, "malignant": 3}}
    assert shards.splits(tmp_path / "syn") == ["train"]
    images, labels, ids = shards.read_split(tmp_path / "syn", "train")
    assert images.shape == (8, 32, 32, 1) and images.min() >= 0 and images.max() <= 1
    assert images.std() > 0  # not a constant image
    assert labels.tolist() == [0] * 5 + [1] * 3
    assert ids[0] == "synthetic-benign-000001" and ids[-1] == "synthetic-malignant-000003"
    on_disk = json.loads((tmp_path / "syn" / "meta.json").read_text())
    lineage = on_disk["lineage"]
    assert lineage["kind"] == "stable-cgan" and lineage["sampling_seed"] == 11
    assert lineage["generator_dir"] == str(generator_dir) and lineage["train_seed"] == 1
    assert on_disk["image_size"] == 32 and on_disk["class_names"] == ["benign", "malignant"]

    again = run_synthesize(
        generator_dir, tmp_path / "syn2", n_per_class={"benign": 5, "malignant": 3}, seed=11
    )
    assert again["counts"] == meta["counts"]
    np.testing.assert_allclose(shards.read_split(tmp_path / "syn2", "train")[0], images, atol=2e-5)


def test_default_balances_from_generator_counts(generator_dir, tmp_path):
    from mammosynth.synthesize import main

    argv = [
        "--generator-dir",
        str(generator_dir),
        "--out-dir",
        str(tmp_path / "bal"),
        "--publish-uri",
        str(tmp_path / "store"),
    ]
    assert main(argv) == 0
    assert shards.read_meta(tmp_path / "bal")["counts"]["train"] == {"benign": 7, "malignant": 7}
    published = list((tmp_path / "store").glob("synthetic-*"))
    assert len(published) == 1 and (published[0] / "meta.json").exists()


def test_resolve_counts_modes_and_errors():
    from mammosynth.synthesize import resolve_counts

    assert resolve_counts("study") == {"benign": 300, "malignant": 250}
    assert resolve_counts("top-up", {"benign": 10, "malignant": 4}) == {"benign": 0, "malignant": 6}
    assert resolve_counts(None, {"benign": 10, "malignant": 4}) == {"benign": 10, "malignant": 10}
    with pytest.raises(ValueError, match="unknown classes"):
        resolve_counts({"normal": 3})
    with pytest.raises(ValueError, match="real_counts"):
        resolve_counts(None)


def test_missing_generator_dir_is_named(tmp_path):
    from mammosynth.synthesize import run_synthesize

    with pytest.raises(FileNotFoundError, match="gan.json"):
        run_synthesize(tmp_path / "nothing", tmp_path / "out", n_per_class={"benign": 1}, seed=0)

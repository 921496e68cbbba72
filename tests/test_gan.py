"""train_gan: checkpoints, kill/resume, generator dir, sample grids."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from mammosynth.data import shards


def _prepared(tmp_path, n=24, size=32, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    yy, xx = np.mgrid[:size, :size]
    images = []
    for lab in labels:
        r = size * (0.15 + 0.15 * lab) * rng.uniform(0.8, 1.2)
        blob = np.exp(-((yy - size / 2) ** 2 + (xx - size / 2) ** 2) / (2 * r * r))
        images.append(np.clip(0.2 + 0.6 * blob + 0.05 * rng.standard_normal((size, size)), 0, 1))
    out = tmp_path / "prepared"
    shards.write_split(
        out, "train", np.asarray(images, np.float32)[..., None], labels, [f"img-{i:03d}" for i in range(n)]
    )
    shards.write_meta(out, size)
    return out


def _losses(path):
    with open(path, newline="") as fh:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def test_kill_and_resume_continues_from_saved_step(tmp_path):
    from mammosynth.gan import load_generator, train_gan

    prepared = _prepared(tmp_path)
    kw = dict(
        kind="stable-cgan", steps=8, batch_size=8, latent_dim=8, seed=3, checkpoint_every=3, log_every=1
    )
    stopped = train_gan(prepared, tmp_path / "run", stop_after=5, **kw)
    assert stopped["status"] == "stopped" and stopped["step"] == 5
    assert (tmp_path / "run" / "checkpoints" / "latest").read_text().strip() == "step-000003"
    assert not (tmp_path / "run" / "generator").exists()

    stale = tmp_path / "run" / "checkpoints" / ".step-000004.killed"  # a checkpoint cut off mid-write
    stale.mkdir()
    (stale / "state.npz").write_bytes(b"partial")

    resumed = train_gan(prepared, tmp_path / "run", **kw)
    assert not stale.exists()
    assert resumed["status"] == "done" and resumed["start_step"] == 3 and resumed["steps"] == 8
    rows = _losses(tmp_path / "run" / "losses.csv")
    assert [int(r["step"]) for r in rows] == list(range(1, 9))
    assert all(np.isfinite(r["d_loss"]) and np.isfinite(r["g_loss"]) for r in rows)

    # Steps 4 and 5 ran twice (before the kill and after the resume) on the same restored
    # weights, batches and noise, so they must report the same losses.
    before = {r["step"]: r for r in stopped["losses"]}
    after = {int(r["step"]): r for r in rows}
    for step in (4, 5):
        np.testing.assert_allclose(
            [before[step]["d_loss"], before[step]["g_loss"]],
            [after[step]["d_loss"], after[step]["g_loss"]],
            rtol=1e-3,
            atol=1e-4,
        )

    sampler, meta = load_generator(tmp_path / "run" / "generator")
    assert meta["kind"] == "stable-cgan" and meta["steps"] == 8 and meta["image_size"] == 32
    out = sampler.predict([np.zeros((2, 8), np.float32), np.array([0, 1], np.int32)], verbose=0)
    assert out.shape == (2, 32, 32, 1) and out.min() >= 0.0 and out.max() <= 1.0
    assert (tmp_path / "run" / "samples" / "step-000008.png").exists()
    assert (tmp_path / "run" / "samples" / "step-000006.png").exists()


def test_seed_cgan_trains_and_cli(tmp_path, capsys):
    from mammosynth.gan import main

    prepared = _prepared(tmp_path)
    rc = main(
        [
            "--prepared-dir",
            str(prepared),
            "--out-dir",
            str(tmp_path / "seed"),
            "--kind",
            "seed-cgan",
            "--steps",
            "3",
            "--batch-size",
            "8",
            "--latent-dim",
            "8",
            "--checkpoint-every",
            "2",
            "--log-every",
            "1",
        ]
    )
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["kind"] == "seed-cgan" and summary["status"] == "done"
    meta = json.loads((tmp_path / "seed" / "generator" / "gan.json").read_text())
    assert meta["kind"] == "seed-cgan" and meta["latent_dim"] == 8


def test_bad_prepared_set_is_named(tmp_path):
    from mammosynth.gan import train_gan

    out = tmp_path / "one-class"
    shards.write_split(out, "train", np.zeros((4, 32, 32, 1), np.float32), np.zeros(4), list("abcd"))
    shards.write_meta(out, 32)
    with pytest.raises(ValueError, match="malignant"):
        train_gan(out, tmp_path / "run", steps=2)
    with pytest.raises(FileNotFoundError, match="meta.json"):
        train_gan(tmp_path / "nowhere", tmp_path / "run", steps=2)


def test_cvae_behind_the_same_interface(tmp_path):
    from mammosynth.gan import load_generator, train_gan

    prepared = _prepared(tmp_path)
    summary = train_gan(
        prepared,
        tmp_path / "vae",
        kind="cvae",
        steps=4,
        batch_size=8,
        latent_dim=8,
        checkpoint_every=2,
        log_every=2,
    )
    assert summary["status"] == "done"
    with open(tmp_path / "vae" / "losses.csv") as fh:
        assert fh.readline().strip() == "step,loss,recon,kl"
    sampler, meta = load_generator(tmp_path / "vae" / "generator")
    assert meta["kind"] == "cvae"
    assert sampler.predict([np.zeros((1, 8), np.float32), np.array([1], np.int32)], verbose=0).shape == (
        1,
        32,
        32,
        1,
    )


@pytest.mark.parametrize("damage", ["pointer", "truncated"])
def test_resume_uses_the_newest_checkpoint_that_loads(tmp_path, damage):
    """Issue 15: a damaged `latest` pointer or a truncated newest checkpoint never restarts from 0,
    and retention never deletes the checkpoint just written."""
    from mammosynth.checkpoints import latest as _latest_checkpoint
    from mammosynth.gan import train_gan

    prepared = _prepared(tmp_path)
    kw = dict(
        kind="stable-cgan", steps=9, batch_size=8, latent_dim=8, seed=3, checkpoint_every=3, log_every=1
    )
    train_gan(prepared, tmp_path / "run", stop_after=7, **kw)
    root = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in root.glob("step-*")) == ["step-000003", "step-000006"]
    if damage == "pointer":
        (root / "latest").write_bytes(b"\xff garbage \x00")
        expected = "step-000006"
    else:
        npz = root / "step-000006" / "state.npz"
        npz.write_bytes(npz.read_bytes()[: npz.stat().st_size // 2])
        expected = "step-000003"
    assert _latest_checkpoint(tmp_path / "run").name == expected
    resumed = train_gan(prepared, tmp_path / "run", **kw)
    assert resumed["status"] == "done" and resumed["start_step"] == int(expected[-6:])
    assert (root / "latest").read_text().strip() == "step-000009"
    assert (root / "step-000009" / "state.npz").exists()  # the newest survives retention

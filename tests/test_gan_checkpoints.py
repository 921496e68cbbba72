"""Durable GAN checkpoints (issue 16 item 4): mirrored to checkpoint_uri pointer-last, restored after a kill.

Unit tests use hand-made checkpoint folders on moto's S3 server (real minio client over loopback);
the kfp.local tests SIGKILL the real train_gan component (``MAMMOSYNTH_FAULT_AFTER_STEP``, test-only)
under the SubprocessRunner and run it again.
"""

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from mammosynth import checkpoints, storage
from mammosynth.data import shards
from mammosynth.storage.s3 import S3Store

_REAL_PUT_FILE = storage.sync._put_file
# Small, quick GAN: checkpoints at steps 3 and 6 (the final one).
OVERRIDES = json.dumps(
    {"gan": {"steps": 6, "checkpoint_every": 3, "batch_size": 8, "latent_dim": 8, "seeds": 1}}
)


def _fake_checkpoint(out: Path, step: int, n: int = 3) -> Path:
    """A checkpoint folder as `checkpoints.save` writes it, without building a model."""
    path = out / "checkpoints" / checkpoints.name_of(step)
    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(step)
    with open(path / "state.npz", "wb") as fh:
        np.savez(fh, **{f"v{i:04d}": rng.standard_normal(64).astype(np.float32) for i in range(n)})
    (path / "state.json").write_text(json.dumps({"step": step, "kind": "stable-cgan", "n_variables": n}))
    (path / "losses.csv").write_text(f"step,d_loss\n{step},0.5\n")
    return path


def _record(monkeypatch) -> list[tuple[str, str]]:
    """Record every file upload and every whole-object write, in order."""
    calls: list[tuple[str, str]] = []
    real_write = S3Store.write

    def _put(store, rel, src, sha):
        calls.append(("put", f"{store.uri}/{rel}"))
        _REAL_PUT_FILE(store, rel, src, sha)

    def _write(self, rel, data):
        calls.append(("write", f"{self.uri}/{rel}".rstrip("/")))
        real_write(self, rel, data)

    monkeypatch.setattr(storage.sync, "_put_file", _put)
    monkeypatch.setattr(S3Store, "write", _write)
    return calls


def test_mirror_writes_the_pointer_after_every_file_and_prunes(s3_env, tmp_path, monkeypatch):
    uri = f"s3://{s3_env}/ckpt/run-1/gan-seed-0"
    calls = _record(monkeypatch)
    checkpoints.mirror(_fake_checkpoint(tmp_path, 3), uri)
    assert [kind for kind, _ in calls] == ["put", "put", "put", "write"]
    assert calls[-1] == ("write", f"{uri}/latest")
    assert storage.read_bytes(f"{uri}/latest").decode().strip() == "step-000003"
    for step in (6, 9):
        checkpoints.mirror(_fake_checkpoint(tmp_path, step), uri)
    assert storage.read_bytes(f"{uri}/latest").decode().strip() == "step-000009"
    assert sorted({rel.split("/")[0] for rel in storage.list_files(uri)}) == [
        "latest",
        "step-000006",
        "step-000009",
    ]


def test_upload_cut_off_midway_is_never_latest(s3_env, tmp_path, monkeypatch):
    uri = f"s3://{s3_env}/ckpt/run-2/gan-seed-0"
    checkpoints.mirror(_fake_checkpoint(tmp_path / "pod1", 3), uri)
    uploaded: list[str] = []

    def _dies_after_one(store, rel, src, sha):
        if uploaded:
            raise ConnectionResetError("pod preempted midway through the upload")
        uploaded.append(rel)
        _REAL_PUT_FILE(store, rel, src, sha)

    monkeypatch.setattr(storage.sync, "_put_file", _dies_after_one)
    with pytest.raises(ConnectionResetError):
        checkpoints.mirror(_fake_checkpoint(tmp_path / "pod1", 6), uri)
    monkeypatch.setattr(storage.sync, "_put_file", _REAL_PUT_FILE)
    assert storage.list_files(f"{uri}/step-000006") == ["losses.csv"]  # half of step 6 is there
    assert storage.read_bytes(f"{uri}/latest").decode().strip() == "step-000003"
    fresh = tmp_path / "pod2"  # a new pod: empty output directory
    got = checkpoints.fetch(uri, fresh)
    assert got == fresh / "checkpoints" / "step-000003" and checkpoints.loads(got)
    assert (fresh / "checkpoints" / "latest").read_text().strip() == "step-000003"
    assert not (fresh / "checkpoints" / ".incoming").exists()


def test_corrupt_remote_checkpoint_falls_back_to_the_previous_one(s3_env, tmp_path, caplog):
    uri = f"s3://{s3_env}/ckpt/run-3/gan-seed-0"
    for step in (3, 6):
        checkpoints.mirror(_fake_checkpoint(tmp_path / "pod1", step), uri)
    npz = storage.read_bytes(f"{uri}/step-000006/state.npz")
    storage.write_bytes(f"{uri}/step-000006/state.npz", npz[: len(npz) // 2])  # truncated in the store
    with caplog.at_level(logging.WARNING, logger="mammosynth.checkpoints"):
        got = checkpoints.fetch(uri, tmp_path / "pod2")
    assert got is not None and got.name == "step-000003" and checkpoints.loads(got)
    assert "step-000006 does not load; trying the one before it" in caplog.text
    assert not (tmp_path / "pod2" / "checkpoints" / "step-000006").exists()
    # A local checkpoint as new as the durable one wins: nothing is downloaded.
    assert checkpoints.fetch(uri, tmp_path / "pod2", newer_than=3) is None
    # A damaged pointer is not trusted; every durable checkpoint is a candidate, newest first.
    storage.write_bytes(f"{uri}/latest", b"\xff\x00garbage")
    storage.write_bytes(f"{uri}/step-000006/state.npz", npz)
    assert checkpoints.fetch(uri, tmp_path / "pod3").name == "step-000006"


def test_local_or_pvc_path_works_the_same_and_resume_false_discards(tmp_path):
    uri = str(tmp_path / "pvc" / "run-4" / "gan-seed-0")
    for step in (3, 6, 9):
        checkpoints.mirror(_fake_checkpoint(tmp_path / "pod1", step), uri)
    assert sorted(p.name for p in Path(uri).iterdir()) == ["latest", "step-000006", "step-000009"]
    assert not list(Path(uri).rglob("*.mstmp")), "temp files left behind"
    assert checkpoints.fetch(uri, tmp_path / "pod2").name == "step-000009"
    checkpoints.discard(uri)
    assert storage.list_files(uri) == [] and checkpoints.fetch(uri, tmp_path / "pod3") is None


def test_gan_cli_mirrors_to_checkpoint_uri_and_a_fresh_out_dir_resumes_from_it(tmp_path, capsys):
    from mammosynth.gan import main

    prepared = _prepared(tmp_path / "prepared")
    durable = tmp_path / "pvc" / "gan"
    argv = ["--prepared-dir", str(prepared), "--steps", "2", "--batch-size", "8", "--latent-dim", "8"]
    argv += ["--checkpoint-every", "1", "--log-every", "1", "--checkpoint-uri", str(durable)]
    assert main([*argv, "--out-dir", str(tmp_path / "pod1")]) == 0
    assert (durable / "latest").read_text().strip() == "step-000002"
    assert sorted(p.name for p in durable.glob("step-*")) == ["step-000001", "step-000002"]
    capsys.readouterr()
    assert main([*argv, "--out-dir", str(tmp_path / "pod2")]) == 0  # a new pod, nothing local
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["start_step"] == 2 and summary["resumed_from"] == f"{durable}/step-000002"
    assert (tmp_path / "pod2" / "generator" / "generator.keras").exists()


def test_run_key_must_be_one_stable_path_segment():
    assert checkpoints.durable_uri("s3://b/ckpt/", "1234", "gan-seed-0") == "s3://b/ckpt/1234/gan-seed-0"
    for bad in ("", "  ", "a/b", "..", "{{$.pipeline_job_uuid}}"):
        with pytest.raises(ValueError, match="run_key .* is not usable under checkpoint_uri"):
            checkpoints.durable_uri("s3://b/ckpt", bad, "gan-seed-0")
    from mammosynth import study

    with pytest.raises(ValueError, match="run_key '' is not usable"):
        study.train_gan_step("unused", "unused", preset="tiny", checkpoint_uri="s3://b/ckpt", run_key="")


def test_study_pipeline_passes_the_checkpoint_uri_and_the_run_id_to_the_retried_gan_task(tmp_path):
    import yaml
    from kfp import compiler

    from pipelines.study import study_pipeline

    compiler.Compiler().compile(study_pipeline, str(tmp_path / "study.yaml"))
    spec = next(yaml.safe_load_all((tmp_path / "study.yaml").read_text()))
    param = spec["root"]["inputDefinitions"]["parameters"]["gan_checkpoint_uri"]
    assert param["defaultValue"] == "" and "retried (preempted) GAN pod resumes" in param["description"]
    task = spec["root"]["dag"]["tasks"]["train-gan"]
    assert task["inputs"]["parameters"]["checkpoint_uri"] == {"componentInputParameter": "gan_checkpoint_uri"}
    # The run UUID, not the task ID: the run ID is the same for every retry of the task.
    assert task["inputs"]["parameters"]["run_key"] == {
        "runtimeValue": {"constant": "{{$.pipeline_job_uuid}}"}
    }
    assert task["retryPolicy"]["maxRetryCount"] >= 1


# ------------------------------------------------------------------------------------ kfp.local runs


def _prepared(root: Path, n: int = 16, size: int = 32) -> Path:
    """A tiny prepared set: two classes of blobs of different radius (phantom, not patient data)."""
    rng = np.random.default_rng(0)
    labels = np.arange(n) % 2
    yy, xx = np.mgrid[:size, :size]
    radius = size * (0.15 + 0.15 * labels[:, None, None])
    blobs = np.exp(-((yy - size / 2) ** 2 + (xx - size / 2) ** 2)[None] / (2 * radius**2))
    images = np.clip(0.2 + 0.6 * blobs + 0.05 * rng.standard_normal((n, size, size)), 0, 1)
    shards.write_split(
        root, "train", images.astype(np.float32)[..., None], labels, [f"p-{i}" for i in range(n)]
    )
    shards.write_meta(root, size)
    return root


def _gan_pipeline(retries: int, explicit_run_key: bool):
    """Importer → the real train_gan component; the run key explicit, or the KFP run ID placeholder."""
    from kfp import dsl

    from components import train_gan
    from mammosynth.config import resolve, stage_view

    view = stage_view(resolve("tiny", OVERRIDES), "gan")

    @dsl.pipeline(name="gan-checkpoint-test")
    def gan_only(prepared_uri: str, checkpoint_uri: str, run_key: str = "") -> dsl.Model:
        prepared = dsl.importer(artifact_uri=prepared_uri, artifact_class=dsl.Dataset, reimport=False)
        task = train_gan(
            prepared_set=prepared.output,
            config=view,
            checkpoint_uri=checkpoint_uri,
            run_key=run_key if explicit_run_key else dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        )
        if retries:
            task.set_retry(num_retries=retries, backoff_duration="0s")
        return task.outputs["generator"]

    return gan_only


@pytest.fixture
def kfp_local(tmp_path):
    """kfp.local with the SubprocessRunner in this interpreter (as `python -m pipelines run` does)."""
    from kfp import local

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "work"))
    return local


def _generator_output(generator_dir: Path) -> np.ndarray:
    from mammosynth.gan import load_generator

    sampler, meta = load_generator(generator_dir)
    z = np.random.default_rng(7).standard_normal((8, meta["latent_dim"])).astype(np.float32)
    return sampler.predict([z, np.arange(8, dtype=np.int32) % 2], verbose=0)


@pytest.mark.pipeline
def test_killed_gan_resumes_from_the_durable_checkpoint_in_kfp_local(
    s3_env, tmp_path, kfp_local, monkeypatch
):
    """Run 1 is SIGKILLed right after its step-3 checkpoint reached S3; run 2 (a fresh output dir, as a
    new pod has, same run key) restores step 3 from S3, trains 4..6 and ends where an uninterrupted run
    with the same seed ends."""
    from mammosynth import study

    prepared = _prepared(tmp_path / "prepared")
    ckpt_uri = f"s3://{s3_env}/gan-checkpoints"
    durable = f"{ckpt_uri}/run-42/gan-seed-0"
    pipeline = _gan_pipeline(retries=0, explicit_run_key=True)
    args = dict(prepared_uri=str(prepared), checkpoint_uri=ckpt_uri, run_key="run-42")

    monkeypatch.setenv("MAMMOSYNTH_FAULT_AFTER_STEP", "3")
    with pytest.raises(RuntimeError):
        pipeline(**args)
    assert storage.read_bytes(f"{durable}/latest").decode().strip() == "step-000003"
    assert sorted(storage.list_files(f"{durable}/step-000003")) == ["losses.csv", "state.json", "state.npz"]

    monkeypatch.delenv("MAMMOSYNTH_FAULT_AFTER_STEP")
    generator = Path(pipeline(**args).output.path)
    summary = json.loads((generator / "train_summary.json").read_text())
    assert summary["status"] == "done" and summary["start_step"] == 3 and summary["steps"] == 6
    assert summary["resumed_from"] == f"{durable}/step-000003"
    assert storage.read_bytes(f"{durable}/latest").decode().strip() == "step-000006"

    reference = tmp_path / "uninterrupted"
    study.train_gan_step(str(prepared), str(reference), preset="tiny", overrides=OVERRIDES)
    straight = json.loads((reference / "train_summary.json").read_text())
    assert straight["start_step"] == 0 and straight["resumed_from"] == ""
    # Same seed, restored weights, optimiser, in-graph RNG and batch order: the same generator up to
    # float32 round-off (measured: bit-identical on CPU, max abs difference 0.0). Not the final loss
    # row: with log_every=50 it averages steps 4..6 after the resume but 1..6 in the straight run.
    resumed_img = _generator_output(Path(summary["generator_dir"]))
    straight_img = _generator_output(reference / "generator")
    print("max |resumed - uninterrupted| generator output:", float(np.abs(resumed_img - straight_img).max()))
    np.testing.assert_allclose(resumed_img, straight_img, rtol=0, atol=1e-5)


@pytest.mark.pipeline
def test_retried_task_keeps_its_run_key_in_kfp_local(s3_env, tmp_path, kfp_local, monkeypatch):
    """With set_retry and run_key = dsl.PIPELINE_JOB_ID_PLACEHOLDER, the retried attempt writes to the
    same run-key folder as the killed one (kfp.local substitutes one random 8-digit run ID per pipeline
    run, and a new task ID per attempt) and resumes from step 3 instead of 0. kfp.local retries in the
    same output directory, so this attempt resumes from its local copy; a fresh pod's empty directory
    (the durable restore) is the test above."""
    prepared = _prepared(tmp_path / "prepared")
    ckpt_uri = f"s3://{s3_env}/gan-checkpoints"
    monkeypatch.setenv("MAMMOSYNTH_FAULT_AFTER_STEP", "3")
    generator = Path(
        _gan_pipeline(retries=1, explicit_run_key=False)(
            prepared_uri=str(prepared), checkpoint_uri=ckpt_uri
        ).output.path
    )
    summary = json.loads((generator / "train_summary.json").read_text())
    assert summary["status"] == "done" and summary["start_step"] == 3
    keys = storage.store_for(ckpt_uri).children()
    assert len(keys) == 1 and keys[0].isdigit(), keys  # one run key across both attempts
    assert storage.read_bytes(f"{ckpt_uri}/{keys[0]}/gan-seed-0/latest").decode().strip() == "step-000006"

"""mammosynth.storage against local dirs and moto's S3 server (real minio client over loopback HTTP)."""

from __future__ import annotations

import json
import logging
import socket
import time
from pathlib import Path

import numpy as np
import pytest

from mammosynth import storage
from mammosynth.storage import StorageError

_REAL_PUT_FILE = storage.sync._put_file


def _make_tree(root: Path, seed: int = 0, big: bool = False) -> dict[str, bytes]:
    """A small set-like tree: nested dirs, an empty file, optionally one multipart-sized object."""
    rng = np.random.default_rng(seed)
    files = {
        "meta.json": json.dumps({"counts": {"train": {"benign": 3, "malignant": 2}}}).encode(),
        "train-00000.npz": rng.bytes(3000),
        "images/a.png": rng.bytes(1500),
        "images/sub dir/b.png": rng.bytes(10),
        "empty.txt": b"",
    }
    if big:  # > 5 MiB: minio uploads it multipart, so its ETag is not an MD5
        files["big.bin"] = rng.bytes(5 * 1024 * 1024 + 1234)
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


@pytest.fixture(params=["local", "s3"])
def base_uri(request, tmp_path) -> str:
    """The same tests run on a local directory and on an S3 bucket."""
    if request.param == "local":
        return (tmp_path / "store").as_posix()
    bucket = request.getfixturevalue("s3_env")
    return f"s3://{bucket}/sets"


def _count_puts(monkeypatch, fail_after: int | None = None) -> list[str]:
    calls: list[str] = []
    real = _REAL_PUT_FILE  # not storage.sync._put_file: that may be an earlier, failing patch

    def _put(store, rel, src, sha):
        if fail_after is not None and len(calls) >= fail_after:
            raise ConnectionAbortedError("simulated crash midway through the upload")
        calls.append(rel)
        real(store, rel, src, sha)

    monkeypatch.setattr(storage.sync, "_put_file", _put)
    return calls


# ---------------------------------------------------------------------------------- plain files


def test_local_and_file_uri_basics(tmp_path):
    uri = f"file://{tmp_path}/a/b.bin"
    assert not storage.is_remote(uri) and storage.is_remote("s3://x/y")
    assert not storage.exists(uri)
    storage.write_bytes(uri, b"hello")
    assert storage.read_bytes(tmp_path / "a" / "b.bin") == b"hello"
    assert storage.exists(tmp_path / "a") and storage.list_files(tmp_path) == ["a/b.bin"]
    assert not [p for p in (tmp_path / "a").iterdir() if p.name != "b.bin"], "temp files left behind"
    assert storage.localize(uri) == tmp_path / "a" / "b.bin"
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(tmp_path / "missing")
    with pytest.raises(StorageError, match="unsupported URI scheme"):
        storage.read_bytes("gs://bucket/x")


def test_s3_directory_round_trip(s3_env, tmp_path):
    src = tmp_path / "src"
    files = _make_tree(src, big=True)
    uri = f"s3://{s3_env}/raw/cbis"
    stats = storage.upload_dir(src, uri, workers=3)
    assert stats == {
        "files": len(files),
        "uploaded": len(files),
        "skipped": 0,
        "bytes": sum(map(len, files.values())),
    }
    assert storage.list_files(uri) == sorted(files)
    assert storage.exists(uri) and storage.exists(f"{uri}/images/a.png")
    assert not storage.exists(f"{uri}/images/a.pn") and not storage.exists(f"s3://{s3_env}/ra")
    assert storage.read_bytes(f"{uri}/images/sub dir/b.png") == files["images/sub dir/b.png"]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        storage.read_bytes(f"{uri}/nope.png")

    out = storage.download_dir(uri, tmp_path / "dst")
    assert {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()} == files

    cached = storage.localize(uri, cache_dir=tmp_path / "cache")
    assert cached == tmp_path / "cache" / "s3" / s3_env / "raw/cbis"
    assert (cached / "big.bin").read_bytes() == files["big.bin"]
    one = storage.localize(f"{uri}/meta.json", cache_dir=tmp_path / "cache1")
    assert one.is_file() and one.read_bytes() == files["meta.json"]

    storage.write_bytes(f"s3://{s3_env}/x/y.json", b"{}")
    assert storage.read_bytes(f"s3://{s3_env}/x/y.json") == b"{}"


def test_upload_resumes_including_multipart_objects(s3_env, tmp_path, monkeypatch):
    src = tmp_path / "src"
    files = _make_tree(src, big=True)
    uri = f"s3://{s3_env}/raw"
    calls = _count_puts(monkeypatch, fail_after=2)
    with pytest.raises(ConnectionAbortedError):
        storage.upload_dir(src, uri, workers=1)
    assert 0 < len(storage.list_files(uri)) < len(files)
    calls = _count_puts(monkeypatch)  # replaces the failing seam
    stats = storage.upload_dir(src, uri, workers=2)
    assert stats["skipped"] == 2 and stats["uploaded"] == len(files) - 2 and len(calls) == len(files) - 2
    calls.clear()
    again = storage.upload_dir(src, uri, workers=2)
    assert again["uploaded"] == 0 and again["skipped"] == len(files) and calls == []
    # A changed local file with the same size is re-uploaded (content, not just size, is compared).
    (src / "big.bin").write_bytes(b"x" * len(files["big.bin"]))
    assert storage.upload_dir(src, uri)["uploaded"] == 1 and calls == ["big.bin"]


# ------------------------------------------------------------------------------------------- sets


def test_publish_open_and_republish_is_noop(base_uri, tmp_path, monkeypatch):
    src = tmp_path / "prepared"
    files = _make_tree(src)
    lineage = {"generator": "s3://models/gan-1", "real_set": "s3://sets/prepared-abc"}
    calls = _count_puts(monkeypatch)
    manifest = storage.publish_set(src, base_uri, kind="prepared", config={"image_size": 64}, lineage=lineage)
    assert manifest["uri"].startswith(f"{base_uri}/prepared-") and not manifest["reused"]
    assert sorted(calls) == sorted(files)
    assert manifest["counts"]["files"] == len(files)
    assert manifest["counts"]["samples"] == {"train": {"benign": 3, "malignant": 2}}
    assert manifest["lineage"] == lineage and manifest["config"] == {"image_size": 64}
    assert {f["path"]: f["size"] for f in manifest["files"]} == {k: len(v) for k, v in files.items()}

    calls.clear()
    again = storage.publish_set(src, base_uri, kind="prepared", lineage=lineage)
    assert again["reused"] and again["uri"] == manifest["uri"] and calls == []
    assert again["created"] == manifest["created"]
    # A published set that lost an object is repaired by re-publishing, manifest unchanged.
    if storage.is_remote(base_uri):
        storage.store_for(manifest["uri"]).delete("images/a.png")
    else:
        Path(manifest["uri"], "images", "a.png").unlink()
    repaired = storage.publish_set(src, base_uri, kind="prepared")
    assert calls == ["images/a.png"] and repaired["created"] == manifest["created"]
    with pytest.raises(StorageError, match="not JSON-serialisable"):
        storage.publish_set(src, f"{base_uri}/other", kind="prepared", config={"bad": object()})

    opened = storage.open_set(manifest["uri"], tmp_path / "opened")
    for rel, data in files.items():
        assert (opened / rel).read_bytes() == data
    assert storage.verify_set(manifest["uri"]).ok
    sets = storage.list_sets(base_uri)
    assert [s["uri"] for s in sets] == [manifest["uri"]] and "files" not in sets[0]

    # Different content → a different, content-addressed set next to the first.
    (src / "images" / "a.png").write_bytes(b"changed")
    other = storage.publish_set(src, base_uri, kind="prepared")
    assert other["uri"] != manifest["uri"] and len(storage.list_sets(base_uri)) == 2


def test_interrupted_publish_leaves_no_set_and_rerun_completes(base_uri, tmp_path, monkeypatch):
    src = tmp_path / "synthetic"
    files = _make_tree(src, seed=1)
    _count_puts(monkeypatch, fail_after=2)
    with pytest.raises(ConnectionAbortedError):
        storage.publish_set(src, base_uri, kind="synthetic", workers=1)
    (set_dir,) = {rel.split("/")[0] for rel in storage.list_files(base_uri)}
    set_uri = f"{base_uri}/{set_dir}"
    assert storage.SET_MANIFEST not in storage.list_files(set_uri)
    assert storage.list_sets(base_uri) == []
    with pytest.raises(StorageError, match="no _manifest.json: not a published set"):
        storage.open_set(set_uri, tmp_path / "out")
    assert storage.verify_set(set_uri).error is not None

    calls = _count_puts(monkeypatch)  # replaces the failing seam
    manifest = storage.publish_set(src, base_uri, kind="synthetic", workers=1)
    assert manifest["uri"] == set_uri and not manifest["reused"]
    assert len(calls) == len(files) - 2  # the two objects already up were not sent again
    assert (
        storage.open_set(set_uri, tmp_path / "out2").joinpath("meta.json").read_bytes() == files["meta.json"]
    )


def test_verify_reports_corrupt_missing_and_extra(base_uri, tmp_path):
    src = tmp_path / "s"
    files = _make_tree(src, seed=2)
    set_uri = storage.publish_set(src, base_uri, kind="ingested")["uri"]
    bad = bytearray(files["train-00000.npz"])
    bad[100] ^= 0xFF  # same size, different bytes: only the checksum can tell
    storage.write_bytes(f"{set_uri}/train-00000.npz", bytes(bad))
    storage.write_bytes(f"{set_uri}/images/a.png", b"short")

    result = storage.verify_set(set_uri)
    assert not result.ok and result.missing == [] and result.extra == []
    assert [p for p, _ in result.corrupt] == ["images/a.png", "train-00000.npz"]
    assert (
        "size" in dict(result.corrupt)["images/a.png"] and "sha256" in dict(result.corrupt)["train-00000.npz"]
    )
    with pytest.raises(StorageError, match="refusing to open set"):
        storage.open_set(set_uri, tmp_path / "o")

    storage.write_bytes(f"{set_uri}/train-00000.npz", files["train-00000.npz"])
    storage.write_bytes(f"{set_uri}/images/a.png", files["images/a.png"])
    storage.write_bytes(f"{set_uri}/stray.txt", b"?")
    if storage.is_remote(set_uri):
        storage.store_for(set_uri).delete("empty.txt")
    else:
        Path(set_uri, "empty.txt").unlink()
    result = storage.verify_set(set_uri)
    assert result.missing == ["empty.txt"] and result.extra == ["stray.txt"] and result.corrupt == []
    assert "missing empty.txt" in result.summary()


# ---------------------------------------------------------------------------------------- errors


def _free_closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_endpoint_fails_fast_and_names_the_variable(s3_env, monkeypatch):
    port = _free_closed_port()
    monkeypatch.setenv("S3_ENDPOINT", f"127.0.0.1:{port}")
    start = time.monotonic()
    with pytest.raises(StorageError, match=rf"S3_ENDPOINT=127.0.0.1:{port} unreachable"):
        storage.list_files(f"s3://{s3_env}/x")
    assert time.monotonic() - start < 10


def test_cli_reports_errors_on_stderr_with_exit_1(s3_env, monkeypatch, capsys):
    monkeypatch.setattr(storage.s3, "RETRY_BASE_DELAY_S", 0.01)
    monkeypatch.setenv("S3_ENDPOINT", f"127.0.0.1:{_free_closed_port()}")
    assert storage.main(["ls", f"s3://{s3_env}/sets"]) == 1
    err = capsys.readouterr().err
    assert "unreachable" in err and "testing-secret-key" not in err


def test_missing_bucket_and_missing_endpoint(s3_env, monkeypatch):
    with pytest.raises(
        StorageError, match="bucket 'no-such-bucket-q' does not exist.*create it .* or fix the URI"
    ):
        storage.list_files("s3://no-such-bucket-q/data")
    with pytest.raises(StorageError, match="does not exist"):
        storage.write_bytes("s3://no-such-bucket-q/data/x", b"1")
    monkeypatch.delenv("S3_ENDPOINT")
    with pytest.raises(StorageError, match="S3_ENDPOINT is not set"):
        storage.exists("s3://b/x")
    monkeypatch.setenv("S3_ENDPOINT", "127.0.0.1:1")
    monkeypatch.setenv("S3_USE_HTTPS", "maybe")
    with pytest.raises(StorageError, match="S3_USE_HTTPS='maybe'"):
        storage.exists("s3://b/x")


def test_endpoint_with_scheme_prefix_is_tolerated(s3_env, s3_server, monkeypatch):
    monkeypatch.setenv("S3_ENDPOINT", f"http://{s3_server}")
    monkeypatch.delenv("S3_USE_HTTPS")
    storage.write_bytes(f"s3://{s3_env}/k", b"v")
    assert storage.read_bytes(f"s3://{s3_env}/k") == b"v"


@pytest.fixture
def moto_iam_auth(s3_server):
    """Make moto enforce IAM auth (off by default: it accepts any key); yield a valid (key, secret).

    Moto's documented switch is INITIAL_NO_AUTH_ACTION_COUNT; its server exposes it at
    ``POST /moto-api/reset-auth``. Only keys created through moto's IAM are then accepted.
    """
    import boto3
    import requests

    iam = boto3.client(
        "iam",
        endpoint_url=f"http://{s3_server}",
        region_name="us-east-1",
        aws_access_key_id="bootstrap",
        aws_secret_access_key="bootstrap",
    )
    user = f"storage-test-{time.monotonic_ns()}"
    iam.create_user(UserName=user)
    iam.put_user_policy(
        UserName=user,
        PolicyName="s3-all",
        PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
        ),
    )
    key = iam.create_access_key(UserName=user)["AccessKey"]
    requests.post(f"http://{s3_server}/moto-api/reset-auth", data=b"0", timeout=5).raise_for_status()
    try:
        yield key["AccessKeyId"], key["SecretAccessKey"]
    finally:
        requests.post(f"http://{s3_server}/moto-api/reset-auth", data=b"inf", timeout=5).raise_for_status()


def test_bad_credentials_give_a_clear_error(s3_env, moto_iam_auth, monkeypatch):
    key_id, secret = moto_iam_auth
    uri = f"s3://{s3_env}/creds"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    storage.write_bytes(f"{uri}/ok", b"1")  # the real key works: auth is enforced, not blanket-denied
    assert storage.list_files(uri) == ["ok"]

    for bad_key, bad_secret in [(key_id, "wrong-secret-value"), ("NOSUCHKEY-MAMMOSYNTH-TEST", secret)]:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", bad_key)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", bad_secret)
        start = time.monotonic()
        with pytest.raises(StorageError, match="check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY") as err:
            storage.list_files(uri)
        assert time.monotonic() - start < 5, "credential errors are permanent: no retries"
        assert bad_secret not in str(err.value) and secret not in str(err.value)
        assert "(InvalidAccessKeyId)" in str(err.value) or "(SignatureDoesNotMatch)" in str(err.value)


def test_transient_errors_are_retried_with_backoff(monkeypatch, caplog):
    import urllib3.exceptions as u3
    from minio.error import ServerError

    monkeypatch.setattr(storage.s3, "RETRY_BASE_DELAY_S", 0.01)
    settings = storage.s3._S3Settings("minio:9000", False, True, "us-east-1", None, None)
    failures = [
        u3.ProtocolError("Connection aborted.", ConnectionResetError(104, "reset")),
        ServerError("server failed with HTTP status code 503", 503),
    ]

    def flaky():
        if failures:
            raise failures.pop(0)
        return "ok"

    with caplog.at_level(logging.WARNING, logger="mammosynth.storage"):
        assert storage.s3._retry(settings, "read", "s3://b/k", flaky) == "ok"
    assert caplog.text.count("retrying") == 2

    def always_reset():
        raise u3.ProtocolError("Connection aborted.", ConnectionResetError(104, "reset"))

    with pytest.raises(StorageError, match="S3_ENDPOINT=minio:9000 unreachable after 4 tries"):
        storage.s3._retry(settings, "read", "s3://b/k", always_reset)

    def bug():
        raise KeyError("not a storage problem")

    with pytest.raises(KeyError):  # programming errors are not retried or reworded
        storage.s3._retry(settings, "read", "s3://b/k", bug)


# ------------------------------------------------------------------------------------------- CLI


def test_cli_upload_resumes_ls_and_verify(s3_env, tmp_path, capsys, caplog):
    src = tmp_path / "CBIS-DDSM"
    files = _make_tree(src, seed=3)
    dest = f"s3://{s3_env}/cbis-ddsm"
    with caplog.at_level(logging.INFO, logger="mammosynth.storage"):
        assert storage.main(["upload", str(src), dest, "--workers", "2", "--progress-every", "2"]) == 0
    assert f"{len(files)} files, {len(files)} uploaded, 0 already present" in capsys.readouterr().out
    assert f"upload {dest}: 2/{len(files)} files" in caplog.text
    assert f"upload {dest}: {len(files)}/{len(files)} files" in caplog.text
    assert storage.main(["upload", str(src), dest]) == 0
    assert f"0 uploaded, {len(files)} already present" in capsys.readouterr().out

    sets_uri = f"s3://{s3_env}/sets"
    assert storage.main(["ls", sets_uri]) == 0
    assert "no sets" in capsys.readouterr().out
    assert (
        storage.main(
            ["publish", str(src), sets_uri, "--kind", "raw", "--lineage", json.dumps({"source": dest})]
        )
        == 0
    )
    set_uri = capsys.readouterr().out.strip()
    assert set_uri.startswith(f"{sets_uri}/raw-")
    assert storage.main(["ls", sets_uri]) == 0
    out = capsys.readouterr().out
    assert set_uri in out and f"files={len(files)}" in out and "kind=raw" in out and "train=3/2" in out
    assert storage.main(["verify", sets_uri]) == 0
    assert "OK" in capsys.readouterr().out
    storage.write_bytes(f"{set_uri}/images/a.png", b"x" * len(files["images/a.png"]))
    assert storage.main(["verify", set_uri]) == 1
    assert "corrupt images/a.png" in capsys.readouterr().out
    assert storage.main(["verify", dest]) == 0  # `data upload` wrote a manifest: the upload verifies
    assert f"{dest}: OK ({len(files)} files checked" in capsys.readouterr().out
    bare = f"s3://{s3_env}/bare"
    storage.upload_dir(src, bare)  # the library copy writes no manifest: not a set
    assert storage.main(["verify", bare]) == 1
    assert "not a published set" in capsys.readouterr().out


def test_endpoint_that_is_not_s3_says_so(s3_env, monkeypatch):
    """A web server that is not an S3 API (e.g. MinIO's console port) gets a hint, not a stack trace."""
    import http.server
    import threading

    class NotS3(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(404)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<html>console</html>")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotS3)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("S3_ENDPOINT", f"127.0.0.1:{server.server_address[1]}")
        with pytest.raises(StorageError, match="answered HTTP 404 without an S3 error body.*port 9000"):
            storage.list_files(f"s3://{s3_env}/x")
    finally:
        server.shutdown()
        server.server_close()


# ------------------------------------------------------------------------- raw uploads (12.6)


def _manifest_at(uri: str) -> dict:
    return json.loads(storage.read_bytes(f"{uri}/{storage.SET_MANIFEST}"))


def test_data_upload_writes_manifest_last_resumes_after_a_kill_and_verifies(
    s3_env, tmp_path, monkeypatch, capsys
):
    src = tmp_path / "CBIS-DDSM"
    files = _make_tree(src, seed=4, big=True)
    dest = f"s3://{s3_env}/cbis-ddsm"
    first = _count_puts(monkeypatch, fail_after=3)
    with pytest.raises(ConnectionAbortedError):  # killed midway: 3 objects up, no manifest
        storage.main(["upload", str(src), dest, "--workers", "1"])
    assert 0 < len(storage.list_files(dest)) < len(files)
    assert storage.SET_MANIFEST not in storage.list_files(dest)
    capsys.readouterr()
    assert storage.main(["verify", dest]) == 1
    assert "no _manifest.json" in capsys.readouterr().out
    with pytest.raises(StorageError, match=r"run `mammosynth data upload <folder> s3://.*` again to finish"):
        storage.localize_source(dest, cache_dir=tmp_path / "cache")

    calls = _count_puts(monkeypatch)  # the re-run after the kill
    assert storage.main(["upload", str(src), dest, "--workers", "2"]) == 0
    assert len(first) == 3 and sorted(calls) == sorted(set(files) - set(first))  # only what was missing
    assert "_manifest.json written" in capsys.readouterr().out
    manifest = _manifest_at(dest)
    assert manifest["format"] == storage.SET_FORMAT and manifest["kind"] == "upload"
    assert {f["path"]: f["size"] for f in manifest["files"]} == {k: len(v) for k, v in files.items()}
    assert {f["path"]: f["sha256"] for f in manifest["files"]} == {
        k: storage.sha256_file(src / k) for k in files
    }
    assert manifest["counts"]["files"] == len(files)
    assert manifest["counts"]["bytes"] == sum(map(len, files.values()))
    assert storage.main(["verify", dest]) == 0
    assert (
        f"{dest}: OK ({len(files)} files checked, 0 missing, 0 corrupt, 0 extra)" in capsys.readouterr().out
    )

    calls.clear()  # a second run uploads nothing and rewrites nothing
    assert storage.main(["upload", str(src), dest]) == 0
    assert calls == [] and "0 uploaded" in capsys.readouterr().out
    assert _manifest_at(dest)["created"] == manifest["created"]

    digest = storage.source_digest(dest)
    assert digest == manifest["content_sha256"] == storage.source_digest(src)
    with pytest.raises(StorageError, match="is not a folder"):
        storage.source_digest(tmp_path / "nowhere")
    local = storage.localize_source(dest, cache_dir=tmp_path / "cache")
    assert {p.relative_to(local).as_posix(): p.read_bytes() for p in local.rglob("*") if p.is_file()} == {
        **files,
        storage.SET_MANIFEST: storage.read_bytes(f"{dest}/{storage.SET_MANIFEST}"),
    }


def test_a_corrupted_upload_is_refused_and_a_reupload_repairs_it(s3_env, tmp_path):
    src = tmp_path / "raw"
    files = _make_tree(src, seed=5)
    dest = f"s3://{s3_env}/raw"
    storage.upload_source(src, dest)
    bad = bytearray(files["train-00000.npz"])
    bad[7] ^= 0x01  # same size
    storage.write_bytes(f"{dest}/train-00000.npz", bytes(bad))
    with pytest.raises(
        StorageError, match=r"refusing to open upload .*do not match.*again to finish the upload"
    ):
        storage.localize_source(dest, cache_dir=tmp_path / "c")
    stats = storage.upload_source(src, dest)
    assert stats["uploaded"] == 1 and stats["manifest_written"]
    assert storage.verify_set(dest).ok
    assert (
        storage.localize_source(dest, cache_dir=tmp_path / "c") / "train-00000.npz"
    ).read_bytes() == bytes(files["train-00000.npz"])


def test_ingest_from_s3_refuses_an_upload_without_a_verifying_manifest(s3_env, tmp_path):
    from mammosynth import study
    from mammosynth.config import load_config
    from mammosynth.data import phantom

    cfg = load_config("tiny")
    raw = phantom.generate(tmp_path / "raw", n_patients=8, seed=cfg.seed, crop_size=cfg.phantom.crop_size)
    source = f"s3://{s3_env}/cbis-ddsm"
    storage.upload_dir(raw, source)  # every object, but no manifest: cannot be told from a half upload
    with pytest.raises(StorageError) as err:
        study.ingest_step(source, str(tmp_path / "ingested"), preset="tiny")
    assert f"{source} has no _manifest.json" in str(err.value)
    assert f"run `mammosynth data upload <folder> {source}` again to finish the upload" in str(err.value)
    assert not (tmp_path / "ingested").exists()

    assert storage.main(["upload", str(raw), source]) == 0
    result = study.ingest_step(source, str(tmp_path / "ingested"), preset="tiny")
    assert (tmp_path / "ingested" / "index.csv").is_file() and result


# -------------------------------------------------------------------------- repairs (15.5)


def test_republish_repairs_a_same_size_corrupted_object(base_uri, tmp_path, monkeypatch):
    src = tmp_path / "prepared"
    files = _make_tree(src, seed=6)
    set_uri = storage.publish_set(src, base_uri, kind="prepared")["uri"]
    bad = bytearray(files["images/a.png"])
    bad[0] ^= 0xFF  # same size: only a checksum tells
    storage.write_bytes(f"{set_uri}/images/a.png", bytes(bad))
    assert not storage.verify_set(set_uri).ok
    calls = _count_puts(monkeypatch)
    again = storage.publish_set(src, base_uri, kind="prepared")
    assert not again["reused"] and calls == ["images/a.png"]
    assert storage.verify_set(set_uri).ok
    assert storage.read_bytes(f"{set_uri}/images/a.png") == files["images/a.png"]


def test_republish_replaces_an_invalid_json_manifest_and_logs_why(base_uri, tmp_path, monkeypatch, caplog):
    src = tmp_path / "synthetic"
    files = _make_tree(src, seed=7)
    set_uri = storage.publish_set(src, base_uri, kind="synthetic")["uri"]
    storage.write_bytes(f"{set_uri}/{storage.SET_MANIFEST}", b'{"format": "mammosynth-set/1", "fil')
    assert "is not valid JSON" in storage.verify_set(set_uri).error
    calls = _count_puts(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="mammosynth.storage"):
        again = storage.publish_set(src, base_uri, kind="synthetic")
    assert "is not valid JSON" in caplog.text and "treated as absent" in caplog.text
    assert again["uri"] == set_uri and not again["reused"] and calls == []
    assert storage.verify_set(set_uri).ok
    assert (storage.open_set(set_uri, tmp_path / "o") / "meta.json").read_bytes() == files["meta.json"]


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda m: m["files"][0].update(size="big"), "files[0].size='big' is not a byte count"),
        (lambda m: m.update(files="all of them"), "'files' is str, expected a list"),
        (lambda m: m["files"].__setitem__(1, "a.png"), "files[1] is str, expected an object"),
        (lambda m: m["files"][0].update(path="../../escaped"), "is not a relative path inside the set"),
        (lambda m: m["files"][2].update(sha256=None), "files[2].sha256=None is not a sha256"),
    ],
)
def test_a_malformed_manifest_gives_a_clear_error_and_republish_repairs_it(
    base_uri, tmp_path, capsys, damage, reason
):
    src = tmp_path / "ingested"
    _make_tree(src, seed=8)
    set_uri = storage.publish_set(src, base_uri, kind="ingested")["uri"]
    manifest = _manifest_at(set_uri)
    damage(manifest)
    storage.write_bytes(f"{set_uri}/{storage.SET_MANIFEST}", json.dumps(manifest).encode())

    result = storage.verify_set(set_uri)
    assert not result.ok and "is malformed" in result.error and reason in result.error
    with pytest.raises(StorageError, match="is malformed.*re-publish the set"):
        storage.open_set(set_uri, tmp_path / "o")
    assert storage.main(["verify", set_uri]) == 1
    out = capsys.readouterr()
    assert reason in out.out and "Traceback" not in out.out + out.err
    assert storage.list_sets(base_uri) == []  # skipped with a warning, not a crash
    assert not storage.publish_set(src, base_uri, kind="ingested")["reused"]
    assert storage.verify_set(set_uri).ok


def test_a_new_scheme_is_one_registered_store(tmp_path, monkeypatch):
    """The registry by scheme is the only dispatch: a store registered for mem:// serves every function."""
    from mammosynth.storage import base

    class MemStore(storage.local.LocalStore):
        remote = False

        def __init__(self, uri):
            self.uri = str(uri)
            self.root = tmp_path / "mem" / self.uri.split("://", 1)[1]

    monkeypatch.setitem(base._STORES, "mem", MemStore)
    storage.write_bytes("mem://box/a.bin", b"xyz")
    assert storage.read_bytes("mem://box/a.bin") == b"xyz" and storage.list_files("mem://box") == ["a.bin"]
    assert (tmp_path / "mem" / "box" / "a.bin").read_bytes() == b"xyz"
    assert not storage.is_remote("mem://box") and storage.is_remote("s3://b/k")
    src = tmp_path / "src"
    _make_tree(src, seed=9)
    assert storage.verify_set(storage.publish_set(src, "mem://sets", kind="raw")["uri"]).ok
    with pytest.raises(StorageError, match="unsupported URI scheme"):
        storage.exists("gs://bucket/x")

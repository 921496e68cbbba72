"""An image over the pixel budget is refused as too large (HTTP 413) before it is decoded.

The phantom warning and provenance are tested in test_serving.py.
"""

import pytest

pytest.importorskip("kserve")


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

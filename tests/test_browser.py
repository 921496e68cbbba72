"""Browser check: a real headless Chromium renders a page and the test reads element positions.

The report's first screen must hold the verdict, the results table and the warnings box within the
first 1,200 px. Here on a small hand-written page (one that passes, one that pushes the table below
the fold); the report's own check uses the same helper once the report carries those ids.
"""

from __future__ import annotations

import base64
import struct
import zlib

import pytest
from browser_check import element_boxes, find_chromium

FIRST_SCREEN_PX = 1200
FIRST_SCREEN_IDS = ["verdict", "results-table", "warnings"]

needs_chromium = pytest.mark.skipif(
    find_chromium() is None,
    reason="headless Chromium not installed (run .ci/install-chromium, or set $CHROMIUM): browser check skipped",
)


def _png_data_uri(w: int, h: int) -> str:
    """A tiny grey PNG, so the page is self-contained like the report (figures embedded)."""
    raw = b"".join(b"\x00" + b"\x80" * w for _ in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )
    return "data:image/png;base64," + base64.b64encode(png).decode()


def _page(spacer_px: int) -> str:
    img = _png_data_uri(40, 30)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>t</title>
<style>body {{ font-family: sans-serif; margin: 16px; }} .figure img {{ width: 600px; height: 300px; }}</style>
</head><body>
<h1>mammosynth report</h1>
<p id="verdict"><b>Verdict:</b> no significant gain from synthetic data.</p>
<div id="warnings"><ul><li>phantom data</li><li>memorisation suspected</li></ul></div>
<div style="height: {spacer_px}px"></div>
<table id="results-table"><tr><th>arm</th><th>AUC</th></tr><tr><td>real</td><td>0.71</td></tr></table>
<div class="figure"><img src="{img}" alt="forest"></div>
<details><summary>Appendix</summary><pre>{"x" * 2000}</pre></details>
</body></html>"""


@needs_chromium
def test_first_screen_elements_within_1200px(tmp_path):
    page = tmp_path / "report.html"
    page.write_text(_page(spacer_px=200), encoding="utf-8")
    shot = tmp_path / "shot.png"
    res = element_boxes(page, FIRST_SCREEN_IDS + ["absent-id"], screenshot=shot)
    boxes = res["boxes"]
    assert boxes["absent-id"] is None
    for el in FIRST_SCREEN_IDS:
        assert boxes[el] is not None, f"#{el} missing from the rendered page"
        assert boxes[el]["height"] > 0 and boxes[el]["bottom"] <= FIRST_SCREEN_PX, (el, boxes[el])
    assert boxes["verdict"]["top"] < boxes["warnings"]["top"] < boxes["results-table"]["top"]
    assert shot.exists() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@needs_chromium
def test_element_below_the_fold_is_detected(tmp_path):
    page = tmp_path / "report.html"
    page.write_text(_page(spacer_px=3000), encoding="utf-8")
    boxes = element_boxes(page, FIRST_SCREEN_IDS)["boxes"]
    assert boxes["results-table"]["top"] > FIRST_SCREEN_PX  # the check can fail: the table is pushed down
    assert boxes["verdict"]["bottom"] <= FIRST_SCREEN_PX

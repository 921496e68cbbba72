"""Render an HTML file in headless Chromium: a screenshot, and where given elements landed.

Test helper (not product code). Positions come from the rendered page itself: a copy of the HTML
gets a small script that, once the page has loaded, writes ``getBoundingClientRect()`` (plus the
scroll offset) of each requested id as JSON into a ``<pre>`` element; ``--dump-dom`` prints the DOM
after scripts ran, and the JSON is read back from it. Chromium comes from the OS packages
(``.ci/install-chromium``); `find_chromium` returns ``None`` where there is none, so tests can skip
with a reason instead of failing.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

CANDIDATES = (
    "chromium",
    "chromium-browser",
    "chromium-headless-shell",
    "google-chrome",
    "google-chrome-stable",
)
WINDOW = (1280, 1600)
_MARK = "__element_boxes__"
_SCRIPT = """
<script>
window.addEventListener("load", function () {
  var ids = %s, out = {};
  ids.forEach(function (id) {
    var el = document.getElementById(id);
    if (!el) { out[id] = null; return; }
    var r = el.getBoundingClientRect();
    out[id] = {top: r.top + window.scrollY, left: r.left + window.scrollX,
               bottom: r.bottom + window.scrollY, width: r.width, height: r.height};
  });
  var pre = document.createElement("pre");
  pre.id = "%s";
  pre.textContent = JSON.stringify({boxes: out, page_height: document.documentElement.scrollHeight});
  document.body.appendChild(pre);
});
</script>
"""


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome binary (``$CHROMIUM`` first), or ``None``."""
    env = os.environ.get("CHROMIUM")
    if env and Path(env).exists():
        return env
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def _base_args(binary: str, width: int, height: int, profile: str) -> list[str]:
    return [
        binary,
        "--headless",
        "--no-sandbox",  # CI containers run as root
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--no-first-run",
        "--allow-file-access-from-files",
        f"--user-data-dir={profile}",
        f"--window-size={width},{height}",
    ]


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"chromium exited {proc.returncode}: {proc.stderr.strip()[-800:]}")
    return proc


def element_boxes(
    html_path: str | os.PathLike,
    ids: list[str],
    *,
    width: int = WINDOW[0],
    height: int = WINDOW[1],
    screenshot: str | os.PathLike | None = None,
    timeout: float = 60.0,
) -> dict:
    """Render ``html_path`` in headless Chromium and measure elements by id.

    Args:
        html_path: the HTML file (self-contained: figures embedded).
        ids: element ids to measure.
        width: viewport width in CSS px.
        height: viewport height (the screenshot's size).
        screenshot: optional PNG path for a screenshot of the first ``height`` px.
        timeout: seconds per Chromium call.

    Returns:
        ``{"boxes": {id: {"top", "left", "bottom", "width", "height"} or None (absent)},
        "page_height": px}`` in page coordinates (top of the page = 0).

    Raises:
        RuntimeError: no Chromium, Chromium failed, or the measuring script did not run.
    """
    binary = find_chromium()
    if binary is None:
        raise RuntimeError("no Chromium found: run .ci/install-chromium (or set $CHROMIUM)")
    src = Path(html_path).read_text(encoding="utf-8")
    script = _SCRIPT % (json.dumps(list(ids)), _MARK)
    probe = re.sub(r"(</body\s*>)", script + r"\1", src, count=1, flags=re.I)
    if probe == src:
        probe = src + script
    with tempfile.TemporaryDirectory(prefix="browser-check-") as tmp:
        page = Path(tmp) / "page.html"
        page.write_text(probe, encoding="utf-8")
        args = _base_args(binary, width, height, str(Path(tmp) / "profile"))
        dom = _run([*args, "--virtual-time-budget=5000", "--dump-dom", page.as_uri()], timeout).stdout
        if screenshot is not None:
            shot = Path(screenshot).resolve()
            shot.parent.mkdir(parents=True, exist_ok=True)
            _run([*args, f"--screenshot={shot}", Path(html_path).resolve().as_uri()], timeout)
    found = re.search(rf'<pre id="{_MARK}">(.*?)</pre>', dom, flags=re.S)
    if not found:
        raise RuntimeError(f"the measuring script did not run in {html_path} (no #{_MARK} in the dumped DOM)")
    return json.loads(html.unescape(found.group(1)))

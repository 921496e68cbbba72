"""Ingest memory benchmark: our streaming ingest vs the study's load-everything-first way.

The study read every image into one in-memory list before doing anything; full CBIS-DDSM mammograms
are ~3000×5000×16-bit (≈30 MB each), so that grows with the data set. Our ingest handles one row at a
time, so its peak memory should stay flat however many images there are. Both run in fresh
subprocesses on the same large-crop phantom (the same DICOM files), and we report peak RSS.
Prints one entry (`bench._common`; ratio = baseline / ours). Peak RSS hardly varies between runs,
so the repeats (each a fresh pair of processes, interleaved) mostly show that it is stable.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _common  # noqa: E402

N_PATIENTS = 2 if _common.tiny() else 12
CROP_SIZE = (
    256 if _common.tiny() else 1600
)  # ~5 MB per 16-bit image: big enough that holding all of them shows

# VmHWM (the process's own high-water mark) rather than ru_maxrss, which Linux carries over exec.
_PEAK = "print([line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM')][0])"

_OURS = (
    """
import sys
from mammosynth.ingest import run_ingest
run_ingest(sys.argv[1], sys.argv[2], eda=False)
"""
    + _PEAK
)

_STUDY = (
    """
import sys
from pathlib import Path
import numpy as np
from mammosynth.data.dicom import decode_dicom
images = [decode_dicom(p).pixels for p in sorted(Path(sys.argv[1]).rglob("*.dcm"))]
crops = [im for im in images if im.dtype != np.uint8]  # the study kept crops, dropped masks afterwards
"""
    + _PEAK
)

_GENERATE = """
import sys
from mammosynth.data import phantom
phantom.generate(sys.argv[1], n_patients=int(sys.argv[2]), seed=7, crop_size=int(sys.argv[3]))
"""


def _peak_mb(code: str, *args: str) -> float:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1]) / 1024.0  # VmHWM is in KiB


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        source = Path(tmp) / "src"
        subprocess.run(
            [sys.executable, "-c", _GENERATE, str(source), str(N_PATIENTS), str(CROP_SIZE)], check=True
        )
        n_files = len(list(Path(source).rglob("*.dcm")))
        size_mb = sum(p.stat().st_size for p in Path(source).rglob("*.dcm")) / 2**20
        runs = iter(range(100))
        o, b = _common.interleave(
            lambda: _peak_mb(_OURS, str(source), str(Path(tmp) / f"out{next(runs)}")),
            lambda: _peak_mb(_STUDY, str(source)),
            _common.repeats(),
        )
    print(f"# {n_files} DICOM files, {size_mb:.0f} MB on disk", file=sys.stderr)
    name = "ingest_peak_rss_vs_load_all"
    _common.emit([_common.entry(name, o, b, "MB peak RSS", False, files=n_files, mb_on_disk=round(size_mb))])
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())

"""Ingest memory benchmark: our streaming ingest vs the study's load-everything-first way.

The study read every image into one in-memory list before doing anything; full CBIS-DDSM mammograms
are ~3000×5000×16-bit (≈30 MB each), so that grows with the data set. Our ingest handles one row at a
time, so its peak memory should stay flat however many images there are. Both run in fresh
subprocesses on the same large-crop phantom (the same DICOM files), and we report peak RSS.
Prints one JSON entry per line: ``name, ours, baseline, unit, ratio`` (ratio = baseline / ours).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

N_PATIENTS = 12
CROP_SIZE = 1600  # ~5 MB per 16-bit image: big enough that holding all of them shows

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
        baseline = _peak_mb(_STUDY, str(source))
        ours = _peak_mb(_OURS, str(source), str(Path(tmp) / "out"))
    print(f"# {n_files} DICOM files, {size_mb:.0f} MB on disk", file=sys.stderr)
    entry = {
        "name": f"ingest_peak_rss_{n_files}_dicoms_{size_mb:.0f}MB",
        "ours": round(ours, 1),
        "baseline": round(baseline, 1),
        "unit": "MB peak RSS",
        "ratio": round(baseline / ours, 2),
    }
    print(json.dumps(entry))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())

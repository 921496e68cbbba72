"""User mistakes end in one line naming the value and the fix, exit code 2, no traceback:
`python -m pipelines run` and the `mammosynth <stage>` CLIs, run as the user runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
ENV.pop("LOG_LEVEL", None)


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=120
    )


CASES = [
    (["-m", "pipelines", "run", "--preset", "nope"], "python -m pipelines run", ["'nope'", "tiny, embedded"]),
    (
        ["-m", "pipelines", "run", "--overrides", "{seeds: [0]}"],
        "python -m pipelines run",
        ["{seeds: [0]}", '{"seeds"'],
    ),
    (
        ["-m", "pipelines", "run", "--overrides", '{"epochz": 1}'],
        "python -m pipelines run",
        ["epochz", "known fields"],
    ),
    (
        ["-m", "pipelines", "run", "--source", "no/such/folder"],
        "python -m pipelines run",
        ["no/such/folder", "s3://"],
    ),
    (["-m", "mammosynth.cli", "tune", "--preset", "nope"], "mammosynth tune", ["'nope'", "tiny, embedded"]),
    (["-m", "mammosynth.cli", "tune", "--overrides", "[1"], "mammosynth tune", ["'[1'", "JSON object"]),
    (
        ["-m", "mammosynth.cli", "ingest", "--source", "no/such/folder", "--out", "x"],
        "mammosynth ingest",
        ["no/such/folder"],
    ),
    (
        ["-m", "mammosynth.cli", "ingest", "--table", "no/such/labels.csv", "--out", "x"],
        "mammosynth ingest",
        ["--table no/such/labels.csv", "labels CSV"],
    ),
]


@pytest.mark.parametrize("args, prog, needles", CASES, ids=[" ".join(c[0][1:4]) for c in CASES])
def test_user_error_is_one_line_exit_2(args, prog, needles):
    proc = _run(*args)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    errors = [line for line in proc.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1 and errors[0].startswith(f"{prog}: error: "), proc.stderr
    for needle in needles:
        assert needle in errors[0]

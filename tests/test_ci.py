"""`.ci/run` proves a bare clone: it clones HEAD into a fresh directory with nothing beside it and
runs `make test` there, failing on pytest's "no tests ran". Checked with a stand-in `make` on PATH
that records where it ran (the real `make test` builds a virtualenv: minutes)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(
    shutil.which("git") is None or not (ROOT / ".git").exists(), reason="needs git and a git checkout"
)


def _run_ci(tmp_path: Path, make_output: str, make_rc: int = 0) -> tuple[subprocess.CompletedProcess, Path]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "record.txt"
    fake = bin_dir / "make"
    fake.write_text(
        "#!/usr/bin/env bash\n"
        f'{{ echo "args=$*"; echo "pwd=$PWD"; echo "crds=${{MAMMOSYNTH_CRDS:-unset}}"; '
        f'echo "beside=$(ls -A ..)"; test -f tests/fixtures/cbis-ddsm/README.md && echo fixtures=yes; '
        f"test -f src/mammosynth/cluster/schemas/kserve.inferenceservices.crd.yaml && echo schemas=yes; }} > {record}\n"
        f"echo '{make_output}'\nexit {make_rc}\n"
    )
    fake.chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "TMPDIR": str(tmp_path),
        "MAMMOSYNTH_CRDS": "/nonexistent",
        "PIP_CACHE_DIR": str(tmp_path / "pip-cache"),
    }
    proc = subprocess.run(
        ["bash", str(ROOT / ".ci" / "run")], capture_output=True, text=True, env=env, timeout=120
    )
    return proc, record


def test_ci_runs_make_test_in_a_bare_clone(tmp_path):
    proc, record = _run_ci(tmp_path, "=== 12 passed in 1.0s ===")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = dict(line.split("=", 1) for line in record.read_text().splitlines())
    assert lines["args"].split()[0] == "test"
    ran_in = Path(lines["pwd"])
    assert ran_in.name == "mammosynth" and ran_in.parent.parent == tmp_path
    assert ran_in.resolve() != ROOT
    assert lines["beside"].split() == ["mammosynth"]  # nothing else beside the clone
    assert lines["crds"] == "unset" and lines["fixtures"] == "yes" and lines["schemas"] == "yes"
    assert f"bare clone at {ran_in}" in proc.stdout
    assert not ran_in.exists(), "a passing run removes its clone"


@pytest.mark.parametrize(
    "output, rc", [("collected 0 items", 0), ("no tests ran in 0.01s", 0), ("1 failed", 1)]
)
def test_ci_fails_when_no_tests_ran_or_make_fails(tmp_path, output, rc):
    proc, _ = _run_ci(tmp_path, output, rc)
    assert proc.returncode != 0
    assert "for inspection" in proc.stdout

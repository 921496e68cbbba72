"""The repository is self-contained: no tracked file refers to a path outside the tree (the
reference folder beside a developer's checkout, absolute workstation paths, parents above the
repository root), so a bare `git clone` tests, runs and builds its images alone."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Written so that this file does not match itself.
OUTSIDE = [
    (re.compile(r"\.\./+shared\b"), "the reference folder beside the checkout"),
    (re.compile(r"\bshared/+(crds|cbis-ddsm|hooks|phantom-notes|CONVENTIONS)"), "the reference folder"),
    (re.compile(r"/work/+(main|wt|shared|briefs)\b"), "an absolute workstation path"),
    (re.compile(r"parents\[[2-9]\]"), "a folder above the repository root"),
    (re.compile(r"\.\./\.\./\.\./\.\./"), "a relative path that climbs out of the tree"),
]


def tracked_files() -> list[Path]:
    """Files git tracks (the tree a clone gets); every file under the root when git is missing."""
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True, check=True, timeout=60
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        skip = {".git", ".venv", "runs", "build", "local_outputs", "__pycache__"}
        return [p for p in ROOT.rglob("*") if p.is_file() and not skip & set(p.relative_to(ROOT).parts)]
    return [ROOT / name.decode() for name in out.split(b"\0") if name]


def scan(text: str) -> list[str]:
    """Return ``"line N: <match> (<why>)"`` for each reference to a path outside the tree."""
    problems = []
    for number, line in enumerate(text.splitlines(), 1):
        for pattern, why in OUTSIDE:
            match = pattern.search(line)
            if match:
                problems.append(f"line {number}: {match.group(0)!r} ({why})")
    return problems


SHARED = "shared"  # the literals below are assembled so that this file passes its own scan


@pytest.mark.parametrize(
    "line",
    [
        f"REAL = Path(__file__).parents{[2]} / '{SHARED}' / 'cbis-ddsm'",
        f"docker build --build-context crds=../{SHARED}/crds .",
        f"MAMMOSYNTH_CRDS={SHARED}/crds make images",
        f"load {SHARED}/cbis-ddsm/dicom",
        "hadolint " + "/work" + "/main/.venv/bin/hadolint",
    ],
)
def test_scan_catches_outside_references(line):
    assert scan(line)


def test_scan_allows_in_tree_paths():
    assert scan("tests/fixtures/cbis-ddsm/dicom and src/mammosynth/schemas, the shared real test set") == []


def test_tree_has_no_reference_outside_it():
    files = tracked_files()
    assert len(files) > 50, "found too few files: is this the repository?"
    found = []
    for path in files:
        if not path.is_file():
            continue
        data = path.read_bytes()
        if b"\0" in data[:8192]:  # binary (DICOM crops)
            continue
        for problem in scan(data.decode("utf-8", errors="replace")):
            found.append(f"{path.relative_to(ROOT)} {problem}")
    assert not found, "references outside the repository:\n" + "\n".join(found)

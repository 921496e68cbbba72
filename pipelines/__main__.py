"""`python -m pipelines run|compile`: run the study pipeline locally through kfp.local, or compile it.

`run` executes `study_pipeline` with kfp.local's SubprocessRunner (each component in a subprocess of
this interpreter), then copies the report's run folder to ``runs/<run-id>/`` and points
``runs/latest`` at it. `compile` writes the YAML the Kubeflow UI uploads.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import shutil
import sys
import threading
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mammosynth import atomic
from mammosynth.logs import setup_logging, user_error

log = logging.getLogger("mammosynth.run")


def compile_pipeline(out: Path) -> Path:
    """Compile `study_pipeline` to ``out`` (YAML for the Kubeflow UI); returns ``out``."""
    from kfp import compiler

    from pipelines.study import study_pipeline

    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(study_pipeline, str(out))
    return out


def publish_run(run_folder: Path, runs_dir: Path, run_id: str) -> Path:
    """Copy a finished run folder to runs/<run-id>/ atomically and repoint runs/latest."""
    runs_dir.mkdir(parents=True, exist_ok=True)
    target = runs_dir / run_id
    with atomic.replace_dir(target) as tmp:
        shutil.copytree(run_folder, tmp, dirs_exist_ok=True)
    link_tmp = runs_dir / ".latest.tmp"
    if link_tmp.is_symlink() or link_tmp.exists():
        link_tmp.unlink()
    link_tmp.symlink_to(run_id)
    os.replace(link_tmp, runs_dir / "latest")
    return target


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_START = re.compile(r"Executing task '([^']+)'")
_END = re.compile(r"Task '([^']+)' finished with status (\w+)")
_KFP_LINE = re.compile(r"^\d\d:\d\d:\d\d\.\d+ - [A-Z]+ - ")  # kfp.local's own log records
_NOISE = [
    re.compile(r"^\s*[EWI]\d{4} \d\d:\d\d:\d\d"),  # TensorFlow / absl C++ log lines
    re.compile(r"All log messages before absl::InitializeLog|oneDNN custom operations|cuda drivers|TF-TRT"),
    re.compile(r"Streamed logs:|has no outputs|Wrote executor output file|^\s*-+\s*$"),
    re.compile(r"Warning:|warnings\.warn\(|^\s*$"),
    # kfp.local's component loading and Keras' retracing advice (predict on a short last batch).
    re.compile(r"Looking for component `|Loading KFP component|triggered tf\.function retracing"),
]
# kfp.local prefixes a component's log records with "[KFP Executor <date> <time> <LEVEL>]: ".
_EXECUTOR_PREFIX = re.compile(r"^\s*\[KFP Executor [0-9-]+ [0-9:,]+ (\w+)\]: ")


class LoopItemChatter(logging.Filter):
    """Drop kfp.local's ParallelFor "expression selector" records, which echo every loop item's whole config.

    kfp.local 2.17 logs them on the root logger at INFO (``orchestrator_utils``), two per parameter per
    iteration; ``--verbose`` keeps them.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """False (drop) for the selector records, True for everything else."""
        return not str(record.msg).startswith(("Applying expression selector", "After expression selector"))


def _shorten(line: str) -> str:
    """A component's log line without kfp.local's executor prefix (``WARNING``/``ERROR`` kept), indented."""
    match = _EXECUTOR_PREFIX.match(line)
    if not match:
        return line.strip()
    level = match.group(1)
    rest = line[match.end() :].strip()
    return f"  {rest}" if level == "INFO" else f"  {level}: {rest}"


class Terminal:
    """A stdout filter for kfp.local that shows stage starts/ends with durations and progress lines.

    Drops kfp.local's executor dumps and TensorFlow's C++ noise. Records seconds per stage in `stages`.
    A ParallelFor runs its iterations under one task name at the same time, so each end is paired with
    the oldest open start of that name and the iterations' seconds are summed into the stage
    (`iterations` counts them, `spans` keeps first start to last end). Stage lines are recognised on
    every line, also inside a dump the filter is hiding, because parallel iterations interleave their
    output. Writes may come from kfp.local's worker threads.
    """

    def __init__(self, out, clock=time.monotonic, verbose: bool = False):
        self.out, self.clock, self.verbose = out, clock, verbose
        self.stages: dict[str, float] = {}
        self.iterations: dict[str, int] = {}
        self.spans: dict[str, list[float]] = {}  # name -> [first start, last end]
        self.unmatched: dict[str, int] = {}  # name -> ends seen without a start (time unknown)
        self._started: dict[str, list[float]] = {}  # name -> open starts, oldest first
        self._skip: str | None = None  # "json" inside an executor-input dump, "outputs" in an outputs block
        self._json_indent: int | None = None
        self._pending = ""
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        """Take a chunk of stdout (any split, any thread); filter and time its complete lines."""
        with self._lock:
            self._pending += text
            *lines, self._pending = self._pending.split("\n")
            for line in lines:
                self._line(_ANSI.sub("", line))
        return len(text)

    def _line(self, line: str) -> None:
        event = self._time(line)
        if self.verbose:  # everything through; stage times still recorded
            self.out.write(line + "\n")
            return
        if event or _KFP_LINE.search(line):
            self._skip = None  # a new kfp.local record ends any dump
        if event:
            self.out.write(event + "\n")
        elif self._skip == "json":
            self._skip_json(line)
        elif self._skip == "outputs" and line.startswith("    "):
            return
        else:
            self._skip = None
            if "Got executor_input:" in line:
                self._skip, self._json_indent = "json", None
            elif re.search(r"Task '[^']+' outputs:", line):
                self._skip = "outputs"
            elif not any(p.search(line) for p in _NOISE):
                self.out.write(_shorten(line) + "\n")

    def _skip_json(self, line: str) -> None:
        """Hide one line of an executor-input dump; its closing brace (at the opening's indent) ends it."""
        indent = len(line) - len(line.lstrip())
        if self._json_indent is None:
            if line.strip() == "{":
                self._json_indent = indent
            return
        if line.strip() == "}" and indent <= self._json_indent:
            self._skip = None

    def _time(self, line: str) -> str | None:
        """Record a stage start or end; return the line to show for it (None for other lines)."""
        if match := _START.search(line):
            name, now = match.group(1), self.clock()
            self._started.setdefault(name, []).append(now)
            self.spans.setdefault(name, [now, now])
            return f"stage {name}: started"
        if match := _END.search(line):
            name, state = match.groups()
            now = self.clock()
            open_starts = self._started.get(name)
            if not open_starts:  # its start line never came: the time is unknown, say so in run.json
                self.unmatched[name] = self.unmatched.get(name, 0) + 1
                open_starts = [now]
            seconds = now - open_starts.pop(0)
            self._add(name, seconds, now)
            return f"stage {name}: {state.lower()} in {seconds:.1f} s"
        return None

    def _add(self, name: str, seconds: float, end: float) -> None:
        self.stages[name] = self.stages.get(name, 0.0) + seconds
        self.iterations[name] = self.iterations.get(name, 0) + 1
        span = self.spans.setdefault(name, [end - seconds, end])
        span[1] = max(span[1], end)

    def flush(self) -> None:
        """Flush the underlying stream."""
        self.out.flush()

    def stage_record(self, study_seconds: float) -> dict:
        """``{"stages": {name: {"seconds", "share", "runs", "wall_seconds"}}, "study_seconds"}`` for run.json.

        ``seconds`` sums a stage's runs (ParallelFor iterations: compute time); ``wall_seconds`` is the
        stage's first start to last end and ``share`` is that wall time over the study's, so a parallel
        stage never shows more than the whole study (stages running beside each other can still overlap). A
        stage still running (its end line never came, e.g. the study failed) is counted up to now
        and marked ``"unfinished"`` with the number of such runs; a run whose start line never came
        counts 0 s and is marked ``"untimed_runs"``.
        """
        total = max(study_seconds, 1e-9)
        with self._lock:
            now = self.clock()
            for name, starts in self._started.items():
                for begun in starts:
                    self._add(name, now - begun, now)
                    self.iterations[name] -= 1
            unfinished = {k: len(v) for k, v in self._started.items() if v}
            self._started = {}
            stages = {}
            for name, seconds in self.stages.items():
                runs = self.iterations.get(name, 0) + unfinished.get(name, 0)
                wall = self.spans[name][1] - self.spans[name][0]
                entry = {"seconds": round(seconds, 1), "share": round(wall / total, 4), "runs": runs}
                entry["wall_seconds"] = round(wall, 1)
                if name in unfinished:
                    entry["unfinished"] = unfinished[name]
                if name in self.unmatched:
                    entry["untimed_runs"] = self.unmatched[name]
                stages[name] = entry
        return {"stages": stages, "study_seconds": round(study_seconds, 1)}


@contextlib.contextmanager
def shared_kfp_contexts():
    """Make kfp.local's per-task logger and print contexts safe for parallel ParallelFor iterations.

    kfp.local 2.17 swaps the root logger's handlers (``logging_utils.local_logger_context``) and
    ``builtins.print`` (``indented_print``) around every task. ParallelFor iterations run in threads,
    so one iteration's exit restored what another had installed: later iterations' "Executing task"
    lines went to another stream or nowhere (their stage times were lost) and their output was
    indented twice. Inside this context the outermost entry of each installs it and the last exit
    undoes it; nested and parallel entries share it.
    """
    from kfp.local import logging_utils

    lock = threading.Lock()
    originals = {name: getattr(logging_utils, name) for name in ("local_logger_context", "indented_print")}

    def refcounted(original):
        state = {"depth": 0, "cm": None}

        @contextlib.contextmanager
        def shared(*args, **kwargs):
            with lock:
                if state["depth"] == 0:
                    state["cm"] = original(*args, **kwargs)
                    state["cm"].__enter__()
                state["depth"] += 1
            try:
                yield
            finally:
                with lock:
                    state["depth"] -= 1
                    if state["depth"] == 0:
                        state["cm"].__exit__(None, None, None)

        return shared

    for name, original in originals.items():
        setattr(logging_utils, name, refcounted(original))
    try:
        yield
    finally:
        for name, original in originals.items():
            setattr(logging_utils, name, original)


def verbose_requested(flag: bool) -> bool:
    """``--verbose`` or ``LOG_LEVEL=DEBUG`` brings back kfp.local's dumps and TensorFlow's logs."""
    return flag or os.environ.get("LOG_LEVEL", "").upper() == "DEBUG"


def _commit() -> str:
    """The checkout's short commit (``-dirty`` with uncommitted changes), or ``unknown``."""
    import subprocess

    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        )
        dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True, timeout=10)
    except OSError:
        return "unknown"
    if sha.returncode != 0:
        return "unknown"
    return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def run_local(
    *,
    source: str,
    preset: str,
    overrides: str,
    runs_dir: Path,
    work_dir: Path,
    run_id: str | None = None,
    verbose: bool = False,
    **params: Any,
) -> Path:
    """Run the whole study through kfp.local and publish its run folder. Returns runs/<run-id>.

    ``params`` are further pipeline parameters: the typed ones (``seeds=[0, 1]``, ``gan_steps=100``, ...)
    and the synthetic-set URIs.
    """
    from kfp import local

    from pipelines.study import study_pipeline

    run_id = run_id or f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{preset}"
    # Expected locally, said once here instead of per task: the trainer image is not pulled (this
    # interpreter has the same packages), and GPU/CPU/memory settings only apply in the cluster.
    log.info(
        "kfp.local: components run in this interpreter instead of the trainer image; "
        "resource, GPU and node-pool settings apply only in the cluster"
    )
    warnings.filterwarnings("ignore", message=r"You may be attemping to run a task", category=RuntimeWarning)
    warnings.filterwarnings("ignore", message=r"Task '.*': settings \[", category=UserWarning)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(work_dir.resolve()))
    terminal = Terminal(sys.stdout, verbose=verbose)
    if not verbose:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"  # the components' subprocesses inherit these
        os.environ.setdefault("PYTHONWARNINGS", "ignore")
        os.environ.setdefault("PIP_QUIET", "1")
    chatter = LoopItemChatter()
    if not verbose:
        logging.getLogger().addFilter(chatter)
    started = time.monotonic()
    real_stdout = sys.stdout
    sys.stdout = terminal
    try:
        with shared_kfp_contexts():
            task = study_pipeline(source=source, preset=preset, overrides=overrides, **params)
    finally:
        sys.stdout = real_stdout
        logging.getLogger().removeFilter(chatter)
    run_folder = Path(task.output.path)
    elapsed = time.monotonic() - started
    meta_path = run_folder / "run.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    meta.update(
        {
            "run_id": run_id,
            "wall_time_s": round(elapsed, 1),
            "orchestrator": "kfp.local",
            "commit": _commit(),
            "finished_at": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        }
    )
    meta.update(terminal.stage_record(elapsed))
    meta_path.write_text(json.dumps(meta, indent=2))
    return publish_run(run_folder, runs_dir, run_id)


def _print_summary(target: Path) -> None:
    metrics = json.loads((target / "metrics.json").read_text())
    print(f"\n{'arm':<28}{'test acc':>10}{'AUC':>8}{'AUC 95% CI':>20}")
    for name, arm in metrics["arms"].items():
        ci = arm.get("summary", {}).get("auc", {}).get("ci95", [float("nan")] * 2)
        print(f"{name:<28}{arm['accuracy']:>10.3f}{arm['auc']:>8.3f}   [{ci[0]:.3f}, {ci[1]:.3f}]")
    if metrics.get("conclusion"):
        print(f"\n{metrics['conclusion']}")


def check_run_args(preset: str, overrides: str, source: str, **typed: Any) -> None:
    """Check what the user typed before the study starts.

    Args:
        preset: a key of `mammosynth.config.PRESETS`.
        overrides: JSON object of config fields, applied last (as `mammosynth.config.resolve` does).
        source: ``embedded``, a folder or an ``s3://`` upload.
        **typed: the typed run parameters (`mammosynth.config.TYPED_PARAMETERS`, ``synthetic_ratios``).

    Raises:
        ValueError: unknown preset, overrides that are not a JSON object, an unknown config field, a
            typed parameter the config refuses.
        FileNotFoundError: ``source`` is neither ``embedded``, an ``s3://`` URI nor a folder.
    """
    from mammosynth.config import resolve

    resolve(preset, overrides, **typed)
    if source != "embedded" and "://" not in source and not Path(source).is_dir():
        raise FileNotFoundError(
            f"--source {source!r} is not a folder; pass a folder holding labels.csv or a CBIS-DDSM copy (its "
            'CSVs at the top or in csv/), an s3://bucket/prefix, or "embedded" for the phantom'
        )


def check_external_source(external_source: str) -> None:
    """Check ``--external-source`` before the study starts.

    Raises:
        FileNotFoundError: neither an ``s3://`` URI nor a folder.
    """
    if "://" not in external_source and not Path(external_source).is_dir():
        raise FileNotFoundError(
            f"--external-source {external_source!r} is not a folder; pass a folder holding labels.csv or a "
            "CBIS-DDSM copy, or an s3://bucket/prefix upload"
        )


def _list_of(kind: type, what: str):
    """An argparse type: comma-separated values of ``kind`` (``0,1,2``); empty = the preset's."""

    def parse(text: str) -> list:
        try:
            return [kind(part) for part in text.split(",") if part.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of {what}") from None

    return parse


# The typed run parameters as flags: (flag, argparse type, help). Same names as the pipeline's.
TYPED_FLAGS = (
    ("--seeds", _list_of(int, "integers"), "classifier seeds, e.g. 0,1,2"),
    ("--arms", _list_of(str, "arm names"), "arms, e.g. real,real+aug,real+synthetic@0.5,tstr"),
    ("--synthetic-ratios", _list_of(float, "numbers"), "one real+synthetic@r arm per ratio, e.g. 0.25,1.0"),
    ("--image-size", int, "image side in pixels"),
    ("--classifier", str, "simple_cnn, tuned_cnn, vgg16, inception_resnet_v2 or efficientnet_b0"),
    ("--classifier-epochs", int, "training epochs per arm and seed"),
    ("--tune-trials", int, "hyperparameter-search trials"),
    ("--gan-kind", str, "stable-cgan, seed-cgan or cvae"),
    ("--gan-steps", int, "GAN training steps per generator"),
    ("--gan-seeds", int, "generators trained"),
)


def _typed_args(args: argparse.Namespace) -> dict[str, Any]:
    """The typed run parameters the user set (unset flags keep the preset's values)."""
    names = (flag[2:].replace("-", "_") for flag, _, _ in TYPED_FLAGS)
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def main(argv: list[str] | None = None) -> int:
    """``python -m pipelines run|compile``; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m pipelines", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the study locally through kfp.local")
    run.add_argument("--source", default="embedded", help='CBIS-DDSM folder / s3:// prefix, or "embedded"')
    run.add_argument("--preset", default="embedded", help="config preset (tiny, embedded, cbis-ddsm)")
    for flag, kind, text in TYPED_FLAGS:
        run.add_argument(flag, type=kind, default=None, help=f"{text} (default: the preset's)")
    run.add_argument("--overrides", default="{}", help="JSON object of config overrides, applied last")
    run.add_argument("--synthetic-publish-uri", default="", help="publish the synthetic set there (s3://...)")
    run.add_argument("--synthetic-set-uri", default="", help="reuse this published synthetic set (no GAN)")
    run.add_argument(
        "--gan-checkpoint-uri", default="", help="durable GAN checkpoints (s3://... or a folder); resumable"
    )
    run.add_argument(
        "--external-source",
        default="",
        help="external test set: folder or s3:// upload (CBIS-DDSM or labels.csv layout); default none",
    )
    run.add_argument("--runs-dir", type=Path, default=Path("runs"))
    run.add_argument(
        "--verbose",
        action="store_true",
        help="show kfp.local's executor dumps and TensorFlow logs (or LOG_LEVEL=DEBUG)",
    )
    run.add_argument("--work-dir", type=Path, default=Path("build/local_outputs"))
    comp = sub.add_parser("compile", help="compile the pipeline to YAML for the Kubeflow UI")
    comp.add_argument("--out", type=Path, default=Path("build/mammosynth-study.yaml"))
    args = parser.parse_args(argv)
    setup_logging()
    if args.command == "compile":
        print(f"compiled pipeline written to {compile_pipeline(args.out)}")
        return 0
    typed = _typed_args(args)
    try:  # fail fast on a user mistake, before any work
        check_run_args(args.preset, args.overrides, args.source, **typed)
        if args.external_source:
            check_external_source(args.external_source)
    except (ValueError, FileNotFoundError) as exc:
        return user_error("python -m pipelines run", exc)
    started = time.monotonic()
    target = run_local(
        source=args.source,
        preset=args.preset,
        overrides=args.overrides,
        runs_dir=args.runs_dir,
        work_dir=args.work_dir,
        synthetic_publish_uri=args.synthetic_publish_uri,
        synthetic_set_uri=args.synthetic_set_uri,
        gan_checkpoint_uri=args.gan_checkpoint_uri,
        external_source=args.external_source,
        verbose=verbose_requested(args.verbose),
        **typed,
    )
    _print_summary(target)
    print(
        f"\nstudy finished in {time.monotonic() - started:.0f} s; results in {target}/ "
        f"(runs/latest -> {target.name}): report.md, report.html, metrics.json, model/"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

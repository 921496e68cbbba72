"""GAN training checkpoints: the run directory's ``checkpoints/`` and its durable mirror.

Local (in the run directory): ``checkpoints/step-XXXXXX/`` holds ``state.npz`` (every model and
optimiser variable, the in-graph RNG state), ``state.json`` (step, kind, config, the NumPy
batch-sampler RNG state) and ``losses.csv`` (the loss log so far). Each is written to a temp dir and
renamed into place, then ``checkpoints/latest`` (the folder's name) is replaced atomically.

Durable (``checkpoint_uri``: ``s3://bucket/prefix`` on MinIO, or a local / PVC path, through
`mammosynth.storage`): after each local checkpoint, `mirror` uploads the same three files to
``<checkpoint_uri>/step-XXXXXX/`` and only then writes the ``<checkpoint_uri>/latest`` pointer, so a
checkpoint cut off mid-upload is never "latest". On start, `fetch` restores the newest durable
checkpoint the pointer covers that also loads (each one checked like a local one), falling back to
the one before it. KFP uploads a task's output artifacts only when it succeeds, so this mirror is
what a retried pod (preemption, node loss) resumes from.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np

from mammosynth import atomic, storage
from mammosynth.storage.base import join, local_path

log = logging.getLogger(__name__)

KEEP_CHECKPOINTS = 2
POINTER = "latest"
PREFIX = "step-"


def losses_csv(rows: list[dict[str, float]], fields: list[str]) -> str:
    """``losses.csv`` text: a ``step`` column then ``fields`` (6 significant digits)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["step", *fields])
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (row[k] if k == "step" else f"{row[k]:.6g}") for k in ["step", *fields]})
    return buf.getvalue()


def read_losses(path: Path) -> list[dict[str, float]]:
    """Rows of a ``losses.csv`` (step as int, the rest as float)."""
    with open(path, newline="") as fh:
        return [{k: (int(v) if k == "step" else float(v)) for k, v in r.items()} for r in csv.DictReader(fh)]


def name_of(step: int) -> str:
    """The folder name of the checkpoint at ``step`` (``step-000250``)."""
    return f"{PREFIX}{step:06d}"


def step_of(name: str) -> int:
    """The step of a ``step-<n>`` name (-1 when the name is not one)."""
    try:
        return int(name.removeprefix(PREFIX)) if name.startswith(PREFIX) else -1
    except ValueError:
        return -1


def save(out: Path, model, step: int, sampler, losses: list[dict[str, float]]) -> Path:
    """Write ``checkpoints/step-<n>/`` atomically (fsync, rename), then the ``latest`` pointer.

    Retention keeps the newest `KEEP_CHECKPOINTS` by step and never the one just written.

    Args:
        out: the run directory.
        model: the compiled GAN (``state_variables()``, ``kind``, ``get_config()``, ``metrics``).
        step: the step just completed.
        sampler: the batch sampler (its ``rng`` state is saved).
        losses: the loss rows logged so far.

    Returns:
        The checkpoint folder.
    """
    root = out / "checkpoints"
    final = root / name_of(step)
    with atomic.replace_dir(final) as tmp:
        arrays = {f"v{i:04d}": np.asarray(v.numpy()) for i, v in enumerate(model.state_variables())}
        with open(tmp / "state.npz", "wb") as fh:
            np.savez(fh, **arrays)
        state = {
            "step": step,
            "kind": model.kind,
            "config": model.get_config(),
            "sampler_rng": sampler.rng.bit_generator.state,
            "n_variables": len(arrays),
        }
        (tmp / "state.json").write_text(json.dumps(state))
        (tmp / "losses.csv").write_text(losses_csv(losses, [m.name for m in model.metrics]))
    atomic.write_text(root / POINTER, final.name + "\n")
    for stale in root.glob(f".{PREFIX}*"):  # temp dirs of checkpoints a kill interrupted
        shutil.rmtree(stale, ignore_errors=True)
    kept = sorted((p for p in root.glob(f"{PREFIX}*") if p.is_dir()), key=lambda p: step_of(p.name))
    for old in kept[:-KEEP_CHECKPOINTS]:
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


def loads(path: Path) -> bool:
    """Whether a checkpoint is complete: state.json parses and state.npz holds every array intact."""
    try:
        state = json.loads((path / "state.json").read_text())
        with np.load(path / "state.npz", allow_pickle=False) as z:
            if len(z.files) != int(state["n_variables"]):
                return False
            for key in z.files:  # reading each array checks the zip member's CRC
                z[key]
        read_losses(path / "losses.csv")
        return int(state["step"]) == step_of(path.name)
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as exc:
        log.warning("checkpoint %s is damaged (%s); trying an older one", path.name, type(exc).__name__)
        return False


def latest(out: Path) -> Path | None:
    """The newest local checkpoint that loads, whatever the ``latest`` pointer says (it may be damaged)."""
    root = out / "checkpoints"
    if not root.is_dir():
        return None
    candidates = (p for p in root.glob(f"{PREFIX}*") if p.is_dir())
    for path in sorted(candidates, key=lambda p: step_of(p.name), reverse=True):
        if loads(path):
            pointer = root / POINTER
            said = pointer.read_text(errors="replace").strip() if pointer.exists() else ""
            if said != path.name:
                log.warning("checkpoints/latest says %r; using %s, the newest that loads", said, path.name)
            return path
    return None


def restore(path: Path, model, sampler) -> tuple[int, list[dict]]:
    """Load a checkpoint into ``model`` and ``sampler``; return (step, loss rows).

    Raises:
        ValueError: the checkpoint is of another GAN kind or architecture.
    """
    state = json.loads((path / "state.json").read_text())
    if state["kind"] != model.kind:
        raise ValueError(
            f"{path}: checkpoint is a {state['kind']} but kind={model.kind!r} was asked; "
            "use another out_dir or resume=False"
        )
    variables = model.state_variables()
    with np.load(path / "state.npz", allow_pickle=False) as z:
        if len(z.files) != len(variables):
            raise ValueError(
                f"{path}: checkpoint holds {len(z.files)} variables, model has "
                f"{len(variables)}; architecture changed — use resume=False"
            )
        for i, var in enumerate(variables):
            value = z[f"v{i:04d}"]
            if tuple(value.shape) != tuple(var.shape):
                raise ValueError(
                    f"{path}: variable {i} ({var.path}) has shape {value.shape}, "
                    f"model expects {tuple(var.shape)}; use resume=False"
                )
            var.assign(value)
    sampler.rng.bit_generator.state = state["sampler_rng"]
    return int(state["step"]), read_losses(path / "losses.csv")


# ------------------------------------------------------------------------------------ durable mirror


def durable_uri(checkpoint_uri: str, run_key: str, model: str) -> str:
    """``<checkpoint_uri>/<run_key>/<model>``: where one generator of one run keeps its checkpoints.

    Raises:
        ValueError: an empty run key, or one that is not a single path segment.
    """
    key = str(run_key).strip()
    if not key or "/" in key or "\\" in key or key in {".", ".."} or "{{" in key:
        raise ValueError(
            f"run_key {run_key!r} is not usable under checkpoint_uri {checkpoint_uri!r}: pass one path "
            "segment that stays the same when the task is retried (the pipeline passes the KFP run ID)"
        )
    return join(join(str(checkpoint_uri), key), model)


def _pointed_step(store) -> int | None:
    """The step the durable ``latest`` pointer names, or None when it is missing or unreadable."""
    try:
        step = step_of(store.read(POINTER).decode("utf-8", errors="replace").strip())
    except FileNotFoundError:
        return None
    return step if step >= 0 else None


def mirror(local_checkpoint: Path, uri: str) -> None:
    """Copy one local checkpoint to ``<uri>/step-<n>/``, then point ``<uri>/latest`` at it; prune.

    The pointer is written only after every file is stored, so a copy cut off midway is never
    "latest". Older durable checkpoints beyond `KEEP_CHECKPOINTS` are deleted afterwards, never the
    one just written.

    Raises:
        StorageError: the store refused (credentials, bucket, endpoint), after the store's retries.
    """
    name = local_checkpoint.name
    storage.upload_dir(local_checkpoint, join(uri, name), workers=1, progress_every=10**6)
    store = storage.store_for(uri)
    store.write(POINTER, (name + "\n").encode())
    names = sorted((c for c in store.children() if step_of(c) >= 0), key=step_of)
    for old in names[:-KEEP_CHECKPOINTS]:
        if old != name:
            _delete_tree(join(uri, old))
    log.info("checkpoint %s mirrored to %s", name, uri)


def _delete_tree(uri: str) -> None:
    store = storage.store_for(uri)
    for rel in store.list():
        store.delete(rel)
    if not store.remote:
        shutil.rmtree(local_path(uri), ignore_errors=True)


def discard(uri: str) -> None:
    """Delete every durable checkpoint under ``uri`` (a run restarted with resume=False)."""
    store = storage.store_for(uri)
    if store.exists(""):
        log.warning("resume=False: deleting the durable checkpoints under %s", uri)
        for name in store.children():
            _delete_tree(join(uri, name))
        store.delete(POINTER)


def fetch(uri: str, out: Path, newer_than: int = -1) -> Path | None:
    """Restore the newest durable checkpoint into ``out/checkpoints/``; return it, or None if none.

    Candidates are the ``step-<n>`` folders under ``uri`` up to the step the ``latest`` pointer names
    (all of them when the pointer is missing or damaged), newest first, and newer than
    ``newer_than`` (a local checkpoint the caller already has). Each is downloaded and checked with
    `loads`; a damaged one is skipped for the one before it.
    """
    store = storage.store_for(uri)
    if not store.exists(""):
        return None
    pointed = _pointed_step(store)
    steps = sorted((step_of(c) for c in store.children()), reverse=True)
    root = out / "checkpoints"
    for step in (s for s in steps if s > newer_than and (pointed is None or s <= pointed)):
        name = name_of(step)
        incoming = root / ".incoming" / name
        shutil.rmtree(incoming, ignore_errors=True)
        try:
            storage.download_dir(join(uri, name), incoming, workers=1, progress_every=10**6)
        except FileNotFoundError:  # deleted (retention) since it was listed
            continue
        if loads(incoming):
            final = root / name
            shutil.rmtree(final, ignore_errors=True)
            os.replace(incoming, final)
            shutil.rmtree(root / ".incoming", ignore_errors=True)
            atomic.write_text(root / POINTER, name + "\n")
            log.info("restored checkpoint %s from %s", name, uri)
            return final
        log.warning("durable checkpoint %s/%s does not load; trying the one before it", uri, name)
    shutil.rmtree(root / ".incoming", ignore_errors=True)
    return None

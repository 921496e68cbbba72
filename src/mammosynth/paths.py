"""Paths built from untrusted fields stay inside their folder: one helper for every such path.

Two rules, used by ingest (and anything else that turns data into file names):

* `safe_name` maps an identifier (``image_id`` built from CSV fields) to a file-name component made
  only of ``[A-Za-z0-9._-]``, never ``.``/``..``, never empty;
* `inside` resolves a path (following ``..`` and symlinks) and refuses it unless it stays under its
  root: "path outside the source folder".
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

SAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
MAX_NAME = 200
OUTSIDE = "path outside the source folder"


class UnsafePath(ValueError):
    """A path resolves outside the folder it must stay in."""


def safe_name(identifier: str) -> str:
    """A file-name component for ``identifier``: safe characters only, stable, never a path.

    Unsafe runs become ``_``; when anything was changed a short hash of the original is appended so
    two different identifiers never map to the same file.

    Args:
        identifier: any text (a CSV-derived id).

    Returns:
        A non-empty name of at most ~210 characters matching ``[A-Za-z0-9._-]+``, never ``.``/``..``.
    """
    text = str(identifier)
    clean = SAFE_CHARS.sub("_", text).strip(".") or "_"
    if clean != text or len(clean) > MAX_NAME:
        digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:10]
        clean = f"{clean[:MAX_NAME]}-{digest}"
    return clean


def inside(root: str | os.PathLike, path: str | os.PathLike, what: str = OUTSIDE) -> Path:
    """Resolve ``path`` (relative to ``root`` unless absolute) and require it to stay under ``root``.

    Args:
        root: the folder the path must stay in.
        path: a relative or absolute path (e.g. a CSV field).
        what: the error text's prefix.

    Returns:
        The resolved path.

    Raises:
        UnsafePath: the resolved path is not ``root`` or below it (``..``, absolute, symlink out,
            NUL byte).
    """
    text = os.fspath(path)
    if "\0" in text:
        raise UnsafePath(f"{what}: NUL byte in path")
    base = Path(root).resolve()
    target = (base / text).resolve()
    if target != base and base not in target.parents:
        raise UnsafePath(f"{what}: the path leaves {base.name or base}/")
    return target

"""Raw source uploads (e.g. CBIS-DDSM into MinIO): written with a manifest, read only when it verifies.

``upload_source`` copies a folder to a URI as-is (resumable: unchanged files are skipped) and writes
``_manifest.json`` LAST, in the published-set format (``files`` with ``path``/``size``/``sha256``,
``counts``, ``content_sha256``; ``kind: "upload"``). A prefix without that manifest is an upload
that did not finish. ``localize_source`` is how a stage reads a source: a local folder as it is; an
``s3://`` upload only if its manifest is there, every listed file downloaded and checked against
it. ``source_digest`` names a source's content (the manifest's ``content_sha256``; for a local
folder the same digest computed from its files), for caches keyed on the input.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from mammosynth.storage.base import StorageError, digest_file, is_remote, local_path, store_for
from mammosynth.storage.sets import (
    SET_MANIFEST,
    ManifestError,
    _content_sha,
    _new_manifest,
    _read_manifest,
    _usable_manifest,
    fetch_verified,
)
from mammosynth.storage.sync import _cache_root, _local_files, _sync_up

log = logging.getLogger(__name__)

UPLOAD_KIND = "upload"


def upload_source(
    local_dir: str | os.PathLike, uri: str | os.PathLike, *, workers: int = 4, progress_every: int = 100
) -> dict[str, Any]:
    """Upload ``local_dir`` to ``uri`` as-is, then its ``_manifest.json`` last; resumable.

    A re-run uploads only files that are missing or differ (by checksum) and rewrites nothing when
    the upload is already complete. If ``uri`` holds a manifest for other content it is removed
    before anything is uploaded, so a half-replaced upload never looks complete.

    Args:
        local_dir: the folder to upload (a ``_manifest.json`` inside it is not uploaded).
        uri: destination (``s3://bucket/prefix``, a local path or ``file://``).
        workers: parallel uploads.
        progress_every: log progress every N files.

    Returns:
        ``{"files", "uploaded", "skipped", "bytes", "content_sha256", "manifest_written"}``.

    Raises:
        StorageError: ``local_dir`` is not a folder or is empty, or a storage error.
    """
    files = _local_files(local_dir, exclude={SET_MANIFEST})
    if not files:
        raise StorageError(f"{local_dir} holds no files: nothing to upload")
    digests = {rel: digest_file(path) for rel, path in files.items()}
    entries = [{"path": rel, "size": digests[rel][0], "sha256": digests[rel][1]} for rel in sorted(files)]
    content = _content_sha(entries)
    store = store_for(uri)
    existing = _usable_manifest(store)
    if existing is not None and existing.get("content_sha256") != content:
        log.warning("%s holds an upload of other content: replacing it", store.uri)
        store.delete(SET_MANIFEST)
        existing = None
    stats = _sync_up(files, store, workers=workers, progress_every=progress_every, digests=digests)
    done = existing is not None and not stats["uploaded"]
    if not done:
        manifest = existing or _new_manifest(
            local_dir, UPLOAD_KIND, f"{UPLOAD_KIND}-{content[:12]}", content, entries, None, None
        )
        store.write(SET_MANIFEST, json.dumps(manifest, indent=2).encode())  # last: the commit record
    return {**stats, "content_sha256": content, "manifest_written": not done}


def _finish_hint(uri: str) -> str:
    return f"run `mammosynth data upload <folder> {uri}` again to finish the upload"


def _upload_manifest(uri: str) -> dict[str, Any]:
    """The manifest of an upload at ``uri``, or StorageError with the command that fixes it."""
    store = store_for(uri)
    try:
        return _read_manifest(store)
    except ManifestError as exc:
        raise StorageError(f"{exc.detail}; {_finish_hint(uri)}") from None
    except StorageError:
        raise StorageError(
            f"{uri} has no {SET_MANIFEST}: the upload did not finish (or was made without one); "
            f"{_finish_hint(uri)}"
        ) from None


def localize_source(
    uri: str | os.PathLike, cache_dir: str | os.PathLike | None = None, *, workers: int = 4
) -> Path:
    """A local folder holding a source's content, verified when it comes from a remote store.

    Local paths are returned as they are. An ``s3://`` upload is fetched into
    ``<cache_dir>/s3/<bucket>/<prefix>`` (default cache as in `localize`) only if its
    ``_manifest.json`` exists and every file it lists arrives with its sha256.

    Args:
        uri: local folder, ``file://`` or ``s3://`` URI of the upload.
        cache_dir: where remote content is cached.
        workers: parallel downloads.

    Returns:
        The local folder.

    Raises:
        StorageError: no or unusable manifest, or files missing or corrupt; the message says to run
            ``mammosynth data upload <folder> <uri>`` again.
    """
    if not is_remote(uri):
        return local_path(uri)
    text = str(uri).rstrip("/")
    manifest = _upload_manifest(text)
    store = store_for(text)
    dest = _cache_root(cache_dir) / store.cache_path()
    return fetch_verified(store, manifest, dest, workers=workers, fix=_finish_hint(text), what="upload")


def source_digest(uri: str | os.PathLike) -> str:
    """The sha256 naming a source's content: its manifest's ``content_sha256``.

    For a remote upload it is read from the manifest (no data is downloaded); for a local folder it
    is computed from the files the same way (so a folder and its upload have the same digest).

    Args:
        uri: local folder, ``file://`` or ``s3://`` URI of the upload.

    Returns:
        64 hex digits.

    Raises:
        StorageError: a remote upload without a usable manifest, or a local path that is no folder.
    """
    if is_remote(uri):
        manifest = _upload_manifest(str(uri).rstrip("/"))
        return manifest.get("content_sha256") or _content_sha(manifest["files"])
    if not local_path(uri).is_dir():
        raise StorageError(f"source {uri} is not a folder: pass the dataset folder or its s3:// upload")
    files = _local_files(uri, exclude={SET_MANIFEST})
    return _content_sha([{"path": rel, "sha256": digest_file(path)[1]} for rel, path in files.items()])

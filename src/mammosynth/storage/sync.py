"""Whole-file access and tree copies for any URI: read/write/exists/list, upload, download, localize.

Copies are resumable: files already present with the same size and content are skipped, so a
re-run after an interruption moves only what is missing.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, TypeVar

from mammosynth.storage.base import StorageError, Store, digest_file, is_remote, local_path, store_for
from mammosynth.storage.local import LocalStore

log = logging.getLogger(__name__)

T = TypeVar("T")


def read_bytes(uri: str | os.PathLike) -> bytes:
    """Read a whole object or file.

    Raises:
        FileNotFoundError: it does not exist.
        StorageError: S3 credentials, bucket or endpoint problem.
    """
    return store_for(uri).read("")


def write_bytes(uri: str | os.PathLike, data: bytes) -> None:
    """Write a whole object or file (local: temp file + rename, so readers never see half a file)."""
    store_for(uri).write("", bytes(data))


def exists(uri: str | os.PathLike) -> bool:
    """True if ``uri`` is an existing file/object or a non-empty directory/prefix."""
    return store_for(uri).exists("")


def list_files(uri: str | os.PathLike) -> list[str]:
    """Relative POSIX paths of every file under ``uri`` (recursive, sorted); ``[]`` if none."""
    return sorted(k for k in store_for(uri).list() if k)


def _run_parallel(items: list[T], fn: Callable[[T], Any], workers: int) -> list[Any]:
    """Map ``fn`` over ``items`` with a thread pool; the first failure cancels the rest and is raised."""
    if workers <= 1 or len(items) <= 1:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mammosynth-io") as pool:
        futures = [pool.submit(fn, item) for item in items]
        done, pending = wait(futures, return_when=FIRST_EXCEPTION)
        for fut in pending:
            fut.cancel()
        for fut in done:
            if fut.exception() is not None:
                raise fut.exception()
        return [fut.result() for fut in futures]


class _Progress:
    def __init__(self, label: str, total: int, every: int):
        self.label, self.total, self.every = label, total, max(1, every)
        self.done = self.copied = self.skipped = self.bytes = 0
        self._lock = threading.Lock()

    def add(self, copied: bool, size: int) -> None:
        with self._lock:
            self.done += 1
            if copied:
                self.copied += 1
                self.bytes += size
            else:
                self.skipped += 1
            if self.done % self.every == 0 and self.done < self.total:
                self.report()

    def report(self) -> None:
        log.info(
            "%s: %d/%d files (%d copied, %d already present, %.1f MB)",
            self.label,
            self.done,
            self.total,
            self.copied,
            self.skipped,
            self.bytes / 1e6,
        )


def _put_file(store: Store, rel: str, src: Path, sha256: str) -> None:
    """Upload one file (the seam tests use to fail an upload midway)."""
    store.put_file(rel, src, sha256)


def _sync_up(
    files: dict[str, Path],
    store: Store,
    *,
    workers: int,
    progress_every: int,
    digests: dict[str, tuple[int, str, str]] | None = None,
) -> dict[str, int]:
    """Copy local ``files`` (rel → path) into ``store``, skipping those already there unchanged."""
    remote = store.list()
    progress = _Progress(f"upload {store.uri}", len(files), progress_every)

    def _one(rel: str) -> None:
        size, sha, md5 = digests[rel] if digests else digest_file(files[rel])
        entry = remote.get(rel)
        if entry is not None and store.same(rel, entry, size, sha, md5):
            progress.add(False, size)
            return
        _put_file(store, rel, files[rel], sha)
        progress.add(True, size)

    _run_parallel(sorted(files), _one, workers)
    progress.report()
    return {
        "files": len(files),
        "uploaded": progress.copied,
        "skipped": progress.skipped,
        "bytes": progress.bytes,
    }


def _local_files(local_dir: str | os.PathLike, exclude: Iterable[str] = ()) -> dict[str, Path]:
    root = local_path(local_dir)
    if not root.is_dir():
        raise StorageError(f"{root} is not a directory: nothing to upload")
    skip = set(exclude)
    return {rel: root / rel for rel in LocalStore(root).list() if rel not in skip}


def upload_dir(
    local_dir: str | os.PathLike, uri: str | os.PathLike, *, workers: int = 4, progress_every: int = 100
) -> dict[str, int]:
    """Copy a local directory tree to ``uri``; resumable.

    Files already present with the same size and content (S3: single-part ETag = MD5, else the
    sha256 we stored as object metadata; local: sha256) are skipped, so a re-run after an
    interruption uploads only what is missing.

    Returns:
        ``{"files", "uploaded", "skipped", "bytes"}`` (bytes actually uploaded).
    """
    return _sync_up(_local_files(local_dir), store_for(uri), workers=workers, progress_every=progress_every)


def download_dir(
    uri: str | os.PathLike, local_dir: str | os.PathLike, *, workers: int = 4, progress_every: int = 100
) -> Path:
    """Copy every file under ``uri`` into ``local_dir`` (kept: files already there unchanged).

    Raises:
        FileNotFoundError: nothing exists under ``uri``.
    """
    store, dest = store_for(uri), Path(local_dir)
    remote = {rel: e for rel, e in store.list().items() if rel}
    if not remote:
        raise FileNotFoundError(f"no files under {uri}")
    progress = _Progress(f"download {store.uri}", len(remote), progress_every)

    def _one(rel: str) -> None:
        target = dest / rel
        if target.is_file():
            size, sha, md5 = digest_file(target)
            if store.same(rel, remote[rel], size, sha, md5):
                progress.add(False, size)
                return
        store.get_file(rel, target)
        progress.add(True, remote[rel].size)

    _run_parallel(sorted(remote), _one, workers)
    progress.report()
    return dest


def _cache_root(cache_dir: str | os.PathLike | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    return Path(os.environ.get("MAMMOSYNTH_CACHE") or Path.home() / ".cache" / "mammosynth")


def localize(uri: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path:
    """A local path holding ``uri``'s content: local paths as-is; S3 downloaded into a cache.

    S3 objects land in ``<cache_dir>/s3/<bucket>/<key>`` (default cache: ``$MAMMOSYNTH_CACHE`` or
    ``~/.cache/mammosynth``); unchanged files already cached are not downloaded again.
    """
    if not is_remote(uri):
        return local_path(uri)
    store = store_for(uri)
    target = _cache_root(cache_dir) / store.cache_path()
    entries = store.list()
    if "" in entries:  # a single object
        store.get_file("", target)
        return target
    return download_dir(uri, target)

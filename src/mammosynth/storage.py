"""One URI-based store for every stage: local paths / ``file://`` and ``s3://bucket/prefix`` (MinIO).

Stages call the same functions whatever the URI scheme: ``read_bytes``, ``write_bytes``, ``exists``,
``list_files``, ``upload_dir``, ``download_dir``, ``localize``. S3 goes through the official ``minio``
client, configured from the variables KServe's storage initializer reads, so one Kubernetes Secret
serves the pipeline and the model server:

- ``S3_ENDPOINT``: ``host:port`` of MinIO (a ``http://``/``https://`` prefix is tolerated and then
  decides TLS); ``AWS_ENDPOINT_URL`` is the fallback.
- ``S3_USE_HTTPS``: ``0``/``1`` (default ``1`` unless the endpoint carries a scheme);
  ``S3_VERIFY_SSL=0`` skips certificate checks (self-signed in-cluster MinIO).
- ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``; ``AWS_REGION`` / ``AWS_DEFAULT_REGION``
  (default ``us-east-1``; a fixed region spares the client a bucket-location round trip).

**Dataset sets.** ``publish_set(local_dir, uri, kind=...)`` publishes a directory as an immutable,
content-addressed set at ``<uri>/<kind>-<sha12>/``, where ``sha12`` is the first 12 hex digits of
the SHA-256 over the sorted ``path\\tsha256`` lines of its files (data only: config and lineage do
not change the address). Objects are written first and the set manifest ``_manifest.json`` last, so
a set either has a manifest that lists every object, or it is not a set and ``open_set`` refuses
it. The manifest is not called ``manifest.json`` because an ingested set already carries its own
``manifest.json`` as payload. Re-publishing identical content finds the manifest and writes nothing.

Transient S3 failures (connection resets, 5xx, ``SlowDown``) are retried with exponential
backoff; a few attempts with short connect timeouts keep a wrong endpoint failing in seconds.
Permanent ones become a `StorageError` naming the endpoint and the variable to fix. Secrets are
never logged.
"""

from __future__ import annotations

import argparse
import csv
import functools
import hashlib
import io
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlparse

from mammosynth import atomic

log = logging.getLogger(__name__)

T = TypeVar("T")

SET_MANIFEST = "_manifest.json"
SET_FORMAT = "mammosynth-set/1"
SHA_META = "sha256"  # stored as x-amz-meta-sha256 on every object we upload
CONNECT_TIMEOUT_S = 3.0
READ_TIMEOUT_S = 60.0
RETRY_ATTEMPTS = 4  # 1 try + 3 retries: 0.25 + 0.5 + 1 s of backoff
RETRY_BASE_DELAY_S = 0.25
CHUNK = 1 << 20
_TMP_SUFFIX = ".mstmp"

_CREDENTIAL_CODES = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "InvalidSecurity",
    "AccessDenied",
}
_TRANSIENT_CODES = {
    "SlowDown",
    "SlowDownRead",
    "SlowDownWrite",
    "InternalError",
    "ServiceUnavailable",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "OperationAborted",
    "XMinioServerNotInitialized",
}


class StorageError(RuntimeError):
    """A storage operation failed for a reason the user must fix (credentials, endpoint, bucket, data)."""


# --------------------------------------------------------------------------------------------- URIs


def is_remote(uri: str | os.PathLike) -> bool:
    """True for ``s3://`` URIs, False for local paths and ``file://`` URIs."""
    return str(uri).startswith("s3://")


def _local_path(uri: str | os.PathLike) -> Path:
    text = str(uri)
    if text.startswith("file://"):
        parsed = urlparse(text)
        return Path(unquote(parsed.netloc + parsed.path))
    if "://" in text:
        raise StorageError(
            f"unsupported URI scheme in {text!r}: use a local path, file:// or s3://bucket/prefix"
        )
    return Path(text)


def _split_s3(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    bucket, key = parsed.netloc, parsed.path.strip("/")
    if not bucket:
        raise StorageError(f"{uri!r} names no bucket: expected s3://bucket/prefix")
    return bucket, key


def _join(uri: str, rel: str) -> str:
    return f"{str(uri).rstrip('/')}/{rel}" if rel else str(uri)


# ------------------------------------------------------------------------------------------- S3 client


@dataclass(frozen=True)
class _S3Settings:
    endpoint: str
    secure: bool
    verify: bool
    region: str
    access_key: str | None
    secret_key: str | None = field(repr=False)


def _env_flag(name: str, default: bool) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise StorageError(f"{name}={raw!r} is not a boolean: set it to 0 or 1")


def _s3_settings() -> _S3Settings:
    raw = os.environ.get("S3_ENDPOINT") or os.environ.get("AWS_ENDPOINT_URL") or ""
    raw = raw.strip()
    if not raw:
        raise StorageError(
            "S3_ENDPOINT is not set: set it to MinIO's host:port "
            "(e.g. minio-service.kubeflow:9000) and S3_USE_HTTPS=0/1"
        )
    secure_default = True
    if "://" in raw:
        scheme, raw = raw.split("://", 1)
        secure_default = scheme.lower() == "https"
    endpoint = raw.rstrip("/")
    if "/" in endpoint:
        raise StorageError(f"S3_ENDPOINT={endpoint!r} has a path: set it to host:port only")
    return _S3Settings(
        endpoint=endpoint,
        secure=_env_flag("S3_USE_HTTPS", secure_default),
        verify=_env_flag("S3_VERIFY_SSL", True),
        region=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        access_key=os.environ.get("AWS_ACCESS_KEY_ID") or None,
        secret_key=os.environ.get("AWS_SECRET_ACCESS_KEY") or None,
    )


@functools.lru_cache(maxsize=8)
def _client_for(settings: _S3Settings):
    import urllib3
    from minio import Minio

    # Our own retry loop (`_retry`) owns retries; urllib3's would multiply them and minio's default
    # pool waits minutes on a dead endpoint.
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=CONNECT_TIMEOUT_S, read=READ_TIMEOUT_S),
        retries=False,
        maxsize=32,
        cert_reqs="CERT_REQUIRED" if settings.verify else "CERT_NONE",
    )
    return Minio(
        settings.endpoint,
        access_key=settings.access_key,
        secret_key=settings.secret_key,
        secure=settings.secure,
        region=settings.region,
        http_client=http,
        cert_check=settings.verify,
    )


def _is_connection_error(exc: BaseException) -> bool:
    import urllib3.exceptions as u3

    return isinstance(
        exc, (u3.NewConnectionError, u3.ConnectTimeoutError, u3.MaxRetryError, ConnectionRefusedError)
    ) or (isinstance(exc, u3.ProtocolError) and "refused" in str(exc).lower())


def _is_transient(exc: BaseException) -> bool:
    import urllib3.exceptions as u3
    from minio.error import InvalidResponseError, S3Error, ServerError

    if isinstance(exc, S3Error):
        return exc.code in _TRANSIENT_CODES or (exc.response is not None and exc.response.status >= 500)
    if isinstance(exc, ServerError):
        return exc.status_code >= 500
    if isinstance(exc, InvalidResponseError):
        return getattr(exc, "_code", 0) >= 500
    return isinstance(exc, (u3.HTTPError, ConnectionError, TimeoutError))


def _translate(exc: BaseException, settings: _S3Settings, what: str, uri: str) -> BaseException:
    """Map a client exception to the error a user can act on."""
    from minio.error import S3Error

    where = f"S3 endpoint {settings.endpoint} ({'https' if settings.secure else 'http'})"
    if isinstance(exc, S3Error):
        if exc.code in _CREDENTIAL_CODES:
            hint = (
                "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY are not set"
                if not settings.access_key
                else "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"
            )
            extra = " and the key's bucket policy" if exc.code == "AccessDenied" else ""
            return StorageError(
                f"{where} rejected the credentials while trying to {what} {uri} ({exc.code}): {hint}{extra}"
            )
        if exc.code == "NoSuchBucket":
            return StorageError(
                f"bucket {exc.bucket_name or _split_s3(uri)[0]!r} does not exist at {where}: "
                f"create it (mc mb) or fix the URI {uri}"
            )
        if exc.code in {"NoSuchKey", "ResourceNotFound"}:
            return FileNotFoundError(f"{uri} does not exist at {where}")
        return StorageError(f"{where} refused to {what} {uri}: {exc.code}: {exc.message}")
    import urllib3.exceptions as u3

    if isinstance(exc, (u3.HTTPError, ConnectionError, TimeoutError)):
        if isinstance(exc, u3.SSLError) or "ssl" in str(exc).lower():
            return StorageError(
                f"TLS handshake with S3_ENDPOINT={settings.endpoint} failed ({exc}): "
                f"check S3_USE_HTTPS (now {int(settings.secure)}) and S3_VERIFY_SSL"
            )
        return StorageError(
            f"S3_ENDPOINT={settings.endpoint} unreachable after {RETRY_ATTEMPTS} tries "
            f"while trying to {what} {uri} ({type(exc).__name__}): check S3_ENDPOINT "
            f"/ S3_USE_HTTPS and that MinIO is running"
        )
    from minio.error import InvalidResponseError

    if isinstance(exc, InvalidResponseError) and getattr(exc, "_code", 500) < 500:
        return StorageError(
            f"{where} answered HTTP {exc._code} without an S3 error body while trying to "
            f"{what} {uri}: check that S3_ENDPOINT is MinIO's S3 API (usually port 9000, "
            f"not the console) and S3_USE_HTTPS"
        )
    return StorageError(f"{where} failed to {what} {uri}: {type(exc).__name__}: {exc}")


def _retry(settings: _S3Settings, what: str, uri: str, fn: Callable[[], T]) -> T:
    """Run ``fn`` with exponential backoff on transient errors; translate the final error."""
    from minio.error import MinioException, S3Error

    for attempt in range(1, RETRY_ATTEMPTS + 1):
        try:
            return fn()
        except Exception as exc:  # urllib3 and minio errors share no base class narrower than this
            if isinstance(exc, (StorageError, FileNotFoundError)):
                raise
            transient = _is_transient(exc) and not (
                isinstance(exc, S3Error) and exc.code in _CREDENTIAL_CODES
            )
            if not transient and not isinstance(exc, MinioException) and not _is_connection_error(exc):
                raise  # a bug or a local I/O error: not ours to reword
            if transient and attempt < RETRY_ATTEMPTS:
                delay = RETRY_BASE_DELAY_S * 2 ** (attempt - 1)
                log.warning(
                    "%s %s: %s (attempt %d/%d), retrying in %.2fs",
                    what,
                    uri,
                    type(exc).__name__,
                    attempt,
                    RETRY_ATTEMPTS,
                    delay,
                )
                time.sleep(delay)
                continue
            raise _translate(exc, settings, what, uri) from exc
    raise AssertionError("unreachable")


# ------------------------------------------------------------------------------------------- stores


@dataclass
class _Entry:
    size: int
    etag: str | None = None  # S3 only


def sha256_file(path: str | os.PathLike) -> str:
    """sha256 of a local file, read in chunks (what manifests record)."""
    return _digest_file(Path(path))[1]


def _digest_file(path: Path) -> tuple[int, str, str]:
    """(size, sha256, md5) of a local file in one pass."""
    sha, md5, size = hashlib.sha256(), hashlib.md5(usedforsecurity=False), 0
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            sha.update(chunk)
            md5.update(chunk)
            size += len(chunk)
    return size, sha.hexdigest(), md5.hexdigest()


class _LocalStore:
    """A directory tree addressed by relative POSIX paths."""

    def __init__(self, uri: str | os.PathLike):
        self.uri = str(uri)
        self.root = _local_path(uri)

    def path(self, rel: str) -> Path:
        return self.root / rel if rel else self.root

    def read(self, rel: str) -> bytes:
        return self.path(rel).read_bytes()

    def write(self, rel: str, data: bytes) -> None:
        atomic.write_bytes(self.path(rel), data, suffix=_TMP_SUFFIX)

    def exists(self, rel: str) -> bool:
        return self.path(rel).exists()

    def delete(self, rel: str) -> None:
        self.path(rel).unlink(missing_ok=True)

    def list(self) -> dict[str, _Entry]:
        if self.root.is_file():
            return {"": _Entry(self.root.stat().st_size)}
        if not self.root.is_dir():
            return {}
        return {
            p.relative_to(self.root).as_posix(): _Entry(p.stat().st_size)
            for p in sorted(self.root.rglob("*"))
            if p.is_file() and not p.name.endswith(_TMP_SUFFIX)
        }

    def children(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_dir()) if self.root.is_dir() else []

    def put_file(self, rel: str, src: Path, sha256: str) -> None:
        dest = self.path(rel)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=_TMP_SUFFIX)
        os.close(fd)
        try:
            shutil.copyfile(src, tmp)
            os.replace(tmp, dest)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def get_file(self, rel: str, dest: Path) -> str:
        """Copy to ``dest`` atomically; return the copy's sha256."""
        data_path = self.path(rel)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=_TMP_SUFFIX)
        sha = hashlib.sha256()
        try:
            with os.fdopen(fd, "wb") as out, open(data_path, "rb") as src:
                while chunk := src.read(CHUNK):
                    sha.update(chunk)
                    out.write(chunk)
            os.replace(tmp, dest)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return sha.hexdigest()

    def sha256(self, rel: str) -> str:
        return _digest_file(self.path(rel))[1]

    def same(self, rel: str, entry: _Entry, size: int, sha256: str, md5: str) -> bool:
        return entry.size == size and self.sha256(rel) == sha256


class _S3Store:
    """``s3://bucket/prefix`` addressed by keys relative to the prefix."""

    def __init__(self, uri: str):
        self.uri = str(uri).rstrip("/")
        self.bucket, self.prefix = _split_s3(self.uri)
        self.settings = _s3_settings()
        self.client = _client_for(self.settings)

    def key(self, rel: str) -> str:
        return "/".join(p for p in (self.prefix, rel) if p)

    def _call(self, what: str, rel: str, fn: Callable[[], T]) -> T:
        return _retry(self.settings, what, _join(self.uri, rel), fn)

    def read(self, rel: str) -> bytes:
        def _get() -> bytes:
            resp = self.client.get_object(self.bucket, self.key(rel))
            try:
                return resp.read()
            finally:
                resp.close()
                resp.release_conn()

        return self._call("read", rel, _get)

    def write(self, rel: str, data: bytes) -> None:
        meta = {SHA_META: hashlib.sha256(data).hexdigest()}
        self._call(
            "write",
            rel,
            lambda: self.client.put_object(
                self.bucket, self.key(rel), io.BytesIO(data), len(data), metadata=meta
            ),
        )

    def exists(self, rel: str) -> bool:
        # One LIST answers "object or non-empty prefix" and, unlike HEAD, says NoSuchBucket.
        key = self.key(rel)

        def _probe() -> bool:
            for obj in self.client.list_objects(self.bucket, prefix=key, recursive=False):
                if obj.object_name.rstrip("/") == key or obj.object_name.startswith(key + "/") or not key:
                    return True
            return False

        return self._call("check", rel, _probe)

    def delete(self, rel: str) -> None:
        self._call("delete", rel, lambda: self.client.remove_object(self.bucket, self.key(rel)))

    def list(self) -> dict[str, _Entry]:
        base = f"{self.prefix}/" if self.prefix else ""

        def _list() -> dict[str, _Entry]:
            out: dict[str, _Entry] = {}
            for obj in self.client.list_objects(self.bucket, prefix=base, recursive=True):
                name = obj.object_name
                if name.endswith("/"):
                    continue  # directory marker objects some tools create
                out[name[len(base) :]] = _Entry(int(obj.size or 0), (obj.etag or "").strip('"') or None)
            if not out and self.prefix:
                # The URI may name one object rather than a prefix.
                for obj in self.client.list_objects(self.bucket, prefix=self.prefix):
                    if obj.object_name == self.prefix:
                        out[""] = _Entry(int(obj.size or 0), (obj.etag or "").strip('"') or None)
            return out

        return self._call("list", "", _list)

    def children(self) -> list[str]:
        base = f"{self.prefix}/" if self.prefix else ""

        def _list() -> list[str]:
            return sorted(
                o.object_name[len(base) :].rstrip("/")
                for o in self.client.list_objects(self.bucket, prefix=base, recursive=False)
                if o.is_dir
            )

        return self._call("list", "", _list)

    def put_file(self, rel: str, src: Path, sha256: str) -> None:
        self._call(
            "upload",
            rel,
            lambda: self.client.fput_object(
                self.bucket, self.key(rel), str(src), metadata={SHA_META: sha256}
            ),
        )

    def get_file(self, rel: str, dest: Path) -> str:
        dest.parent.mkdir(parents=True, exist_ok=True)

        def _get() -> str:
            fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=_TMP_SUFFIX)
            sha = hashlib.sha256()
            try:
                resp = self.client.get_object(self.bucket, self.key(rel))
                try:
                    with os.fdopen(fd, "wb") as out:
                        for chunk in resp.stream(CHUNK):
                            sha.update(chunk)
                            out.write(chunk)
                finally:
                    resp.close()
                    resp.release_conn()
                os.replace(tmp, dest)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
            return sha.hexdigest()

        return self._call("download", rel, _get)

    def sha256(self, rel: str) -> str:
        def _hash() -> str:
            sha = hashlib.sha256()
            resp = self.client.get_object(self.bucket, self.key(rel))
            try:
                for chunk in resp.stream(CHUNK):
                    sha.update(chunk)
            finally:
                resp.close()
                resp.release_conn()
            return sha.hexdigest()

        return self._call("read", rel, _hash)

    def stored_sha256(self, rel: str) -> str | None:
        stat = self._call("stat", rel, lambda: self.client.stat_object(self.bucket, self.key(rel)))
        meta = {k.lower(): v for k, v in (stat.metadata or {}).items()}
        return meta.get(f"x-amz-meta-{SHA_META}")

    def same(self, rel: str, entry: _Entry, size: int, sha256: str, md5: str) -> bool:
        if entry.size != size:
            return False
        if entry.etag and "-" not in entry.etag:
            return entry.etag == md5  # single-part upload: the ETag is the MD5
        return self.stored_sha256(rel) == sha256  # multipart: trust the sha256 we stored on upload


def _store(uri: str | os.PathLike) -> _LocalStore | _S3Store:
    return _S3Store(str(uri)) if is_remote(uri) else _LocalStore(uri)


# --------------------------------------------------------------------------------------- public API


def read_bytes(uri: str | os.PathLike) -> bytes:
    """Read a whole object or file.

    Raises:
        FileNotFoundError: it does not exist.
        StorageError: S3 credentials, bucket or endpoint problem.
    """
    return _store(uri).read("")


def write_bytes(uri: str | os.PathLike, data: bytes) -> None:
    """Write a whole object or file (local: temp file + rename, so readers never see half a file)."""
    _store(uri).write("", bytes(data))


def exists(uri: str | os.PathLike) -> bool:
    """True if ``uri`` is an existing file/object or a non-empty directory/prefix."""
    return _store(uri).exists("")


def list_files(uri: str | os.PathLike) -> list[str]:
    """Relative POSIX paths of every file under ``uri`` (recursive, sorted); ``[]`` if none."""
    return sorted(k for k in _store(uri).list() if k)


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


def _put_file(store: _LocalStore | _S3Store, rel: str, src: Path, sha256: str) -> None:
    """Upload one file (the seam tests use to fail an upload midway)."""
    store.put_file(rel, src, sha256)


def _sync_up(
    files: dict[str, Path],
    store: _LocalStore | _S3Store,
    *,
    workers: int,
    progress_every: int,
    digests: dict[str, tuple[int, str, str]] | None = None,
) -> dict[str, int]:
    """Copy local ``files`` (rel → path) into ``store``, skipping those already there unchanged."""
    remote = store.list()
    progress = _Progress(f"upload {store.uri}", len(files), progress_every)

    def _one(rel: str) -> None:
        size, sha, md5 = digests[rel] if digests else _digest_file(files[rel])
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
    root = _local_path(local_dir)
    if not root.is_dir():
        raise StorageError(f"{root} is not a directory: nothing to upload")
    skip = set(exclude)
    return {rel: root / rel for rel in _LocalStore(root).list() if rel not in skip}


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
    return _sync_up(_local_files(local_dir), _store(uri), workers=workers, progress_every=progress_every)


def download_dir(
    uri: str | os.PathLike, local_dir: str | os.PathLike, *, workers: int = 4, progress_every: int = 100
) -> Path:
    """Copy every file under ``uri`` into ``local_dir`` (kept: files already there unchanged).

    Raises:
        FileNotFoundError: nothing exists under ``uri``.
    """
    store, dest = _store(uri), Path(local_dir)
    remote = {rel: e for rel, e in store.list().items() if rel}
    if not remote:
        raise FileNotFoundError(f"no files under {uri}")
    progress = _Progress(f"download {store.uri}", len(remote), progress_every)

    def _one(rel: str) -> None:
        target = dest / rel
        if target.is_file():
            size, sha, md5 = _digest_file(target)
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
        return _local_path(uri)
    store = _S3Store(str(uri))
    target = _cache_root(cache_dir) / "s3" / store.bucket / store.prefix
    entries = store.list()
    if "" in entries:  # a single object
        store.get_file("", target)
        return target
    return download_dir(uri, target)


# ---------------------------------------------------------------------------------------- dataset sets


@dataclass
class VerifyResult:
    """Outcome of `verify_set`.

    Attributes:
        uri: the set checked.
        ok: manifest present and every listed file present with its size and sha256, nothing extra.
        missing: listed in the manifest, absent.
        corrupt: ``(path, reason)`` for files whose size or sha256 differ.
        extra: present under the set, not in the manifest.
        checked: files whose checksum was recomputed.
        error: why the set could not be checked at all (no/unreadable manifest), else None.
    """

    uri: str
    ok: bool = False
    missing: list[str] = field(default_factory=list)
    corrupt: list[tuple[str, str]] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    checked: int = 0
    error: str | None = None
    manifest: dict[str, Any] | None = field(default=None, repr=False)

    def summary(self) -> str:
        if self.error:
            return f"{self.uri}: NOT A VALID SET: {self.error}"
        state = "OK" if self.ok else "FAILED"
        lines = [
            f"{self.uri}: {state} ({self.checked} files checked, {len(self.missing)} missing, "
            f"{len(self.corrupt)} corrupt, {len(self.extra)} extra)"
        ]
        lines += [f"  missing {p}" for p in self.missing[:20]]
        lines += [f"  corrupt {p}: {why}" for p, why in self.corrupt[:20]]
        lines += [f"  extra   {p}" for p in self.extra[:20]]
        return "\n".join(lines)


def _content_sha(files: list[dict[str, Any]]) -> str:
    listing = "".join(f"{f['path']}\t{f['sha256']}\n" for f in sorted(files, key=lambda f: f["path"]))
    return hashlib.sha256(listing.encode()).hexdigest()


def _sample_counts(root: Path) -> dict[str, Any]:
    """Image counts a human wants from ``data ls``: prepared sets' meta.json, ingested sets' index.csv."""
    meta_path, index_path = root / "meta.json", root / "index.csv"
    if meta_path.is_file():
        try:
            counts = json.loads(meta_path.read_text()).get("counts")
        except (json.JSONDecodeError, AttributeError):
            counts = None
        if isinstance(counts, dict):
            return {"samples": counts}
    if index_path.is_file():
        by_split: dict[str, dict[str, int]] = {}
        with open(index_path, newline="") as fh:
            for row in csv.DictReader(fh):
                split = row.get("split") or "unsplit"
                label = row.get("label") or "unlabelled"
                by_split.setdefault(split, {}).setdefault(label, 0)
                by_split[split][label] += 1
        return {"samples": by_split}
    return {}


def _read_manifest(store: _LocalStore | _S3Store) -> dict[str, Any]:
    """The set manifest, or StorageError saying why this is not a set."""
    try:
        raw = store.read(SET_MANIFEST)
    except FileNotFoundError:
        raise StorageError(
            f"{store.uri} has no {SET_MANIFEST}: not a published set (an interrupted "
            f"publish_set leaves none; re-run it)"
        ) from None
    try:
        manifest = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise StorageError(
            f"{_join(store.uri, SET_MANIFEST)} is not valid JSON ({exc}): re-publish the set"
        ) from None
    if not isinstance(manifest, dict) or manifest.get("format") != SET_FORMAT or "files" not in manifest:
        raise StorageError(
            f"{_join(store.uri, SET_MANIFEST)} is not a {SET_FORMAT} manifest: re-publish the set"
        )
    return manifest


def publish_set(
    local_dir: str | os.PathLike,
    uri: str | os.PathLike,
    *,
    kind: str,
    config: dict[str, Any] | None = None,
    lineage: dict[str, Any] | None = None,
    workers: int = 4,
) -> dict[str, Any]:
    """Publish ``local_dir`` as an immutable set at ``<uri>/<kind>-<sha12>/``.

    Objects are uploaded first, ``_manifest.json`` last: an interrupted publish leaves no manifest
    (``open_set`` refuses it) and a re-run uploads only what is missing. If the manifest already
    exists the content is identical by construction and nothing is written.

    Args:
        local_dir: directory to publish (a ``_manifest.json`` inside it is ignored).
        uri: parent location (local path, ``file://`` or ``s3://bucket/prefix``).
        kind: set kind, e.g. ``ingested``, ``prepared``, ``synthetic``, ``raw``.
        config: study config used to produce it (JSON-serialisable), stored verbatim.
        lineage: where it came from, e.g. ``{"generator": <uri>, "real_set": <uri>}``.
        workers: parallel uploads.

    Returns:
        The manifest plus ``uri`` (the set's URI) and ``reused`` (True if it already existed).
    """
    if not kind or "/" in kind or kind != kind.strip():
        raise StorageError(f"kind={kind!r}: expected a short name such as 'prepared' or 'synthetic'")
    files = _local_files(local_dir, exclude={SET_MANIFEST})
    if not files:
        raise StorageError(f"{local_dir} holds no files: nothing to publish")
    digests = {rel: _digest_file(path) for rel, path in files.items()}
    entries = [{"path": rel, "size": digests[rel][0], "sha256": digests[rel][1]} for rel in sorted(files)]
    content = _content_sha(entries)
    set_id = f"{kind}-{content[:12]}"
    set_uri = _join(str(uri), set_id)
    store = _store(set_uri)
    existing = _read_manifest(store) if store.exists(SET_MANIFEST) else None
    if existing is not None and existing.get("content_sha256") == content:
        present = store.list()
        if all(e["path"] in present and present[e["path"]].size == e["size"] for e in entries):
            log.info("set %s already published: nothing to do", set_uri)
            return {**existing, "uri": set_uri, "reused": True}
        # Objects went missing after publishing: restore them, keep the original manifest.
        log.warning("set %s is published but incomplete: re-uploading its missing objects", set_uri)
        manifest = existing
    else:
        if existing is not None:
            log.warning("%s has a manifest for other content: replacing it", set_uri)
        manifest = _new_manifest(local_dir, kind, set_id, content, entries, config, lineage)
    stats = _sync_up(files, store, workers=workers, progress_every=100, digests=digests)
    # Last: the manifest is the commit record that turns uploaded objects into a set.
    store.write(SET_MANIFEST, json.dumps(manifest, indent=2).encode())
    log.info(
        "published %s (%d files, %d uploaded, %d already present)",
        set_uri,
        stats["files"],
        stats["uploaded"],
        stats["skipped"],
    )
    return {**manifest, "uri": set_uri, "reused": False}


def _new_manifest(
    local_dir,
    kind: str,
    set_id: str,
    content: str,
    entries: list[dict[str, Any]],
    config: dict[str, Any] | None,
    lineage: dict[str, Any] | None,
) -> dict[str, Any]:
    from mammosynth import __version__

    manifest = {
        "format": SET_FORMAT,
        "set_id": set_id,
        "kind": kind,
        "content_sha256": content,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "mammosynth_version": __version__,
        "counts": {
            "files": len(entries),
            "bytes": sum(e["size"] for e in entries),
            **_sample_counts(_local_path(local_dir)),
        },
        "config": config or {},
        "lineage": lineage or {},
        "files": entries,
    }
    try:
        json.dumps(manifest)
    except TypeError as exc:  # fail before uploading anything
        raise StorageError(
            f"config/lineage for set {set_id} are not JSON-serialisable ({exc}): pass plain "
            f"dicts of str/int/float/list (e.g. dataclasses.asdict(config))"
        ) from None
    return manifest


def verify_set(uri: str | os.PathLike, *, workers: int = 4) -> VerifyResult:
    """Recompute every file's sha256 under a set and compare with its manifest."""
    result = VerifyResult(uri=str(uri))
    store = _store(uri)
    try:
        manifest = _read_manifest(store)
    except StorageError as exc:
        result.error = str(exc)
        return result
    result.manifest = manifest
    present = {rel: e for rel, e in store.list().items() if rel and rel != SET_MANIFEST}
    listed = {f["path"]: f for f in manifest["files"]}
    result.missing = sorted(set(listed) - set(present))
    result.extra = sorted(set(present) - set(listed))
    to_hash = []
    for rel in sorted(set(listed) & set(present)):
        if present[rel].size != listed[rel]["size"]:
            result.corrupt.append((rel, f"size {present[rel].size} != {listed[rel]['size']} in manifest"))
        else:
            to_hash.append(rel)
    shas = _run_parallel(to_hash, store.sha256, workers)
    for rel, sha in zip(to_hash, shas, strict=True):
        if sha != listed[rel]["sha256"]:
            result.corrupt.append((rel, f"sha256 {sha[:12]}… != {listed[rel]['sha256'][:12]}… in manifest"))
    result.corrupt.sort()
    result.checked = len(to_hash)
    result.ok = not (result.missing or result.corrupt or result.extra)
    return result


def open_set(uri: str | os.PathLike, local_dir: str | os.PathLike | None = None, *, workers: int = 4) -> Path:
    """A verified local copy of a published set.

    A local set is verified in place and its own path returned (``local_dir`` is ignored). An S3
    set is downloaded into ``local_dir`` (default: the `localize` cache), each file checked against
    the manifest as it arrives; files already there with the right sha256 are not fetched again.
    Extra files next to a set are ignored with a warning (the manifest defines the set).

    Raises:
        StorageError: no manifest (not a set, or an interrupted publish), or missing/corrupt files.
    """
    if not is_remote(uri):
        result = verify_set(uri, workers=workers)
        if result.error:
            raise StorageError(result.error)
        if result.missing or result.corrupt:
            raise StorageError(
                f"refusing to open set {uri}: it fails verification:\n{result.summary()}\n"
                f"re-publish it or restore the files"
            )
        if result.extra:
            log.warning("set %s: %d files not in its manifest are ignored", uri, len(result.extra))
        return _local_path(uri)
    store = _S3Store(str(uri))
    manifest = _read_manifest(store)
    dest = (
        Path(local_dir) if local_dir is not None else (_cache_root(None) / "s3" / store.bucket / store.prefix)
    )
    present = store.list()
    listed = {f["path"]: f for f in manifest["files"]}
    missing = sorted(set(listed) - set(present))
    if missing:
        raise StorageError(
            f"refusing to open set {uri}: {len(missing)} files in its manifest are missing "
            f"(first: {missing[:5]}); re-publish it"
        )
    bad: list[str] = []
    bad_lock = threading.Lock()

    def _one(rel: str) -> None:
        target = dest / rel
        if target.is_file() and _digest_file(target)[1] == listed[rel]["sha256"]:
            return
        if store.get_file(rel, target) != listed[rel]["sha256"]:
            target.unlink(missing_ok=True)
            with bad_lock:
                bad.append(rel)

    _run_parallel(sorted(listed), _one, workers)
    if bad:
        raise StorageError(
            f"refusing to open set {uri}: {len(bad)} files do not match their manifest "
            f"sha256 (first: {sorted(bad)[:5]}); run `mammosynth data verify {uri}` and "
            f"re-publish it"
        )
    atomic.write_bytes(dest / SET_MANIFEST, json.dumps(manifest, indent=2).encode())
    return dest


def list_sets(uri: str | os.PathLike) -> list[dict[str, Any]]:
    """Sets at ``uri`` itself and directly under it: manifests without the file list, plus ``uri``."""
    store = _store(uri)
    candidates = [str(uri).rstrip("/")] + [_join(str(uri), child) for child in store.children()]
    sets = []
    for cand in candidates:
        cstore = _store(cand)
        if not cstore.exists(SET_MANIFEST):
            continue
        try:
            manifest = _read_manifest(cstore)
        except StorageError as exc:
            log.warning("%s", exc)
            continue
        sets.append({**{k: v for k, v in manifest.items() if k != "files"}, "uri": cand})
    return sorted(sets, key=lambda s: (s.get("created", ""), s["uri"]))


# ------------------------------------------------------------------------------------------------ CLI


def _fmt_samples(samples: dict[str, Any] | None) -> str:
    if not samples:
        return ""
    parts = []
    for split, labels in samples.items():
        if isinstance(labels, dict):
            parts.append(f"{split}=" + "/".join(f"{n}" for n in labels.values()) + f" ({'/'.join(labels)})")
    return "  ".join(parts)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mammosynth data",
        description="Move and check dataset sets in MinIO (s3://bucket/prefix) or on disk. S3 settings "
        "come from S3_ENDPOINT, S3_USE_HTTPS, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("upload", help="upload a local folder (e.g. CBIS-DDSM) as-is; resumable")
    up.add_argument("source", help="local folder")
    up.add_argument("dest", help="destination URI, e.g. s3://datasets/cbis-ddsm")
    up.add_argument("--workers", type=int, default=8, help="parallel uploads (default 8)")
    up.add_argument("--progress-every", type=int, default=100, help="log progress every N files")
    pub = sub.add_parser("publish", help="publish a folder as a checksummed set <dest>/<kind>-<sha12>/")
    pub.add_argument("source", help="local folder")
    pub.add_argument("dest", help="parent URI of the set")
    pub.add_argument("--kind", required=True, help="set kind, e.g. raw, ingested, prepared, synthetic")
    pub.add_argument("--lineage", default="{}", help="JSON object recorded in the manifest")
    pub.add_argument("--workers", type=int, default=8, help="parallel uploads (default 8)")
    ls = sub.add_parser("ls", help="list sets at or directly under a URI, with counts")
    ls.add_argument("uri")
    ver = sub.add_parser("verify", help="recompute checksums of a set (or of every set under a URI)")
    ver.add_argument("uri")
    ver.add_argument("--workers", type=int, default=8, help="parallel reads (default 8)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """``mammosynth data {upload,publish,ls,verify}``; returns 1 on verification failure or error."""
    args = _build_parser().parse_args(argv)
    try:
        if args.command == "upload":
            stats = upload_dir(
                args.source, args.dest, workers=args.workers, progress_every=args.progress_every
            )
            print(
                f"{args.dest}: {stats['files']} files, {stats['uploaded']} uploaded, "
                f"{stats['skipped']} already present, {stats['bytes'] / 1e6:.1f} MB sent"
            )
            return 0
        if args.command == "publish":
            try:
                lineage = json.loads(args.lineage)
            except json.JSONDecodeError as exc:
                raise StorageError(
                    f"--lineage is not JSON ({exc}): pass an object like "
                    '\'{"source": "s3://datasets/cbis-ddsm"}\''
                ) from None
            manifest = publish_set(
                args.source, args.dest, kind=args.kind, lineage=lineage, workers=args.workers
            )
            print(f"{manifest['uri']}{' (already published)' if manifest['reused'] else ''}")
            return 0
        if args.command == "ls":
            sets = list_sets(args.uri)
            if not sets:
                print(f"{args.uri}: no sets (no {SET_MANIFEST} at or directly under it)")
                return 0
            for s in sets:
                counts = s.get("counts", {})
                print(
                    f"{s['uri']}  kind={s.get('kind')}  files={counts.get('files')}  "
                    f"bytes={counts.get('bytes')}  created={s.get('created')}  "
                    f"{_fmt_samples(counts.get('samples'))}".rstrip()
                )
            return 0
        if args.command == "verify":
            sets = [args.uri]
            if not exists(_join(args.uri, SET_MANIFEST)):
                sets = [s["uri"] for s in list_sets(args.uri)] or [args.uri]
            failed = 0
            for set_uri in sets:
                result = verify_set(set_uri, workers=args.workers)
                print(result.summary())
                failed += not result.ok
            return 1 if failed else 0
    except (StorageError, FileNotFoundError) as exc:
        print(f"mammosynth data: error: {exc}", file=sys.stderr, flush=True)
        return 1
    return 2


if __name__ == "__main__":
    sys.exit(main())

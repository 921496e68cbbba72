"""``s3://bucket/prefix`` on MinIO: settings from the environment, the client, retries, the S3 store.

Configuration comes from the variables KServe's storage initializer reads, so one Kubernetes Secret
serves the pipeline and the model server:

- ``S3_ENDPOINT``: ``host:port`` of MinIO (a ``http://``/``https://`` prefix is tolerated and then
  decides TLS); ``AWS_ENDPOINT_URL`` is the fallback.
- ``S3_USE_HTTPS``: ``0``/``1`` (default ``1`` unless the endpoint carries a scheme);
  ``S3_VERIFY_SSL=0`` skips certificate checks (self-signed in-cluster MinIO).
- ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``; ``AWS_REGION`` / ``AWS_DEFAULT_REGION``
  (default ``us-east-1``; a fixed region spares the client a bucket-location round trip).

Transient S3 failures (connection resets, 5xx, ``SlowDown``) are retried with exponential
backoff; a few attempts with short connect timeouts keep a wrong endpoint failing in seconds.
Permanent ones become a `StorageError` naming the endpoint and the variable to fix. Secrets are
never logged.
"""

from __future__ import annotations

import functools
import hashlib
import io
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from mammosynth import atomic
from mammosynth.storage.base import CHUNK, TMP_SUFFIX, Entry, StorageError, join, register_store, split_s3

log = logging.getLogger(__name__)

T = TypeVar("T")

SHA_META = "sha256"  # stored as x-amz-meta-sha256 on every object we upload
CONNECT_TIMEOUT_S = 3.0
READ_TIMEOUT_S = 60.0
RETRY_ATTEMPTS = 4  # 1 try + 3 retries: 0.25 + 0.5 + 1 s of backoff
RETRY_BASE_DELAY_S = 0.25

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
                f"bucket {exc.bucket_name or split_s3(uri)[0]!r} does not exist at {where}: "
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


# -------------------------------------------------------------------------------------------- store


class S3Store:
    """``s3://bucket/prefix`` addressed by keys relative to the prefix (implements `Store`)."""

    remote = True

    def __init__(self, uri: str):
        """Open ``s3://bucket/prefix`` with the client the environment configures."""
        self.uri = str(uri).rstrip("/")
        self.bucket, self.prefix = split_s3(self.uri)
        self.settings = _s3_settings()
        self.client = _client_for(self.settings)

    def cache_path(self) -> str:
        """Where `localize` caches this prefix, relative to the cache root."""
        return "/".join(p for p in ("s3", self.bucket, self.prefix) if p)

    def key(self, rel: str) -> str:
        """The object key of ``rel``."""
        return "/".join(p for p in (self.prefix, rel) if p)

    def _call(self, what: str, rel: str, fn: Callable[[], T]) -> T:
        return _retry(self.settings, what, join(self.uri, rel), fn)

    def read(self, rel: str) -> bytes:
        """The whole content; FileNotFoundError if absent."""

        def _get() -> bytes:
            resp = self.client.get_object(self.bucket, self.key(rel))
            try:
                return resp.read()
            finally:
                resp.close()
                resp.release_conn()

        return self._call("read", rel, _get)

    def write(self, rel: str, data: bytes) -> None:
        """Replace the content whole (a reader never sees half of it)."""
        meta = {SHA_META: hashlib.sha256(data).hexdigest()}
        self._call(
            "write",
            rel,
            lambda: self.client.put_object(
                self.bucket, self.key(rel), io.BytesIO(data), len(data), metadata=meta
            ),
        )

    def exists(self, rel: str) -> bool:
        """True for an existing file/object or a non-empty directory/prefix."""
        # One LIST answers "object or non-empty prefix" and, unlike HEAD, says NoSuchBucket.
        key = self.key(rel)

        def _probe() -> bool:
            for obj in self.client.list_objects(self.bucket, prefix=key, recursive=False):
                if obj.object_name.rstrip("/") == key or obj.object_name.startswith(key + "/") or not key:
                    return True
            return False

        return self._call("check", rel, _probe)

    def delete(self, rel: str) -> None:
        """Remove one file/object (no error if absent)."""
        self._call("delete", rel, lambda: self.client.remove_object(self.bucket, self.key(rel)))

    def list(self) -> dict[str, Entry]:
        """Every file under the URI, recursively, by relative path."""
        base = f"{self.prefix}/" if self.prefix else ""

        def _list() -> dict[str, Entry]:
            out: dict[str, Entry] = {}
            for obj in self.client.list_objects(self.bucket, prefix=base, recursive=True):
                name = obj.object_name
                if name.endswith("/"):
                    continue  # directory marker objects some tools create
                out[name[len(base) :]] = Entry(int(obj.size or 0), (obj.etag or "").strip('"') or None)
            if not out and self.prefix:
                # The URI may name one object rather than a prefix.
                for obj in self.client.list_objects(self.bucket, prefix=self.prefix):
                    if obj.object_name == self.prefix:
                        out[""] = Entry(int(obj.size or 0), (obj.etag or "").strip('"') or None)
            return out

        return self._call("list", "", _list)

    def children(self) -> list[str]:
        """Names of the direct sub-directories/prefixes."""
        base = f"{self.prefix}/" if self.prefix else ""

        def _list() -> list[str]:
            return sorted(
                o.object_name[len(base) :].rstrip("/")
                for o in self.client.list_objects(self.bucket, prefix=base, recursive=False)
                if o.is_dir
            )

        return self._call("list", "", _list)

    def put_file(self, rel: str, src: Path, sha256: str) -> None:
        """Upload a local file whose sha256 is known."""
        self._call(
            "upload",
            rel,
            lambda: self.client.fput_object(
                self.bucket, self.key(rel), str(src), metadata={SHA_META: sha256}
            ),
        )

    def get_file(self, rel: str, dest: Path) -> str:
        """Download to ``dest`` atomically; return the copy's sha256."""

        def _get() -> str:
            sha = hashlib.sha256()

            def _write(tmp: str) -> None:
                resp = self.client.get_object(self.bucket, self.key(rel))
                try:
                    with open(tmp, "wb") as out:
                        for chunk in resp.stream(CHUNK):
                            sha.update(chunk)
                            out.write(chunk)
                finally:
                    resp.close()
                    resp.release_conn()

            atomic.write_with(dest, _write, suffix=TMP_SUFFIX)
            return sha.hexdigest()

        return self._call("download", rel, _get)

    def sha256(self, rel: str) -> str:
        """sha256 of the stored content (recomputed, not trusted from metadata)."""

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
        """The sha256 recorded as object metadata at upload, or None."""
        stat = self._call("stat", rel, lambda: self.client.stat_object(self.bucket, self.key(rel)))
        meta = {k.lower(): v for k, v in (stat.metadata or {}).items()}
        return meta.get(f"x-amz-meta-{SHA_META}")

    def same(self, rel: str, entry: Entry, size: int, sha256: str, md5: str) -> bool:
        """True if the stored ``rel`` (listed as ``entry``) has this size and content."""
        if entry.size != size:
            return False
        if entry.etag and "-" not in entry.etag:
            return entry.etag == md5  # single-part upload: the ETag is the MD5
        return self.stored_sha256(rel) == sha256  # multipart: trust the sha256 we stored on upload


register_store("s3", S3Store)

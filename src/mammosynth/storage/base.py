"""What every store shares: errors, URIs, digests, the `Store` protocol and its registry by scheme.

A backend is one class implementing `Store`, registered with `register_store` for its scheme (see
`local` and `s3`); every function of the package reaches it through `store_for`.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol
from urllib.parse import unquote, urlparse

CHUNK = 1 << 20
TMP_SUFFIX = ".mstmp"  # temp files of interrupted writes; listings skip them


class StorageError(RuntimeError):
    """A storage operation failed for a reason the user must fix (credentials, endpoint, bucket, data)."""


# --------------------------------------------------------------------------------------------- URIs


def scheme_of(uri: str | os.PathLike) -> str:
    """The URI scheme (``"s3"``, ``"file"``), or ``""`` for a plain local path."""
    text = str(uri)
    return text.split("://", 1)[0].lower() if "://" in text else ""


def is_remote(uri: str | os.PathLike) -> bool:
    """True for URIs of a remote store (``s3://``), False for local paths and ``file://`` URIs."""
    factory = _STORES.get(scheme_of(uri))
    return bool(factory is not None and factory.remote)


def local_path(uri: str | os.PathLike) -> Path:
    """The local path of a plain path or ``file://`` URI.

    Raises:
        StorageError: ``uri`` has another scheme.
    """
    text = str(uri)
    if text.startswith("file://"):
        parsed = urlparse(text)
        return Path(unquote(parsed.netloc + parsed.path))
    if "://" in text:
        raise _unsupported(text)
    return Path(text)


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` → ``("bucket", "a/b")``.

    Raises:
        StorageError: no bucket.
    """
    parsed = urlparse(uri)
    bucket, key = parsed.netloc, parsed.path.strip("/")
    if not bucket:
        raise StorageError(f"{uri!r} names no bucket: expected s3://bucket/prefix")
    return bucket, key


def join(uri: str, rel: str) -> str:
    """``uri`` + ``/`` + ``rel`` (``uri`` itself when ``rel`` is empty)."""
    return f"{str(uri).rstrip('/')}/{rel}" if rel else str(uri)


def _unsupported(text: str) -> StorageError:
    return StorageError(
        f"unsupported URI scheme in {text!r}: use a local path, file:// or s3://bucket/prefix"
    )


# ------------------------------------------------------------------------------------------ digests


def sha256_file(path: str | os.PathLike) -> str:
    """sha256 of a local file, read in chunks (what manifests record)."""
    return digest_file(Path(path))[1]


def digest_file(path: Path) -> tuple[int, str, str]:
    """(size, sha256, md5) of a local file in one pass."""
    sha, md5, size = hashlib.sha256(), hashlib.md5(usedforsecurity=False), 0
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            sha.update(chunk)
            md5.update(chunk)
            size += len(chunk)
    return size, sha.hexdigest(), md5.hexdigest()


# ------------------------------------------------------------------------------------------- stores


@dataclass
class Entry:
    """One listed file or object: its size and, on S3, its ETag."""

    size: int
    etag: str | None = None  # S3 only


class Store(Protocol):
    """A tree of files addressed by relative POSIX paths under one URI (``""`` = the URI itself)."""

    remote: ClassVar[bool]
    uri: str

    def read(self, rel: str) -> bytes:
        """The whole content; FileNotFoundError if absent."""

    def write(self, rel: str, data: bytes) -> None:
        """Replace the content whole (a reader never sees half of it)."""

    def exists(self, rel: str) -> bool:
        """True for an existing file/object or a non-empty directory/prefix."""

    def delete(self, rel: str) -> None:
        """Remove one file/object (no error if absent)."""

    def list(self) -> dict[str, Entry]:
        """Every file under the URI, recursively, by relative path."""

    def children(self) -> list[str]:
        """Names of the direct sub-directories/prefixes."""

    def put_file(self, rel: str, src: Path, sha256: str) -> None:
        """Upload a local file whose sha256 is known."""

    def get_file(self, rel: str, dest: Path) -> str:
        """Download to ``dest`` atomically; return the copy's sha256."""

    def sha256(self, rel: str) -> str:
        """sha256 of the stored content (recomputed, not trusted from metadata)."""

    def same(self, rel: str, entry: Entry, size: int, sha256: str, md5: str) -> bool:
        """True if the stored ``rel`` (listed as ``entry``) has this size and content."""

    def cache_path(self) -> str:
        """Where `localize` caches this store's content, relative to the cache root."""


_STORES: dict[str, type] = {}


def register_store(scheme: str, factory: type) -> None:
    """Make ``factory(uri)`` the `Store` for URIs of ``scheme`` (``""`` = plain local paths)."""
    _STORES[scheme] = factory


def store_for(uri: str | os.PathLike) -> Store:
    """The `Store` for ``uri``, chosen by its scheme.

    Raises:
        StorageError: no store is registered for the scheme.
    """
    factory = _STORES.get(scheme_of(uri))
    if factory is None:
        raise _unsupported(str(uri))
    return factory(str(uri) if factory.remote else uri)

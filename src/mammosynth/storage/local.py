"""Local paths and ``file://`` URIs as a `Store`: a directory tree, every write atomic."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from mammosynth import atomic
from mammosynth.storage.base import CHUNK, TMP_SUFFIX, Entry, digest_file, local_path, register_store


class LocalStore:
    """A directory tree addressed by relative POSIX paths (implements `Store`)."""

    remote = False

    def __init__(self, uri: str | os.PathLike):
        """Open the directory tree at ``uri`` (a path or ``file://``)."""
        self.uri = str(uri)
        self.root = local_path(uri)

    def path(self, rel: str) -> Path:
        """The local path of ``rel``."""
        return self.root / rel if rel else self.root

    def read(self, rel: str) -> bytes:
        """The whole content; FileNotFoundError if absent."""
        return self.path(rel).read_bytes()

    def write(self, rel: str, data: bytes) -> None:
        """Replace the content whole (a reader never sees half of it)."""
        atomic.write_bytes(self.path(rel), data, suffix=TMP_SUFFIX)

    def exists(self, rel: str) -> bool:
        """True for an existing file/object or a non-empty directory/prefix."""
        return self.path(rel).exists()

    def delete(self, rel: str) -> None:
        """Remove one file/object (no error if absent)."""
        self.path(rel).unlink(missing_ok=True)

    def list(self) -> dict[str, Entry]:
        """Every file under the URI, recursively, by relative path."""
        if self.root.is_file():
            return {"": Entry(self.root.stat().st_size)}
        if not self.root.is_dir():
            return {}
        return {
            p.relative_to(self.root).as_posix(): Entry(p.stat().st_size)
            for p in sorted(self.root.rglob("*"))
            if p.is_file() and not p.name.endswith(TMP_SUFFIX)
        }

    def children(self) -> list[str]:
        """Names of the direct sub-directories/prefixes."""
        return sorted(p.name for p in self.root.iterdir() if p.is_dir()) if self.root.is_dir() else []

    def put_file(self, rel: str, src: Path, sha256: str) -> None:
        """Upload a local file whose sha256 is known."""
        atomic.write_with(self.path(rel), lambda tmp: shutil.copyfile(src, tmp), suffix=TMP_SUFFIX)

    def get_file(self, rel: str, dest: Path) -> str:
        """Download to ``dest`` atomically; return the copy's sha256."""
        sha = hashlib.sha256()

        def _copy(tmp: str) -> None:
            with open(tmp, "wb") as out, open(self.path(rel), "rb") as src:
                while chunk := src.read(CHUNK):
                    sha.update(chunk)
                    out.write(chunk)

        atomic.write_with(dest, _copy, suffix=TMP_SUFFIX)
        return sha.hexdigest()

    def sha256(self, rel: str) -> str:
        """sha256 of the stored content (recomputed, not trusted from metadata)."""
        return digest_file(self.path(rel))[1]

    def same(self, rel: str, entry: Entry, size: int, sha256: str, md5: str) -> bool:
        """True if the stored ``rel`` (listed as ``entry``) has this size and content."""
        return entry.size == size and self.sha256(rel) == sha256

    def cache_path(self) -> str:
        """Where `localize` caches this store's content, relative to the cache root."""
        return "local/" + self.root.resolve().as_posix().lstrip("/")


register_store("", LocalStore)
register_store("file", LocalStore)

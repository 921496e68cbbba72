"""One URI-based store for every stage: local paths / ``file://`` and ``s3://bucket/prefix`` (MinIO).

Stages call the same functions whatever the URI scheme: ``read_bytes``, ``write_bytes``, ``exists``,
``list_files``, ``upload_dir``, ``download_dir``, ``localize``; published sets go through
``publish_set`` / ``verify_set`` / ``open_set`` / ``list_sets``. The package:

- `base`: `StorageError`, URI parsing, file digests, the `Store` protocol and its registry by scheme;
- `local`: local paths and ``file://`` (`LocalStore`); `s3`: MinIO settings from the environment,
  the client, retries (`S3Store`); a new backend is one class registered for its scheme;
- `sync`: whole-file access, resumable upload/download, `localize`;
- `sets`: published, content-addressed sets; `uploads`: raw source uploads with a manifest, and
  reading a source only when its manifest verifies; `cli`: the ``mammosynth data`` command.
"""

from __future__ import annotations

from mammosynth.storage import local as _local  # noqa: F401  (registers "" and file://)
from mammosynth.storage import s3 as _s3  # noqa: F401  (registers s3://)
from mammosynth.storage.base import (
    StorageError,
    Store,
    is_remote,
    register_store,
    sha256_file,
    store_for,
)
from mammosynth.storage.cli import main
from mammosynth.storage.sets import (
    SET_FORMAT,
    SET_MANIFEST,
    ManifestError,
    VerifyResult,
    list_sets,
    open_set,
    publish_set,
    verify_set,
)
from mammosynth.storage.sync import (
    download_dir,
    exists,
    list_files,
    localize,
    read_bytes,
    upload_dir,
    write_bytes,
)
from mammosynth.storage.uploads import localize_source, source_digest, upload_source

__all__ = [
    "SET_FORMAT",
    "SET_MANIFEST",
    "ManifestError",
    "Store",
    "StorageError",
    "VerifyResult",
    "download_dir",
    "exists",
    "is_remote",
    "list_files",
    "list_sets",
    "localize",
    "localize_source",
    "main",
    "open_set",
    "publish_set",
    "read_bytes",
    "register_store",
    "sha256_file",
    "source_digest",
    "store_for",
    "upload_dir",
    "upload_source",
    "verify_set",
    "write_bytes",
]

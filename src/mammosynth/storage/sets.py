"""Published dataset sets: ``publish_set``, ``verify_set``, ``open_set``, ``list_sets``.

``publish_set(local_dir, uri, kind=...)`` publishes a directory as an immutable, content-addressed
set at ``<uri>/<kind>-<sha12>/``, where ``sha12`` is the first 12 hex digits of the SHA-256 over the
sorted ``path<TAB>sha256`` lines of its files (data only: config and lineage do not change the
address). Objects are written first and the set manifest ``_manifest.json`` last, so a set either
has a manifest that lists every object, or it is not a set and ``open_set`` refuses it. The
manifest is not called ``manifest.json`` because an ingested set already carries its own
``manifest.json`` as payload. Re-publishing identical content finds the manifest and writes nothing.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mammosynth import atomic
from mammosynth.storage.base import (
    StorageError,
    Store,
    digest_file,
    is_remote,
    join,
    local_path,
    store_for,
)
from mammosynth.storage.sync import _cache_root, _local_files, _run_parallel, _sync_up

log = logging.getLogger(__name__)

SET_MANIFEST = "_manifest.json"
SET_FORMAT = "mammosynth-set/1"


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
        """One line per problem (at most 20 of each kind), headed by the verdict."""
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


class ManifestError(StorageError):
    """A ``_manifest.json`` exists but cannot be used: not JSON, or not the expected structure.

    Attributes:
        detail: what is wrong, without the advice that ends the message.
    """

    def __init__(self, detail: str, fix: str = "re-publish the set"):
        """Build the error from what is wrong (``detail``) and what fixes it (``fix``)."""
        super().__init__(f"{detail}: {fix}")
        self.detail = detail


_SHA_HEX = frozenset("0123456789abcdef")


def _read_manifest(store: Store) -> dict[str, Any]:
    """The set manifest, checked field by field.

    Raises:
        StorageError: there is no manifest (not a set, or an interrupted publish/upload).
        ManifestError: the manifest is not valid JSON or a field has the wrong type.
    """
    try:
        raw = store.read(SET_MANIFEST)
    except FileNotFoundError:
        raise StorageError(
            f"{store.uri} has no {SET_MANIFEST}: not a published set (an interrupted "
            f"publish_set or `mammosynth data upload` leaves none; re-run it)"
        ) from None
    where = join(store.uri, SET_MANIFEST)
    try:
        manifest = json.loads(raw)
    except ValueError as exc:  # JSONDecodeError, or bytes that are not UTF-8
        raise ManifestError(f"{where} is not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != SET_FORMAT or "files" not in manifest:
        raise ManifestError(f"{where} is not a {SET_FORMAT} manifest")
    problem = _manifest_problem(manifest)
    if problem:
        raise ManifestError(f"{where} is malformed: {problem}")
    return manifest


def _manifest_problem(manifest: dict[str, Any]) -> str | None:
    """What is wrong with a parsed manifest's fields, or None."""
    files = manifest["files"]
    if not isinstance(files, list):
        return f"'files' is {type(files).__name__}, expected a list"
    for i, entry in enumerate(files):
        if not isinstance(entry, dict):
            return f"files[{i}] is {type(entry).__name__}, expected an object"
        path, size, sha = entry.get("path"), entry.get("size"), entry.get("sha256")
        if not isinstance(path, str) or not path or path.startswith("/") or ".." in path.split("/"):
            return f"files[{i}].path={path!r} is not a relative path inside the set"
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            return f"files[{i}].size={size!r} is not a byte count"
        if not isinstance(sha, str) or len(sha) != 64 or not set(sha) <= _SHA_HEX:
            return f"files[{i}].sha256={sha!r} is not a sha256 hex digest"
    for key, kind in (("content_sha256", str), ("counts", dict), ("kind", str), ("created", str)):
        if key in manifest and not isinstance(manifest[key], kind):
            return f"{key!r} is {type(manifest[key]).__name__}, expected {kind.__name__}"
    return None


def _usable_manifest(store: Store) -> dict[str, Any] | None:
    """The manifest, or None if absent or unusable (the reason logged): re-publishing replaces it."""
    if not store.exists(SET_MANIFEST):
        return None
    try:
        return _read_manifest(store)
    except ManifestError as exc:
        log.warning("%s; it is treated as absent and will be rewritten", exc)
        return None


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
    (``open_set`` refuses it) and a re-run uploads only what is missing. Re-publishing compares
    every object's checksum with the local file and replaces corrupt or missing ones; if all match
    and the manifest is there, nothing is written. A manifest that cannot be read (not JSON,
    malformed) is treated as absent, with the reason logged, and rewritten.

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
    digests = {rel: digest_file(path) for rel, path in files.items()}
    entries = [{"path": rel, "size": digests[rel][0], "sha256": digests[rel][1]} for rel in sorted(files)]
    content = _content_sha(entries)
    set_id = f"{kind}-{content[:12]}"
    set_uri = join(str(uri), set_id)
    store = store_for(set_uri)
    existing = _usable_manifest(store)
    if existing is not None and existing.get("content_sha256") == content:
        manifest = existing
    else:
        if existing is not None:
            log.warning("%s has a manifest for other content: replacing it", set_uri)
        manifest = _new_manifest(local_dir, kind, set_id, content, entries, config, lineage)
    # Checksums, not sizes, decide what is already there: corrupt or missing objects are replaced.
    stats = _sync_up(files, store, workers=workers, progress_every=100, digests=digests)
    if manifest is existing and not stats["uploaded"]:
        log.info("set %s already published: nothing to do", set_uri)
        return {**existing, "uri": set_uri, "reused": True}
    if manifest is existing:
        log.warning(
            "set %s was published but %d objects were missing or corrupt: replaced them",
            set_uri,
            stats["uploaded"],
        )
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
            **_sample_counts(local_path(local_dir)),
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
    store = store_for(uri)
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
        return local_path(uri)
    store = store_for(uri)
    manifest = _read_manifest(store)
    dest = Path(local_dir) if local_dir is not None else _cache_root(None) / store.cache_path()
    return fetch_verified(
        store, manifest, dest, workers=workers, fix=f"run `mammosynth data verify {uri}` and re-publish it"
    )


def fetch_verified(
    store: Store, manifest: dict[str, Any], dest: Path, *, workers: int, fix: str, what: str = "set"
) -> Path:
    """Download every file ``manifest`` lists from ``store`` into ``dest``, each checked on arrival.

    Files already in ``dest`` with the right sha256 are not fetched again; the manifest is written
    beside them last.

    Args:
        store: where the set or upload lives.
        manifest: its checked manifest (`_read_manifest`).
        dest: local folder to fill.
        workers: parallel downloads.
        fix: what the user should do if files are missing or corrupt (ends the error message).
        what: what ``store`` holds, for the error message (``set``, ``upload``).

    Returns:
        ``dest``.

    Raises:
        StorageError: files listed in the manifest are missing or do not match their sha256.
    """
    present = store.list()
    listed = {f["path"]: f for f in manifest["files"]}
    missing = sorted(set(listed) - set(present))
    if missing:
        raise StorageError(
            f"refusing to open {what} {store.uri}: {len(missing)} files in its manifest are missing "
            f"(first: {missing[:5]}); {fix}"
        )
    bad: list[str] = []
    bad_lock = threading.Lock()

    def _one(rel: str) -> None:
        target = dest / rel
        if target.is_file() and digest_file(target)[1] == listed[rel]["sha256"]:
            return
        if store.get_file(rel, target) != listed[rel]["sha256"]:
            target.unlink(missing_ok=True)
            with bad_lock:
                bad.append(rel)

    _run_parallel(sorted(listed), _one, workers)
    if bad:
        raise StorageError(
            f"refusing to open {what} {store.uri}: {len(bad)} files do not match their manifest "
            f"sha256 (first: {sorted(bad)[:5]}); {fix}"
        )
    atomic.write_bytes(dest / SET_MANIFEST, json.dumps(manifest, indent=2).encode())
    return dest


def list_sets(uri: str | os.PathLike) -> list[dict[str, Any]]:
    """Sets at ``uri`` itself and directly under it: manifests without the file list, plus ``uri``."""
    store = store_for(uri)
    candidates = [str(uri).rstrip("/")] + [join(str(uri), child) for child in store.children()]
    sets = []
    for cand in candidates:
        cstore = store_for(cand)
        if not cstore.exists(SET_MANIFEST):
            continue
        try:
            manifest = _read_manifest(cstore)
        except StorageError as exc:
            log.warning("%s", exc)
            continue
        sets.append({**{k: v for k, v in manifest.items() if k != "files"}, "uri": cand})
    return sorted(sets, key=lambda s: (s.get("created", ""), s["uri"]))

"""``mammosynth data``: upload folders, publish, list and verify sets in MinIO or on disk."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from mammosynth.storage.base import StorageError, join
from mammosynth.storage.sets import SET_MANIFEST, list_sets, publish_set, verify_set
from mammosynth.storage.sync import exists
from mammosynth.storage.uploads import upload_source


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
    up = sub.add_parser(
        "upload", help="upload a local folder (e.g. CBIS-DDSM) as-is, then its _manifest.json; resumable"
    )
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
    ver = sub.add_parser(
        "verify", help="recompute checksums of an upload or a set (or of every set under a URI)"
    )
    ver.add_argument("uri")
    ver.add_argument("--workers", type=int, default=8, help="parallel reads (default 8)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """``mammosynth data {upload,publish,ls,verify}``; returns 1 on verification failure or error."""
    args = _build_parser().parse_args(argv)
    try:
        if args.command == "upload":
            stats = upload_source(
                args.source, args.dest, workers=args.workers, progress_every=args.progress_every
            )
            print(
                f"{args.dest}: {stats['files']} files, {stats['uploaded']} uploaded, "
                f"{stats['skipped']} already present, {stats['bytes'] / 1e6:.1f} MB sent; "
                f"{SET_MANIFEST} {'written' if stats['manifest_written'] else 'already complete'} "
                f"(content sha256 {stats['content_sha256'][:12]})"
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
            if not exists(join(args.uri, SET_MANIFEST)):
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

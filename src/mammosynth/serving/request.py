"""Build a prediction request body from image files: ``python -m mammosynth.serving.request``.

Example:
    python -m mammosynth.serving.request --image mass.dcm --out request.json
    curl -s -H 'Content-Type: application/json' -d @request.json localhost:8080/v1/models/mammosynth:predict

The body uses the server's one input contract: ``image`` = the base64 of the file itself (PNG, JPEG,
TIFF or DICOM; the server detects the format by content). Nothing is decoded here, so the request
carries exactly the file's bytes; the file must still look like one of those formats, so a typo'd
path to some other file fails here rather than as an HTTP 400.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from pathlib import Path

from mammosynth.atomic import write_text
from mammosynth.data.images import sniff


def build_request(paths: list[str | Path], protocol: str = "v1") -> dict:
    """The JSON body that asks the server about the files at ``paths``.

    Args:
        paths: image files (PNG/JPEG/TIFF/DICOM), one prediction each.
        protocol: ``"v1"`` (``{"instances": [{"image": ...}]}``) or ``"v2"`` (one BYTES input ``image``).

    Returns:
        The request body as a dict.

    Raises:
        ValueError: unknown protocol, no files, or a file that is not PNG/JPEG/TIFF/DICOM.
        OSError: a file cannot be read.
    """
    if protocol not in ("v1", "v2"):
        raise ValueError(f"protocol {protocol!r} is not v1 or v2")
    if not paths:
        raise ValueError("no image files given; pass --image FILE")
    encoded = []
    for path in paths:
        raw = Path(path).read_bytes()
        if not sniff(raw):
            raise ValueError(
                f"{path}: not a PNG/JPEG/TIFF image or a DICOM file (by content); pass the image file itself"
            )
        encoded.append(base64.b64encode(raw).decode("ascii"))
    if protocol == "v1":
        return {"instances": [{"image": e} for e in encoded]}
    return {"inputs": [{"name": "image", "shape": [len(encoded)], "datatype": "BYTES", "data": encoded}]}


def main(argv: list[str] | None = None) -> int:
    """Write the request body to ``--out`` (``-`` for stdout).

    Returns:
        0 on success, 2 on a user error (one line on stderr naming the file and the fix).
    """
    parser = argparse.ArgumentParser(
        prog="python -m mammosynth.serving.request",
        description="Build a mammosynth prediction request (JSON) from image files.",
    )
    parser.add_argument(
        "--image", action="append", required=True, help="PNG/JPEG/TIFF/DICOM file (repeat for a batch)"
    )
    parser.add_argument("--protocol", choices=("v1", "v2"), default="v1", help="KServe protocol")
    parser.add_argument("--out", default="request.json", help="where to write the body ('-' = stdout)")
    args = parser.parse_args(argv)
    try:
        body = build_request(args.image, args.protocol)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = json.dumps(body)
    if args.out == "-":
        sys.stdout.write(text + "\n")
    else:
        write_text(args.out, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

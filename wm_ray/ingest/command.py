"""The ``wm-ray ingest`` subcommand (parser and handler)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from wm_ray.ingest.readers import FORMATS


def cmd_ingest(args: argparse.Namespace) -> int:
    """Run the ingest (each source and each skipped file is logged as it goes; the summary is
    printed as JSON); exit 0 if anything was ingested, 1 if nothing was."""
    from wm_ray.ingest.core import ingest

    summary = ingest(
        args.sources,
        args.out,
        image_size=args.image_size,
        grayscale=args.grayscale,
        chunk_len=args.chunk_len,
        fmt=args.format,
        append=args.append,
    )
    print(json.dumps(summary, indent=2))
    if not summary["ingested"]:
        print("wm-ray ingest: nothing was ingested", file=sys.stderr)
        return 1
    return 0


def add_ingest_parser(sub: Any) -> argparse.ArgumentParser:
    """The ``ingest`` subcommand's parser."""
    p: argparse.ArgumentParser = sub.add_parser(
        "ingest",
        help="turn offline video, .npz/HDF5 arrays or image folders into replay chunks",
        description="Ingest offline data into a data set directory that `replay.preload` "
        "loads: video files (mp4, avi, mkv, ...), .npz/.npy arrays, HDF5 files, or folders of "
        "image frames (one folder = one episode), or folders of any of these. Each file is one "
        "episode. Unreadable or ill-shaped files are reported by name and skipped.",
    )
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="files or folders to ingest")
    p.add_argument("--out", required=True, help="the data set directory (new or empty)")
    p.add_argument(
        "--image-size", type=int, default=None, metavar="N", help="resize frames to N x N"
    )
    p.add_argument("--grayscale", action="store_true", help="convert frames to one channel")
    p.add_argument(
        "--chunk-len", type=int, default=64, metavar="N", help="steps per chunk (default 64)"
    )
    p.add_argument(
        "--format", default="auto", choices=FORMATS, help="what to read (default: by extension)"
    )
    p.add_argument("--append", action="store_true", help="add to the existing data set in --out")
    p.set_defaults(func=cmd_ingest)
    return p

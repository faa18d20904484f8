"""The `aslfr` command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _synth(a: argparse.Namespace) -> None:
    from aslfr.data.synthetic import synthesize

    counts = synthesize(a.out_dir, sequences=a.sequences, participants=a.participants, files=a.files,
                        seed=a.seed, corrupt_fraction=a.corrupt_fraction, supplemental=a.supplemental,
                        workers=a.workers)
    print(f"wrote {counts['sequences']} train sequences ({counts['corrupt']} planted corrupt) and "
          f"{counts['supplemental']} supplemental in {counts['files']} files to {a.out_dir}")


def _prepare(a: argparse.Namespace) -> None:
    from aslfr.data.prepare import describe, prepare

    print(describe(prepare(a.data_dir, a.out_dir, supplemental=a.supplemental, workers=a.workers)))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aslfr", description="Fingerspelling recognition from MediaPipe landmarks.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="write a synthetic dataset in the Kaggle layout")
    p.add_argument("out_dir", type=Path)
    p.add_argument("--sequences", type=int, default=1000)
    p.add_argument("--participants", type=int, default=10)
    p.add_argument("--files", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--corrupt-fraction", type=float, default=0.05)
    p.add_argument("--supplemental", type=int, default=0, metavar="M", help="also write M supplemental sequences")
    p.add_argument("--workers", type=int, default=1)
    p.set_defaults(func=_synth)

    p = sub.add_parser("prepare", help="Kaggle layout or seed TFRecords -> shards, metadata, stats")
    p.add_argument("data_dir", type=Path)
    p.add_argument("out_dir", type=Path)
    p.add_argument("--supplemental", action="store_true", help="also prepare the supplemental data")
    p.add_argument("--workers", type=int, default=1)
    p.set_defaults(func=_prepare)
    return parser


def main(argv: list[str] | None = None) -> int:
    from aslfr.data.kaggle import DataError

    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (DataError, FileNotFoundError, ValueError) as e:
        print(f"aslfr {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"aslfr {args.command}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
